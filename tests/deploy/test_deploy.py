"""``python -m kfp_prediction.deploy`` against the stand-in KFP API server, with the real
``kfp.Client`` 2.17.3 (pipeline environment; the stand-in runs in this process).

What is checked is what the server ends up holding (pipelines, versions, recurring runs,
the requests it received) and what the command prints and returns.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kfp
import pytest
import yaml
from kfp_prediction.deploy import PipelineFile, main

from benchmarks.kfp_only.deploy import main as deploy_variant
from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, write_google_credentials

REPO = Path(__file__).resolve().parents[2]
COMPILED = REPO / "pipelines" / "compiled"
MAIN = COMPILED / "daily_prediction.yaml"
VARIANT = COMPILED / "daily_prediction_kfp_only.yaml"
WEBHOOK = "https://hooks.slack.com/services/T000/B000/not-a-real-secret"
pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """kfp.Client reads and writes ~/.config/kfp/context.json: keep it out of $HOME."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "context.json"))
    for name in ("KFP_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with KfpApiStandIn() as stand_in:
        yield stand_in


def deploy(capsys, *args: str) -> tuple[int, list[str], str]:
    """The product's upload command, or the KFP-only variant's (``--recurring-run``)."""
    code = (deploy_variant if "--recurring-run" in args else main)(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def upload_args(server, path: Path = MAIN, name: str = "daily-prediction") -> list[str]:
    return ["--host", server.url, "--pipeline-file", str(path), "--pipeline-name", name]


def variant_args(server, cron: str = "0 0 21 * * *", *extra: str) -> list[str]:
    return [
        *upload_args(server, VARIANT, "daily-prediction-kfp-only"),
        *("--recurring-run", "daily-prediction-kfp-only", "--cron", cron),
        *("--experiment", "kfp-only-comparison"),
        *("--param", f"slack_webhook_url={WEBHOOK}", "--param", "model_sha256=" + "a" * 64),
        *extra,
    ]


def api_requests(server) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in server.requests()]


def test_same_file_twice_creates_one_pipeline_and_one_version(server, capsys):
    digest = PipelineFile.read(MAIN).sha256
    code, first, _ = deploy(capsys, *upload_args(server))
    assert code == 0
    assert [line.split(" (")[0] for line in first] == [
        "pipeline daily-prediction: created",
        f"version sha256-{digest[:12]}: created",
    ]
    code, second, _ = deploy(capsys, *upload_args(server))
    assert code == 0
    assert [line.split(" (")[0] for line in second] == [
        "pipeline daily-prediction: unchanged",
        f"version sha256-{digest[:12]}: unchanged",
    ]
    (pipeline,) = server.stored("pipelines")
    (version,) = server.stored("pipeline_versions")
    assert pipeline["name"] == "daily-prediction"
    assert version["pipeline_id"] == pipeline["pipeline_id"]
    assert version["name"] == f"sha256-{digest[:12]}"
    assert version["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "daily-prediction"
    uploads = [p for m, p in api_requests(server) if p.endswith("/upload_version")]
    assert len(uploads) == 1  # the second deploy sent no file


def test_a_changed_file_becomes_a_new_version_of_the_same_pipeline(server, capsys, tmp_path):
    changed = tmp_path / "daily_prediction.yaml"
    text = MAIN.read_text()
    changed.write_text(text.replace("image: kfp-prediction:0.1.0", "image: kfp-prediction:0.1.1"))
    assert changed.read_text() != text
    assert deploy(capsys, *upload_args(server))[0] == 0
    code, lines, _ = deploy(capsys, *upload_args(server, changed))
    assert code == 0 and lines[0].startswith("pipeline daily-prediction: unchanged")
    assert lines[1].startswith(f"version sha256-{PipelineFile.read(changed).sha256[:12]}: created")
    assert len(server.stored("pipelines")) == 1
    assert len(server.stored("pipeline_versions")) == 2


def test_recurring_run_twice_leaves_one_pinned_to_the_version(server, capsys):
    code, first, _ = deploy(capsys, *variant_args(server))
    assert code == 0
    assert [line.split(" (")[0] for line in first[:4]] == [
        "pipeline daily-prediction-kfp-only: created",
        f"version {PipelineFile.read(VARIANT).version_name}: created",
        "experiment kfp-only-comparison: created",
        "recurring run daily-prediction-kfp-only: created",
    ]
    # The API has no time zone: the note says how the cluster reads the cron.
    assert first[4] == (
        "cron '0 0 21 * * *' runs in the cluster's time zone (UTC): "
        "daily 21:00:00 UTC = 06:00:00 JST"
    )
    code, second, _ = deploy(capsys, *variant_args(server))
    assert code == 0
    assert "recurring run daily-prediction-kfp-only: unchanged" in second[3]
    (job,) = server.stored("recurring_runs")
    (version,) = server.stored("pipeline_versions")
    assert job["display_name"] == "daily-prediction-kfp-only"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 21 * * *"
    assert (
        job["pipeline_version_reference"]["pipeline_version_id"] == (version["pipeline_version_id"])
    )
    assert job["max_concurrency"] == "1" and job["no_catchup"] is True
    assert job["status"] == "ENABLED"
    assert server.stored("deleted_recurring_runs") == []


def test_a_changed_cron_replaces_the_recurring_run_keeping_its_workflows(server, capsys):
    assert deploy(capsys, *variant_args(server))[0] == 0
    (old,) = server.stored("recurring_runs")
    code, lines, _ = deploy(capsys, *variant_args(server, "0 30 20 * * *"))
    assert code == 0
    assert lines[3].startswith("recurring run daily-prediction-kfp-only: updated: cron")
    assert lines[4].endswith("daily 20:30:00 UTC = 05:30:00 JST")
    (new,) = server.stored("recurring_runs")
    assert new["recurring_run_id"] != old["recurring_run_id"]
    assert new["trigger"]["cron_schedule"]["cron"] == "0 30 20 * * *"
    # No update call exists: delete (ORPHAN: running workflows survive) and create again.
    assert server.stored("deleted_recurring_runs") == [
        {"recurring_run_id": old["recurring_run_id"], "propagation_policy": "ORPHAN"}
    ]


def test_a_new_file_repins_the_recurring_run(server, capsys, tmp_path):
    assert deploy(capsys, *variant_args(server))[0] == 0
    changed = tmp_path / VARIANT.name
    changed.write_text(VARIANT.read_text().replace("kfp-prediction:0.1.0", "kfp-prediction:0.2"))
    args = variant_args(server)
    args[args.index(str(VARIANT))] = str(changed)
    code, lines, _ = deploy(capsys, *args)
    assert code == 0 and "updated: pipeline version" in lines[3]
    (job,) = server.stored("recurring_runs")
    (new_version,) = [
        v
        for v in server.stored("pipeline_versions")
        if v["name"] == PipelineFile.read(changed).version_name
    ]
    assert (
        job["pipeline_version_reference"]["pipeline_version_id"]
        == (new_version["pipeline_version_id"])
    )


def test_a_paused_recurring_run_is_enabled_again_in_place(server, capsys):
    assert deploy(capsys, *variant_args(server))[0] == 0
    (job,) = server.stored("recurring_runs")
    client = kfp.Client(host=server.url)
    client.disable_recurring_run(job["recurring_run_id"])
    code, lines, _ = deploy(capsys, *variant_args(server))
    assert code == 0 and "updated: enabled" in lines[3]
    (again,) = server.stored("recurring_runs")
    assert again["recurring_run_id"] == job["recurring_run_id"] and again["status"] == "ENABLED"


def test_the_webhook_secret_is_readable_from_the_recurring_run(server, capsys):
    """The KFP-only variant's documented weakness: the webhook URL is a run parameter."""
    assert deploy(capsys, *variant_args(server))[0] == 0
    out = "\n".join(deploy(capsys, *variant_args(server))[1])
    assert WEBHOOK not in out  # the command never prints parameter values
    (job,) = server.stored("recurring_runs")
    anyone = kfp.Client(host=server.url)  # single-user: every client reads every run
    fetched = anyone.get_recurring_run(job["recurring_run_id"])
    assert fetched.runtime_config.parameters["slack_webhook_url"] == WEBHOOK


def test_two_recurring_runs_of_the_name_stop_the_deploy(server, capsys):
    assert deploy(capsys, *variant_args(server))[0] == 0
    (job,) = server.stored("recurring_runs")
    client = kfp.Client(host=server.url)
    ref = job["pipeline_version_reference"]
    client.create_recurring_run(
        job["experiment_id"],
        "daily-prediction-kfp-only",
        cron_expression="0 0 21 * * *",
        pipeline_id=ref["pipeline_id"],
        version_id=ref["pipeline_version_id"],
        params={"slack_webhook_url": WEBHOOK, "model_sha256": "a" * 64},
    )
    code, _, err = deploy(capsys, *variant_args(server, "0 30 20 * * *"))
    assert code == 1 and "2 recurring runs are named 'daily-prediction-kfp-only'" in err
    assert len(server.stored("recurring_runs")) == 2
    assert server.stored("deleted_recurring_runs") == []


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 6 * * *", "has 5 fields: KFP reads them as second minute hour day month"),
        ("0 0 21 * * * *", "expected 6 fields"),
        ("@sometimes", "unknown descriptor"),
    ],
)
def test_a_cron_kfp_would_misread_is_refused_before_any_request(server, capsys, cron, message):
    code, _, err = deploy(capsys, *variant_args(server, cron))
    assert code == 1 and message in err
    assert server.requests() == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["slack_webhook_url=x"], "needs a value for model_sha256"),
        (["slack_webhook_url=x", "model_sha256=a", "colour=red"], "no such root parameter"),
        (["slack_webhook_url=x", "model_sha256=a", "lookback_days=four"], "number_integer"),
        (["slack_webhook_url"], "--param expects KEY=VALUE"),
    ],
)
def test_bad_parameters_are_refused_before_any_request(server, capsys, params, message):
    args = [*upload_args(server, VARIANT, "daily-prediction-kfp-only")]
    args += ["--recurring-run", "r", "--cron", "0 0 21 * * *", "--experiment", "e"]
    for param in params:
        args += ["--param", param]
    code, _, err = deploy(capsys, *args)
    assert code == 1 and message in err
    assert server.requests() == []


