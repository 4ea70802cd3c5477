"""Deploy the KFP-only variant with its recurring run: ``kfp_prediction.deploy`` (the
pipeline and a version per file content), then the experiment and the recurring run.

    python -m benchmarks.kfp_only.deploy --host URL --pipeline-file FILE --pipeline-name NAME
        [--auth none|token|google] [--namespace NS]
        --recurring-run NAME --cron "0 0 21 * * *" --experiment EXP [--param KEY=VALUE ...]
        [--cluster-timezone UTC]

Run from the repository root in the pipeline environment (``.github/workflows/deploy.yml``
does, after a merge). The product's DAG needs no recurring run: Airflow schedules it.

* The recurring run is found by name in the experiment. KFP v2beta1 has no update call for
  recurring runs (``backend/api/v2beta1/recurring_run.proto``: create, get, list, enable,
  disable, delete), so a changed one is deleted with propagation policy ``ORPHAN`` (the
  Argo Workflows of its past and *running* runs are kept instead of being garbage-collected
  with the ScheduledWorkflow) and created again, pinned to the version just uploaded.
* **Cron and time zone.** The cron has six fields, seconds first (robfig/cron v1.2.0, as the
  API server parses it); five fields would mean *second minute hour day month*, so they are
  refused. The API has no time zone per recurring run: the ScheduledWorkflow controller reads
  every cron in its own zone (``CRON_SCHEDULE_TIMEZONE``, ``cronScheduleTimezone: UTC`` on a
  standard install). 06:00 JST daily is therefore ``0 0 21 * * *`` on a UTC cluster; tell
  this command the cluster's zone with ``--cluster-timezone`` and it prints the JST time.
* The cron, the parameters and the zone are checked before anything is sent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kfp_prediction import deploy as upload
from kfp_prediction.deploy import Deployer, DeployError, PipelineFile, equals_filter

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MAX_CONCURRENCY = 1  # one run at a time: runs of a date-keyed job must not overlap
JST = ZoneInfo("Asia/Tokyo")


# -- the recurring run's parameters -------------------------------------------------------------
def parameter_values(file: PipelineFile, pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts as typed root parameter values; every required one present."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise DeployError(f"--param expects KEY=VALUE, got {key or pair!r}")
        if key not in file.inputs:
            raise DeployError(
                f"--param {key}: {file.path.name} has no such root parameter "
                f"(it has {', '.join(sorted(file.inputs)) or 'none'})"
            )
        values[key] = _typed(key, text, file.inputs[key].get("parameterType", "STRING"))
    missing = sorted(
        name
        for name, spec in file.inputs.items()
        if name not in values and "defaultValue" not in spec and not spec.get("isOptional")
    )
    if missing:
        raise DeployError(
            f"the recurring run needs a value for {', '.join(missing)} "
            f"(required root parameters of {file.path.name}): add --param NAME=VALUE"
        )
    return values


def _typed(key: str, text: str, kind: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind == "BOOLEAN":
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if kind in ("LIST", "STRUCT"):
            return json.loads(text)
    except ValueError:
        raise DeployError(f"--param {key}: expected a {kind.lower()} value") from None
    return text


def check_cron(cron: str) -> str:
    """Six fields, seconds first, or a descriptor; the server checks the fields themselves."""
    cron = " ".join(cron.split())
    if cron.startswith("@"):
        if cron in DESCRIPTORS or re.fullmatch(r"@every \S+", cron):
            return cron
        raise DeployError(f"--cron {cron!r}: unknown descriptor (robfig/cron v1: {DESCRIPTORS})")
    fields = cron.split(" ")
    if len(fields) == 5:
        raise DeployError(
            f"--cron {cron!r} has 5 fields: KFP reads them as second minute hour day month "
            "(robfig/cron v1.2.0), i.e. not once a day. Give 6 fields, seconds first: "
            "'0 0 21 * * *' is 06:00 JST on a cluster whose cron time zone is UTC"
        )
    if len(fields) != 6:
        raise DeployError(f"--cron {cron!r}: expected 6 fields (second minute hour dom month dow)")
    return cron


def describe_cron(cron: str, cluster_zone: str) -> str:
    """Where a daily cron falls in JST, when its time fields are plain numbers."""
    fields = cron.split(" ")
    note = f"cron {cron!r} runs in the cluster's time zone ({cluster_zone})"
    if len(fields) == 6 and all(f.isdigit() for f in fields[:3]) and fields[3:] == ["*"] * 3:
        second, minute, hour = (int(f) for f in fields[:3])
        today = dt.datetime.now(ZoneInfo(cluster_zone)).date()
        at = dt.datetime.combine(today, dt.time(hour, minute, second), ZoneInfo(cluster_zone))
        return f"{note}: daily {at:%H:%M:%S} {cluster_zone} = {at.astimezone(JST):%H:%M:%S} JST"
    return note


# -- the deploy steps after the upload ----------------------------------------------------------
class RecurringRunDeployer:
    """The experiment and recurring-run calls, on the upload's client and output."""

    def __init__(self, deployer: Deployer) -> None:
        self.client, self.namespace = deployer.client, deployer.namespace
        self._say = deployer._say

    def experiment(self, name: str) -> str:
        api = self.client.experiments
        found = api.experiment_service_list_experiments(
            namespace=self.namespace, filter=equals_filter("display_name", name), page_size=10
        )
        for experiment in found.experiments or []:
            if experiment.display_name == name:
                self._say(f"experiment {name}: unchanged ({experiment.experiment_id})")
                return experiment.experiment_id
        import kfp_server_api

        body = kfp_server_api.V2beta1Experiment(display_name=name, namespace=self.namespace)
        created = api.experiment_service_create_experiment(experiment=body)
        self._say(f"experiment {name}: created ({created.experiment_id})")
        return created.experiment_id

    def recurring_run(self, want: WantedRecurringRun) -> str:
        api = self.client.recurring_runs
        found = api.recurring_run_service_list_recurring_runs(
            experiment_id=want.experiment_id,
            namespace=self.namespace,
            filter=equals_filter("display_name", want.name),
            page_size=10,
        )
        matches = [r for r in found.recurring_runs or [] if r.display_name == want.name]
        if len(matches) > 1:
            ids = ", ".join(r.recurring_run_id for r in matches)
            raise DeployError(
                f"{len(matches)} recurring runs are named {want.name!r} in the experiment "
                f"({ids}): KFP does not keep names unique; delete all but one and deploy again"
            )
        if not matches:
            created = self._create(want)
            self._say(f"recurring run {want.name}: created ({created})")
            return created
        current = matches[0]
        changed = want.differences(current)
        if not changed:
            self._say(f"recurring run {want.name}: unchanged ({current.recurring_run_id})")
            return current.recurring_run_id
        if changed == ["enabled"]:
            api.recurring_run_service_enable_recurring_run(current.recurring_run_id)
            self._say(f"recurring run {want.name}: updated: enabled ({current.recurring_run_id})")
            return current.recurring_run_id
        # No update call: delete first (keeping its workflows), then create. If this command
        # dies in between, the next deploy finds none and creates it; the other order could
        # leave two schedules firing.
        api.recurring_run_service_delete_recurring_run(
            current.recurring_run_id, propagation_policy="ORPHAN"
        )
        created = self._create(want)
        self._say(
            f"recurring run {want.name}: updated: {', '.join(changed)} "
            f"(replaced {current.recurring_run_id} by {created})"
        )
        return created

    def _create(self, want: WantedRecurringRun) -> str:
        created = self.client.create_recurring_run(
            experiment_id=want.experiment_id,
            job_name=want.name,
            description=want.description,
            cron_expression=want.cron,
            max_concurrency=MAX_CONCURRENCY,
            # Catch-up runs would all take the catch-up moment's date (KFP 2.17 sets the
            # schedule time of a run to its creation): run only the latest missed slot.
            no_catchup=True,
            params=want.parameters,
            pipeline_id=want.pipeline_id,
            version_id=want.version_id,
            enabled=True,
        )
        return created.recurring_run_id


