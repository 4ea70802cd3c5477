"""Which failed tries were already reported, so each try gets one message.

A try can be reported by more than one path: the worker's own failure callback,
and, when the worker died or stopped heartbeating, the scheduler's heartbeat-
timeout path *and* its executor-event ("state mismatch") path, which both ask the
dag-processor to run the callback for the same try. Those processes share no
memory, but both can read and write Airflow Variables, so the ledger is one
Variable: ``{"dag|task|run|map": [reported tries]}``, newest entries kept.

The dag-processor runs the callbacks of one DAG file one after another, so its
two paths cannot race; two workers failing different runs at the same moment
can lose one entry (the cost: a possible second message for that try, never a
missing one). When Variables cannot be reached the message is sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

VARIABLE = "kfp_bridge_reported_tries"
MAX_ENTRIES = 500

log = logging.getLogger(__name__)


def _key(ti: Any) -> str:
    map_index = getattr(ti, "map_index", -1)
    return f"{ti.dag_id}|{ti.task_id}|{ti.run_id}|{-1 if map_index is None else map_index}"


def claim(ti: Any) -> bool:
    """True if this try of ``ti`` was not reported yet (and record that it now is)."""
    try_number = getattr(ti, "try_number", None)
    if try_number is None or not getattr(ti, "run_id", None):
        return True
    try:
        from airflow.sdk import Variable

        raw = Variable.get(VARIABLE, default="{}")
        ledger = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        key = _key(ti)
        # The tries reported, not the last one: a dead worker's try can be reported by the
        # dag-processor after the next try already failed and was reported by its worker.
        value = ledger.pop(key, [])
        reported = [int(t) for t in (value if isinstance(value, list) else [value])]
        if int(try_number) in reported:
            ledger[key] = reported
            return False
        ledger[key] = [*reported, int(try_number)]  # newest last
        for old in list(ledger)[: max(0, len(ledger) - MAX_ENTRIES)]:
            del ledger[old]
        Variable.set(VARIABLE, json.dumps(ledger), description="kfp-bridge: Slack dedup")
    except Exception as err:  # no Variables here: better twice than never
        log.debug("Reported-tries ledger unavailable (%s); sending anyway", err)
    return True