def test_parameters_are_sent_with_their_compiled_types(server, capsys):
    code, _, _ = deploy(capsys, *variant_args(server, "0 0 21 * * *", "--param", "lookback_days=7"))
    assert code == 0
    (job,) = server.stored("recurring_runs")
    assert job["runtime_config"]["parameters"]["lookback_days"] == 7


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("root: [unclosed", "p.yaml", "is not valid YAML"),
        ("pipelineInfo: {name: x}\n", "p.yaml", "is not a compiled KFP pipeline"),
        ("", "p.yaml", "is not a compiled KFP pipeline"),
        (None, "missing.yaml", "cannot read pipeline file"),
        ("{}", "p.json", "is not a compiled .yaml pipeline"),
    ],
)
def test_a_malformed_file_is_refused_before_any_request(
    server, capsys, tmp_path, content, name, message
):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    code, _, err = deploy(capsys, *upload_args(server, path))
    assert code == 1 and message in err and str(path) in err
    assert server.requests() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_host_is_named(capsys):
    host = f"http://127.0.0.1:{_free_port()}"
    code, out, err = deploy(capsys, "--host", host, "--pipeline-file", str(MAIN),
                            "--pipeline-name", "daily-prediction")  # fmt: skip
    assert code == 1 and out == []
    assert f"cannot reach the KFP API at {host}" in err and "refused" in err.lower()


