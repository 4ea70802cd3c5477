"""Read a compiled KFP v2 pipeline (YAML) as data and check run parameters against it.

The Airflow side never imports the ``kfp`` SDK, so this module is the only place
that knows the compiled format: the first YAML document is the PipelineSpec, an
optional second document is the kfp-kubernetes platform spec.

Parameter values usually come out of Jinja templates as strings, so validation
coerces them *explicitly* by the declared type and rejects what does not fit:

- ``NUMBER_INTEGER``: int, an integral float, or a string such as ``"28"``;
- ``NUMBER_DOUBLE``: int, float, or a numeric string such as ``"0.5"``;
- ``BOOLEAN``: bool, or the strings ``"true"``/``"false"`` (any case);
- ``LIST`` / ``STRUCT``: list / dict, or a JSON string that parses to one;
- ``STRING``: str only (a number for a string input is a mistake worth seeing).

``None`` counts as "not given": an optional input then takes its compiled default.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kfp_bridge.exceptions import ParameterError, PipelineSpecError

PARAMETER_TYPES = ("STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT")

_INT_RE = re.compile(r"^[+-]?\d+$")
_TRUE = {"true"}
_FALSE = {"false"}


@dataclass(frozen=True)
class InputParameter:
    """One root input parameter of a compiled pipeline."""

    name: str
    parameter_type: str
    default: Any = None
    is_optional: bool = False
    description: str | None = None

    @property
    def required(self) -> bool:
        return not self.is_optional


@dataclass(frozen=True)
class CompiledPipeline:
    """A compiled pipeline file, loaded as plain data."""

    pipeline_spec: dict[str, Any]
    platform_spec: dict[str, Any] | None = None
    path: str | None = None
    parameters: dict[str, InputParameter] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.pipeline_spec.get("pipelineInfo", {}).get("name", ""))

    @property
    def required_parameters(self) -> list[str]:
        return [p.name for p in self.parameters.values() if p.required]

    def validate_parameters(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Return ``params`` coerced to the declared types, or raise ``ParameterError``.

        Every problem is reported in one error (unknown names, missing required
        inputs, wrong types), each naming its parameter. Inputs left out (or
        ``None``) are omitted from the result so the service applies the defaults.
        """
        params = dict(params or {})
        problems: list[str] = []
        coerced: dict[str, Any] = {}
        for name, value in params.items():
            spec = self.parameters.get(name)
            if spec is None:
                known = ", ".join(sorted(self.parameters)) or "none"
                problems.append(
                    f"unknown parameter {name!r} (pipeline {self.name!r} accepts: {known})"
                )
                continue
            if value is None:
                continue
            try:
                coerced[name] = coerce_value(spec, value)
            except ValueError as exc:
                problems.append(str(exc))
        for spec in self.parameters.values():
            if spec.required and params.get(spec.name) is None:
                problems.append(f"missing required parameter {spec.name!r} ({spec.parameter_type})")
        if problems:
            raise ParameterError("; ".join(problems))
        return coerced


