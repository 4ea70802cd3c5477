"""The local run page: a FastAPI app the plugin mounts on the Airflow api-server.

``GET {RUN_PAGE_PREFIX}/local-runs/`` lists recent local runs, ``.../local-runs/{run_id}``
shows one (state, name, parameters, times, outputs, steps with their metrics, log tail).
``?conn_id=`` picks the ``kfp`` connection whose runs folder is read (default
``kfp_default``); it must use the local backend. Links are built from the request's
``root_path`` (the mount path behind the api-server's ``[api] base_url`` path), so the
page works when Airflow is served under a path prefix. When the task that ran it kept a try
history (:mod:`kfp_bridge.try_history`, in Airflow's ``task_state_store`` table, read
from the metadata database the api-server already holds), the page lists every try.

Access follows the api-server's own: the user comes from Airflow's ``get_user``
dependency (JWT cookie or bearer token; ``airflow/api_fastapi/core_api/security.py``),
so an anonymous request is refused (401), and the auth manager decides per DAG with
``is_authorized_dag(GET, RUN)`` for the run's DAG, as Airflow's ``requires_access_dag``
does, plus ``TASK_LOGS`` for the log tail. The run's DAG is the ``airflow-dag-id`` label
the operator puts on every run; a run without one needs access to all DAGs.
What a signed-in user may not see is answered like what does not exist: a run of a DAG
they may not read is the 404 of a missing run (checked before the run's state and
files are read), and a connection that is missing or not a local-backend ``kfp`` one is
one 404 for both; the reason goes to the api-server's log, never connection extras.
"""

# No "from __future__ import annotations": FastAPI reads the route annotations, which
# refer to names local to create_app.

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import pendulum
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kfp_bridge import try_history
from kfp_bridge.links.local_run import DEFAULT_CONN_ID, LOCAL_RUNS_PATH
from kfp_bridge.ui import local_runs

_CONN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")
RECENT_RUNS = 50
log = logging.getLogger(__name__)


def _display_tz() -> str:
    """The zone the page shows times in: Airflow's ``[core] default_timezone`` (UTC unset)."""
    from airflow.configuration import conf

    return conf.get("core", "default_timezone", fallback="utc") or "utc"


def _local_time(value: str | None, tz: str | None = None) -> str:
    if not value:
        return ""
    try:
        moment = pendulum.parse(value, tz="UTC")
    except ValueError:  # pendulum's ParserError is one
        return value
    return moment.in_timezone(tz or _display_tz()).format("YYYY-MM-DD HH:mm:ss zz")


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    seconds = (pendulum.parse(end) - pendulum.parse(start)).total_seconds()
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


_templates = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(["html"]),
)
_templates.filters.update(local_time=_local_time, duration=_duration)


def _can_read(user: Any, dag_id: str | None, entity: str = "RUN") -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.configuration import conf

    team_name = None
    if dag_id and conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team_name = DagModel.get_team_name(dag_id)  # teams exist only in multi-team mode
    return get_auth_manager().is_authorized_dag(
        method="GET",
        access_entity=DagAccessEntity[entity],
        details=DagDetails(id=dag_id, team_name=team_name),
        user=user,
    )


def _no_local_runs(conn_id: str) -> HTTPException:
    """The one answer for a connection the page cannot read runs from.

    Whether the connection is missing, not a ``kfp`` connection of the local backend or
    misconfigured stays in the api-server's log: the page tells a signed-in user nothing
    about connections (their existence, their extras) beyond that.
    """
    return HTTPException(404, f"no local runs for connection {conn_id!r}")


def _backend(conn_id: str):
    from kfp_bridge.hooks.kfp import KubeflowPipelineHook

    if not _CONN_ID.fullmatch(conn_id):
        raise HTTPException(400, f"invalid connection id {conn_id!r}")
    hook = KubeflowPipelineHook(kfp_conn_id=conn_id)
    try:
        backend_name = hook.backend_name
        if backend_name != "local":
            log.warning("Run page: connection %r uses backend %r, not local", conn_id, backend_name)
            raise _no_local_runs(conn_id)
        return hook.get_conn()
    except HTTPException:
        raise
    except Exception as exc:
        log.warning("Run page: cannot read local runs of connection %r: %s", conn_id, exc)
        raise _no_local_runs(conn_id) from None


def _no_run(run_id: str) -> HTTPException:
    """The one answer for a run that is missing, unreadable or of a DAG the user may not read.

    Like a missing private resource on GitHub: the same status and text, so the answer
    does not tell which (nor the DAG id, nor the runs folder's path).
    """
    return HTTPException(404, f"no local run {run_id!r}")


