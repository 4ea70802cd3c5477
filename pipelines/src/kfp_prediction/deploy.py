"""Deploy a compiled pipeline to a KFP API: the pipeline and a version per file content.

    python -m kfp_prediction.deploy --host URL --pipeline-file FILE --pipeline-name NAME
        [--auth none|token|google] [--namespace NS]

* The pipeline is created when missing; the version is named after the file's content
  (``sha256-`` and the first 12 hex digits of its SHA-256), so deploying the same file twice
  uploads nothing the second time.
* ``--auth token`` reads the bearer token from ``KFP_TOKEN`` (never from the command line,
  which ``ps`` and CI logs show); ``--auth google`` uses Application Default Credentials.
* Prints one line per object (``created``, ``updated`` or ``unchanged``); a bad host, refused
  credentials or a malformed file end it with a message naming the problem and a non-zero
  exit status, the file and the arguments checked before anything is sent.

It uses the real ``kfp.Client`` (kfp 2.17) and so runs in the pipeline environment: the
Airflow side must not import the kfp SDK, and deploying is the pipeline side's job anyway.
The KFP-only variant of the comparison also gets a recurring run: ``benchmarks/kfp_only/
deploy.py`` extends this command (``deploy(args, after_upload=...)``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

TOKEN_ENV = "KFP_TOKEN"
GOOGLE_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
TIMEOUT_SECONDS = 15


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


def equals_filter(key: str, value: str) -> str:
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
            namespace=self.namespace, filter=equals_filter("name", name), page_size=10
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
            pipeline_id, filter=equals_filter("name", name), page_size=10
        )
        for version in found.pipeline_versions or []:
            if version.name == name:
                return version.pipeline_version_id
        return None


def deploy(
    args: argparse.Namespace,
    *,
    after_upload: Callable[[Deployer, PipelineFile, str, str], Iterator[str]] | None = None,
) -> list[str]:
    """The whole deploy; returns the printed lines. Raises DeployError.

    ``after_upload(deployer, file, pipeline_id, version_id)`` continues the deploy: a
    generator that yields the name of each step before it makes its calls, so a refused
    call is named like the upload's own steps.
    """
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError as TransportError

    file = PipelineFile.read(args.pipeline_file)
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
        for name in after_upload(deployer, file, pipeline_id, version_id) if after_upload else ():
            step = name  # its calls run when the loop asks for the next name
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


def parser(prog: str = "python -m kfp_prediction.deploy", **kwargs: Any) -> argparse.ArgumentParser:
    """The upload's flags; ``kwargs`` (description, epilog) for a command that extends it."""
    kwargs.setdefault("description", __doc__.split("\n\n")[0].replace("\n", " "))
    p = argparse.ArgumentParser(prog=prog, **kwargs)
    p.add_argument("--host", required=True, help="KFP API endpoint, http(s)://...")
    p.add_argument("--pipeline-file", required=True, help="a compiled pipeline .yaml")
    p.add_argument("--pipeline-name", required=True)
    p.add_argument("--auth", choices=("none", "token", "google"), default="none")
    p.add_argument("--namespace", help="multi-user Kubeflow: the profile namespace")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return exit_status(lambda: deploy(args))


def exit_status(deploy_command: Callable[[], object]) -> int:
    """0, or 1 with the DeployError on stderr as one line."""
    try:
        deploy_command()
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
