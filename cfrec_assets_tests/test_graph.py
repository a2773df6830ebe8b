"""The whole asset graph, materialized for real on generated MovieLens-format fixtures."""

from __future__ import annotations

import zipfile
from pathlib import Path

import dagster as dg
import joblib
import pytest

from cfrec_assets.definitions import defs
from cfrec_assets.defs.resources import CatalogSource
from cfrec_serving.loader import load_deployed
from cfrec_serving.redact import redact_url
from cfrec_serving.targets.target import open_target
from cfrec_testkit.graph import check_results, failure_messages, make_graph_env, materialized, metadata, tree_digest

ASSETS = {
    "ml100k_raw", "ml_latest_raw", "tmdb_links", "movie_titles", "catalog_ids", "supabase_ratings",
    "combined_ratings", "svd_model", "cv_metrics", "deployed_model",
}  # fmt: skip


def test_definitions_load_with_every_asset_check_and_sensor() -> None:
    repo = defs.get_repository_def()
    assert {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()} == ASSETS | {
        "supabase_ratings_table",
        "svd_tuning",
    }
    checks = {key.name for key in repo.asset_graph.asset_check_keys}
    assert {
        "ml100k_is_official_release",
        "challenger_no_worse_than_champion",
        "svd_artifacts_load_and_predict",
    } <= checks
    assert sorted(s.name for s in repo.sensor_defs) == ["run_failure_alert", "supabase_ratings_sensor"]
    policy = repo.asset_graph.get(dg.AssetKey("deployed_model")).freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 48 * 3600


