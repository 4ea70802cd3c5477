"""``airflow dags test`` for several DAGs in one interpreter: ``python _dags_test_many.py
[--migrate] DAG_ID LOGICAL_DATE [DAG_ID LOGICAL_DATE ...]``.

Each pair goes through the CLI's own parser and command function, as ``airflow``'s
``__main__.main`` calls them (``dags test`` -> ``dag_command.dag_test`` -> ``dag.test``:
parse from the DAG folder, run the tasks, run a deferred task's trigger inline); only the
interpreter start and Airflow's import are shared, which is most of a ``dags test``'s
cost. The outcome of each ends the output as ``DAGS_TEST_RESULTS={"dag_id": "success" |
"failed: ..."}``: the CLI raises ``SystemExit("DagRun failed")`` for a failed run.
``--migrate`` runs ``airflow db migrate`` first, in the same interpreter.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from airflow.cli import cli_parser
    from airflow.configuration import write_default_airflow_configuration_if_needed

    migrate = argv[:1] == ["--migrate"]
    argv = argv[1:] if migrate else argv
    if not argv or len(argv) % 2:
        raise SystemExit(
            "usage: _dags_test_many.py [--migrate] DAG_ID LOGICAL_DATE [DAG_ID LOGICAL_DATE ...]"
        )
    parser = cli_parser.get_parser()
    write_default_airflow_configuration_if_needed()
    if migrate:
        args = parser.parse_args(["db", "migrate"])
        args.func(args)
    results: dict[str, str] = {}
    for dag_id, logical_date in zip(argv[::2], argv[1::2], strict=True):
        args = parser.parse_args(["dags", "test", dag_id, logical_date])
        try:
            args.func(args)
        except SystemExit as exc:
            results[dag_id] = f"failed: {exc}"
        else:
            results[dag_id] = "success"
    sys.stdout.flush()
    print("DAGS_TEST_RESULTS=" + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
