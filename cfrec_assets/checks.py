"""Asset checks. Blocking ones gate ``deployed_model``; WARN ones only inform.

A blocking check that fails stops the downstream steps of its run, and ``deployed_model``
re-verifies the latest results before promoting, so the gate also holds across runs.
Checks name their assets by key, so this module and the assets can import each other's
neighbours without a cycle.
"""

import math

import dagster as dg
import joblib
import numpy as np
import pandas as pd

from cfrec_assets.combine import RATING_MAX, RATING_MIN
from cfrec_assets.deployment import read_manifest, verification_problems
from cfrec_assets.lineage import latest_metadata
from cfrec_assets.resources import DataStore
from cfrec_assets.serving import DeployedModel
from cfrec_assets.storage import read_json
from cfrec_assets.training import ARTIFACT_FILES, MODEL_FILE, TRAINING_RATINGS_FILE, TRAINSET_FILE


def _result(passed: bool, description: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(passed), description=description, metadata={"verdict": description, **metadata})


class DatasetShapeConfig(dg.Config):
    """The official MovieLens 100K release."""

    ratings: int = 100_000
    users: int = 943
    items: int = 1_682


@dg.asset_check(asset="ml100k_raw", blocking=True)
def ml100k_is_official_release(context: dg.AssetCheckExecutionContext, config: DatasetShapeConfig) -> dg.AssetCheckResult:
    """A mirror serving another or a cut-down archive must not silently change what we train on."""
    meta = latest_metadata(context.instance, "ml100k_raw")
    found = {"ratings": meta["ratings"], "users": meta["users"], "items": meta["items"]}
    expected = config.model_dump()
    wrong = {k: f"{found[k]} (expected {expected[k]})" for k in expected if found[k] != expected[k]}
    verdict = "matches the official 100,000 / 943 / 1,682" if not wrong else f"differs from the official release: {wrong}"
    return _result(not wrong, verdict, **found)


class MappingCoverageConfig(dg.Config):
    min_item_coverage: float = 0.80
    """Share of the 1,682 items that must map to a TMDB id."""
    min_rating_coverage: float = 0.98
    """Share of the 100,000 ratings whose item maps to a TMDB id."""


@dg.asset_check(asset="tmdb_links", blocking=True)
def tmdb_mapping_coverage(context: dg.AssetCheckExecutionContext, config: MappingCoverageConfig) -> dg.AssetCheckResult:
    """Coverage above its floors, and every IMDb id embedded in u.item honoured."""
    meta = latest_metadata(context.instance, "tmdb_links")
    item_cov = meta["items_mapped"] / meta["items_total"]
    rating_cov = meta["ratings_mapped"] / meta["ratings_total"]
    problems = []
    if item_cov < config.min_item_coverage:
        problems.append(f"item coverage {item_cov:.3f} < {config.min_item_coverage}")
    if rating_cov < config.min_rating_coverage:
        problems.append(f"rating coverage {rating_cov:.3f} < {config.min_rating_coverage}")
    if meta["embedded_imdb_ids_honoured"] != meta["embedded_imdb_ids_in_links"]:
        problems.append(
            f"only {meta['embedded_imdb_ids_honoured']} of {meta['embedded_imdb_ids_in_links']} embedded IMDb ids honoured"
        )
    verdict = "; ".join(problems) or f"{item_cov:.1%} of items and {rating_cov:.1%} of ratings mapped; embedded IMDb ids honoured"
    return _result(
        not problems,
        verdict,
        item_coverage=round(item_cov, 4),
        rating_coverage=round(rating_cov, 4),
        embedded_imdb_ids_honoured=meta["embedded_imdb_ids_honoured"],
    )


