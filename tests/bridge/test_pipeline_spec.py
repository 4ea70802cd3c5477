"""Reading compiled pipelines as data and checking run parameters against them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfp_bridge.exceptions import ParameterError, PipelineSpecError
from kfp_bridge.pipeline_spec import load_pipeline, parse_pipeline
from tests.bridge._helpers import TINY_PIPELINE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny():
    return load_pipeline(TINY_PIPELINE)


def test_root_parameters_with_types_defaults_and_optionality(tiny):
    params = tiny.parameters
    assert tiny.name == "tiny-pipeline"
    assert {n: p.parameter_type for n, p in params.items()} == {
        "message": "STRING",
        "repeat": "NUMBER_INTEGER",
        "sleep_seconds": "NUMBER_DOUBLE",
        "fail": "BOOLEAN",
        "failure": "STRING",
        "tags": "LIST",
        "options": "STRUCT",
    }
    assert tiny.required_parameters == ["message"]
    assert params["repeat"].default == 1 and isinstance(params["repeat"].default, int)
    assert params["fail"].default is False
    assert params["failure"].default == ""
    assert tiny.platform_spec is None


def test_rendered_template_strings_are_coerced_explicitly(tiny):
    assert tiny.validate_parameters(
        {
            "message": "2026-11-27",
            "repeat": "28",
            "sleep_seconds": "0.5",
            "fail": "False",
            "tags": '["a", "b"]',
            "options": '{"k": 1}',
        }
    ) == {
        "message": "2026-11-27",
        "repeat": 28,
        "sleep_seconds": 0.5,
        "fail": False,
        "tags": ["a", "b"],
        "options": {"k": 1},
    }


def test_native_values_pass_and_none_means_default(tiny):
    assert tiny.validate_parameters(
        {"message": "x", "repeat": 3.0, "sleep_seconds": 2, "fail": True, "tags": None}
    ) == {"message": "x", "repeat": 3, "sleep_seconds": 2.0, "fail": True}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"message": "x", "lookback": 3}, "unknown parameter 'lookback'"),
        ({}, "missing required parameter 'message' (STRING)"),
        ({"message": None}, "missing required parameter 'message'"),
        ({"message": "x", "repeat": "28 days"}, "parameter 'repeat' expects NUMBER_INTEGER"),
        ({"message": "x", "repeat": 2.5}, "parameter 'repeat' expects NUMBER_INTEGER"),
        ({"message": "x", "repeat": True}, "parameter 'repeat' expects NUMBER_INTEGER"),
        (
            {"message": "x", "sleep_seconds": "soon"},
            "parameter 'sleep_seconds' expects NUMBER_DOUBLE",
        ),
        (
            {"message": "x", "sleep_seconds": "nan"},
            "parameter 'sleep_seconds' expects NUMBER_DOUBLE",
        ),
        ({"message": "x", "fail": "yes"}, "parameter 'fail' expects BOOLEAN"),
        ({"message": 7}, "parameter 'message' expects STRING"),
        ({"message": "x", "tags": "a,b"}, "parameter 'tags' expects LIST"),
        ({"message": "x", "options": "[1]"}, "parameter 'options' expects STRUCT"),
    ],
)
def test_wrong_parameters_fail_naming_the_parameter(tiny, params, fragment):
    with pytest.raises(ParameterError) as err:
        tiny.validate_parameters(params)
    assert fragment in str(err.value)


def test_all_problems_are_reported_at_once(tiny):
    with pytest.raises(ParameterError) as err:
        tiny.validate_parameters({"bogus": 1, "repeat": "x"})
    message = str(err.value)
    assert "'bogus'" in message and "'repeat'" in message and "'message'" in message


def test_platform_spec_is_the_optional_second_document():
    text = TINY_PIPELINE.read_text() + "\n---\nplatforms:\n  kubernetes:\n    deploymentSpec: {}\n"
    compiled = parse_pipeline(text)
    assert compiled.platform_spec == {"platforms": {"kubernetes": {"deploymentSpec": {}}}}
    assert compiled.name == "tiny-pipeline"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineSpecError, match="compiled pipeline file not found"):
        load_pipeline(tmp_path / "nope.yaml")


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(PipelineSpecError, match="cannot read compiled pipeline file"):
        load_pipeline(tmp_path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is empty"),
        ("key: [unclosed", "is not valid YAML"),
        ("- a\n- b\n", "top level is not a mapping"),
        ("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\n", "Argo workflow / KFP v1"),
        ("name: my-component\nimplementation: {}\n", "missing pipelineInfo, root, schemaVersion"),
        (
            "pipelineInfo: {name: p}\nroot: {}\nschemaVersion: 1.0.0\n",
            "only KFP v2 (2.x) is supported",
        ),
        (
            "pipelineInfo: {name: p}\nroot: {}\nschemaVersion: 2.1.0\n---\nfoo: 1\n",
            "not a KFP platform spec",
        ),
    ],
)
def test_non_kfp_v2_yaml_is_rejected(text, fragment):
    with pytest.raises(PipelineSpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_pipeline(text, source="x.yaml")


def test_the_project_pipeline_loads_when_compiled():
    """The production pipeline (issue 2) must stay readable by the bridge."""
    compiled = load_pipeline(REPO / "pipelines" / "compiled" / "daily_prediction.yaml")
    assert "target_date" in compiled.parameters
    assert compiled.parameters["target_date"].parameter_type == "STRING"
