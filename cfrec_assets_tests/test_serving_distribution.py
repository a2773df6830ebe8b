"""The app installs ``serving/`` (distribution ``cfrec-serving``) alone: numpy, nothing of the pipeline.

A fresh virtualenv gets ``pip install ./serving`` and nothing else; in it the deployed folder the
test kit promotes is loaded, a user's top-N computed and the CLI run, while Dagster, pandas,
Surprise, Optuna and psycopg are not even installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cfrec_serving.loader import load_deployed
from cfrec_serving.targets.manifest import Promotion
from cfrec_serving.targets.target import open_target
from cfrec_testkit.dagster_dev import REPO_ROOT
from cfrec_testkit.models import version_name, write_model_version

PIPELINE_ONLY = ("dagster", "pandas", "surprise", "optuna", "psycopg", "cfrec_assets")


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("serving-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # A copy, so pip's build folder never lands in the checkout.
    source = shutil.copytree(
        REPO_ROOT / "serving", venv.parent / "serving", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    done = subprocess.run([*pip, str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("served")
    model = write_model_version(root / "models", version_name(1), seed=1)
    open_target(root / "serving").promote(
        model.path,
        Promotion(
            version=model.version,
            metrics={"rmse_mean": 0.9},
            counts={"ratings": len(model.ratings)},
            trained_at="2026-12-07T04:00:00+00:00",
            expected_sha256=model.sha256,
        ),
    )
    return root / "serving", model.trainset.to_raw_uid(0)


def test_the_serving_distribution_alone_loads_and_recommends(serving_venv: Path, served) -> None:
    serving_dir, user = served
    code = (
        "import importlib.util, json, sys\n"
        "from cfrec_serving import load_deployed\n"
        f"model = load_deployed({str(serving_dir)!r})\n"
        f"top = model.recommend({user!r}, 5)\n"
        f"missing = [m for m in {PIPELINE_ONLY!r} if importlib.util.find_spec(m) is None]\n"
        "print(json.dumps({'items': [int(i) for i in top.items], 'missing': missing}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(serving_venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env, cwd="/"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["missing"] == list(PIPELINE_ONLY), "the app's venv must not hold the pipeline's packages"
    # The same top-N as the full install computes.
    assert answer["items"] == [int(i) for i in load_deployed(serving_dir).recommend(user, 5).items]


def test_the_serving_distribution_alone_runs_the_cli(serving_venv: Path, served) -> None:
    serving_dir, _ = served
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CFREC_", "PYTHONPATH", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(serving_venv / "bin" / "cfrec-serving"), "deployments", "--serving-dir", str(serving_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [entry["version"] for entry in json.loads(done.stdout)["versions"]] == [version_name(1)]