@dg.asset_check(asset="supabase_ratings")
def supabase_ratings_were_read(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """WARN when the app's ratings could not be read and the run continued without them."""
    meta = latest_metadata(context.instance, "supabase_ratings")
    status = meta["status"]
    verdict = {
        "ok": f"read all {meta['ratings']} app ratings",
        "not_configured": "Supabase is not configured: training on MovieLens only",
        "unreachable": "Supabase was unreachable and allow_fallback was set: this run has NO app ratings",
    }.get(status, f"unexpected status {status!r}")
    return dg.AssetCheckResult(
        passed=status in ("ok", "not_configured"),
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict,
        metadata={"verdict": verdict, "status": status},
    )


class TrainingTableConfig(dg.Config):
    min_ratings: int = 1_000
    min_users: int = 10


@dg.asset_check(asset="combined_ratings", blocking=True)
def combined_ratings_are_valid(
    context: dg.AssetCheckExecutionContext, config: TrainingTableConfig, store: DataStore
) -> dg.AssetCheckResult:
    """No phantom movie ids, ratings in range, one rating per (user, movie), enough to train on."""
    ratings = pd.read_parquet(store.combined_ratings_path)
    catalog = read_json(store.catalog_path)
    if catalog["filter"]:
        known = set(catalog["tmdb_ids"])
    else:  # no catalog: every id must still come from the mapping or the app's ratings
        known = set(pd.read_parquet(store.tmdb_links_path)["tmdb_id"].dropna().astype("int64"))
        known |= set(pd.read_parquet(store.supabase_ratings_path)["tmdb_id"].astype("int64"))
    phantom = sorted(set(ratings["tmdb_id"].tolist()) - known)
    out_of_range = int((~ratings["rating"].between(RATING_MIN, RATING_MAX)).sum())
    duplicates = int(ratings.duplicated(["user_id", "tmdb_id"]).sum())
    users = int(ratings["user_id"].nunique())
    problems = []
    if phantom:
        problems.append(f"{len(phantom)} movie id(s) outside the catalog, e.g. {phantom[:5]}")
    if out_of_range:
        problems.append(f"{out_of_range} rating(s) outside {RATING_MIN}..{RATING_MAX}")
    if duplicates:
        problems.append(f"{duplicates} duplicate (user, movie) pair(s)")
    if len(ratings) < config.min_ratings or users < config.min_users:
        problems.append(f"only {len(ratings)} ratings from {users} users (need {config.min_ratings} / {config.min_users})")
    verdict = "; ".join(problems) or f"{len(ratings)} valid ratings from {users} users, all in the catalog"
    return _result(
        not problems, verdict, phantom_movies=len(phantom), out_of_range=out_of_range, duplicates=duplicates, ratings=len(ratings)
    )


@dg.asset_check(asset="svd_model", blocking=True)
def svd_artifacts_load_and_predict(context: dg.AssetCheckExecutionContext, store: DataStore) -> dg.AssetCheckResult:
    """The files on disk are the ones recorded (sha256), they load, and predictions are finite and in range."""
    meta = latest_metadata(context.instance, "svd_model")
    folder = store.models_dir / meta["version"]
    problems = verification_problems(folder, {name: meta["files"][name] for name in ARTIFACT_FILES})
    if problems:  # never unpickle a file that is not the one we wrote
        return _result(False, "; ".join(problems), version=meta["version"])
    model = DeployedModel(joblib.load(folder / MODEL_FILE), joblib.load(folder / TRAINSET_FILE))
    sample = pd.read_parquet(folder / TRAINING_RATINGS_FILE).sample(n=200, replace=True, random_state=0)
    estimates = [model.predict(str(u), int(m)).rating for u, m in zip(sample["user_id"], sample["tmdb_id"])]
    estimates.append(model.predict("__unknown_user__", int(sample["tmdb_id"].iloc[0])).rating)
    lo, hi = model.rating_scale
    bad = [e for e in estimates if not (math.isfinite(e) and lo <= e <= hi)]
    verdict = f"{len(bad)} of {len(estimates)} predictions not finite or outside {lo}..{hi}" if bad else (
        f"sha256 verified; {len(estimates)} sample predictions finite and in {lo}..{hi}"
    )
    return _result(not bad, verdict, version=meta["version"], min_estimate=float(np.min(estimates)), max_estimate=float(np.max(estimates)))


class ModelQualityConfig(dg.Config):
    rmse_ceiling: float = 1.0
    """Absolute ceiling on the CV RMSE (predicting the global mean scores about 1.13 on ML-100K)."""
    champion_tolerance: float = 0.01
    """The challenger's RMSE may exceed the deployed champion's by at most this much."""


@dg.asset_check(asset="cv_metrics", blocking=True)
def cv_rmse_under_ceiling(context: dg.AssetCheckExecutionContext, config: ModelQualityConfig) -> dg.AssetCheckResult:
    """The cross-validated RMSE is under an absolute ceiling."""
    meta = latest_metadata(context.instance, "cv_metrics")
    rmse = meta["rmse_mean"]
    passed = rmse <= config.rmse_ceiling  # False for NaN too
    verdict = f"RMSE {rmse:.4f} {'<=' if passed else '>'} ceiling {config.rmse_ceiling}"
    return _result(passed, verdict, rmse_mean=rmse, rmse_ceiling=config.rmse_ceiling, version=meta["version"])


@dg.asset_check(asset="cv_metrics", blocking=True)
def challenger_no_worse_than_champion(
    context: dg.AssetCheckExecutionContext, config: ModelQualityConfig, store: DataStore
) -> dg.AssetCheckResult:
    """Against the deployed champion: RMSE no worse than its RMSE plus a tolerance, and trained
    on at least as many app (Supabase) ratings, so an outage can never ship a model that forgot
    the app's users."""
    meta = latest_metadata(context.instance, "cv_metrics")
    champion = read_manifest(store.serving_dir)
    if champion is None:
        return _result(True, "no champion deployed yet: nothing to compare with", version=meta["version"])
    champ_rmse = champion["metrics"].get("rmse_mean")
    champ_real = champion["counts"].get("real_ratings", 0)
    problems = []
    if champ_rmse is not None and not meta["rmse_mean"] <= champ_rmse + config.champion_tolerance:  # NaN fails
        problems.append(f"RMSE {meta['rmse_mean']:.4f} > champion {champ_rmse:.4f} + {config.champion_tolerance}")
    if meta["real_ratings"] < champ_real:
        problems.append(f"trained on {meta['real_ratings']} app ratings, fewer than the champion's {champ_real}")
    verdict = "; ".join(problems) or (
        f"RMSE {meta['rmse_mean']:.4f} vs champion {champion['version']} {champ_rmse}; "
        f"{meta['real_ratings']} app ratings vs {champ_real}"
    )
    return _result(
        not problems,
        verdict,
        champion_version=champion["version"],
        **({"champion_rmse": champ_rmse} if champ_rmse is not None else {}),
        challenger_rmse=meta["rmse_mean"],
        champion_real_ratings=champ_real,
        challenger_real_ratings=meta["real_ratings"],
    )


ALL_CHECKS = [
    ml100k_is_official_release,
    tmdb_mapping_coverage,
    supabase_ratings_were_read,
    combined_ratings_are_valid,
    svd_artifacts_load_and_predict,
    cv_rmse_under_ceiling,
    challenger_no_worse_than_champion,
]

GATE_CHECKS = [spec.key for checks in ALL_CHECKS for spec in checks.check_specs if spec.blocking]
