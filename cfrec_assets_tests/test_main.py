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
from cfrec_testkit.s3_server import free_port

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
    machine = run_cli("predict", "--user", "ml_2", "--movie", "114", "--serving-dir", str(serving), "--json")
    assert (
        json.loads(machine.stdout)["rating"] == pytest.approx(expected)
        and json.loads(machine.stdout)["fallback"] is None
    )


@pytest.mark.parametrize("user", ["ml_2", "someone-new"])
@pytest.mark.parametrize("output", [(), ("--json",)])
def test_predict_for_a_film_not_in_the_model_says_so_instead_of_a_rating(deployed, user, output):
    serving, models = deployed
    result = run_cli("predict", "--user", user, "--movie", "999999999", "--serving-dir", str(serving), *output)
    assert result.returncode == 5
    assert result.stdout == ""  # no made-up number, not even the user's average
    assert f"tmdb 999999999 is not in the model (version {models[1].version}" in result.stderr
    assert "no training rating covers it" in result.stderr


def test_predict_for_an_unknown_user_names_the_fallback(deployed):
    serving, models = deployed
    result = run_cli("predict", "--user", "someone-new", "--movie", "114", "--serving-dir", str(serving))
    assert result.returncode == 0, result.stderr
    assert "someone-new is not in the model: this is the film's average (unknown_user)" in result.stdout


def test_deployments_marks_current_and_reads_serving_dir_from_env(deployed):
    serving, models = deployed
    result = run_cli("deployments", env={"CFREC_SERVING_DIR": str(serving)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[1].startswith(f"  {models[0].version}") and "0.9300" in lines[1]
    assert lines[2].startswith(f"* {models[1].version}") and "0.9100" in lines[2]
    assert lines[3] == f"current: {models[1].version} (previous: {models[0].version})"


def test_deployments_columns_line_up_whatever_the_lengths(tmp_path):
    """Real trained_at values carry microseconds (32 characters): the columns used to shift."""
    models = [write_model_version(tmp_path / "models", version_name(n), seed=n) for n in range(3)]
    stamps = ("2026-11-26T07:15:00.123456+00:00", "2026-11-26T08:00:00+00:00", "2026-11-27T09:30:00.5+00:00")
    for n, (model, stamp) in enumerate(zip(models, stamps)):
        open_target(tmp_path / "serving").promote(
            model.path,
            Promotion(
                version=model.version,
                metrics={"rmse_mean": 0.9 + n / 100} if n != 1 else {},
                counts={"ratings": len(model.ratings)},
                trained_at=stamp,
                expected_sha256=model.sha256,
            ),
        )
    result = run_cli("deployments", "--serving-dir", str(tmp_path / "serving"))
    assert result.returncode == 0, result.stderr
    header, *rows, current = result.stdout.splitlines()
    assert len(rows) == 3 and current.startswith("current: ")
    trained_at, rmse_end = header.index("trained_at"), header.index("rmse_mean") + len("rmse_mean")
    for row, model in zip(rows, models):
        assert row.index(model.version) == header.index("version")
        assert row[trained_at:].startswith("2026-11-2"), row
        assert len(row) == rmse_end and row[rmse_end - 6 :] in ("0.9000", "     -", "0.9200"), row
    assert rows[2].startswith("* ")


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
    ("args", "message"),
    [
        (("recommend", "--user", "ml_1", "-n", "0"), "argument -n: must be a whole number of at least 1, got 0"),
        (("recommend", "--user", "ml_1", "-n", "abc"), "argument -n: must be a whole number of at least 1, got 'abc'"),
        (
            ("recommend", "--user", "", "-n", "3"),
            "argument --user: must name a user (e.g. ml_196 or an app uuid), got ''",
        ),
        (("predict", "--user", "  ", "--movie", "862"), "argument --user: must name a user"),
        (
            ("predict", "--user", "ml_1", "--movie", "x"),
            "argument --movie: must be a TMDB id (a whole number, e.g. 862), got 'x'",
        ),
        (("predict", "--user", "ml_1", "--movie", "-4"), "argument --movie: must be a TMDB id"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(args, message, tmp_path):
    result = run_cli(*args, "--serving-dir", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "invalid" not in result.stderr and "_positive_int" not in result.stderr


@pytest.mark.parametrize(
    "command", [("deployments",), ("recommend", "--user", "ml_1"), ("predict", "--user", "ml_1", "--movie", "862")]
)
def test_unreachable_s3_endpoint_exits_4_not_verification_failed(command, tmp_path):
    closed = free_port()  # nothing listens there: connection refused, as with an endpoint that is down
    env = {
        "CFREC_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
        "CFREC_S3_ACCESS_KEY_ID": "AKIAEXAMPLE000000000",
        "CFREC_S3_SECRET_ACCESS_KEY": "secret-that-must-not-show",
        "CFREC_MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    result = run_cli(*command, "--serving-dir", "s3://models/cfrec", env=env)
    assert result.returncode == 4, result.stderr
    assert "cannot reach the serving target" in result.stderr and f"127.0.0.1:{closed}" in result.stderr
    assert "secret-that-must-not-show" not in result.stderr


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