def stored_history(session: Any, dag_id: str, task_id: str, run_id: str) -> list[Mapping]:
    """The try history of ``dag_id.task_id`` that names ``run_id``, from ``task_state_store``.

    One row per DAG run of the task; the value is the JSON list the operator wrote.
    Rows are narrowed by the run id's text, then the list is parsed and must hold an
    entry with that run id.
    """
    from airflow.models.task_state_store import TaskStateStoreModel as Row
    from sqlalchemy import select

    values = session.scalars(
        select(Row.value).where(
            Row.dag_id == dag_id,
            Row.task_id == task_id,
            Row.key == try_history.HISTORY_KEY,
            Row.value.contains(run_id, autoescape=True),
        )
    ).all()
    for value in values:
        try:
            entries = json.loads(value)
        except ValueError:
            continue
        if isinstance(entries, list) and any(
            isinstance(e, Mapping) and e.get("run_id") == run_id for e in entries
        ):
            return [e for e in entries if isinstance(e, Mapping)]
    return []


def _tries_of(run: Any) -> list[Mapping]:
    """The try history for the page; none when unknown (the page never fails over it)."""
    if not run.dag_id or not run.task_id:
        return []
    try:
        from airflow.utils.session import create_session

        with create_session() as session:
            return stored_history(session, run.dag_id, run.task_id, run.run_id)
    except Exception:
        log.warning("Could not read the try history of run %s", run.run_id, exc_info=True)
        return []


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``name``; its links start at where this app is mounted.

    ``root_path`` is the mount path (``RUN_PAGE_PREFIX``) behind the api-server's own
    root path, which Airflow takes from ``[api] base_url`` (``https://h/airflow/`` makes
    it ``/airflow``; ``airflow/api_fastapi/app.py``), so links work under a path prefix.
    """
    prefix = request.scope.get("root_path", "").rstrip("/") + LOCAL_RUNS_PATH
    html = _templates.get_template(name).render(prefix=prefix, display_tz=_display_tz(), **context)
    return HTMLResponse(html, status_code=status_code)


def create_app() -> FastAPI:
    """The app the plugin mounts under ``RUN_PAGE_PREFIX`` (built inside the api-server)."""
    from airflow.api_fastapi.core_api.security import get_user

    app = FastAPI(title="kfp-bridge local runs", docs_url=None, redoc_url=None, openapi_url=None)
    user_dep = Annotated[Any, Depends(get_user)]
    conn_query = Annotated[str, Query(max_length=250)]

    @app.exception_handler(HTTPException)
    async def _error(request: Request, exc: HTTPException) -> HTMLResponse:
        login_url = None
        if exc.status_code == 401:
            from airflow.api_fastapi.app import get_auth_manager

            login_url = get_auth_manager().get_url_login(next_url=str(request.url))
        return _page(
            request, "error.html", exc.status_code, status=exc.status_code, detail=exc.detail,
            login_url=login_url,
        )  # fmt: skip

    @app.get(LOCAL_RUNS_PATH + "/", response_class=HTMLResponse)
    def runs_index(
        request: Request, user: user_dep, conn_id: conn_query = DEFAULT_CONN_ID
    ) -> HTMLResponse:
        backend = _backend(conn_id)
        allowed: dict[str | None, bool] = {}
        runs = []
        for run in local_runs.list_runs(backend, limit=RECENT_RUNS * 4):
            if run.dag_id not in allowed:
                allowed[run.dag_id] = _can_read(user, run.dag_id)
            if allowed[run.dag_id]:
                runs.append(run)
        return _page(request, "runs.html", runs=runs[:RECENT_RUNS], conn_id=conn_id)

    @app.get(LOCAL_RUNS_PATH + "/{run_id}", response_class=HTMLResponse)
    def run_page(
        request: Request, run_id: str, user: user_dep, conn_id: conn_query = DEFAULT_CONN_ID
    ) -> HTMLResponse:
        backend = _backend(conn_id)
        try:
            # the DAG first (the run's request.json labels), its state and files after
            dag_id = local_runs.run_dag_id(backend, run_id)
            if not _can_read(user, dag_id):
                raise _no_run(run_id)
            run = local_runs.read_run(backend, run_id)
            if run.dag_id != dag_id:  # relabelled between the reads: check again next time
                raise _no_run(run_id)
        except local_runs.RunNotFound as exc:
            log.info("Run page: local run %r of connection %r: %s", run_id, conn_id, exc)
            raise _no_run(run_id) from None
        show_log = _can_read(user, run.dag_id, "TASK_LOGS")
        return _page(
            request, "run.html", run=run, show_log=show_log, conn_id=conn_id, tries=_tries_of(run)
        )

    return app
