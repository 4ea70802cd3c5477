"""The checked-in compiled pipeline: fresh, date-free, KFP and Vertex variants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kfp_prediction.compile import (
    COMPILED_DIR,
    COMPILED_FILES,
    KFP_FILE,
    VERTEX_FILE,
    compile_pipeline,
    main,
)
from kfp_prediction.components import DEFAULT_STEP_OPTIONS
from kfp_prediction.parameters import ROOT_PARAMETERS, step_parameters

from benchmarks.kfp_only.compile import COMPILED_FILES as VARIANT_FILES
from benchmarks.kfp_only.compile import compile_variants

DATE_LIKE = re.compile(r"(19|20)\d\d-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])")


def load_docs(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def test_checked_in_yaml_is_fresh(tmp_path: Path) -> None:
    """Every checked-in file, the KFP-only variants of the comparison included (compiled by
    benchmarks/kfp_only; the naive one with a fixed clock, so this holds on any day)."""
    compile_pipeline(tmp_path)  # the defaults, as `make compile` uses
    compile_variants(tmp_path)
    names = (*COMPILED_FILES, *VARIANT_FILES)
    assert sorted(p.name for p in COMPILED_DIR.glob("*.yaml")) == sorted(names)
    for name in names:
        assert (COMPILED_DIR / name).read_text() == (tmp_path / name).read_text(), (
            f"pipelines/compiled/{name} is stale: run `make compile`"
        )


@pytest.mark.parametrize("name", [KFP_FILE, VERTEX_FILE])
def test_no_date_is_compiled_in(name: str) -> None:
    text = (COMPILED_DIR / name).read_text()
    assert not DATE_LIKE.search(text)
    spec = load_docs(COMPILED_DIR / name)[0]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in params["target_date"]
    assert not params["target_date"].get("isOptional", False)
    assert params["target_date"]["parameterType"] == "STRING"
    assert set(params) == {
        "target_date",
        "warehouse",
        "model_uri",
        "model_sha256",
        "lookback_days",
        "predictions_table",
        "min_rows",
    }
    assert params["lookback_days"]["defaultValue"] == 28
    assert params["min_rows"]["defaultValue"] == 1  # only an empty result is refused


def test_root_parameters_are_the_declared_ones() -> None:
    """The compiled inputs follow from parameters.ROOT_PARAMETERS: names, types, defaults."""
    kinds = {str: "STRING", int: "NUMBER_INTEGER"}
    params = load_docs(COMPILED_DIR / KFP_FILE)[0]["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {p.name for p in ROOT_PARAMETERS}
    for p in ROOT_PARAMETERS:
        spec = params[p.name]
        assert spec["parameterType"] == kinds[p.type]
        assert spec["description"] == p.description
        assert spec.get("isOptional", False) is not p.required
        if not p.required:
            assert spec["defaultValue"] == p.default


def test_two_steps_hand_over_a_table_reference() -> None:
    tasks = load_docs(COMPILED_DIR / KFP_FILE)[0]["root"]["dag"]["tasks"]
    assert set(tasks) == {"features", "predict"}
    inputs = tasks["predict"]["inputs"]["parameters"]
    assert inputs["features"]["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "features",
    }
    for step in ("features", "predict"):
        wired = {
            name
            for name, value in tasks[step]["inputs"]["parameters"].items()
            if "componentInputParameter" in value
        }
        assert wired == {p.name for p in step_parameters(step)}


def test_component_inputs_are_checked_against_the_declaration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kfp_prediction import components

    monkeypatch.setitem(components.STEP_EXTRA_INPUTS, "features", {})  # run_id undeclared
    with pytest.raises(TypeError, match="component features has inputs"):
        components.build_components()


def test_kfp_file_has_platform_doc_and_vertex_file_is_single_doc() -> None:
    kfp_docs = load_docs(COMPILED_DIR / KFP_FILE)
    assert len(kfp_docs) == 2
    executors = kfp_docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-features", "exec-predict"}
    for executor in executors.values():
        assert "nodeSelector" not in executor  # off by default
    vertex = yaml.safe_load((COMPILED_DIR / VERTEX_FILE).read_text())  # what Vertex does
    assert "platforms" not in vertex
    assert vertex["root"] == kfp_docs[0]["root"]


def test_resources_per_step_and_no_caching() -> None:
    spec = load_docs(COMPILED_DIR / KFP_FILE)[0]
    for step, placement in DEFAULT_STEP_OPTIONS.items():
        resources = spec["deploymentSpec"]["executors"][f"exec-{step}"]["container"]["resources"]
        assert resources["resourceMemoryRequest"] == placement.memory_request
        assert resources["resourceMemoryLimit"] == placement.memory_limit
        assert resources["resourceCpuRequest"] == placement.cpu_request
        task = spec["root"]["dag"]["tasks"][step]
        assert not task["cachingOptions"].get("enableCache", False)
        # a run id in every step's inputs: no two runs share a cache key
        assert task["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == (
            "{{$.pipeline_job_uuid}}"
        )


def _executors(path: Path) -> tuple[dict, dict]:
    docs = load_docs(path)
    return (
        docs[0]["deploymentSpec"]["executors"],
        docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"],
    )


def test_placement_per_step_is_a_compile_option(tmp_path: Path) -> None:
    main(
        [
            *("--output-dir", str(tmp_path), "--image", "registry.example/pred:1"),
            *("--node-selector", "features=cloud.google.com/gke-nodepool=etl"),
            *("--node-selector", "predict=cloud.google.com/gke-nodepool=prediction"),
            *("--node-selector", "team=recommendation"),
            *("--memory-request", "predict=6G", "--memory-limit", "predict=8G"),
            *("--cpu-request", "features=500m", "--cpu-limit", "predict=4"),
        ]
    )
    containers, platform = _executors(tmp_path / KFP_FILE)
    assert platform["exec-features"]["nodeSelector"] == {
        "labels": {"cloud.google.com/gke-nodepool": "etl", "team": "recommendation"}
    }
    assert platform["exec-predict"]["nodeSelector"] == {
        "labels": {"cloud.google.com/gke-nodepool": "prediction", "team": "recommendation"}
    }
    predict = containers["exec-predict"]["container"]
    assert predict["resources"]["resourceMemoryRequest"] == "6G"
    assert predict["resources"]["resourceMemoryLimit"] == "8G"
    assert predict["resources"]["resourceCpuLimit"] == "4"
    features = containers["exec-features"]["container"]
    assert features["resources"]["resourceCpuRequest"] == "500m"
    assert features["resources"]["resourceMemoryLimit"] == "2G"  # the default stays
    assert {c["container"]["image"] for c in containers.values()} == {"registry.example/pred:1"}
    assert len(load_docs(tmp_path / VERTEX_FILE)) == 1


@pytest.mark.parametrize("bad", ["preedict=6G", "6G"])
def test_bad_step_option_is_named(bad: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--memory-request", bad])
    assert "STEP=VALUE" in capsys.readouterr().err
