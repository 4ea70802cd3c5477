"""The registry of prediction workflows: one YAML file per workflow, checked by a schema.

``workflows/`` (beside ``dags/``) holds one ``<name>.yaml`` per workflow and ``teams.yaml``,
the allow-list of KFP connections each team may use. One file per workflow so that a
team owns its files (CODEOWNERS per path) and a bad entry stays confined to its file.
``dags/prediction_workflows.py`` turns every valid entry into one DAG
(:mod:`prediction_app.workflow_dag`); a bad entry becomes one import error naming the
file, the workflow and the field, and the others still load.

Only ``yaml`` and ``pydantic`` are imported here: the dag-processor parses the DAG file
every few seconds. Paths and the warehouse are resolved at parse time (they name where
things are, not when); dates never are, they stay templates rendered when a task runs.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

# The repository root locally; set where prediction_app/ is deployed inside dags/
# (docker-compose.yaml, Cloud Composer) so workflows/, pipelines/ and var/ are found.
PROJECT_ROOT = Path(
    os.environ.get("PREDICTION_PROJECT_ROOT") or Path(__file__).resolve().parent.parent
)
REGISTRY_DIR = PROJECT_ROOT / "workflows"
TEAMS_FILE = "teams.yaml"
# Where the registry lives when it is not the repository's ``workflows/`` (tests, Composer).
REGISTRY_ENV = "PREDICTION_WORKFLOWS_DIR"

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
ConnId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]


def _scalar(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(
        f"got {type(value).__name__}; a parameter is a literal (string, number, true/false), "
        "a '{{ template }}', or a mapping with variable, default, path or from"
    )


# A literal as YAML gives it (str, int, float, bool): checked, kept as it is.
Literal_ = Annotated[Any, AfterValidator(_scalar)]
STEPS = ("features", "predict")
# Kubernetes quantities, as the compile script passes them on (kfp_prediction.compile).
_CPU = r"^\d+(\.\d+)?m?$"
_MEMORY = r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineSource(_Strict):
    """The compiled pipeline: a file (relative to the project, absolute, or ``gs://``), or an
    uploaded pipeline and version. ``variable`` names an Airflow Variable that overrides
    ``file`` at run time (for example a Composer path)."""

    file: str | None = None
    variable: str | None = None
    pipeline_id: str | None = None
    version_id: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PipelineSource:
        if bool(self.file) == bool(self.pipeline_id):
            raise ValueError("give either file (a path or gs://) or pipeline_id (+ version_id)")
        if self.version_id and not self.pipeline_id:
            raise ValueError("version_id needs pipeline_id")
        if self.variable and not self.file:
            raise ValueError("variable overrides file; it needs file as its default")
        return self

    def resolved_file(self) -> str | None:
        """The file's path as the operator gets it (project-relative paths made absolute)."""
        if not self.file:
            return None
        if "://" in self.file or Path(self.file).is_absolute():
            return self.file
        return str(PROJECT_ROOT / self.file)


class Schedule(_Strict):
    cron: str
    timezone: str
    start_date: date = date(2026, 1, 1)
    catchup: bool = False
    max_active_runs: int = Field(default=4, ge=1, le=64)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter  # Airflow's own cron parser; light

        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r} (five fields, e.g. '0 6 * * *')")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_zone(value)


class TargetDateRule(_Strict):
    """Which business partition a run is for: the date of its logical date in the business
    time zone. ``daily`` only: the pipeline writes one partition per YYYY-MM-DD date (its
    ``target_date`` parameter), so another partitioning is refused here, not on every run."""

    timezone: str
    partition: Literal["daily"] = "daily"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_zone(value)


