"""Deploy a compiled pipeline to a KFP API: the pipeline, a version per file content, and
(for the KFP-only variant) its recurring run.

    python -m kfp_prediction.deploy --host URL --pipeline-file FILE --pipeline-name NAME
        [--auth none|token|google] [--namespace NS]
        [--recurring-run NAME --cron "0 0 21 * * *" --experiment EXP [--param KEY=VALUE ...]
         [--cluster-timezone UTC]]

* The pipeline is created when missing; the version is named after the file's content
  (``sha256-`` and the first 12 hex digits of its SHA-256), so deploying the same file twice
  uploads nothing the second time.
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
* ``--auth token`` reads the bearer token from ``KFP_TOKEN`` (never from the command line,
  which ``ps`` and CI logs show); ``--auth google`` uses Application Default Credentials.
* Prints one line per object (``created``, ``updated`` or ``unchanged``); a bad host, refused
  credentials or a malformed file end it with a message naming the problem and a non-zero
  exit status, the file and the arguments checked before anything is sent.

It uses the real ``kfp.Client`` (kfp 2.17) and so runs in the pipeline environment: the
Airflow side must not import the kfp SDK, and deploying is the pipeline side's job anyway.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

TOKEN_ENV = "KFP_TOKEN"
GOOGLE_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MAX_CONCURRENCY = 1  # one run at a time: runs of a date-keyed job must not overlap
TIMEOUT_SECONDS = 15
JST = ZoneInfo("Asia/Tokyo")


class DeployError(Exception):
    """A problem the user must fix; the message names it."""


# -- the compiled file ------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineFile:
    path: Path
    sha256: str
    name: str  # pipelineInfo.name
    description: str
    inputs: dict[str, dict[str, Any]]  # root inputDefinitions.parameters

    @property
    def version_name(self) -> str:
        return f"sha256-{self.sha256[:12]}"

    @classmethod
    def read(cls, path: str | Path) -> PipelineFile:
        path = Path(path)
        if path.suffix not in (".yaml", ".yml"):
            raise DeployError(f"pipeline file {path} is not a compiled .yaml pipeline")
        try:
            raw = path.read_bytes()
            docs = [d for d in yaml.safe_load_all(raw.decode("utf-8")) if d is not None]
        except OSError as exc:
            raise DeployError(f"cannot read pipeline file {path}: {exc.strerror}") from None
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise DeployError(f"pipeline file {path} is not valid YAML: {exc}") from None
        spec = docs[0] if docs else None
        if not isinstance(spec, dict) or not all(
            isinstance(spec.get(k), dict) for k in ("pipelineInfo", "root", "deploymentSpec")
        ):
            raise DeployError(
                f"pipeline file {path} is not a compiled KFP pipeline "
                "(no pipelineInfo, root and deploymentSpec in its first YAML document)"
            )
        info = spec["pipelineInfo"]
        inputs = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        return cls(
            path,
            hashlib.sha256(raw).hexdigest(),
            str(info.get("name", "")),
            str(info.get("description", "")),
            inputs if isinstance(inputs, dict) else {},
        )

    def parameter_values(self, pairs: Sequence[str]) -> dict[str, Any]:
        """``KEY=VALUE`` texts as typed root parameter values; every required one present."""
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            if not sep or not key:
                raise DeployError(f"--param expects KEY=VALUE, got {key or pair!r}")
            if key not in self.inputs:
                raise DeployError(
                    f"--param {key}: {self.path.name} has no such root parameter "
                    f"(it has {', '.join(sorted(self.inputs)) or 'none'})"
                )
            values[key] = _typed(key, text, self.inputs[key].get("parameterType", "STRING"))
        missing = sorted(
            name
            for name, spec in self.inputs.items()
            if name not in values and "defaultValue" not in spec and not spec.get("isOptional")
        )
        if missing:
            raise DeployError(
                f"the recurring run needs a value for {', '.join(missing)} "
                f"(required root parameters of {self.path.name}): add --param NAME=VALUE"
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


# -- cron ---------------------------------------------------------------------------------------
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


# -- credentials and reachability ----------------------------------------------------------------
def bearer_token(auth: str) -> str | None:
    if auth == "none":
        return None
    if auth == "token":
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise DeployError(
                f"--auth token reads the bearer token from ${TOKEN_ENV}, which is empty"
            )
        return token
    import google.auth
    import google.auth.transport.requests
    from google.auth import exceptions as google_errors

    try:
        credentials, _ = google.auth.default(scopes=list(GOOGLE_SCOPES))
        credentials.refresh(google.auth.transport.requests.Request())
    except google_errors.GoogleAuthError as exc:
        raise DeployError(
            f"--auth google: no usable Application Default Credentials: {exc}"
        ) from None
    return credentials.token


def check_host(host: str, token: str | None) -> None:
    """One GET of the healthz endpoint, without kfp.Client's five retries 5 s apart."""
    request = urllib.request.Request(f"{host.rstrip('/')}/apis/v2beta1/healthz")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise DeployError(
                f"the KFP API at {host} refused the credentials (HTTP {exc.code}); "
                "check --auth and the token or service account"
            ) from None
        raise DeployError(
            f"{host} is not a KFP API (HTTP {exc.code} for /apis/v2beta1/healthz; KFP < 2.0 "
            "has no v2beta1 API)"
        ) from None
    except urllib.error.URLError as exc:
        raise DeployError(f"cannot reach the KFP API at {host}: {exc.reason}") from None
    except TimeoutError:
        raise DeployError(
            f"the KFP API at {host} did not answer within {TIMEOUT_SECONDS} s"
        ) from None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise DeployError(
            f"{host} did not answer like a KFP API (its healthz is not a JSON object: a login "
            "page of an authenticating proxy? then --auth google or --auth token)"
        )


