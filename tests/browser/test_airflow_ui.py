"""What an operator sees in the Airflow 3.3 UI, checked in headless Chromium.

One stack for the module, started the way ``make airflow`` starts it
(``scripts/local_airflow.py``: api-server, scheduler, dag-processor, triggerer on
127.0.0.1, simple auth manager with a real user and password), on PostgreSQL when
available, running the real ``daily_prediction`` DAG on the local backend and a
DAG whose component fails. At the end the stack is stopped with SIGINT, as Ctrl-C
does, and every process it started must be gone.

The browser works in Asia/Tokyo, as the team's operators do (Airflow 3's UI shows
times in the browser's time zone; there is no server-side UI zone any more).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from prediction_app.target_date import jst_ds, kfp_run_key
from tests.dag.helpers import home_env
from tests.e2e.airflow_stack import REPO, free_port
from tests.e2e.scenario import demo_inputs, failing_dag, pipeline_module

DAG_ID, FAILING_DAG_ID = "daily_prediction", "ui_failing_prediction"
RUN_TARGET_DATE = "2026-11-27"
BACKFILL_DATES = ["2026-11-28", "2026-11-29"]


class UiStack:
    """``scripts/local_airflow.py`` in a temporary home, as ``make airflow`` runs it."""

    def __init__(self, root: Path, database_url: str | None) -> None:
        self.root = root
        self.home = root / "home"
        self.runs = root / "runs"
        self.warehouse = root / "warehouse"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.proc: subprocess.Popen | None = None
        self.output = root / "local_airflow.out"

    def prepare(self) -> dict[str, str]:
        model = self.root / "models" / "model.pkl"
        digest = demo_inputs(self.warehouse, model)
        dags = self.root / "dags"
        dags.mkdir()
        (dags / "prediction_workflows.py").symlink_to(REPO / "dags" / "prediction_workflows.py")
        (dags / "ui_failing_prediction.py").write_text(
            failing_dag(FAILING_DAG_ID, warehouse=self.warehouse, model=model)
        )
        connection = {"conn_type": "kfp", "extra": {"backend": "local"}}
        connection["extra"]["local_state_dir"] = str(self.runs)
        env = home_env(self.home, dags)
        env.update(
            {
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW_CONN_KFP_DEFAULT": json.dumps(connection),
                "AIRFLOW_VAR_DAILY_PREDICTION_WAREHOUSE": str(self.warehouse),
                "DAILY_PREDICTION_WAREHOUSE": str(self.warehouse),  # the DAG's Assets
                "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_URI": str(model),
                "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": digest,
            }
        )
        if self.database_url:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.database_url
        else:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{self.home}/airflow.db"
        self.home.mkdir(parents=True)
        subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
            env=env, cwd=REPO, check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        return env

    def start(self, timeout: float = 300) -> None:
        env = self.prepare()
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "scripts" / "local_airflow.py"), "--port",
                 str(self.port)],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while "Airflow UI:" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"make airflow did not come up:\n{self.text()}\n{self.logs()}")
            time.sleep(1)
        match = re.search(r"Log in as '(\w+)' with password '(\w+)'", self.text())
        assert match, self.text()
        self.user, self.password = match.groups()
        assert self.password not in ("admin", ""), "a real password, not a default"
        self.descendants = psutil.Process(self.proc.pid).children(recursive=True)
        self.wait_parsed({DAG_ID, FAILING_DAG_ID}, deadline)

    def wait_parsed(self, dag_ids: set[str], deadline: float) -> None:
        """Until the dag-processor has stored both DAGs (REST API, with the user's login)."""
        body = json.dumps({"username": self.user, "password": self.password}).encode()
        request = urllib.request.Request(
            f"{self.url}/auth/token", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            token = json.load(resp)["access_token"]
        found: set[str] = set()
        while not dag_ids <= found:
            assert time.monotonic() < deadline, f"DAGs not parsed: {found}\n{self.logs()}"
            time.sleep(2)
            request = urllib.request.Request(
                f"{self.url}/api/v2/dags", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                found = {d["dag_id"] for d in json.load(resp)["dags"]}

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def logs(self, chars: int = 3000) -> str:
        parts = []
        for log in sorted((self.home / "logs").glob("*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def interrupt(self) -> list[psutil.Process]:
        """Ctrl-C: SIGINT to the script; returns what it had started, for the caller to check."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        return self.descendants


@pytest.fixture(scope="module")
def ui(tmp_path_factory, metadata_db, playwright):
    stack = UiStack(tmp_path_factory.mktemp("ui"), metadata_db)
    try:
        stack.start()
        yield stack
    finally:
        if stack.proc is not None and stack.proc.poll() is None:
            started = stack.interrupt()
            time.sleep(1)
            alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            assert not alive, f"still running after Ctrl-C: {alive}"
            assert "make airflow: stopped" in stack.text()


# -- browser helpers --------------------------------------------------------------------------


def login(ui: UiStack, shots):
    page = shots.page
    page.goto(ui.url + "/")
    page.get_by_label("Username").fill(ui.user)
    page.get_by_label("Password").fill(ui.password)
    shots("login form")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(ui.url + "/")
    shots("logged in")
    return page


def api(page, ui: UiStack, path: str) -> dict:
    """The REST API with the browser's login (the UI's own session cookie)."""
    response = page.request.get(f"{ui.url}/api/v2{path}")
    assert response.ok, (path, response.status, response.text())
    return response.json()


def wait_runs(page, ui, dag_id: str, count: int, *, run_type: str, timeout: float = 420):
    """The DAG's runs of ``run_type``, once ``count`` of them have finished."""
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline:
        runs = api(page, ui, f"/dags/{dag_id}/dagRuns?order_by=logical_date")["dag_runs"]
        runs = [r for r in runs if r["run_type"] == run_type]
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(3)
    raise AssertionError(f"{dag_id}: {runs}\n{ui.logs()}")


def open_trigger_dialog(page, ui, dag_id: str):
    page.goto(f"{ui.url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Single Run", exact=True).wait_for()
    return dialog


def pick(dialog, index: int, date: str, clock: str, close_on: str) -> None:
    """Set the dialog's ``index``-th date-time picker (the UI's zone: the browser's)."""
    dialog.get_by_test_id("datetime-input").nth(index).click()
    # The previous picker's popover may still be open (its close is animated): the one just
    # opened is the last in the document (popovers are portalled to the end of <body>).
    page = dialog.page
    page.get_by_placeholder("YYYY/MM/DD").last.fill(date.replace("-", "/"))
    page.get_by_placeholder("HH:mm").last.fill(clock)
    dialog.get_by_text(close_on, exact=True).click()  # closes the picker, keeps the dialog


def trigger(page, ui, dag_id: str, shots, logical_jst: tuple[str, str] | None = None) -> None:
    dialog = open_trigger_dialog(page, ui, dag_id)
    if logical_jst:
        pick(dialog, 0, *logical_jst, close_on="Logical Date")
    shots(f"trigger {dag_id}")
    dialog.get_by_role("button", name="Trigger").click()
    dialog.wait_for(state="hidden")


def task_page(page, ui, dag_id: str, run_id: str, tab: str = "") -> None:
    quoted = urllib.parse.quote(run_id, safe="")
    page.goto(f"{ui.url}/dags/{dag_id}/runs/{quoted}/tasks/predict{tab}")
    page.wait_for_load_state("networkidle")


def task_log(page, ui, dag_id: str, run_id: str, shots) -> str:
    """The task's log as the UI's log viewer shows it (scrolled to the end: it is virtual)."""
    task_page(page, ui, dag_id, run_id)
    viewer = page.get_by_test_id("virtualized-list")
    viewer.wait_for()
    page.wait_for_timeout(1500)  # the log streams in
    page.get_by_test_id("virtual-scroll-container").evaluate("e => e.scrollTop = e.scrollHeight")
    page.wait_for_timeout(500)
    shots(f"log {dag_id}")
    return viewer.inner_text()


# -- tests ------------------------------------------------------------------------------------


def test_login_then_dag_list_shows_the_jst_schedule_and_the_doc(browser, ui, shots):
    page = login(ui, shots)
    page.goto(ui.url + "/dags")
    page.get_by_text(DAG_ID, exact=True).first.wait_for()
    schedule = page.get_by_text("0 6 * * * (Asia/Tokyo)").first
    schedule.wait_for()
    shots("dag list")
    schedule.hover()
    page.get_by_text("At 06:00, Asia/Tokyo").first.wait_for()  # the schedule's description
    shots("schedule description")
    page.goto(f"{ui.url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Dag Docs").click()
    doc = page.get_by_role("dialog")
    doc.get_by_text("Daily prediction (06:00 Asia/Tokyo)").wait_for()
    shots("dag doc")
    assert "predicts for target date D" in doc.inner_text()
    # The backfill command's flags are whole: no flag is broken across lines.
    for flag in ("--from-date AT00:00:00+09:00", "--to-date BT23:59:59+09:00"):
        code = doc.locator("code", has_text=flag)
        assert code.evaluate("e => e.getClientRects().length") == 1, flag


@pytest.fixture(scope="module")
def ui_runs(ui, playwright, tmp_path_factory):
    """Runs started from the UI: one for RUN_TARGET_DATE and one of the failing DAG.

    Started from the trigger dialog by a browser of its own (module scope, so the
    tests below share these runs instead of each waiting for its own).
    """
    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, Shots

    context = playwright.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("profile")), executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS, timezone_id="Asia/Tokyo", viewport={"width": 1400, "height": 900},
    )  # fmt: skip
    shots = Shots(ui.root / "setup-shots", None)
    shots.page = context.pages[0]
    try:
        page = login(ui, shots)
        for dag_id in (DAG_ID, FAILING_DAG_ID):  # new DAGs start paused; unpause as the UI does
            response = page.request.patch(
                f"{ui.url}/api/v2/dags/{dag_id}", data={"is_paused": False}
            )
            assert response.ok, response.text()
        # The run for target date D has logical date D 06:00 JST (the browser's zone here).
        trigger(page, ui, DAG_ID, shots, logical_jst=(RUN_TARGET_DATE, "06:00"))
        trigger(page, ui, FAILING_DAG_ID, shots)
        (succeeded,) = wait_runs(page, ui, DAG_ID, 1, run_type="manual")
        (failed,) = wait_runs(page, ui, FAILING_DAG_ID, 1, run_type="manual")
        return {"succeeded": succeeded, "failed": failed}
    finally:
        context.close()


def _local_runs(ui: UiStack) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in ui.runs.glob("*/request.json")}


def test_run_shows_kubeflow_link_to_the_local_run_page_and_jst_target_date(
    browser, ui, ui_runs, shots
):
    run = ui_runs["succeeded"]
    assert run["state"] == "success"
    assert jst_ds(run["logical_date"]) == RUN_TARGET_DATE
    assert f"__target-{RUN_TARGET_DATE}__" in run["dag_run_id"]  # visible on the run
    page = login(ui, shots)
    task_page(page, ui, DAG_ID, run["dag_run_id"], "/details")
    link = page.get_by_role("link", name="Kubeflow run")
    link.wait_for()
    shots("task details with the extra link")
    href = link.get_attribute("href")
    assert href.startswith(f"{ui.url}/kfp-bridge/local-runs/")
    run_id = href.rsplit("/", 1)[1]
    assert _local_runs(ui)[run_id]["labels"]["airflow-dag-id"] == DAG_ID
    if link.get_attribute("target") == "_blank":
        with page.context.expect_page() as opened:
            link.click()
        run_page = opened.value
    else:
        link.click()
        page.wait_for_url(href)
        run_page = page
    run_page.wait_for_load_state()
    shots("local run page", run_page)
    assert run_page.locator("#run-id").inner_text() == run_id
    target = run_page.locator("#parameters tr", has_text="target_date").locator("td")
    assert target.inner_text() == RUN_TARGET_DATE
    assert run_page.locator("#run-state").inner_text() == "SUCCEEDED"
    # the JST target date, plus run type and time for this manual run (issue 20)
    assert run_page.locator("#run-name").inner_text() == (
        f"daily_prediction__predict__{kfp_run_key(run)}"
    )
    assert (
        run_page.locator("#run-name")
        .inner_text()
        .startswith(f"daily_prediction__predict__{RUN_TARGET_DATE}__manual-")
    )
    summary = json.loads(
        pipeline_module("kfp_prediction.summary", "--target-date", RUN_TARGET_DATE,
                  "--warehouse", str(ui.warehouse), "--json")
    )  # fmt: skip
    # the page knows no field of ours: the predict step's Metrics and the pipeline's output
    steps = run_page.locator("#steps").inner_text()
    assert f"rows_written: {summary['rows']:,}" in steps
    assert f"{RUN_TARGET_DATE}.parquet" in run_page.locator("#outputs").inner_text()
    assert "SUCCEEDED" in steps and "PENDING" not in steps
    if run_page is not page:
        run_page.close()

    task_page(page, ui, DAG_ID, run["dag_run_id"], "/rendered_templates")
    page.get_by_text("parameters", exact=True).first.wait_for()
    page.wait_for_timeout(500)
    shots("rendered templates")
    rendered = re.sub(r"\s+", "", page.locator("table").first.inner_text())
    assert f'"target_date":"{RUN_TARGET_DATE}"' in rendered, rendered


def test_successful_log_says_nothing_of_kills_and_failed_log_shows_the_component_error(
    browser, ui, ui_runs, shots
):
    page = login(ui, shots)
    ok_log = task_log(page, ui, DAG_ID, ui_runs["succeeded"]["dag_run_id"], shots)
    assert "SUCCEEDED" in ok_log
    for word in ("kill", "cancel"):
        assert word not in ok_log.lower(), ok_log
    assert ui_runs["failed"]["state"] == "failed"
    failed_log = task_log(page, ui, FAILING_DAG_ID, ui_runs["failed"]["dag_run_id"], shots)
    # The component's own error, from the pipeline run, in the Airflow task log.
    assert "refusing to unpickle" in failed_log, failed_log
    assert "ModelDigestMismatchError" in failed_log


def test_backfill_dialog_creates_one_run_per_target_date(browser, ui, ui_runs, shots):
    page = login(ui, shots)
    dialog = open_trigger_dialog(page, ui, DAG_ID)
    dialog.get_by_text("Backfill", exact=True).click()
    dialog.get_by_text("Date Range", exact=True).wait_for()
    # Whole JST days A 00:00 .. B 23:59, as the DAG's doc says.
    pick(dialog, 0, BACKFILL_DATES[0], "00:00", close_on="Date Range")
    pick(dialog, 1, BACKFILL_DATES[-1], "23:59", close_on="Date Range")
    dialog.locator("input[name=max_active_runs]").fill("2")
    dialog.get_by_text(f"{len(BACKFILL_DATES)} runs will be triggered.").wait_for()
    shots("backfill dialog")
    dialog.get_by_role("button", name="Run Backfill").click()
    dialog.wait_for(state="hidden")
    runs = wait_runs(page, ui, DAG_ID, len(BACKFILL_DATES), run_type="backfill")
    assert [r["state"] for r in runs] == ["success"] * len(BACKFILL_DATES), ui.logs()
    assert [jst_ds(r["logical_date"]) for r in runs] == BACKFILL_DATES
    submitted = sorted(
        r["parameters"]["target_date"]
        for r in _local_runs(ui).values()
        if r["parameters"]["target_date"] in BACKFILL_DATES
    )
    assert submitted == BACKFILL_DATES  # one pipeline run per target date
    page.goto(f"{ui.url}/dags/{DAG_ID}/runs")
    page.get_by_text("backfill", exact=False).first.wait_for()
    shots("runs list")


def test_run_page_refused_without_login(browser, ui, ui_runs, shots):
    run_id = next(iter(_local_runs(ui)))
    page = shots.page
    response = page.goto(f"{ui.url}/kfp-bridge/local-runs/{run_id}")
    shots("run page without login")
    assert response.status == 401
    assert run_id not in page.locator("body").inner_text().replace(f"/{run_id}", "")
    assert "daily_prediction__" not in page.content()
    page.get_by_role("link", name="Log in to Airflow").click()
    page.get_by_label("Username").wait_for()  # the api-server's own login page
    shots("login page from the run page")
    listing = page.goto(f"{ui.url}/kfp-bridge/local-runs/")
    assert listing.status == 401 and "daily_prediction__" not in page.content()


def open_from_browse_menu(page, shots, title: str, plugin_path: str):
    """Open a plugin page from Airflow's Browse menu; its iframe, once the heading shows."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_text(title, exact=True).click()
    page.wait_for_url(re.compile(rf".*/plugin/{re.escape(plugin_path)}"))
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name=title).wait_for()
    shots(f"{title} in the Browse menu")
    return frame


def test_browse_menu_lists_local_runs_and_opens_one(browser, ui, ui_runs, shots):
    page = login(ui, shots)
    frame = open_from_browse_menu(page, shots, "Local Kubeflow runs", "kfp-local-runs")
    row = frame.locator("#runs tr", has_text=f"target_date: {RUN_TARGET_DATE}").first
    assert "SUCCEEDED" in row.inner_text()
    assert "FAILED" in frame.locator("#runs tr", has_text=FAILING_DAG_ID).first.inner_text()
    row.get_by_role("link").click()
    target = frame.locator("#parameters tr", has_text="target_date").locator("td")
    target.wait_for()
    shots("a local run from the list")
    assert target.inner_text() == RUN_TARGET_DATE


def test_workflows_page_in_the_browse_menu_shows_the_daily_workflow(browser, ui, ui_runs, shots):
    page = login(ui, shots)
    frame = open_from_browse_menu(page, shots, "Prediction workflows", "prediction-workflows")
    row = frame.locator(f"#wf-{DAG_ID}")
    assert "0 6 * * *" in row.locator("td.schedule").inner_text()
    assert "Asia/Tokyo" in row.locator("td.schedule").inner_text()
    # The last partition written and the last run, as Airflow's REST API has them (the
    # UI run wrote RUN_TARGET_DATE; other tests of this module may have run more since).
    events = api(page, ui, f"/assets/events?source_dag_id={DAG_ID}&order_by=-timestamp")
    events = events["asset_events"]
    (last_run,) = api(page, ui, f"/dags/{DAG_ID}/dagRuns?order_by=-run_after&limit=1")["dag_runs"]
    written = max(e["extra"]["target_date"] for e in events)  # the newest partition
    assert written >= RUN_TARGET_DATE
    assert row.locator("td.written").inner_text().startswith(written)
    assert last_run["state"] in row.locator("td.run").inner_text()
    digest = events[0]["extra"]["model_sha256"]  # the model of the latest run
    assert row.locator("td.model code").get_attribute("title") == digest
    kfp = row.locator("a.kfp-link").get_attribute("href")
    assert kfp.startswith(f"{ui.url}/kfp-bridge/local-runs/")
    assert "recommendation / recommendation" in row.locator("td.owner").inner_text()
    # A partition older than the one due now stands out as stale.
    due = row.locator("td.written").inner_text().split("due: ")[-1].strip()
    assert ("stale" in row.get_attribute("class").split()) == (due > written)
    # The UI's plugin iframe is sandboxed without top navigation: the link is the DAG's URL.
    dag_url = row.locator("a.dag-link").get_attribute("href")
    assert dag_url == f"{ui.url}/dags/{DAG_ID}"
    page.goto(dag_url)
    page.get_by_text(DAG_ID).first.wait_for()


def test_workflows_page_refused_without_login(browser, ui, shots):
    page = shots.page
    response = page.goto(f"{ui.url}/prediction-workflows/")
    assert response.status == 401
    assert DAG_ID not in page.content()
    page.get_by_role("link", name="Log in to Airflow").click()
    page.get_by_label("Username").wait_for()