class ParameterSource(_Strict):
    """A parameter that is not a plain literal or template.

    ``variable``: an Airflow Variable read at run time, with ``default`` (a literal) or
    ``path`` (a project-relative path) when unset. ``path`` alone: the absolute path.
    ``from: warehouse``: the workflow's warehouse (``output.warehouse``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    variable: str | None = None
    default: Literal_ | None = None
    path: str | None = None
    from_: Literal["warehouse"] | None = Field(default=None, alias="from")

    @model_validator(mode="after")
    def _one_default(self) -> ParameterSource:
        given = [k for k in ("default", "path", "from_") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError("give at most one of default, path, from")
        if self.from_ and self.variable:
            raise ValueError("from: warehouse is read at parse time; it takes no variable")
        if not given and not self.variable:
            raise ValueError("give variable, path or from")
        return self


def _parameter_kind(value: Any) -> str:
    return "ParameterSource" if isinstance(value, (Mapping, ParameterSource)) else "Literal"


# A mapping is a ParameterSource, anything else a literal: one error per bad value, not one
# per member of a union.
ParameterValue = Annotated[
    Annotated[Literal_, Tag("Literal")] | Annotated[ParameterSource, Tag("ParameterSource")],
    Discriminator(_parameter_kind),
]


class Warehouse(_Strict):
    """Where the pipeline reads and writes: ``env`` names an environment setting read at
    parse time (the task declares its tables as Assets); ``default`` when it is unset."""

    env: str | None = None
    default: str = "var/warehouse"

    def resolved(self) -> str:
        value = (os.environ.get(self.env) if self.env else None) or self.default
        if "://" in value or Path(value).is_absolute():
            return value
        return str(PROJECT_ROOT / value)


class Checks(_Strict):
    """Data-quality checks on the partition the run wrote, read where it landed (the
    report names it; ``prediction_app.partition_check`` reads it). Always checked: not
    empty, as many rows as reported, the task's model digest, the run's own run id.

    ``min_rows`` is also the pipeline's ``min_rows`` parameter (``ROW_FLOOR_PARAMETER``):
    the features and predict steps refuse to publish fewer rows, so a short re-run or
    backfill keeps the date's previous partitions; the gate then verifies what landed.
    ``gcp_conn_id``: the Google connection that queries a BigQuery partition."""

    min_rows: int | None = Field(default=None, ge=0)
    gcp_conn_id: ConnId = "google_cloud_default"


class Output(_Strict):
    warehouse: Warehouse = Warehouse()
    table: Name
    inputs: list[Name] = []
    checks: Checks = Checks()


class StepResources(_Strict):
    node_selector: dict[str, str] = {}
    cpu_request: Annotated[str, StringConstraints(pattern=_CPU)] | None = None
    cpu_limit: Annotated[str, StringConstraints(pattern=_CPU)] | None = None
    memory_request: Annotated[str, StringConstraints(pattern=_MEMORY)] | None = None
    memory_limit: Annotated[str, StringConstraints(pattern=_MEMORY)] | None = None


class Placement(_Strict):
    """Node pool and resources, compiled into the pipeline (``kfp_prediction.compile``)."""

    node_selector: dict[str, str] = {}
    steps: dict[Literal["features", "predict"], StepResources] = {}


class Identity(_Strict):
    kfp_conn_id: ConnId = "kfp_default"
    service_account: str | None = None


class Slack(_Strict):
    """The Slack incoming-webhook connection failures go to; a webhook posts to the one
    channel it was created for, so the connection is the channel."""

    conn_id: ConnId = "slack_default"


class Operations(_Strict):
    retries: int = Field(default=3, ge=0, le=20)
    retry_delay_seconds: float = Field(default=300, gt=0)
    max_retry_delay_seconds: float = Field(default=3600, gt=0)
    execution_timeout_minutes: float = Field(default=180, gt=0)
    dagrun_timeout_minutes: float = Field(default=360, gt=0)
    # Slack alert when a run is not done this long after it was queued; None: no alert.
    deadline_minutes: float | None = Field(default=None, gt=0)
    poll_seconds: float = Field(default=30, gt=0)


class Workflow(_Strict):
    """One registry entry; becomes one DAG whose id is ``name``."""

    name: Name
    owner: str
    team: Name
    description: str
    doc_md: str | None = None
    tags: list[str] = []
    pipeline: PipelineSource
    schedule: Schedule
    target_date: TargetDateRule
    parameters: dict[Name, ParameterValue]
    identity: Identity = Identity()
    placement: Placement = Placement()
    output: Output
    slack: Slack = Slack()
    operations: Operations = Operations()

    def run_parameters(self) -> dict[str, ParameterValue]:
        """The pipeline parameters the task passes: ``parameters``, plus the row floor
        (``output.checks.min_rows``) when the entry sets one."""
        floor = self.output.checks.min_rows
        if floor is None:
            return dict(self.parameters)
        return {**self.parameters, ROW_FLOOR_PARAMETER: floor}

    @property
    def env_prefix(self) -> str:
        """Environment overrides of operational settings: ``<NAME>_POLL_SECONDS`` etc."""
        return self.name.upper()

    def operations_from_env(self) -> Operations:
        """:attr:`operations` with the environment's overrides (what ``make demo`` shortens)."""
        changes: dict[str, float] = {}
        for env, key, scale in (
            ("RETRY_DELAY_SECONDS", "retry_delay_seconds", 1.0),
            ("POLL_SECONDS", "poll_seconds", 1.0),
            ("DEADLINE_HOURS", "deadline_minutes", 60.0),
        ):
            value = os.environ.get(f"{self.env_prefix}_{env}")
            if value:
                changes[key] = float(value) * scale
        return self.operations.model_copy(update=changes)

    def node_selectors(self) -> dict[str, dict[str, str]]:
        """Each step's node selector labels, as compiled into the pipeline's platform spec."""
        return {
            step: {
                **self.placement.node_selector,
                **self.placement.steps.get(step, StepResources()).node_selector,
            }
            for step in STEPS
        }

    def compile_args(self) -> list[str]:
        """The ``python -m kfp_prediction.compile`` flags that put this workflow's steps on
        its node pool with its resources, into the folder of ``pipeline.file``."""
        args: list[str] = []
        if self.pipeline.file and "://" not in self.pipeline.file:
            args += ["--output-dir", str(Path(self.pipeline.file).parent)]
        for key, value in self.placement.node_selector.items():
            args += ["--node-selector", f"{key}={value}"]
        for step, res in self.placement.steps.items():
            for key, value in res.node_selector.items():
                args += ["--node-selector", f"{step}={key}={value}"]
            for flag in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
                if getattr(res, flag):
                    args += [f"--{flag.replace('_', '-')}", f"{step}={getattr(res, flag)}"]
        return args


