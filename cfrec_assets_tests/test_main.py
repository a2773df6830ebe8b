"""The CLI, run as a real subprocess (``python -m cfrec_assets``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cfrec_serving.loader import load_deployed
from cfrec_serving.targets.manifest import Promotion
from cfrec_serving.targets.target import open_target
from cfrec_testkit.models import TinyModelVersion, version_name, write_model_version

REPO_ROOT = Path(__file__).resolve().parents[1]
# Half of the tiny model's films (tmdb 107, 114, ...) have MovieLens titles; the rest are app-only.
TITLES = pd.DataFrame(
    {"tmdb_id": [100 + 7 * m for m in range(1, 21)], "title": [f"Film {m}" for m in range(1, 21)], "year": 1990}
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CFREC_SERVING_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "cfrec_assets", *args],
        cwd=REPO_ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> tuple[Path, list[TinyModelVersion]]:
    """A serving dir with two promoted versions, the second one current."""
    root = tmp_path_factory.mktemp("cli")
    models = [
        write_model_version(root / "models", version_name(n), seed=n, titles=TITLES if n else None) for n in range(2)
    ]
    for rmse, model in zip((0.93, 0.91), models):
        open_target(root / "serving").promote(
            model.path,
            Promotion(
                version=model.version,
                metrics={"rmse_mean": rmse},
                counts={"ratings": len(model.ratings)},
                trained_at="2026-11-26T07:15:00+00:00",
                expected_sha256=model.sha256,
            ),
        )
    return root / "serving", models


def test_recommend_json_matches_the_library(deployed):
    serving, models = deployed
    result = run_cli("recommend", "--user", "ml_1", "-n", "4", "--serving-dir", str(serving), "--json")
    assert result.returncode == 0, result.stderr
    model = load_deployed(serving)
    expected = model.recommend("ml_1", 4).to_dict()
    assert json.loads(result.stdout) == {**expected, "titles": [model.describe(i) for i in expected["items"]]}
    assert expected["model_version"] == models[1].version and len(expected["items"]) == 4


def test_recommend_for_unknown_user_says_so(deployed):
    serving, _ = deployed
    result = run_cli("recommend", "--user", "someone-new", "-n", "3", "--serving-dir", str(serving))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "unknown_user" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["1.", "2.", "3."]


def test_predict_human_and_json(deployed):
    serving, models = deployed
    expected = models[1].algo.predict("ml_2", 114).est
    human = run_cli("predict", "--user", "ml_2", "--movie", "114", "--serving-dir", str(serving))
    assert human.returncode == 0, human.stderr
    assert f"predicted {expected:.2f}" in human.stdout and "fallback" not in human.stdout
    machine = run_cli("predict", "--user", "ml_2", "--movie", "999999", "--serving-dir", str(serving), "--json")
    assert json.loads(machine.stdout)["fallback"] == "unknown_movie"


def test_deployments_marks_current_and_reads_serving_dir_from_env(deployed):
    serving, models = deployed
    result = run_cli("deployments", env={"CFREC_SERVING_DIR": str(serving)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[1].startswith(f"  {models[0].version}") and "0.9300" in lines[1]
    assert lines[2].startswith(f"* {models[1].version}") and "0.9100" in lines[2]
    assert lines[3] == f"current: {models[1].version} (previous: {models[0].version})"


def test_no_deployment_exits_1_with_a_clear_message(tmp_path):
    result = run_cli("recommend", "--user", "ml_1", "--serving-dir", str(tmp_path), "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no model is deployed" in result.stderr and "Promote a model first" in result.stderr


def test_tampered_deployment_exits_3_and_refuses_to_serve(deployed, tmp_path):
    serving, _ = deployed
    copy = tmp_path / "serving"
    subprocess.run(["cp", "-a", str(serving), str(copy)], check=True)
    manifest = json.loads((copy / "manifest.json").read_text())
    artifact = copy / "versions" / manifest["version"] / "cf_model.npz"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))

    result = run_cli("predict", "--user", "ml_1", "--movie", "107", "--serving-dir", str(copy))
    assert result.returncode == 3
    assert "refusing to serve" in result.stderr and "cf_model.npz does not match the sha256" in result.stderr


@pytest.mark.parametrize(
    "args", [("recommend", "--user", "ml_1", "-n", "0"), ("predict", "--user", "ml_1", "--movie", "x")]
)
def test_usage_errors_exit_2(args, tmp_path):
    result = run_cli(*args, "--serving-dir", str(tmp_path))
    assert result.returncode == 2
    assert "error:" in result.stderr


def test_recommend_and_predict_show_titles_and_years(deployed):
    serving, _ = deployed
    result = run_cli("recommend", "--user", "ml_1", "-n", "40", "--include-seen", "--serving-dir", str(serving))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[1:]
    assert len(lines) == 40
    titled = [line for line in lines if "tmdb 107 " in line or line.endswith("tmdb 107")]
    assert titled and titled[0].endswith("tmdb 107      Film 1 (1990)")
    untitled = [line for line in lines if "tmdb 380" in line]  # film 40: app-only, no title
    assert untitled and untitled[0].endswith("tmdb 380")
    named = run_cli("predict", "--user", "ml_1", "--movie", "114", "--serving-dir", str(serving), "--json")
    assert json.loads(named.stdout)["title"] == "Film 2 (1990)"
    text = run_cli("predict", "--user", "ml_1", "--movie", "114", "--serving-dir", str(serving)).stdout
    assert text.startswith("ml_1 -> tmdb 114 Film 2 (1990): predicted")
