"""The KFP-only way, built as a KFP-only team builds it, from the same two components.

For the comparison with the Airflow way (README, "KFP-only vs this, measured"):

* ``daily-prediction-kfp-only`` is what a recurring run on a cron starts. The target date
  comes from KFP's own run-time placeholders (``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``
  for a scheduled run, ``dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER`` for a one-off run),
  turned into a JST date by a small component; the steps run inside a ``dsl.ExitHandler``
  whose exit task posts the run's final status (``dsl.PipelineTaskFinalStatus``) to a Slack
  incoming webhook given as a pipeline parameter; each step retries with ``set_retry``.
* ``daily-prediction-kfp-only-naive`` is the same pipeline with the date computed in the
  pipeline function by ``datetime.now()``: KFP runs that function once, at compile time, so
  the date is a constant of the compiled file and every run writes the compile day's
  partition (the trap of ``../shared/design.md``).

Neither is what this project recommends; ``kfp_prediction/pipeline.py`` is.
"""

# No "from __future__ import annotations": KFP reads the component annotations as types.

import datetime as dt
from collections.abc import Callable

from kfp import dsl
from kfp_prediction import parameters
from kfp_prediction.components import CompileOptions, build_components, place
from kfp_prediction.parameters import (
    FEATURES_STEP,
    PREDICT_STEP,
    ROOT_PARAMETERS,
    Parameter,
    step_arguments,
)

PIPELINE_NAME = "daily-prediction-kfp-only"
NAIVE_PIPELINE_NAME = "daily-prediction-kfp-only-naive"
# The checked-in naive file is compiled with this clock (a JST wall-clock time, as a team in
# Tokyo would compile it), so that compiling again on another day gives the same file and
# its staleness test keeps meaning something. `compile --naive-clock system` uses the real one.
NAIVE_COMPILE_CLOCK = dt.datetime(2026, 11, 24, 6, 0)
RETRIES = 3
DEFAULT_RETRY_BACKOFF_SECONDS = 300
TIME_PLACEHOLDERS = (
    dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
    dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
)

SLACK_WEBHOOK_URL = Parameter(
    "slack_webhook_url",
    str,
    "Slack incoming webhook URL for the exit task. A pipeline parameter, so it is stored in "
    "every run's and the recurring run's parameters, readable by anyone who can read runs.",
    (),
)
KFP_UI_HOST = Parameter(
    "kfp_ui_host", str, "KFP UI base URL for the run link in Slack; empty: no link.", (), ""
)
# The main pipeline's parameters without target_date (it comes from the run's time here).
VARIANT_PARAMETERS: tuple[Parameter, ...] = (
    SLACK_WEBHOOK_URL,
    *(p for p in ROOT_PARAMETERS if p.name != "target_date"),
    KFP_UI_HOST,
)


def jst_target_date(scheduled_time_utc: str, create_time_utc: str) -> str:
    """The JST date of the run's scheduled time (a recurring run), else its create time."""
    from kfp_prediction.dates import jst_date_of_run_time

    return jst_date_of_run_time(scheduled_time_utc, create_time_utc)


