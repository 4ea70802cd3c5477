"""List requests as the real server reads them: filter, sort, page size, page token.

Sources (kubeflow/pipelines ``backend/src/apiserver``):

* ``server/list_request_util.go`` ``parseAPIFilter``: the ``filter`` value, already
  URL-decoded once by the gateway, goes through ``url.QueryUnescape`` a second
  time: ``+`` becomes a space, ``%XX`` is decoded, a ``%`` not followed by two
  hex digits is a 400 (``invalid URL escape``). Legacy camelCase value keys
  (``stringValue``) are accepted (``transformJSONForBackwardCompatibility``).
* ``server/list_request_util.go`` ``validatePagination`` / ``validatedListOptions``:
  page size 0 means 20, more than 200 means 200, negative is a 400; a page token
  carries its own filter and sort; if the request repeats them they must match
  the token's, else 400.
* ``list/list.go`` ``NewOptions``: ``sort_by`` is ``"field"``, ``"field asc"`` or
  ``"field desc"`` (case-insensitive), the field must be one of the model's API
  fields; the default order is the model's ``DefaultSortField`` (``created_at``),
  ties broken by the key field (the resource id).
* ``model/*.go`` ``APIToModelFieldMap``: which keys may be sorted and filtered.

The token is opaque: base64 (standard alphabet, as ``deserializePageToken``) of
JSON. The real one holds the last row's sort and key values (keyset paging);
this one holds an offset, which pages the same way while nothing is inserted.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from kfp_bridge.testing.kfp_api import wire

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})(.{0,2})", re.S)
_LEGACY_KEYS = {
    '"intValue":': '"int_value":',
    '"longValue":': '"long_value":',
    '"stringValue":': '"string_value":',
    '"timestampValue":': '"timestamp_value":',
    '"intValues":': '"int_values":',
    '"longValues":': '"long_values":',
    '"stringValues":': '"string_values":',
}
_OPERATION_NUMBERS = {
    0: "OPERATION_UNSPECIFIED",
    1: "EQUALS",
    2: "NOT_EQUALS",
    3: "GREATER_THAN",
    5: "GREATER_THAN_EQUALS",
    6: "LESS_THAN",
    7: "LESS_THAN_EQUALS",
    8: "IN",
    9: "IS_SUBSTRING",
}


class ListError(ValueError):
    """An invalid list request (HTTP 400), worded like the real server."""


def query_unescape(text: str) -> str:
    """Go's ``url.QueryUnescape``: ``+`` is a space, a malformed escape is an error."""
    bad = _BAD_ESCAPE.search(text)
    if bad:
        raise ListError(f'invalid URL escape "%{bad.group(1)}"')
    raw = text.replace("+", " ").encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # '%'
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def parse_filter(encoded: str) -> list[dict[str, Any]]:
    """The predicates of a ``filter`` query value, decoded the second time as the server does."""
    if not encoded:
        return []
    try:
        decoded = query_unescape(encoded)
    except ListError as err:
        raise ListError(f"failed to parse valid filter from {encoded!r}: {err}") from err
    for old, new in _LEGACY_KEYS.items():
        decoded = decoded.replace(old, new)
    try:
        data = json.loads(decoded)
    except ValueError as err:
        raise ListError(f"failed to parse valid filter from {encoded!r}: {err}") from err
    if isinstance(data, dict):
        for pred in data.get("predicates") or []:
            if isinstance(pred, dict) and isinstance(pred.get("operation"), int):
                pred["operation"] = _OPERATION_NUMBERS.get(pred["operation"], pred["operation"])
    try:
        model = wire.decode("V2beta1Filter", data)
    except wire.WireError as err:
        raise ListError(f"failed to parse valid filter from {encoded!r}: {err}") from err
    return wire.encode(model, "V2beta1Filter").get("predicates", [])


def _value(pred: dict[str, Any]) -> Any:
    for key in ("string_value", "int_value", "long_value", "timestamp_value"):
        if key in pred:
            return pred[key]
    for key in ("string_values", "int_values", "long_values"):
        if key in pred:
            return pred[key].get("values", [])
    return ""  # protojson left out a zero value ("" or 0)