def connect(host: str, token: str | None, namespace: str | None) -> Any:
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
        return kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")


def _filter(key: str, value: str) -> str:
    """A filter that survives the API server's second URL decode (``parseAPIFilter``)."""
    text = json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})
    return quote(text, safe="")


# -- the deploy steps --------------------------------------------------------------------------
class Deployer:
    """The calls of one deploy, each named for the error message if it fails."""

    def __init__(self, client: Any, namespace: str | None) -> None:
        self.client, self.namespace = client, namespace or ""
        self.lines: list[str] = []

    def _say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def pipeline(self, name: str, description: str) -> str:
        api = self.client.pipelines
        found = api.pipeline_service_list_pipelines(
            namespace=self.namespace, filter=_filter("name", name), page_size=10
        )
        matches = [p for p in found.pipelines or [] if p.name == name]
        if matches:
            self._say(f"pipeline {name}: unchanged ({matches[0].pipeline_id})")
            return matches[0].pipeline_id
        import kfp_server_api

        body = kfp_server_api.V2beta1Pipeline(
            name=name, display_name=name, description=description, namespace=self.namespace
        )
        created = api.pipeline_service_create_pipeline(pipeline=body)
        self._say(f"pipeline {name}: created ({created.pipeline_id})")
        return created.pipeline_id

    def version(self, pipeline_id: str, file: PipelineFile) -> str:
        name = file.version_name
        existing = self._find_version(pipeline_id, name)
        if existing is None:
            from kfp_server_api.exceptions import ApiException

            try:
                created = self.client.pipeline_uploads.upload_pipeline_version(
                    str(file.path),
                    name=name,
                    pipelineid=pipeline_id,
                    description=f"sha256 {file.sha256} of {file.path.name}",
                )
            except ApiException as exc:
                # 409: uploaded meanwhile by another deploy (version names are unique).
                if exc.status != 409 or self._find_version(pipeline_id, name) is None:
                    raise
            else:
                self._say(f"version {name}: created ({created.pipeline_version_id})")
                return created.pipeline_version_id
            existing = self._find_version(pipeline_id, name)
        self._say(f"version {name}: unchanged ({existing})")
        return existing

    def _find_version(self, pipeline_id: str, name: str) -> str | None:
        found = self.client.pipelines.pipeline_service_list_pipeline_versions(
            pipeline_id, filter=_filter("name", name), page_size=10
        )
        for version in found.pipeline_versions or []:
            if version.name == name:
                return version.pipeline_version_id
        return None

    def experiment(self, name: str) -> str:
        api = self.client.experiments
        found = api.experiment_service_list_experiments(
            namespace=self.namespace, filter=_filter("display_name", name), page_size=10
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
            filter=_filter("display_name", want.name),
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
    """The whole deploy; returns the printed lines. Raises DeployError."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError as TransportError

    file = PipelineFile.read(args.pipeline_file)
    wanted_params: dict[str, Any] = {}
    cron = ""
    if args.recurring_run:
        if not args.cron or not args.experiment:
            raise DeployError("--recurring-run needs --cron and --experiment")
        cron = check_cron(args.cron)
        wanted_params = file.parameter_values(args.param)
        try:
            cron_note = describe_cron(cron, args.cluster_timezone)
        except ZoneInfoNotFoundError:
            raise DeployError(
                f"--cluster-timezone {args.cluster_timezone!r}: unknown zone"
            ) from None
    elif args.param or args.cron or args.experiment:
        raise DeployError("--param, --cron and --experiment belong to --recurring-run")
    if not re.match(r"^https?://[^/\s]+", args.host):
        raise DeployError(f"--host {args.host!r}: expected http(s)://HOST[:PORT][/PATH]")
    token = bearer_token(args.auth)
    check_host(args.host, token)
    deployer = Deployer(connect(args.host, token, args.namespace), args.namespace)
    step = "connect"
    try:
        step = f"look up or create pipeline {args.pipeline_name!r}"
        pipeline_id = deployer.pipeline(args.pipeline_name, file.description)
        step = f"upload version {file.version_name}"
        version_id = deployer.version(pipeline_id, file)
        if args.recurring_run:
            step = f"look up or create experiment {args.experiment!r}"
            experiment_id = deployer.experiment(args.experiment)
            step = f"create or update recurring run {args.recurring_run!r}"
            deployer.recurring_run(
                WantedRecurringRun(
                    args.recurring_run,
                    experiment_id,
                    pipeline_id,
                    version_id,
                    cron,
                    wanted_params,
                    f"{args.pipeline_name} {file.version_name}, deployed by kfp_prediction.deploy",
                )
            )
            deployer._say(cron_note)
    except ApiException as exc:
        raise DeployError(f"{step}: {_api_error(exc)}") from None
    except TransportError as exc:
        raise DeployError(f"{step}: lost the KFP API at {args.host}: {exc}") from None
    return deployer.lines


def _api_error(exc: Any) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason
    except (TypeError, ValueError):
        message = (exc.body or exc.reason or "").strip()
    hint = " (check --auth / --namespace)" if exc.status in (401, 403) else ""
    return f"HTTP {exc.status}: {message}{hint}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kfp_prediction.deploy",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Cron: 6 fields, seconds first, read in the KFP cluster's time zone (UTC on a "
        "standard install; the API has no zone per recurring run): 06:00 JST = '0 0 21 * * *'.",
    )
    p.add_argument("--host", required=True, help="KFP API endpoint, http(s)://...")
    p.add_argument("--pipeline-file", required=True, help="a compiled pipeline .yaml")
    p.add_argument("--pipeline-name", required=True)
    p.add_argument("--auth", choices=("none", "token", "google"), default="none")
    p.add_argument("--namespace", help="multi-user Kubeflow: the profile namespace")
    p.add_argument("--recurring-run", metavar="NAME", help="create or update this recurring run")
    p.add_argument("--cron", help="6 fields, seconds first, in the cluster's time zone")
    p.add_argument("--experiment", help="the recurring run's experiment (created when missing)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cluster-timezone", default="UTC", help="for the JST note only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        deploy(args)
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
