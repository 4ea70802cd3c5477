"""Real Airflow (``dags test``, deferrable operator, inline trigger) against each deployment
profile of the stand-in: the API server; the UI server (AI Platform Pipelines proxy,
Kubeflow's ``/pipeline``); multi-user Kubeflow behind Istio with a service-account token
file the kubelet rotates mid-wait; Argo's workflow garbage collection with and without a
log archive; the same Istio deployment reached with tokens minted through the Kubernetes
TokenRequest API (cncf-kubernetes hook, a kubeconfig) and revoked mid-wait; Kubeflow's Dex
login and Google IAP, whose sessions and ID tokens run out several times during the wait.

Airflow starts once for all of them: one interpreter runs every DAG through the CLI's own
``db migrate`` and ``dags test`` commands (``_dags_test_many.py``); the stand-ins run in
this process. (A ``dags test`` process spends ~12 s before its first task starts, each
further DAG in the same process ~1.5 s.) It is one test so that pytest-xdist never runs
the shared Airflow process twice.

A succeeded run succeeds its task. A failing component's error text is in the task's
failure where a log exists (the UI server's ``/k8s/pod/logs``, Argo's log archive); where
none does (pods and workflow collected, no archive) the failure says plainly that the log
of the task is not available through the host, and the outcome stands. No password,
session cookie or token reaches the output or any file under the Airflow home.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from kfp_bridge.testing.kfp_api import iap
from kfp_bridge.testing.kfp_api.server import (
    KfpApiStandIn,
    airflow_connection_json,
    write_google_credentials,
)
from kfp_bridge.testing.kube_api import KubeApiStandIn
from tests.bridge._helpers import AIRFLOW_BIN, TINY_PIPELINE, airflow_env

DRIVER = Path(__file__).with_name("_dags_test_many.py")
SA_USER = "system:serviceaccount:team-a:airflow-runner"
DEX_PASSWORD = "dex-Pa55word-e2e"
ERROR = "ValueError: component asked to fail ({profile})"
DATE = "2026-11-28T21:00:00+00:00"
DAG_FILE = """
from datetime import datetime, timezone
from airflow.sdk import DAG
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator

# dag id -> (connection id, run name)
CASES = {cases!r}

for dag_id, (conn_id, run_name) in CASES.items():
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)):
        KubeflowPipelineRunOperator(
            task_id="run_pipeline",
            pipeline_file={pipeline!r},
            parameters={{"message": "{{{{ ds }}}}", "repeat": 2}},
            kfp_conn_id=conn_id,
            run_name=run_name + "-{{{{ ds_nodash }}}}",
            poll_interval=0.2,
            deferrable=True,
            retries=0,
        )