def test_a_host_that_is_no_kfp_api_is_named(server, capsys):
    server.set_server_version("1.8.5")  # KFP 1.x: no /apis/v2beta1 at all
    code, _, err = deploy(capsys, *upload_args(server))
    assert code == 1 and "is not a KFP API (HTTP 404" in err


def test_a_login_page_instead_of_the_api_is_named(capsys):
    """An authenticating proxy that answers with an HTML page (IAP's sign-in) is no KFP API."""

    class LoginPage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>Sign in</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), LoginPage)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{proxy.server_address[1]}"
        code, _, err = deploy(capsys, "--host", host, "--pipeline-file", str(MAIN),
                              "--pipeline-name", "daily-prediction")  # fmt: skip
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert code == 1 and "did not answer like a KFP API" in err and "--auth google" in err


def test_bad_token_is_refused_with_a_clear_message(server, capsys, monkeypatch):
    server.require_token("right-token")  # an authenticating proxy in front (IAP / inverse proxy)
    monkeypatch.setenv("KFP_TOKEN", "wrong-token")
    code, _, err = deploy(capsys, *upload_args(server), "--auth", "token")
    assert code == 1 and "refused the credentials (HTTP 401)" in err
    assert server.stored("pipelines") == []
    monkeypatch.setenv("KFP_TOKEN", "right-token")
    assert deploy(capsys, *upload_args(server), "--auth", "token")[0] == 0
    assert {r["authorization"] for r in server.requests()} == {
        "Bearer wrong-token",
        "Bearer right-token",
    }


