"""The shared-configuration decoder gives the generated client's models, cheaply."""

from __future__ import annotations

import datetime
import json

import kfp_server_api
import pytest

from kfp_bridge.backends import kfp_models

RUN = {
    "run_id": "r-1",
    "display_name": "daily_prediction__predict__2026-12-04",
    "state": "FAILED",
    "created_at": "2026-12-03T21:00:01Z",
    "finished_at": "2026-12-03T21:05:02.123456789Z",
    "runtime_config": {"parameters": {"target_date": "2026-12-04", "lookback_days": 28}},
    "pipeline_spec": {"pipelineInfo": {"name": "daily-prediction"}, "root": {"dag": {}}},
    "state_history": [
        {"update_time": "2026-12-03T21:00:01Z", "state": "PENDING"},
        {"update_time": "2026-12-03T21:05:02Z", "state": "FAILED"},
    ],
    "run_details": {
        "task_details": [
            {
                "display_name": "predict",
                "state": "FAILED",
                "create_time": "2026-12-03T21:01:00Z",
                "child_tasks": [{"pod_name": "daily-prediction-x-1234"}],
            }
        ]
    },
}


class _Response:
    def __init__(self, body: object) -> None:
        self.data = json.dumps(body).encode()

    def getheader(self, name: str, default: object = None) -> object:
        return default


def test_a_run_decodes_to_what_the_generated_client_builds():
    ours = kfp_models.ApiClient().deserialize(_Response(RUN), "V2beta1Run")
    theirs = kfp_server_api.ApiClient().deserialize(_Response(RUN), "V2beta1Run")
    assert isinstance(ours, kfp_server_api.V2beta1Run)
    assert ours.to_dict() == theirs.to_dict()
    assert ours.run_details.task_details[0].child_tasks[0].pod_name == "daily-prediction-x-1234"
    assert ours.finished_at == datetime.datetime(2026, 12, 3, 21, 5, 2, 123456, tzinfo=datetime.UTC)


def test_lists_of_runs_decode_too():
    body = {"runs": [RUN, RUN], "total_size": 2, "next_page_token": ""}
    ours = kfp_models.ApiClient().deserialize(_Response(body), "V2beta1ListRunsResponse")
    assert [r.run_id for r in ours.runs] == ["r-1", "r-1"] and ours.total_size == 2


def test_one_configuration_serves_every_model(monkeypatch):
    """The cost this module removes: a Configuration (and logger cache flushes) per model."""
    client = kfp_models.ApiClient()
    built = []
    original = kfp_server_api.Configuration.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(kfp_server_api.Configuration, "__init__", counting)
    client.deserialize(_Response(RUN), "V2beta1Run")
    assert built == []
    kfp_server_api.ApiClient(client.configuration).deserialize(_Response(RUN), "V2beta1Run")
    assert len(built) > 5  # the generated decoder, for comparison


def test_client_side_validation_still_applies():
    """The shared configuration keeps the generated checks (here protobuf Any's base64)."""
    with pytest.raises(ValueError, match="Invalid value for `value`"):
        kfp_models.ApiClient().decode({"type_url": "t", "value": "not base64!"}, "ProtobufAny")
