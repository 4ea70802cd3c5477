"""The checked-in compiled pipeline: fresh, date-free, KFP and Vertex variants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kfp_prediction.compile import COMPILED_DIR, KFP_FILE, VERTEX_FILE, compile_pipeline, main
from kfp_prediction.pipeline import CompileOptions

DATE_LIKE = re.compile(r"(19|20)\d\d-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])")


def load_docs(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def test_checked_in_yaml_is_fresh(tmp_path: Path) -> None:
    compile_pipeline(tmp_path)  # the defaults, as `make compile` uses
    for name in (KFP_FILE, VERTEX_FILE):
        assert (COMPILED_DIR / name).read_text() == (tmp_path / name).read_text(), (
            f"pipelines/compiled/{name} is stale: run `python -m kfp_prediction.compile`"
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
    assert set(params) == {"target_date", "warehouse", "model_uri", "model_sha256", "lookback_days"}
    assert params["lookback_days"]["defaultValue"] == 28


def test_kfp_file_has_platform_doc_and_vertex_file_is_single_doc() -> None:
    kfp_docs = load_docs(COMPILED_DIR / KFP_FILE)
    assert len(kfp_docs) == 2
    executors = kfp_docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "nodeSelector" not in executors["exec-predict-and-write"]  # off by default
    vertex = yaml.safe_load((COMPILED_DIR / VERTEX_FILE).read_text())  # what Vertex does
    assert "platforms" not in vertex
    assert vertex["root"] == kfp_docs[0]["root"]


def test_resources_and_no_caching() -> None:
    spec = load_docs(COMPILED_DIR / KFP_FILE)[0]
    resources = spec["deploymentSpec"]["executors"]["exec-predict-and-write"]["container"][
        "resources"
    ]
    assert resources["resourceMemoryRequest"] == "3G"
    assert resources["resourceCpuRequest"] == "2"
    task = spec["root"]["dag"]["tasks"]["predict-and-write"]
    assert not task["cachingOptions"].get("enableCache", False)
    assert task["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == (
        "{{$.pipeline_job_uuid}}"
    )


def test_node_selector_and_image_are_compile_options(tmp_path: Path) -> None:
    main(
        [
            "--output-dir",
            str(tmp_path),
            "--image",
            "registry.example/pred:1",
            "--node-selector",
            "cloud.google.com/gke-nodepool=prediction",
        ]
    )
    docs = load_docs(tmp_path / KFP_FILE)
    executor = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-predict-and-write"
    ]
    assert executor["nodeSelector"] == {"labels": {"cloud.google.com/gke-nodepool": "prediction"}}
    assert (
        docs[0]["deploymentSpec"]["executors"]["exec-predict-and-write"]["container"]["image"]
        == "registry.example/pred:1"
    )
    assert len(load_docs(tmp_path / VERTEX_FILE)) == 1
    assert CompileOptions().node_selector == {}
