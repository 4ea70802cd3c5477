"""The workflows page: every registry workflow, its schedule, freshness and last run.

Served by the application's plugin on the api-server under ``WORKFLOWS_PREFIX`` with the
api-server's own authentication (Airflow's ``get_user``: JWT cookie or bearer token) and
each workflow's DAG read permission (``is_authorized_dag``), like the local run page.

Per workflow: schedule in its zone and the next run's target partition; the newest partition
written (the asset events of its output table from that DAG) and when it was written; the last
run's state and Kubeflow run link (the operator's XCom); the model digest of that event;
owner, team, connection, a link to the DAG. A workflow is *failing* when its last run
failed, *stale* when the partition of the latest scheduled run that should have ended by
now (scheduled time + the run timeout) is not written.
"""

# No "from __future__ import annotations": FastAPI reads the route annotations.

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any

import pendulum

from kfp_bridge.ui import LazyApp
from prediction_app.registry import Workflow, load_registry
from prediction_app.target_date import target_partition

WORKFLOWS_PREFIX = "/prediction-workflows"


@dataclass
class WorkflowStatus:
    """One row of the page (data; the template formats it)."""

    name: str
    owner: str
    team: str
    description: str
    kfp_conn_id: str
    cron: str
    timezone: str
    partition: str
    next_run: pendulum.DateTime
    next_target: str
    expected_target: str | None
    last_target: str | None = None
    last_written_at: pendulum.DateTime | None = None
    model_sha256: str | None = None
    last_run_id: str | None = None
    last_run_state: str | None = None
    last_run_target: str | None = None
    kfp_run_url: str | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def age(self) -> str:
        """How old the last written partition's event is, e.g. ``3 h 05 min``."""
        if self.last_written_at is None:
            return ""
        seconds = max(0, int((pendulum.now("UTC") - self.last_written_at).total_seconds()))
        hours, rest = divmod(seconds, 3600)
        days, hours = divmod(hours, 24)
        text = f"{hours} h {rest // 60:02d} min"
        return f"{days} d {text}" if days else text


def _schedule_times(workflow: Workflow, now: pendulum.DateTime) -> tuple[Any, Any]:
    """The next scheduled time after ``now`` and the latest one whose run should be over."""
    from croniter import croniter

    zone = workflow.schedule.timezone
    local_now = now.in_timezone(zone)
    upcoming = croniter(workflow.schedule.cron, local_now).get_next(dt.datetime)
    timeout = dt.timedelta(minutes=workflow.operations.dagrun_timeout_minutes)
    due = croniter(workflow.schedule.cron, local_now - timeout).get_prev(dt.datetime)
    start = pendulum.datetime(
        workflow.schedule.start_date.year,
        workflow.schedule.start_date.month,
        workflow.schedule.start_date.day,
        tz=zone,
    )
    return pendulum.instance(upcoming), (pendulum.instance(due) if due >= start else None)


def _partition(workflow: Workflow, moment: Any) -> str:
    rule = workflow.target_date
    return target_partition({"logical_date": moment}, rule.timezone, rule.partition)


def workflow_statuses(
    workflows: list[Workflow], session: Any, now: pendulum.DateTime | None = None
) -> list[WorkflowStatus]:
    """What the page shows, read from the registry and Airflow's metadata database."""
    from airflow.models.asset import AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    from kfp_bridge.links.kfp import RUN_URL_XCOM_KEY

    now = now or pendulum.now("UTC")
    rows = []
    for workflow in workflows:
        upcoming, due = _schedule_times(workflow, now)
        row = WorkflowStatus(
            name=workflow.name,
            owner=workflow.owner,
            team=workflow.team,
            description=workflow.description,
            kfp_conn_id=workflow.identity.kfp_conn_id,
            cron=workflow.schedule.cron,
            timezone=workflow.schedule.timezone,
            partition=workflow.target_date.partition,
            next_run=upcoming,
            next_target=_partition(workflow, upcoming),
            expected_target=_partition(workflow, due) if due else None,
        )
        # Freshness is the newest partition (a backfill of old dates does not make a
        # workflow fresher); the model in use is the one of the latest event.
        newest = session.scalars(
            select(AssetEvent)
            .where(AssetEvent.source_dag_id == workflow.name)
            .order_by(AssetEvent.partition_key.desc(), AssetEvent.timestamp.desc())
            .limit(1)
        ).first()
        event = session.scalars(
            select(AssetEvent)
            .where(AssetEvent.source_dag_id == workflow.name)
            .order_by(AssetEvent.timestamp.desc())
            .limit(1)
        ).first()
        if newest is not None and event is not None:
            row.last_target = (newest.extra or {}).get("target_date") or newest.partition_key
            row.last_written_at = pendulum.instance(newest.timestamp)
            row.model_sha256 = (event.extra or {}).get("model_sha256")
        run = session.scalars(
            select(DagRun)
            .where(DagRun.dag_id == workflow.name)
            .order_by(DagRun.run_after.desc())
            .limit(1)
        ).first()
        if run is not None:
            row.last_run_id = run.run_id
            row.last_run_state = str(getattr(run.state, "value", run.state))
            row.last_run_target = _partition(workflow, run.logical_date or run.run_after)
            xcom = session.scalars(
                select(XComModel)
                .where(
                    XComModel.dag_id == workflow.name,
                    XComModel.run_id == run.run_id,
                    XComModel.key == RUN_URL_XCOM_KEY,
                )
                .order_by(XComModel.timestamp.desc())
                .limit(1)
            ).first()
            if xcom is not None:
                row.kfp_run_url = XComModel.deserialize_value(xcom)
            else:  # the run's asset event names its Kubeflow run too
                own = session.scalars(
                    select(AssetEvent)
                    .where(
                        AssetEvent.source_dag_id == workflow.name,
                        AssetEvent.source_run_id == run.run_id,
                    )
                    .limit(1)
                ).first()
                row.kfp_run_url = (own.extra or {}).get("run_url") if own else None
        if row.last_run_state == "failed":
            row.flags.append("failing")
        if row.expected_target and (
            row.last_target is None or row.last_target < row.expected_target
        ):
            row.flags.append("stale")
        rows.append(row)
    return rows


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Prediction workflows</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .4rem .6rem; text-align: left;
         vertical-align: top; }