def test_token_auth_without_a_token_stops_before_any_request(server, capsys):
    code, _, err = deploy(capsys, *upload_args(server), "--auth", "token")
    assert code == 1 and "$KFP_TOKEN" in err
    assert server.requests() == []


def test_google_auth_uses_application_default_credentials(server, capsys, tmp_path, monkeypatch):
    server.require_token()  # only tokens the stand-in's OAuth endpoint issued
    key = write_google_credentials(server.url, tmp_path / "sa.json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    code, lines, _ = deploy(capsys, *upload_args(server), "--auth", "google")
    assert code == 0 and lines[0].startswith("pipeline daily-prediction: created")
    assert {r["authorization"] for r in server.requests()} == {"Bearer standin-google-token-1"}


def test_google_auth_without_credentials_is_named(server, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "nothing.json"))
    code, _, err = deploy(capsys, *upload_args(server), "--auth", "google")
    assert code == 1 and "no usable Application Default Credentials" in err
    assert server.requests() == []


def test_multi_user_namespace_and_a_forbidden_one(capsys, monkeypatch):
    with KfpApiStandIn(multi_user=True) as server:
        server.set_multi_user(
            tokens={"alice-token": ("alice@example.com", ["pipelines.kubeflow.org"])},
            access={"alice@example.com": ["team-a"]},
        )
        monkeypatch.setenv("KFP_TOKEN", "alice-token")
        args = [*variant_args(server), "--auth", "token"]
        code, _, err = deploy(capsys, *args, "--namespace", "team-a")
        assert code == 0, err
        (pipeline,) = server.stored("pipelines")
        (job,) = server.stored("recurring_runs")
        assert pipeline["namespace"] == "team-a" and job["namespace"] == "team-a"
        assert deploy(capsys, *args, "--namespace", "team-a")[1][3].endswith(
            f"unchanged ({job['recurring_run_id']})"
        )
        code, _, err = deploy(capsys, *args, "--namespace", "team-b")
        assert code == 1 and "HTTP 403" in err and "check --auth / --namespace" in err


def test_the_command_line_entry_point(server, tmp_path):
    """What the workflow runs: ``python -m kfp_prediction.deploy``, exit status and output."""
    result = subprocess.run(
        [sys.executable, "-m", "kfp_prediction.deploy", *upload_args(server)],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("pipeline daily-prediction: created")
    bad = subprocess.run(
        [sys.executable, "-m", "kfp_prediction.deploy", *upload_args(server, tmp_path / "x.yaml")],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("deploy: error: cannot read")


def test_the_workflow_calls_the_command_with_flags_it_has():
    """deploy.yml's two deploy steps (the product's upload, the KFP-only variant's recurring
    run) use only flags their command knows, and the file it names."""
    from kfp_prediction.deploy import parser

    from benchmarks.kfp_only.deploy import parser as variant_parser

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "deploy.yml").read_text())
    commands = {"kfp_prediction.deploy": parser(), "benchmarks.kfp_only.deploy": variant_parser()}
    scripts = [
        (step["run"], command)
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        for command in commands
        if f"-m {command} " in step.get("run", "")
    ]
    assert sorted(c for _, c in scripts) == sorted(commands)
    for script, command in scripts:
        known = {a for action in commands[command]._actions for a in action.option_strings}
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", script))
        assert flags <= known, flags - known
        for path in re.findall(r"pipelines/compiled/[\w.]+\.yaml", script):
            assert (REPO / path).is_file(), path
            required = {
                name
                for name, spec in PipelineFile.read(REPO / path).inputs.items()
                if "defaultValue" not in spec and not spec.get("isOptional")
            }
            if "--recurring-run" in script:  # a recurring run needs every required parameter
                given = set(re.findall(r'--param "(\w+)=', script))
                assert required <= given, required - given