class TeamAccess(_Strict):
    kfp_conn_ids: list[ConnId]


class Teams(_Strict):
    """``teams.yaml``: which KFP connections (identities) each team's workflows may use."""

    teams: dict[Name, TeamAccess]


def _check_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Tokyo)") from None
    return value


class WorkflowError(ValueError):
    """A registry entry that cannot become a DAG; the message names file, workflow and field."""


@dataclass
class Registry:
    """What the registry directory holds: the valid workflows and one message per bad file."""

    directory: Path
    workflows: list[tuple[Path, Workflow]] = field(default_factory=list)
    errors: dict[Path, str] = field(default_factory=dict)

    def error_message(self) -> str:
        """One message for all bad entries (Airflow keeps one import error per DAG file)."""
        return "\n\n".join(self.errors[path] for path in sorted(self.errors))


def registry_dir() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or REGISTRY_DIR)


def load_registry(directory: str | os.PathLike[str] | None = None) -> Registry:
    """Every ``*.yaml`` of ``directory`` but ``teams.yaml``, validated; bad files isolated."""
    directory = Path(directory) if directory is not None else registry_dir()
    registry = Registry(directory=directory)
    teams: Teams | None = None
    teams_path = directory / TEAMS_FILE
    try:
        teams = Teams.model_validate(_read_yaml(teams_path))
    except FileNotFoundError:
        registry.errors[teams_path] = f"{teams_path}: missing (the teams' connection allow-list)"
    except (ValidationError, yaml.YAMLError, WorkflowError) as exc:
        registry.errors[teams_path] = _describe(teams_path, None, exc)
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == TEAMS_FILE:
            continue
        try:
            workflow = load_workflow(path, teams)
            if workflow.name in seen:
                raise WorkflowError(
                    f"{path}: workflow {workflow.name!r}: name: "
                    f"already used by {seen[workflow.name]}"
                )
        except WorkflowError as exc:
            registry.errors[path] = str(exc)
            continue
        seen[workflow.name] = path
        registry.workflows.append((path, workflow))
    return registry


def load_workflow(path: Path, teams: Teams | None) -> Workflow:
    """One file: schema, file name == workflow name, team's connection, pipeline inputs."""
    raw: Any = None
    try:
        raw = _read_yaml(path)
        workflow = Workflow.model_validate(raw)
    except (ValidationError, yaml.YAMLError, WorkflowError) as exc:
        name = raw.get("name") if isinstance(raw, Mapping) else None
        raise WorkflowError(_describe(path, name, exc)) from None
    where = f"{path}: workflow {workflow.name!r}"
    if path.stem != workflow.name:
        raise WorkflowError(f"{where}: name: must equal the file name ({path.stem!r})")
    if teams is None:
        raise WorkflowError(f"{where}: team: the teams' allow-list ({TEAMS_FILE}) is invalid")
    access = teams.teams.get(workflow.team)
    if access is None:
        raise WorkflowError(
            f"{where}: team: {workflow.team!r} is not in {TEAMS_FILE}; "
            f"allowed: {', '.join(sorted(teams.teams))}"
        )
    if workflow.identity.kfp_conn_id not in access.kfp_conn_ids:
        raise WorkflowError(
            f"{where}: identity.kfp_conn_id: team {workflow.team!r} may not use "
            f"{workflow.identity.kfp_conn_id!r}; allowed: {', '.join(access.kfp_conn_ids)}"
        )
    if ROW_FLOOR_PARAMETER in workflow.parameters:
        raise WorkflowError(
            f"{where}: parameters.{ROW_FLOOR_PARAMETER}: set output.checks."
            f"{ROW_FLOOR_PARAMETER} instead (the pipeline's row floor and the gate's, one value)"
        )
    _check_compiled_pipeline(workflow, where)
    return workflow


