"""JSON on the wire, through the generated ``kfp_server_api`` models.

Every request body the stand-in accepts is decoded into the model the
generated client would send, and every response is built as a model and
encoded from it. A field name or a type the generated client does not know
therefore fails here instead of passing silently.

Encoding follows the real server's marshaller: protojson with proto field
names and ``EmitUnpopulated: false`` (``backend/src/apiserver/common/utils.go``
``CustomMarshaler`` at HEAD; grpc-gateway v1's default ``JSONPb{OrigName: true}``
at 2.5.0): empty strings, zero numbers, ``false``, zero enums, empty lists and
maps are left out; a set message (a timestamp at the epoch included) is kept.

Decoding follows ``protojson.Unmarshal`` with ``DiscardUnknown: false`` (same
file): an unknown field is a 400; the JSON (lowerCamel) spelling of a known field
is accepted as protojson accepts it.

Only the standard library and ``kfp_server_api`` are imported, so the stand-in
runs in both of the project's environments.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import kfp_server_api.models as models

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(([^,]+), (.+)\)$")
_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}


class WireError(ValueError):
    """A body the real server would refuse (HTTP 400), with protojson's wording."""


def _model(name: str) -> type:
    return getattr(models, name)


def _is_enum(klass: type) -> bool:
    return hasattr(klass, "allowable_values") and not klass.openapi_types


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def parse_timestamp(value: str) -> datetime:
    """RFC 3339 as protojson reads it (``Z`` or an offset, optional fraction)."""
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as err:
        raise WireError(f"invalid google.protobuf.Timestamp value {value!r}") from err
    if parsed.tzinfo is None:
        raise WireError(f"invalid google.protobuf.Timestamp value {value!r}")
    return parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """protojson's Timestamp: UTC, ``Z``, fraction only when there is one."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def decode(type_name: str, data: Any, where: str = "") -> Any:
    """``data`` (parsed JSON) as an instance of the model ``type_name``; strict."""
    if data is None:
        return None
    if m := _LIST.match(type_name):
        if not isinstance(data, list):
            raise WireError(f"{where or 'value'}: expected a list, got {type(data).__name__}")
        return [decode(m.group(1), item, f"{where}[{i}]") for i, item in enumerate(data)]
    if m := _DICT.match(type_name):
        if not isinstance(data, dict):
            raise WireError(f"{where or 'value'}: expected an object, got {type(data).__name__}")
        return {k: decode(m.group(2), v, f"{where}.{k}") for k, v in data.items()}
    if type_name == "object":
        return data  # google.protobuf.Struct / Value: any JSON
    if type_name == "datetime":
        if not isinstance(data, str):
            raise WireError(f"{where}: invalid google.protobuf.Timestamp value {data!r}")
        return parse_timestamp(data)
    if type_name in _SCALARS:
        return _scalar(type_name, data, where)
    klass = _model(type_name)
    if _is_enum(klass):
        if data not in klass.allowable_values:
            raise WireError(f"{where}: invalid value for enum type {type_name}: {data!r}")
        return data
    if not isinstance(data, dict):
        raise WireError(f"{where or type_name}: expected an object, got {type(data).__name__}")
    by_json: dict[str, str] = {}
    for attr, key in klass.attribute_map.items():
        by_json[key] = attr
        by_json.setdefault(_camel(key), attr)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        attr = by_json.get(key)
        if attr is None:
            raise WireError(f'proto: (line 1:2): unknown field "{key}" in {type_name}')
        kwargs[attr] = decode(klass.openapi_types[attr], value, f"{where}.{key}".lstrip("."))
    return klass(**kwargs)


def _scalar(type_name: str, data: Any, where: str) -> Any:
    if type_name == "bool":
        if not isinstance(data, bool):
            raise WireError(f"{where}: invalid value for bool type: {data!r}")
        return data
    if type_name == "str":
        # int64/uint64 are strings in the generated models; protojson also takes numbers.
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            raise WireError(f"{where}: invalid value for string type: {data!r}")
        return str(data)
    if type_name == "int":
        if isinstance(data, bool) or not isinstance(data, (int, str)):
            raise WireError(f"{where}: invalid value for int32 type: {data!r}")
        try:
            return int(data)
        except ValueError as err:
            raise WireError(f"{where}: invalid value for int32 type: {data!r}") from err
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise WireError(f"{where}: invalid value for double type: {data!r}")
    return float(data)


def encode(value: Any, type_name: str | None = None) -> Any:
    """A model instance (or a list/dict of them) as the real server's JSON."""
    if value is None:
        return None
    if isinstance(value, list):
        inner = _LIST.match(type_name).group(1) if type_name and _LIST.match(type_name) else None
        return [encode(v, inner) for v in value]
    if isinstance(value, datetime):
        return format_timestamp(value)
    if type_name and (m := _DICT.match(type_name)):
        return {k: encode(v, m.group(2)) for k, v in value.items()}
    if hasattr(value, "openapi_types"):
        out: dict[str, Any] = {}
        for attr, attr_type in value.openapi_types.items():
            item = getattr(value, attr)
            if _omitted(item, attr_type):
                continue
            out[value.attribute_map[attr]] = encode(item, attr_type)
        return out
    return value


def _omitted(item: Any, attr_type: str) -> bool:
    """protojson with EmitUnpopulated=false leaves zero values and empty collections out."""
    if item is None:
        return True
    if attr_type == "object":
        return False
    if isinstance(item, (list, dict)):
        return not item
    if isinstance(item, bool):
        return item is False
    if isinstance(item, (int, float)):
        return item == 0
    if isinstance(item, str):
        if attr_type in _SCALARS or attr_type == "str":
            return item == ""
        klass = getattr(models, attr_type, None)
        if klass is not None and _is_enum(klass):
            return item == klass.allowable_values[0]  # enum value 0
        return item == ""
    return False


def roundtrip(type_name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Our own data through the model and out again; an unknown field is a stand-in bug."""
    try:
        return encode(decode(type_name, data), type_name)
    except (WireError, TypeError) as err:
        raise AssertionError(f"stand-in defect: {type_name} the client cannot read: {err}") from err