tr.failing { background: #fde2e1; } tr.stale { background: #fff4ce; }
tr.failing.stale { background: #fde2e1; }
.flag { font-weight: bold; text-transform: uppercase; margin-right: .4rem; }
.failing .flag-failing { color: #b00020; } .stale .flag-stale { color: #8a6d00; }
.muted { color: #666; } code { font-size: 90%; }
</style></head><body>
<h1>Prediction workflows</h1>
<p class="muted">The registry (<code>workflows/*.yaml</code>); times in each workflow's zone.
{% if errors %}<br><strong>Registry errors</strong>: {{ errors }}{% endif %}</p>
<table id="workflows">
<thead><tr><th>Workflow</th><th>Schedule</th><th>Next target</th><th>Last written</th>
<th>Last run</th><th>Model</th><th>Owner / team</th></tr></thead>
<tbody>
{% for w in rows %}
<tr id="wf-{{ w.name }}" class="{{ w.flags | join(' ') }}" data-flags="{{ w.flags | join(' ') }}">
<td>{% for f in w.flags %}<span class="flag flag-{{ f }}">{{ f }}</span>{% endfor %}
<a class="dag-link" href="{{ base }}dags/{{ w.name }}">{{ w.name }}</a>
<div class="muted">{{ w.description }}</div></td>
<td class="schedule"><code>{{ w.cron }}</code> {{ w.timezone }}<br>
<span class="muted">{{ w.partition }} partition</span></td>
<td class="next">{{ w.next_target }}<br><span class="muted">run at
{{ w.next_run.format('YYYY-MM-DD HH:mm zz') }}</span></td>
<td class="written">{% if w.last_target %}{{ w.last_target }}<br>
<span class="muted age">{{ w.age }} ago</span>{% else %}<span class="muted">none</span>{% endif %}
{% if w.expected_target %}<br><span class="muted">due: {{ w.expected_target }}</span>{% endif %}
</td>
<td class="run">{% if w.last_run_id %}<span class="state {{ w.last_run_state }}">
{{ w.last_run_state }}</span> for {{ w.last_run_target }}<br>
<a
 href="{{ base }}dags/{{ w.name }}/runs/{{ w.last_run_id | urlencode }}">Airflow run</a>
{% if w.kfp_run_url %} · <a class="kfp-link"
 href="{{ w.kfp_run_url }}">Kubeflow run</a>{% endif %}
{% else %}<span class="muted">no run yet</span>{% endif %}</td>
<td class="model">{% if w.model_sha256 %}<code title="{{ w.model_sha256 }}">
{{ w.model_sha256[:12] }}</code>{% else %}<span class="muted">n/a</span>{% endif %}</td>
<td class="owner">{{ w.owner }} / {{ w.team }}<br>
<span class="muted"><code>{{ w.kfp_conn_id }}</code></span></td>
</tr>
{% else %}<tr><td colspan="7">No workflow you may read.</td></tr>{% endfor %}
</tbody></table></body></html>
"""


def _can_read(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    return get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
    )


def create_app() -> Any:
    """The app the plugin mounts under ``WORKFLOWS_PREFIX`` (built inside the api-server)."""
    from airflow.api_fastapi.core_api.security import get_user
    from airflow.utils.session import create_session
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse
    from jinja2 import Environment, select_autoescape

    env = Environment(autoescape=select_autoescape(default=True))
    template = env.from_string(_PAGE)
    app = FastAPI(title="Prediction workflows", docs_url=None, redoc_url=None, openapi_url=None)
    user_dep = Annotated[Any, Depends(get_user)]

    @app.exception_handler(HTTPException)
    async def _error(request: Request, exc: HTTPException) -> HTMLResponse:
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login(next_url=str(request.url))
        html = env.from_string(
            "<!doctype html><title>Prediction workflows</title><p>{{ status }}: {{ detail }}</p>"
            '{% if status == 401 %}<p><a href="{{ login }}">Log in to Airflow</a></p>{% endif %}'
        ).render(status=exc.status_code, detail=exc.detail, login=login)
        return HTMLResponse(html, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    def index(user: user_dep) -> HTMLResponse:
        from airflow.configuration import conf

        registry = load_registry()
        readable = [w for _, w in registry.workflows if _can_read(user, w.name)]
        with create_session() as session:
            rows = workflow_statuses(readable, session)
        base = conf.get("api", "base_url", fallback="/").rstrip("/") + "/"
        errors = f"{len(registry.errors)} bad entries (see the DAG import errors)"
        return HTMLResponse(
            template.render(rows=rows, base=base, errors=errors if registry.errors else "")
        )

    return app


class LazyWorkflowsApp(LazyApp):
    """The workflows page (:func:`create_app`), built on the api-server's first request."""

    def __init__(self) -> None:
        super().__init__(f"{__name__}:create_app")