@dataclass(frozen=True)
class WantedRecurringRun:
    name: str
    experiment_id: str
    pipeline_id: str
    version_id: str
    cron: str
    parameters: dict[str, Any]
    description: str = ""

    def differences(self, current: Any) -> list[str]:
        """Names (never values: parameters may hold secrets) of what differs."""
        cron = getattr(getattr(current.trigger, "cron_schedule", None), "cron", None)
        reference = current.pipeline_version_reference
        current_params = (
            current.runtime_config.parameters if current.runtime_config else None
        ) or {}
        checks = {
            "pipeline version": reference is None
            or (reference.pipeline_id, reference.pipeline_version_id)
            != (self.pipeline_id, self.version_id),
            "cron": cron != self.cron or getattr(current.trigger, "periodic_schedule", None),
            "parameters": current_params != self.parameters,
            "max concurrency": str(current.max_concurrency) != str(MAX_CONCURRENCY),
            "catch-up": current.no_catchup is not True,
        }
        changed = [name for name, differs in checks.items() if differs]
        if not changed and current.mode != "ENABLE":
            return ["enabled"]
        return changed


def deploy(args: argparse.Namespace) -> list[str]:
    """The upload, then the experiment and the recurring run. Raises DeployError."""
    file = PipelineFile.read(args.pipeline_file)
    cron = check_cron(args.cron)
    wanted_params = parameter_values(file, args.param)
    try:
        cron_note = describe_cron(cron, args.cluster_timezone)
    except ZoneInfoNotFoundError:
        raise DeployError(f"--cluster-timezone {args.cluster_timezone!r}: unknown zone") from None

    def recurring_run(
        deployer: Deployer, file: PipelineFile, pipeline_id: str, version_id: str
    ) -> Iterator[str]:
        steps = RecurringRunDeployer(deployer)
        yield f"look up or create experiment {args.experiment!r}"
        experiment_id = steps.experiment(args.experiment)
        yield f"create or update recurring run {args.recurring_run!r}"
        steps.recurring_run(
            WantedRecurringRun(
                args.recurring_run,
                experiment_id,
                pipeline_id,
                version_id,
                cron,
                wanted_params,
                f"{args.pipeline_name} {file.version_name}, deployed by benchmarks.kfp_only.deploy",
            )
        )
        deployer._say(cron_note)

    return upload.deploy(args, after_upload=recurring_run)


def parser() -> argparse.ArgumentParser:
    p = upload.parser(
        prog="python -m benchmarks.kfp_only.deploy",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Cron: 6 fields, seconds first, read in the KFP cluster's time zone (UTC on a "
        "standard install; the API has no zone per recurring run): 06:00 JST = '0 0 21 * * *'.",
    )
    p.add_argument("--recurring-run", metavar="NAME", required=True, help="create or update it")
    p.add_argument(
        "--cron", required=True, help="6 fields, seconds first, in the cluster's time zone"
    )
    p.add_argument(
        "--experiment", required=True, help="the recurring run's experiment (created when missing)"
    )
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cluster-timezone", default="UTC", help="for the JST note only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return upload.exit_status(lambda: deploy(args))


if __name__ == "__main__":
    sys.exit(main())