def coerce_value(spec: InputParameter, value: Any) -> Any:
    """Coerce one value to ``spec``'s type; ``ValueError`` naming the parameter if it cannot."""
    ptype = spec.parameter_type

    def wrong(expected: str) -> ValueError:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return ValueError(
            f"parameter {spec.name!r} expects {ptype} ({expected}), "
            f"got {shown} ({type(value).__name__})"
        )

    if ptype == "STRING":
        if isinstance(value, str):
            return value
        raise wrong("a string")
    if ptype == "NUMBER_INTEGER":
        if isinstance(value, bool):
            raise wrong("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT_RE.match(value.strip()):
            return int(value.strip())
        raise wrong("an integer")
    if ptype == "NUMBER_DOUBLE":
        if isinstance(value, bool):
            raise wrong("a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise wrong("a number") from None
            if math.isfinite(number):
                return number
        raise wrong("a finite number")
    if ptype == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise wrong('true/false or "true"/"false"')
    if ptype in ("LIST", "STRUCT"):
        container, expected = (list, "a list") if ptype == "LIST" else (dict, "a mapping")
        if isinstance(value, tuple) and ptype == "LIST":
            return list(value)
        if isinstance(value, str):
            try:
                value_parsed = json.loads(value)
            except ValueError:
                raise wrong(f"{expected} or its JSON text") from None
            if isinstance(value_parsed, container):
                return value_parsed
            raise wrong(f"{expected} or its JSON text")
        if isinstance(value, container):
            return value
        if ptype == "STRUCT" and isinstance(value, Mapping):
            return dict(value)
        raise wrong(expected)
    raise ValueError(f"parameter {spec.name!r} has unsupported type {ptype!r} in the pipeline")


def load_pipeline(path: str | os.PathLike[str]) -> CompiledPipeline:
    """Load a compiled pipeline file; ``PipelineSpecError`` when it is missing or not KFP v2."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineSpecError(f"compiled pipeline file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineSpecError(f"cannot read compiled pipeline file {file}: {exc}") from exc
    return parse_pipeline(text, source=str(file))


def parse_pipeline(text: str, *, source: str = "<string>") -> CompiledPipeline:
    """Parse compiled pipeline YAML text (see ``load_pipeline``)."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise PipelineSpecError(f"{source} is not valid YAML: {exc}") from exc
    if not documents:
        raise PipelineSpecError(f"{source} is empty")
    if len(documents) > 2:
        raise PipelineSpecError(
            f"{source} has {len(documents)} YAML documents; a compiled KFP v2 pipeline has "
            "a PipelineSpec and at most one platform spec"
        )
    spec = documents[0]
    _check_pipeline_spec(spec, source)
    platform = documents[1] if len(documents) == 2 else None
    if platform is not None and not (isinstance(platform, dict) and "platforms" in platform):
        raise PipelineSpecError(
            f"{source}: the second YAML document is not a KFP platform spec (no 'platforms' key)"
        )
    return CompiledPipeline(
        pipeline_spec=spec,
        platform_spec=platform,
        path=None if source == "<string>" else source,
        parameters=_root_parameters(spec, source),
    )


def pipeline_from_spec(spec: Any, *, source: str) -> CompiledPipeline:
    """A pipeline spec the service holds (a pipeline version's ``pipeline_spec``), as data.

    The KFP API returns a two-document upload as ``{"pipeline_spec", "platform_spec"}``.
    """
    platform = None
    if isinstance(spec, dict) and "pipeline_spec" in spec:
        spec, platform = spec["pipeline_spec"], spec.get("platform_spec")
    _check_pipeline_spec(spec, source)
    return CompiledPipeline(
        pipeline_spec=spec, platform_spec=platform, parameters=_root_parameters(spec, source)
    )


def _check_pipeline_spec(spec: Any, source: str) -> None:
    if not isinstance(spec, dict):
        raise PipelineSpecError(f"{source} is not a KFP pipeline (top level is not a mapping)")
    if spec.get("kind") == "Workflow" or "apiVersion" in spec:
        raise PipelineSpecError(
            f"{source} looks like an Argo workflow / KFP v1 package; "
            "compile the pipeline with kfp>=2 (PipelineSpec YAML)"
        )
    missing = [key for key in ("pipelineInfo", "root", "schemaVersion") if key not in spec]
    if missing:
        raise PipelineSpecError(
            f"{source} is not a compiled KFP v2 pipeline (missing {', '.join(missing)})"
        )
    if not str(spec["schemaVersion"]).startswith("2."):
        raise PipelineSpecError(
            f"{source} has schemaVersion {spec['schemaVersion']!r}; only KFP v2 (2.x) is supported"
        )


def _root_parameters(spec: dict[str, Any], source: str) -> dict[str, InputParameter]:
    definitions = (spec.get("root") or {}).get("inputDefinitions") or {}
    raw = definitions.get("parameters") or {}
    if not isinstance(raw, dict):
        raise PipelineSpecError(f"{source}: root.inputDefinitions.parameters is not a mapping")
    parameters: dict[str, InputParameter] = {}
    for name, entry in raw.items():
        entry = entry or {}
        ptype = entry.get("parameterType")
        if ptype not in PARAMETER_TYPES:
            raise PipelineSpecError(
                f"{source}: input parameter {name!r} has unknown parameterType {ptype!r}"
            )
        default = entry.get("defaultValue")
        if ptype == "NUMBER_INTEGER" and isinstance(default, float) and default.is_integer():
            default = int(default)  # the compiler writes integer defaults as 1.0
        parameters[name] = InputParameter(
            name=name,
            parameter_type=ptype,
            default=default,
            is_optional=bool(entry.get("isOptional", False)) or "defaultValue" in entry,
            description=entry.get("description"),
        )
    return parameters