"""
# dag id -> (stand-in, run name); the run name picks the stand-in's schedule for the run
CASES = {
    "api_server_ok": ("api_server", "ok"),
    "ui_proxy_ok": ("ui_proxy", "ok"),
    "ui_proxy_fails": ("ui_proxy", "fails"),
    "istio_ok": ("istio", "ok"),
    "istio_minted_ok": ("istio_minted", "ok"),
    "argo_gc_ok": ("argo_gc", "ok"),
    "argo_gc_fails": ("argo_gc", "fails"),
    "argo_gc_fails_no_archive": ("argo_gc_no_archive", "fails"),
    "dex_ok": ("dex", "ok"),
    "iap_ok": ("iap", "ok"),
}
PROFILES = {
    "api_server": "api-server",
    "ui_proxy": "ui-proxy",
    "istio": "multi-user-istio",
    "istio_minted": "multi-user-istio",
    "argo_gc": "argo-gc",
    "argo_gc_no_archive": "argo-gc",
    "dex": "dex",
    "iap": "iap",
}
FAILING = ("ui_proxy_fails", "argo_gc_fails", "argo_gc_fails_no_archive")


def _results(output: str) -> dict[str, str]:
    found = re.findall(r"^DAGS_TEST_RESULTS=(.*)$", output, re.M)
    assert found, output[-4000:]
    return json.loads(found[-1])


def _dag_output(output: str, dag_id: str) -> str:
    """The part of the combined output from ``dag_id``'s run to the next DAG's run."""
    starts = {d: output.find(f"<DagRun {d} @") for d in CASES}
    start = starts[dag_id]
    assert start >= 0, f"no log line names the run of {dag_id}"
    later = [s for s in starts.values() if s > start]
    return output[start : min(later) if later else len(output)]


def _home_text(home: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file()
    )


def _configure(servers: dict[str, KfpApiStandIn], token_file: Path) -> None:
    for name, server in servers.items():
        server.set_schedule(pending=2, running=2)
        error = ERROR.format(profile=name)
        server.set_schedule("fails-20261128", pending=1, running=1, outcome="FAILED", error=error)
    # the UI host's failing task has a retry policy: Argo ran it twice, the last log counts
    servers["ui_proxy"].set_schedule(
        "fails-20261128",
        pending=1,
        running=1,
        outcome="FAILED",
        error=ERROR.format(profile="ui_proxy"),
        retry_attempts=2,
    )
    servers["argo_gc_no_archive"].set_log_archive(False)
    servers["istio"].set_multi_user(access={SA_USER: ["team-a"]})
    # the kubelet writes the token file now and a successor every 2 run polls, the old
    # token expiring at once: the wait crosses expiries
    servers["istio"].rotate_token_file(token_file, SA_USER, every_polls=2)
    # minted tokens are revoked every 3 run polls: the hook mints again after one 401
    servers["istio_minted"].set_multi_user(access={SA_USER: ["team-a"]})
    servers["istio_minted"].revoke_tokens_every(3)
    # the Dex session lasts 2 requests; google-auth finds a 60 s ID token stale at once
    servers["dex"].configure_dex(
        users={"local": {"airflow@example.com": DEX_PASSWORD}}, session_requests=2
    )
    servers["dex"].set_schedule(pending=3, running=3)
    servers["iap"].configure_iap(token_seconds=60)
    servers["iap"].set_schedule(pending=3, running=3)


def _connections(servers: dict[str, KfpApiStandIn], token_file: Path) -> dict[str, str]:
    extra = {
        "istio": {"auth": "sa_token_file", "credentials_path": str(token_file)},
        "istio_minted": {
            "auth": "kubernetes_token_request",
            "kubernetes_conn_id": "kube_standin",
            "serviceaccount": "airflow-runner",
        },
        "dex": {"auth": "dex", "login": "airflow@example.com", "password": DEX_PASSWORD},
        "iap": {"auth": "iap", "iap_client_id": iap.CLIENT_ID},
    }
    out = {}
    for name, server in servers.items():
        fields = dict(extra.get(name, {}))
        login, password = fields.pop("login", None), fields.pop("password", None)
        if name.startswith("istio"):
            fields["namespace"] = "team-a"
        out[f"AIRFLOW_CONN_KFP_{name.upper()}"] = airflow_connection_json(
            server.url, login=login, password=password, **fields
        )
    return out


@pytest.mark.e2e  # one real Airflow process runs ten DAGs
def test_dags_test_against_each_deployment_profile(tmp_path):
    dags, home = tmp_path / "dags", tmp_path / "home"
    dags.mkdir()
    cases = {dag_id: (f"kfp_{server}", name) for dag_id, (server, name) in CASES.items()}
    (dags / "deployments.py").write_text(DAG_FILE.format(cases=cases, pipeline=str(TINY_PIPELINE)))
    env = airflow_env(home, dags)
    token_file = tmp_path / "token"
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(KfpApiStandIn(profile=profile))
            for name, profile in PROFILES.items()
        }
        _configure(servers, token_file)
        env |= _connections(servers, token_file)
        kube = stack.enter_context(
            KubeApiStandIn(
                [("team-a", "airflow-runner")], on_mint=servers["istio_minted"].register_token
            )
        )
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        env["AIRFLOW_CONN_KUBE_STANDIN"] = json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        )
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(
            write_google_credentials(servers["iap"].url, tmp_path / "sa.json")
        )
        argv = [a for dag_id in CASES for a in (dag_id, DATE)]
        done = subprocess.run(
            [str(AIRFLOW_BIN.with_name("python")), str(DRIVER), "--migrate", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-4000:]
        runs = {name: server.runs() for name, server in servers.items()}
        hosts = {name: server.url for name, server in servers.items()}
        kubelet = servers["istio"].kubelet_stats()
        istio_auth = {r["authorization"] for r in servers["istio"].requests()}
        revocations = servers["istio_minted"].revocation_stats()["revocations"]
        minted = len(kube.minted)
        dex_stats = servers["dex"].dex_stats()
        dex_cookies = list(servers["dex"].state.dex.sessions)
        iap_stats = servers["iap"].iap_stats()
        tokens = {
            r["authorization"].split(" ", 1)[1]
            for name in ("istio", "istio_minted", "iap")
            for r in servers[name].requests()
            if r["authorization"]
        }

    results = _results(output)
    assert results == {
        dag_id: "failed: DagRun failed" if dag_id in FAILING else "success" for dag_id in CASES
    }, f"{results}\n{output[-6000:]}"
    for dag_id in CASES:  # each waited in its trigger, not in the worker
        assert "new_state=deferred" in _dag_output(output, dag_id), dag_id
    # one run per DAG on its stand-in, ending in the state its task reported
    states = {name: sorted(r["state"] for r in server_runs) for name, server_runs in runs.items()}
    assert states == {
        "api_server": ["SUCCEEDED"],
        "ui_proxy": ["FAILED", "SUCCEEDED"],
        "istio": ["SUCCEEDED"],
        "istio_minted": ["SUCCEEDED"],
        "argo_gc": ["FAILED", "SUCCEEDED"],
        "argo_gc_no_archive": ["FAILED"],
        "dex": ["SUCCEEDED"],
        "iap": ["SUCCEEDED"],
    }
    # the pipeline's second task ran too: a succeeded run's details hold both tasks
    [ok_run] = [r for r in runs["ui_proxy"] if r["state"] == "SUCCEEDED"]
    assert {"greet", "shout"} <= {d["display_name"] for d in ok_run["run_details"]["task_details"]}

    # A log exists (the UI server's pod-log route; Argo's log archive): its error text shows.
    for dag_id, name in (("ui_proxy_fails", "ui_proxy"), ("argo_gc_fails", "argo_gc")):
        part = _dag_output(output, dag_id)
        assert f"task greet failed: {ERROR.format(profile=name)}" in part, part[-3000:]
        assert "not available through" not in part and "KFP < 2.0" not in part
        assert "lost its connection" not in part  # an earlier retry attempt's log
    # No log anywhere: said plainly, naming the task and the host; the outcome stands.
    part = _dag_output(output, "argo_gc_fails_no_archive")
    host = hosts["argo_gc_no_archive"]
    assert f"the log of task greet is not available through {host}" in part, part[-3000:]
    assert ERROR.format(profile="argo_gc_no_archive") not in part and "KFP < 2.0" not in part

    # Istio: the token file was rotated mid-wait, the old token expiring; each successor read.
    assert kubelet["rotations"] >= 2
    assert len(istio_auth) >= 3 and None not in istio_auth
    # TokenRequest: each revocation met by one new token, minted through the kubeconfig
    renewals = _dag_output(output, "istio_minted_ok").count(
        "refused the token (HTTP 401): renewing it"
    )
    assert revocations >= 1 and renewals >= 1
    assert minted >= 1 + renewals  # the first token, then one per renewal
    # Dex: logged in again as sessions ran out, never refused; IAP: ID tokens minted again.
    assert dex_stats["logins"] >= 3 and dex_stats["failed_logins"] == 0
    assert iap_stats["minted"] >= 3 and iap_stats["refused"] == []

    everything = output + _home_text(home)
    assert DEX_PASSWORD not in everything
    assert dex_cookies and not [c for c in dex_cookies if c in everything]
    assert tokens and not [t for t in tokens if t in everything]