def _check_compiled_pipeline(workflow: Workflow, where: str) -> None:
    """Parameters against the compiled pipeline's inputs, and its node selectors against the
    placement, when its file is local and readable (``gs://``, uploaded pipelines and a
    Variable's file are checked by the operator before it submits)."""
    local = workflow.pipeline.resolved_file()
    if not local or "://" in local or not os.path.isfile(local):
        return
    from kfp_bridge.pipeline_spec import coerce_value  # no kfp SDK

    try:
        compiled = _compiled(local)
    except (ValueError, OSError, yaml.YAMLError) as exc:
        raise WorkflowError(f"{where}: pipeline.file: {exc}") from None
    declared = set(compiled.parameters)
    unknown = sorted(set(workflow.parameters) - declared)
    if unknown:
        allowed = declared - {ROW_FLOOR_PARAMETER}  # given as output.checks.min_rows
        raise WorkflowError(
            f"{where}: parameters.{unknown[0]}: not an input of {local}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    if workflow.output.checks.min_rows is not None and ROW_FLOOR_PARAMETER not in declared:
        raise WorkflowError(
            f"{where}: output.checks.{ROW_FLOOR_PARAMETER}: {local} has no "
            f"{ROW_FLOOR_PARAMETER} input, so its steps would publish a partition below "
            "the floor; recompile it (make compile)"
        )
    missing = sorted(set(compiled.required_parameters) - set(workflow.parameters))
    if missing:
        raise WorkflowError(f"{where}: parameters.{missing[0]}: required by {local} and not given")
    literals = {
        k: v
        for k, v in workflow.parameters.items()
        if not isinstance(v, ParameterSource) and not (isinstance(v, str) and "{{" in v)
    }
    for key, value in literals.items():
        try:
            coerce_value(compiled.parameters[key], value)
        except ValueError as exc:
            raise WorkflowError(f"{where}: parameters.{key}: {exc}") from None
    _check_output_table(workflow, compiled, where, local)
    executors = (
        (((compiled.platform_spec or {}).get("platforms") or {}).get("kubernetes") or {})
        .get("deploymentSpec", {})
        .get("executors", {})
    )
    for step, wanted in workflow.node_selectors().items():
        have = executors.get(f"exec-{step}", {}).get("nodeSelector", {}).get("labels", {})
        if have != wanted:
            raise WorkflowError(
                f"{where}: placement: {local} puts step {step!r} on node selector {have}, "
                f"the entry says {wanted}; compile it with: {shell_compile_command(workflow)}"
            )


# The pipeline input that names its output table (kfp_prediction.parameters): where the run
# writes must be the table the task declares as its Asset and the page shows.
OUTPUT_TABLE_PARAMETER = "predictions_table"
# The pipeline input below which the pipeline publishes nothing (output.checks.min_rows).
ROW_FLOOR_PARAMETER = "min_rows"


def _check_output_table(workflow: Workflow, compiled: Any, where: str, local: str) -> None:
    """``output.table`` is the table the pipeline writes (its ``predictions_table``)."""
    spec = compiled.parameters.get(OUTPUT_TABLE_PARAMETER)
    if spec is None:
        return
    value = workflow.parameters.get(OUTPUT_TABLE_PARAMETER, spec.default)
    if isinstance(value, ParameterSource) or (isinstance(value, str) and "{{" in value):
        raise WorkflowError(
            f"{where}: parameters.{OUTPUT_TABLE_PARAMETER}: must be a literal table name "
            f"(the output table {workflow.output.table!r} is declared at parse time)"
        )
    if value != workflow.output.table:
        raise WorkflowError(
            f"{where}: output.table: {workflow.output.table!r}, but {local} writes "
            f"{value!r}; set parameters.{OUTPUT_TABLE_PARAMETER}: {workflow.output.table}"
        )


# libyaml's loader when PyYAML has it: a compiled pipeline is ~1,000 lines, and 50 workflows
# sharing one file are one read (bench_dag_parse.py --workflows 50).
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_COMPILED: dict[tuple[str, int, int], Any] = {}


def _compiled(path: str) -> Any:
    """The compiled pipeline at ``path`` as the provider reads it, parsed once per version."""
    from kfp_bridge.pipeline_spec import pipeline_from_spec

    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _COMPILED:
        with open(path, encoding="utf-8") as f:
            documents = [d for d in yaml.load_all(f, Loader=_Loader) if d is not None]
        if not documents or len(documents) > 2:
            raise ValueError(f"{path}: not a compiled KFP pipeline ({len(documents)} documents)")
        platform = documents[1] if len(documents) == 2 else None
        _COMPILED[key] = pipeline_from_spec(
            {"pipeline_spec": documents[0], "platform_spec": platform}, source=path
        )
    return _COMPILED[key]


def _read_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=_Loader)
    if not isinstance(data, Mapping):
        raise WorkflowError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data