def _matches(item: dict[str, Any], pred: dict[str, Any], field: str) -> bool:
    op = pred.get("operation", "OPERATION_UNSPECIFIED")
    have, want = item.get(field), _value(pred)
    if op == "IN":
        return str(have) in [str(v) for v in want]
    if op == "IS_SUBSTRING":
        return str(want) in str(have or "")
    if op in ("EQUALS", "NOT_EQUALS"):
        equal = str(have if have is not None else "") == str(want)
        return equal if op == "EQUALS" else not equal
    pairs = {
        "GREATER_THAN": lambda a, b: a > b,
        "GREATER_THAN_EQUALS": lambda a, b: a >= b,
        "LESS_THAN": lambda a, b: a < b,
        "LESS_THAN_EQUALS": lambda a, b: a <= b,
    }
    if op not in pairs:
        raise ListError(f"invalid predicate operation {op!r}")
    return pairs[op](str(have or ""), str(want))


class Listing:
    """What one list endpoint may sort/filter on, and how to page it."""

    def __init__(self, fields: dict[str, str], key_field: str, type_name: str) -> None:
        self.fields = fields  # API name -> item key (both v2beta1 and v1beta1 names)
        self.key_field = key_field
        self.type_name = type_name

    def _sort(self, sort_by: str) -> tuple[str, bool]:
        parts = sort_by.lower().split()
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
            raise ListError(
                f"Received invalid sort by format {sort_by!r}. Supported format: "
                '"field_name", "field_name desc", or "field_name asc"'
            )
        if not parts:
            return "created_at", False
        if parts[0] not in self.fields:
            raise ListError(
                f"Invalid sorting field: {parts[0]!r} on listable type {self.type_name}"
            )
        return self.fields[parts[0]], len(parts) == 2 and parts[1] == "desc"

    def page(
        self,
        items: list[dict[str, Any]],
        query: dict[str, str],
        field: str,
        *,
        view: Callable[[dict[str, Any]], dict[str, Any]] = lambda i: i,
    ) -> dict[str, Any]:
        """One page as the list response's fields (before empty ones are left out)."""
        size_text = query.get("page_size") or "0"
        try:
            size = int(size_text)
        except ValueError as err:
            raise ListError(f"invalid value for int32 type: {size_text!r}") from err
        if size < 0:
            raise ListError(f"The page size should be greater than 0. Got {size}")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        filter_text, sort_by = query.get("filter", ""), query.get("sort_by", "")
        predicates = parse_filter(filter_text)
        sort_field, desc = self._sort(sort_by)
        offset = 0
        if query.get("page_token"):
            token = self._read_token(query["page_token"])
            if (filter_text or sort_by) and (
                token["predicates"] != predicates or token["sort"] != [sort_field, desc]
            ):
                raise ListError(
                    "page token does not match the supplied sort by and/or filtering "
                    "criteria. Either specify the same criteria or leave the latter empty "
                    "if page token is specified"
                )
            predicates, (sort_field, desc), offset = (
                token["predicates"],
                token["sort"],
                token["offset"],
            )
        for pred in predicates:
            key = pred.get("key", "")
            if key not in self.fields:
                raise ListError(f"no support for filtering on key {key!r}")
            items = [i for i in items if _matches(i, pred, self.fields[key])]
        key = self.key_field
        items = sorted(items, key=lambda i: (str(i.get(sort_field, "")), str(i.get(key, ""))))
        if desc:
            items.reverse()
        page = items[offset : offset + size]
        token_out = ""
        if offset + size < len(items):
            token_out = base64.b64encode(
                json.dumps(
                    {
                        "offset": offset + size,
                        "predicates": predicates,
                        "sort": [sort_field, desc],
                    }
                ).encode()
            ).decode()
        return {
            field: [view(i) for i in page],
            "total_size": len(items),
            "next_page_token": token_out,
        }

    @staticmethod
    def _read_token(token: str) -> dict[str, Any]:
        try:
            data = json.loads(base64.b64decode(token.encode(), validate=True))
            return {
                "offset": int(data["offset"]),
                "predicates": list(data["predicates"]),
                "sort": list(data["sort"]),
            }
        except (ValueError, KeyError, TypeError, binascii.Error) as err:
            raise ListError(f"Invalid page token: {err}") from err
