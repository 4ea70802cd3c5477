"""The distribution as a user gets it: wheel and sdist built, checked, and the wheel installed
alone with Airflow into a fresh virtualenv (issue 18), where Airflow's provider commands see it.

Built and installed with the uv of the project's .venv and its cache; the fresh venv's versions
are held to the ones .venv has (a constraint only, nothing else is installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import kfp_bridge

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW = "apache-airflow==3.3.2"
TEMPLATES = {"run.html", "runs.html", "base.html", "error.html"}


def _run(*cmd: str | Path, **kwargs) -> str:
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs
    )
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from the unpacked sdist (what pip does with an sdist).
    _run(sys.executable, "-m", "build", "--installer", "uv", "--outdir", out, ROOT, cwd=out)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_wheel_holds_the_provider_only(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
    version = kfp_bridge.__version__
    assert dist["wheel"].name == f"kfp_bridge-{version}-py3-none-any.whl"
    tops = {n.split("/")[0] for n in names}
    assert tops == {"kfp_bridge", f"kfp_bridge-{version}.dist-info"}
    assert {n.rsplit("/", 1)[1] for n in names if "/ui/templates/" in n} == TEMPLATES
    assert "kfp_bridge/testing/kfp_api/server.py" in names
    # the kfp_api fixture reaches users' pytest through the pytest11 entry point
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        entry_points = wheel.read(f"kfp_bridge-{version}.dist-info/entry_points.txt").decode()
    assert "[pytest11]\nkfp_bridge = kfp_bridge.testing.pytest_plugin" in entry_points
    assert "kfp_bridge/testing/pytest_plugin.py" in names


def test_sdist_has_templates_and_no_application(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = sdist.getnames()
    inner = {n.split("/", 1)[1] for n in names if "/" in n}
    assert {f"kfp_bridge/ui/templates/{t}" for t in TEMPLATES} <= inner
    for app in ("prediction_app/", "dags/", "pipelines/"):
        assert not any(n.startswith(app) for n in inner), app


def test_metadata_states_versions_and_passes_twine(dist):
    _run(BIN / "twine", "check", "--strict", dist["wheel"], dist["sdist"])
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        meta = wheel.read(f"kfp_bridge-{kfp_bridge.__version__}.dist-info/METADATA").decode()
    assert "Version: 0.2.0" in meta
    assert "Requires-Python: >=3.11" in meta
    assert "Requires-Dist: apache-airflow<4,>=3.3.0" in meta
    assert "Classifier: Framework :: Apache Airflow :: Provider" in meta
    assert "Classifier: Programming Language :: Python :: 3.11" in meta
    for extra in ("google", "vertex", "kubernetes", "slack"):
        assert f"Provides-Extra: {extra}" in meta
    assert 'Requires-Dist: apache-airflow-providers-google>=22.0; extra == "google"' in meta
    assert 'Requires-Dist: apache-airflow-providers-google>=22.0; extra == "vertex"' in meta


def test_wheel_alone_in_fresh_venv_is_a_provider(dist, tmp_path):
    uv = BIN / "uv"
    venv = tmp_path / "venv"
    _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    pins = tmp_path / "constraints.txt"
    frozen = _run(uv, "pip", "freeze", "--python", sys.executable)
    pins.write_text(
        "\n".join(line for line in frozen.splitlines() if not line.startswith(("-e", "kfp-bridge")))
    )
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--quiet", "--python", python, "-c", pins, dist["wheel"], AIRFLOW)

    home = tmp_path / "airflow"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTHONPATH", "VIRTUAL_ENV", "KFP_BRIDGE"))
    }
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    where = _run(
        python, "-c", "import kfp_bridge; print(kfp_bridge.__file__)", cwd=tmp_path, env=env
    )
    assert where.startswith(str(venv)), where
    # Without the extras, the features that need another provider name the extra to install.
    for code, extra in (
        ("import kfp_bridge.hooks.google_cloud", "google"),
        ("from kfp_bridge.hooks.kube_tokens import _kubernetes_hook; _kubernetes_hook('k')",
         "kubernetes"),
    ):  # fmt: skip
        missing = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
        )
        assert missing.returncode != 0, code
        assert f"pip install 'kfp-bridge[{extra}]'" in missing.stderr, missing.stderr
    # The four commands in parallel (each loads Airflow for seconds).
    commands = ("list", "hooks", "links", "widgets")
    procs = {
        c: subprocess.Popen(
            [venv / "bin" / "airflow", "providers", c, "-o", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        for c in commands
    }
    out = {}
    for c, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"airflow providers {c}:\n{stderr}"
        out[c] = json.loads(stdout)

    versions = {p["package_name"]: p["version"] for p in out["list"]}
    assert versions["kfp-bridge"] == kfp_bridge.__version__
    assert {
        "connection_type": "kfp",
        "class": "kfp_bridge.hooks.kfp.KubeflowPipelineHook",
        "package_name": "kfp-bridge",
    }.items() <= next(h for h in out["hooks"] if h["connection_type"] == "kfp").items()
    assert "kfp_bridge.links.kfp.KubeflowRunLink" in {
        link["extra_link_class_name"] for link in out["links"]
    }
    form = {
        w["connection_parameter_name"]
        for w in out["widgets"]
        if w["class"] == "kfp_bridge.hooks.kfp.KubeflowPipelineHook"
    }
    assert {"extra__kfp__backend", "extra__kfp__auth", "extra__kfp__namespace"} <= form