_ALLOWED = re.compile(r"Input should be (.*)")


def _describe(path: Path, name: Any, exc: Exception) -> str:
    """pydantic's errors, one line each: ``FILE: workflow 'NAME': FIELD: what, allowed``."""
    where = f"{path}: workflow {name!r}" if name else str(path)
    if isinstance(exc, WorkflowError):
        return str(exc)
    if isinstance(exc, yaml.YAMLError):
        return f"{where}: not valid YAML: {exc}"
    assert isinstance(exc, ValidationError)
    lines = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in error["loc"] if not _is_union_tag(p)) or "(top)"
        msg = error["msg"]
        if error["type"] == "extra_forbidden":
            msg = "unknown field" + _fields_hint(exc.title, error["loc"])
        elif error["type"] == "missing":
            msg = "required field missing"
        elif (m := _ALLOWED.match(msg)) and error["type"] == "literal_error":
            msg = f"{error['input']!r} is not allowed; allowed: {m.group(1)}"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{where}: {loc}: {msg}")
    return "\n".join(_dedupe(lines))


def _is_union_tag(part: Any) -> bool:
    """pydantic names union members in locations (``Literal``, ``ParameterSource``): drop
    them (field and parameter names are lower case)."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part)


def _fields_hint(model_name: str, loc: tuple[Any, ...]) -> str:
    """The allowed field names at ``loc``'s parent, for an unknown field."""
    model: Any = {"Workflow": Workflow, "Teams": Teams}.get(model_name)
    parts = [p for p in loc[:-1] if not _is_union_tag(p)]
    while parts and model is not None:
        part = parts.pop(0)
        info = model.model_fields.get(part)
        if info is None:
            return ""
        mapped = _MAPPING_VALUES.get((model, part))
        if mapped is not None:  # a mapping of names to models: skip the name
            if not parts:
                return ""
            parts.pop(0)
            model = mapped
            continue
        annotation = info.annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_model else None
    if model is None:
        return ""
    names = [info.alias or key for key, info in model.model_fields.items()]
    return f"; allowed: {', '.join(names)}"


_MAPPING_VALUES: dict[tuple[type[BaseModel], str], type[BaseModel]] = {
    (Workflow, "parameters"): ParameterSource,
    (Placement, "steps"): StepResources,
    (Teams, "teams"): TeamAccess,
}


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def shell_compile_command(workflow: Workflow) -> str:
    """The compile command for this workflow, as the how-to shows it."""
    return shlex.join(
        [".venv-pipeline/bin/python", "-m", "kfp_prediction.compile", *workflow.compile_args()]
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m prediction_app.registry check|compile-command NAME``: CI and the how-to."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m prediction_app.registry")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate every entry; exit 1 listing the bad ones")
    show = sub.add_parser("compile-command", help="the compile command of one workflow")
    show.add_argument("name")
    args = parser.parse_args(argv)
    registry = load_registry()
    if args.command == "check":
        for _, workflow in registry.workflows:
            print(f"ok {workflow.name}")
        if registry.errors:
            print(registry.error_message(), file=sys.stderr)
            return 1
        return 0
    for _, workflow in registry.workflows:
        if workflow.name == args.name:
            print(shell_compile_command(workflow))
            return 0
    print(registry.error_message() or f"no workflow {args.name!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
