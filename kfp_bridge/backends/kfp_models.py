"""The KFP API's JSON turned into ``kfp_server_api`` models at a poll's cost, not a build's.

The generated ``ApiClient`` builds every nested model with a fresh ``Configuration``,
whose constructor sets logger levels; each ``setLevel`` clears the cache of every
logger in the process, and an Airflow triggerer holds hundreds. With timestamps
parsed by ``dateutil``, that made most of a poll's CPU: reading one run of the
two-step pipeline built 16 configurations. :class:`ApiClient` decodes
the same JSON into the same model classes with one shared configuration (so the
generated client-side validation still applies) and ISO timestamps parsed by the
standard library. A trigger polling 1,000 runs is what this is for.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import dateutil.parser
import kfp_server_api

_LIST = re.compile(r"^list\[(.*)\]$")
_DICT = re.compile(r"^dict\(([^,]*), (.*)\)$")
_NATIVE: dict[str, type] = {
    "int": int,
    "long": int,
    "float": float,
    "str": str,
    "bool": bool,
    "object": object,
}


def parse_timestamp(text: str) -> datetime.datetime:
    """An RFC 3339 timestamp (``...Z``, up to nanoseconds) as an aware datetime."""
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return dateutil.parser.isoparse(text)


class ApiClient(kfp_server_api.ApiClient):
    """The generated client with a decoder that shares one ``Configuration``."""

    def deserialize(self, response: Any, response_type: Any) -> Any:
        if response_type == "file" or not isinstance(response_type, str):
            return super().deserialize(response, response_type)
        try:
            data = json.loads(response.data)
        except ValueError:
            return response.data
        return self.decode(data, response_type)

    def decode(self, data: Any, type_name: str) -> Any:
        """``data`` (parsed JSON) as the generated type named ``type_name``."""
        if data is None:
            return None
        if match := _LIST.match(type_name):
            return [self.decode(item, match.group(1)) for item in data]
        if match := _DICT.match(type_name):
            return {key: self.decode(value, match.group(2)) for key, value in data.items()}
        if type_name == "datetime":
            return parse_timestamp(data)
        if type_name == "date":
            return parse_timestamp(data).date()
        native = _NATIVE.get(type_name)
        if native is object:
            return data
        if native is not None:
            try:
                return native(data)
            except (TypeError, ValueError):
                return data
        klass = getattr(kfp_server_api.models, type_name)
        if not klass.openapi_types or not isinstance(data, dict):
            return data
        kwargs = {
            attr: self.decode(data[key], attr_type)
            for attr, attr_type in klass.openapi_types.items()
            if (key := klass.attribute_map[attr]) in data
        }
        return klass(local_vars_configuration=self.configuration, **kwargs)