def test_whole_graph_materializes_with_metadata(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance)
    assert result.success
    assert materialized(result) == ASSETS
    assert all(check_results(result).values()), check_results(result)

    raw = metadata(result, "ml100k_raw")
    assert raw["ratings"] == len(env.mirror.ratings) and raw["from_cache"] is False
    links = metadata(result, "tmdb_links")
    expected_mapped = sum(1 for e in env.mirror.expected.values() if e.tmdb_id is not None)
    assert links["items_mapped"] == expected_mapped
    assert links["match_exact"] >= 1 and links["embedded_imdb_ids_honoured"] == links["embedded_imdb_ids_in_links"]
    assert metadata(result, "supabase_ratings")["status"] == "not_configured"
    combined = metadata(result, "combined_ratings")
    # The default seeds are both releases (current films need ml-latest); every seed rating is
    # either trained on or dropped with a reason.
    assert combined["seeds"] == "ml100k,ml-latest" and combined["real_ratings"] == 0
    assert combined["ml_ratings"] > 0 and combined["ml_latest_ratings"] > 0
    assert combined["ml_ratings"] + combined["ml_latest_ratings"] == combined["ratings"]
    latest = metadata(result, "ml_latest_raw")
    assert combined["ratings"] + sum(combined["dropped"].values()) == raw["ratings"] + latest["ratings"]
    model = metadata(result, "svd_model")
    seed = {"n_factors": 100, "n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02, "random_state": 42, "init_std_dev": 0.1}
    assert model["params"] == seed and model["params_source"] == "seed"  # no study yet: tuned falls back
    # Each sha256 once (no JSON copy beside the flat keys).
    shas = [value for key, value in model.items() if key.endswith("_sha256")]
    assert len(shas) == 4 and all(" ".join(map(str, model.values())).count(sha) == 1 for sha in shas)
    cv = metadata(result, "cv_metrics")
    assert cv["version"] == model["version"] and 0 < cv["rmse_mean"] < 2 and 0 <= cv["ndcg_at_10_mean"] <= 1
    # Headline metrics first; the per-fold values in one table, not one plotted entry each.
    assert list(cv)[:5] == ["rmse_mean", "rmse_std", "mae_mean", "precision_at_10_mean", "ndcg_at_10_mean"]
    assert not [key for key in cv if key.startswith("fold_")]
    assert len([value for value in cv.values() if isinstance(value, (int, float))]) <= 8
    rows = [line.split("|")[1:-1] for line in cv["folds"].splitlines()]
    assert [cell.strip() for cell in rows[0]][:3] == ["fold", "rmse", "mae"]
    assert [row[0].strip() for row in rows[2:]] == ["1", "2", "3", "mean", "std"]
    assert float(rows[5][1]) == round(cv["rmse_mean"], 4)

    # The pickles the app loads, and the deployment it reads
    version_dir = Path(model["model_path"])
    algo = joblib.load(version_dir / "svd_model.pkl")
    assert algo.n_factors == 100
    manifest = open_target(env.serving_dir).read_manifest()
    assert manifest["version"] == model["version"] == metadata(result, "deployed_model")["version"]
    served = load_deployed(env.serving_dir)
    user = f"ml_{int(env.mirror.ratings['user_id'].iloc[0])}"
    assert served.recommend(user, n=5).fallback is None

    # Titles travel with the model; people see its recommendations before and after it ships.
    titles = metadata(result, "movie_titles")
    assert titles["films"] >= served.n_movies  # every trained film has a TMDB id, so a title
    assert all(served.describe(item) for item in served.recommend(user, n=5).items)
    for asset in ("cv_metrics", "deployed_model"):
        preview = metadata(result, asset)["recommendations_preview"]
        assert f"Model {model['version']}" in preview and "(new user)" not in preview
        assert "most active MovieLens user" in preview and "a brand-new user" in preview
        assert len([line for line in preview.splitlines() if line.startswith("| ")]) == 11  # header + 10


def test_second_run_reuses_download_cache_and_keeps_earlier_versions(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        first = env.materialize(instance)
        (env.mirror.root / "ml-100k.zip").unlink()  # a cache hit must not need the mirror
        (env.mirror.root / "ml-latest-small.zip").unlink()
        second = env.materialize(instance)
    assert first.success and second.success
    assert metadata(second, "ml100k_raw")["from_cache"] is True
    v1, v2 = metadata(first, "svd_model")["version"], metadata(second, "svd_model")["version"]
    assert v1 != v2
    assert sorted(p.name for p in (env.data_dir / "models").iterdir()) == sorted([v1, v2])
    manifest = open_target(env.serving_dir).read_manifest()
    assert (manifest["version"], manifest["previous_version"]) == (v2, v1)


def test_svd_config_is_honoured_and_recorded(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, ops={"svd_model": {"config": {"n_factors": 7, "n_epochs": 3}}})
    assert result.success
    model = metadata(result, "svd_model")
    assert model["params"]["n_factors"] == 7
    assert joblib.load(Path(model["model_path"]) / "svd_model.pkl").n_factors == 7


@pytest.mark.parametrize("catalog_kind", ["json", "pkl"])
def test_catalog_file_filters_training(tmp_path: Path, catalog_kind: str) -> None:
    env = make_graph_env(tmp_path)
    keep = sorted({e.tmdb_id for e in env.mirror.expected.values() if e.tmdb_id is not None})[:20]
    path = tmp_path / f"movie_ids.{catalog_kind}"
    if catalog_kind == "json":
        path.write_text(str(keep))
    else:
        joblib.dump(keep, path)
    env.catalog = CatalogSource(path=str(path))
    with dg.instance_for_test() as instance:
        result = env.materialize(
            instance,
            ops={"combined_ratings_combined_ratings_are_valid": {"config": {"min_ratings": 10, "min_users": 2}}},
        )
    assert result.success, check_results(result)
    catalog = metadata(result, "catalog_ids")
    assert catalog["catalog_size"] == 20 and catalog["filter_applied"] is True
    combined = metadata(result, "combined_ratings")
    assert combined["movies"] <= 20 and combined["dropped_ml_not_in_catalog"] > 0


def test_malformed_download_fails_the_run_and_keeps_good_artifacts(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        assert env.materialize(instance).success
        before = tree_digest(env.data_dir / "assets")
        # A new mirror file with a bad line in u.data: the cached archive is dropped to force a refetch.
        (env.data_dir / "cache" / "ml-100k.zip").unlink()
        src = env.mirror.root / "ml-100k.zip"
        with zipfile.ZipFile(src) as zf:
            members = {name: zf.read(name) for name in zf.namelist()}
        members["ml-100k/u.data"] += b"1\t2\tfive\t3\n"
        with zipfile.ZipFile(src, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        result = env.materialize(instance, selection=["ml100k_raw"])
    assert not result.success
    assert "u.data line 2401: non-integer field" in failure_messages(result)["ml100k_raw"]
    assert tree_digest(env.data_dir / "assets") == before  # no value written, none replaced


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        (CatalogSource(path="ids.json", supabase_table="movies"), "set either path or supabase_table, not both"),
        (CatalogSource(supabase_table="movies"), "SUPABASE_URL / SUPABASE_KEY are not"),
        (CatalogSource(path="/nonexistent/movie_ids.pkl"), "catalog file not found"),
    ],
)
def test_catalog_misconfiguration_fails_clearly(tmp_path: Path, catalog: CatalogSource, message: str) -> None:
    env = make_graph_env(tmp_path)
    env.catalog = catalog
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=["ml100k_raw", "ml_latest_raw", "tmdb_links", "catalog_ids"])
    assert message in failure_messages(result)["catalog_ids"]
    assert not (env.data_dir / "assets" / "catalog_ids").exists()


def test_source_url_metadata_drops_credentials() -> None:
    assert (
        redact_url("https://user:secret@mirror.example:8443/ml/ml-100k.zip")
        == "https://mirror.example:8443/ml/ml-100k.zip"
    )
    assert redact_url("file:///srv/ml/ml-100k.zip") == "file:///srv/ml/ml-100k.zip"


def test_a_study_feeds_the_next_retrain_and_the_manifest_names_it(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    study = {"trials": 6, "folds": 3, "n_jobs": 1, "timeout_seconds": 120}
    with dg.instance_for_test() as instance:
        assert env.materialize(instance).success  # a seed-params champion
        tuned = env.tune(instance, study)
        assert tuned.success
        result = metadata(tuned, "svd_tuning")
        retrain = env.materialize(instance, selection=["svd_model", "cv_metrics", "deployed_model"])
    model = metadata(retrain, "svd_model")
    # The retrain loaded the study's result from the earlier run: tuned params if it improved,
    # else the seed params, and the version record says which.
    expected = f"svd_tuning {result['version']}" if result["improved"] else "seed"
    assert model["params_source"] == expected
    if retrain.success and "deployed_model" in materialized(retrain):
        manifest = open_target(env.serving_dir).read_manifest()
        assert manifest["tuning_version"] == (result["version"] if result["improved"] else None)
        assert manifest["params"] == model["params"]


def test_an_upstream_value_deleted_by_hand_fails_clearly_and_is_rebuilt(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        first = env.materialize(instance)
        Path(metadata(first, "combined_ratings")["path"]).unlink()
        alone = env.materialize(instance, selection=["svd_model"])
        assert not alone.success
        message = failure_messages(alone)["svd_model"]
        assert "combined_ratings's latest value" in message and "is gone: materialize combined_ratings again" in message
        assert env.materialize(instance, selection=["combined_ratings", "svd_model"]).success


LEARNING_STUDY = {
    "trials": 4, "folds": 3, "n_jobs": 1, "timeout_seconds": 120,
    "bounds": {"n_factors": {"low": 2, "high": 4}, "n_epochs": {"low": 40, "high": 100}},
}  # fmt: skip
"""Few factors trained long: beats the seed params on the fixture's low-rank ratings."""


def test_tuned_params_travel_with_the_data_folder_to_a_fresh_instance(tmp_path: Path) -> None:
    """A second instance (production) on the same data folder trains with the study's params, so it
    reproduces the tuned champion instead of losing to it with the seed params."""
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as dev:
        assert env.materialize(dev).success
        study = metadata(env.tune(dev, LEARNING_STUDY), "svd_tuning")
        assert study["improved"] is True
        tuned = env.materialize(dev)
        assert metadata(tuned, "deployed_model")["action"] == "promote"
    champion = open_target(env.serving_dir).read_manifest()
    assert champion["tuning_version"] == study["version"]
    with dg.instance_for_test() as fresh:  # no svd_tuning in this instance's history
        retrain = env.materialize(fresh)
    assert retrain.success
    model = metadata(retrain, "svd_model")
    assert model["params_source"] == f"svd_tuning {study['version']}" and model["params"] == champion["params"]
    assert metadata(retrain, "deployed_model")["action"] == "promote"


def test_a_damaged_study_result_fails_the_retrain_by_name_and_saves_nothing(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    result_file = env.data_dir / "tuning" / "latest_result.json"
    result_file.parent.mkdir(parents=True)
    result_file.write_text('{"version": "20260101T000000Z-svd-3", "best_params": {"n_factors": "many"}')
    with dg.instance_for_test() as instance:
        result = env.materialize(instance)
    assert not result.success
    assert f"{result_file} is unreadable" in failure_messages(result)["svd_model"]
    assert not (env.data_dir / "models").exists() and not env.serving_dir.exists()


def step_messages(instance: dg.DagsterInstance, run_id: str, step: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.step_key == step and e.dagster_event is None]


def test_training_and_tuning_say_what_they_are_doing_in_the_run_log(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        trained = env.materialize(instance)
        tuned = env.tune(instance, {**LEARNING_STUDY, "n_jobs": 2})
        fit = step_messages(instance, trained.run_id, "svd_model")
        folds = step_messages(instance, trained.run_id, "cv_metrics")
        trials = step_messages(instance, tuned.run_id, "svd_tuning")
    assert any(m.startswith("fitting SVD (100 factors x 20 epochs, seed params) on ") for m in fit), fit
    assert [m.split(":")[0] for m in folds if m.startswith("fold ")] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    assert [m.split(" (")[0] for m in trials if m.startswith("trial ")] == [f"trial {i}/4" for i in range(1, 5)]