def notify_slack(
    status: dsl.PipelineTaskFinalStatus,
    slack_webhook_url: str,
    pipeline_name: str,
    run_name: str,
    run_id: str,
    kfp_ui_host: str,
    target_date: str,
    scheduled_time_utc: str,
    create_time_utc: str,
):
    """Exit task: post the run's final status to Slack (it sees nothing of the steps).

    A ``dsl.ExitHandler`` exit task receives ``dsl.PipelineTaskFinalStatus`` and nothing
    from the tasks it guards, so the message names the run, its state and whatever KFP puts
    in the status, never the failed component or the try: on ``kfp.local`` 2.17 the status
    names the handler group (``Task exit-handler-1 failed.``); on the KFP backend 2.17 the
    state is the MLMD state (``COMPLETE``/``FAILED``) and the error is empty
    (``backend/src/v2/driver/resolve.go``: "TODO: Implement fields Message and Code").
    Self-contained, as a lightweight component's body is: KFP ships this function alone.
    A failed post is printed, never raised (it must not fail a succeeded run), and the
    webhook URL, its secret, is never printed.
    """
    import json
    import urllib.request

    from kfp_prediction.dates import jst_date_of_run_time
    from kfp_prediction.errors import TargetDateError

    if not target_date:  # the compiled-in date (naive form), else the run's time in JST
        try:
            target_date = jst_date_of_run_time(scheduled_time_utc, create_time_utc)
        except TargetDateError as exc:
            target_date = f"unknown ({exc})"
    # kfp.local and Vertex say SUCCEEDED, the KFP backend (MLMD) says COMPLETE.
    succeeded = status.state in ("SUCCEEDED", "COMPLETE")
    lines = [
        f"{':large_green_circle:' if succeeded else ':red_circle:'} *{pipeline_name}* "
        f"{status.state}",
        f"Target date (JST): {target_date}",
        f"Run: {run_name} ({run_id})",
    ]
    if not succeeded:
        lines.append(f"Error: {status.error_message or '(none given by KFP)'}")
    if kfp_ui_host:
        lines.append(f"Run link: {kfp_ui_host.rstrip('/')}/#/runs/details/{run_id}")
    text = "\n".join(lines)
    print(text)
    request = urllib.request.Request(
        slack_webhook_url,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except (OSError, ValueError) as exc:
        print(f"Slack notification failed: {type(exc).__name__}: {getattr(exc, 'reason', '')}")
    else:
        print("Slack notification sent")


def build_kfp_only_pipeline(
    options: CompileOptions | None = None,
    retry_backoff_seconds: int = DEFAULT_RETRY_BACKOFF_SECONDS,
) -> Callable:
    """``daily-prediction-kfp-only``: the date from KFP's run-time placeholders."""
    return _build(
        PIPELINE_NAME,
        "KFP-only variant (comparison): target date from the run's schedule/create time "
        "placeholders in JST, Slack from an ExitHandler.",
        None,
        options or CompileOptions(),
        retry_backoff_seconds,
    )


def build_naive_pipeline(
    options: CompileOptions | None = None,
    retry_backoff_seconds: int = DEFAULT_RETRY_BACKOFF_SECONDS,
    now: Callable[[], dt.datetime] = dt.datetime.now,
) -> Callable:
    """``daily-prediction-kfp-only-naive``: the date from ``now()`` when KFP compiles it."""
    return _build(
        NAIVE_PIPELINE_NAME,
        "Naive KFP-only variant (the trap): target date from datetime.now() in the pipeline "
        "function, i.e. fixed when the pipeline is compiled.",
        now,
        options or CompileOptions(),
        retry_backoff_seconds,
    )


def _build(
    name: str,
    description: str,
    now: Callable[[], dt.datetime] | None,
    options: CompileOptions,
    retry_backoff_seconds: int,
) -> Callable:
    ops = build_components(options)
    small = dsl.component(base_image=options.image, install_kfp_package=False)
    jst_date_op, notify_op = small(jst_target_date), small(notify_slack)
    signature = parameters.signature(params=VARIANT_PARAMETERS)

    def pipeline_function(*args, **kwargs):
        values = signature.bind(*args, **kwargs).arguments
        # What the naive team wrote. KFP calls this function once, in the compiler.
        compiled_date = now().strftime("%Y-%m-%d") if now is not None else ""
        exit_task = notify_op(
            slack_webhook_url=values["slack_webhook_url"],
            pipeline_name=name,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            kfp_ui_host=values["kfp_ui_host"],
            target_date=compiled_date,
            # An exit task may depend on no other task, so it reads the run's time itself.
            scheduled_time_utc="" if now else dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
            create_time_utc="" if now else dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
        )
        _small_task(exit_task, "notify-slack")
        with dsl.ExitHandler(exit_task, name="daily-prediction"):
            if now is None:
                # Each placeholder alone as an input: KFP resolves only a whole constant.
                date_task = jst_date_op(
                    scheduled_time_utc=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
                    create_time_utc=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
                )
                _small_task(date_task, "jst-target-date")
                target_date = date_task.output
            else:
                target_date = compiled_date
            values = {**values, "target_date": target_date}
            features = ops.features(
                **step_arguments(FEATURES_STEP, values), run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
            )
            predict = ops.predict(
                **step_arguments(PREDICT_STEP, values),
                features=features.outputs["Output"],
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            )
            for step, task in ((FEATURES_STEP, features), (PREDICT_STEP, predict)):
                place(task, step, options)
                task.set_retry(
                    num_retries=RETRIES,
                    backoff_duration=f"{retry_backoff_seconds}s",
                    backoff_factor=2.0,
                    backoff_max_duration="3600s",
                )

    pipeline_function.__name__ = name.replace("-", "_")
    pipeline_function.__signature__ = signature
    pipeline_function.__doc__ = parameters.docstring(description, VARIANT_PARAMETERS)
    return dsl.pipeline(name=name, description=description)(pipeline_function)


def _small_task(task: object, display_name: str) -> None:
    task.set_display_name(display_name)
    task.set_caching_options(False)
    task.set_cpu_request("100m")
    task.set_memory_request("256M")
    task.set_memory_limit("512M")


__all__ = [
    "NAIVE_COMPILE_CLOCK",
    "NAIVE_PIPELINE_NAME",
    "PIPELINE_NAME",
    "TIME_PLACEHOLDERS",
    "VARIANT_PARAMETERS",
    "build_kfp_only_pipeline",
    "build_naive_pipeline",
]
