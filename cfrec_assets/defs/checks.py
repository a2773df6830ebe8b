"""Asset checks. Blocking ones gate ``deployed_model``; WARN ones only inform.

A blocking check that fails stops the downstream steps of its run, and ``deployed_model``
re-verifies the results on the materializations it ships (``gate.py``), so the gate also holds
across runs. Checks take the checked asset's value (loaded by the IO manager: this run's, or
the latest when the asset is not in the run), and name assets by key so that the assets, which
import ``GATE_CHECKS``, can sit above this module.
"""

import math
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from cfrec_assets.defs.gate import materialization_metadata
from cfrec_assets.defs.resources import DataStore, ServingTargetResource
from cfrec_assets.pipeline.combine import APP_DROP_REASONS, app_ratings_lost
from cfrec_assets.pipeline.records import Catalog, ModelMetrics, ModelVersion, MovieLens100K, MovieLensLatest
from cfrec_assets.pipeline.tmdb_mapping import mapping_summary
from cfrec_assets.schema import APP_RATINGS_COUNT, RATING_MAX, RATING_MIN, TRAINING_RATINGS_FILE
from cfrec_serving.artifacts import PICKLE_FILES
from cfrec_serving.loader import ArtifactVerificationError, load_version
from cfrec_serving.targets.folder import verification_problems


def _result(passed: bool, description: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=bool(passed), description=description, metadata={"verdict": description, **metadata}
    )


class DatasetShapeConfig(dg.Config):
    """The official ML-100K release."""

    ratings: int = 100_000
    users: int = 943
    items: int = 1_682


@dg.asset_check(asset="ml100k_raw", blocking=True)
def ml100k_is_official_release(config: DatasetShapeConfig, ml100k_raw: MovieLens100K) -> dg.AssetCheckResult:
    """A mirror serving another or a cut-down archive must not silently change what we train on."""
    ratings = ml100k_raw.ratings
    found = {"ratings": len(ratings), "users": int(ratings["user_id"].nunique()), "items": len(ml100k_raw.items)}
    expected = config.model_dump()
    wrong = {k: f"{found[k]} (expected {expected[k]})" for k in expected if found[k] != expected[k]}
    verdict = (
        "matches the official 100,000 / 943 / 1,682" if not wrong else f"differs from the official release: {wrong}"
    )
    return _result(not wrong, verdict, **found)


class MappingCoverageConfig(dg.Config):
    min_item_coverage: float = 0.80
    """Share of the 1,682 items that must map to a TMDB id."""
    min_rating_coverage: float = 0.98
    """Share of the 100,000 ratings whose item maps to a TMDB id."""


@dg.asset_check(asset="tmdb_links", blocking=True, additional_ins={"ml100k_raw": dg.AssetIn("ml100k_raw")})
def tmdb_mapping_coverage(
    config: MappingCoverageConfig, tmdb_links: pd.DataFrame, ml100k_raw: MovieLens100K
) -> dg.AssetCheckResult:
    """Coverage above its floors, and every IMDb id embedded in u.item honoured."""
    summary = mapping_summary(tmdb_links, ml100k_raw.ratings)
    item_cov = summary["items_mapped"] / summary["items_total"]
    rating_cov = summary["ratings_mapped"] / summary["ratings_total"]
    honoured, in_links = summary["embedded_imdb_ids_honoured"], summary["embedded_imdb_ids_in_links"]
    problems = []
    if item_cov < config.min_item_coverage:
        problems.append(f"item coverage {item_cov:.3f} < {config.min_item_coverage}")
    if rating_cov < config.min_rating_coverage:
        problems.append(f"rating coverage {rating_cov:.3f} < {config.min_rating_coverage}")
    if honoured != in_links:
        problems.append(f"only {honoured} of {in_links} embedded IMDb ids honoured")
    verdict = "; ".join(problems) or (
        f"{item_cov:.1%} of items and {rating_cov:.1%} of ratings mapped; embedded IMDb ids honoured"
    )
    return _result(
        not problems,
        verdict,
        item_coverage=round(item_cov, 4),
        rating_coverage=round(rating_cov, 4),
        embedded_imdb_ids_honoured=honoured,
    )


@dg.asset_check(asset="supabase_ratings")
def supabase_ratings_were_read(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """WARN when the app's ratings could not be read and the run continued without them."""
    meta = materialization_metadata(context.instance, dg.AssetKey("supabase_ratings"), context.run.run_id)
    status = meta.get("status")
    verdict = {
        "ok": f"read all {meta.get('rows_read', 0)} app ratings, kept {meta.get('ratings')}",
        "not_configured": "Supabase is not configured: training on MovieLens only",
        "unreachable": "Supabase was unreachable and allow_fallback was set: this run has NO app ratings",
        "all_rows_invalid": f"read {meta.get('rows_read')} app ratings and kept 0: every row was invalid",
    }.get(status, f"unexpected status {status!r}")
    return dg.AssetCheckResult(
        passed=status in ("ok", "not_configured"),
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict,
        metadata={"verdict": verdict, "status": str(status)},
    )


class AppRatingsValidityConfig(dg.Config):
    max_dropped_share: float = 0.1
    """Largest share of the app's rows that may be dropped as invalid. A healthy table drops
    none; a column of the wrong type drops all of them."""


@dg.asset_check(asset="supabase_ratings", blocking=True)
def supabase_rows_mostly_valid(
    context: dg.AssetCheckExecutionContext,
    config: AppRatingsValidityConfig,
    store: DataStore,
    serving: ServingTargetResource,
) -> dg.AssetCheckResult:
    """Fails when too many of the app's rows were dropped as invalid. It blocks the retrain
    (severity ERROR) when the deployed champion learned from app ratings, since a model that
    lost them would replace it; before that it only warns, so a first model can still ship."""
    meta = materialization_metadata(context.instance, dg.AssetKey("supabase_ratings"), context.run.run_id)
    rows_read, share = meta.get("rows_read", 0), meta.get("dropped_share", 0.0)
    champion = serving.open(store.serving_dir).read_manifest()
    champion_had_app = bool(champion and champion["counts"].get(APP_RATINGS_COUNT, 0))
    passed = not rows_read or share <= config.max_dropped_share
    verdict = (
        f"{share:.1%} of {rows_read} app rows dropped (limit {config.max_dropped_share:.0%})"
        if rows_read
        else "no app rows read"
    )
    if not passed:
        verdict += f"; e.g. {meta.get('dropped_examples')}"[:500]
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if champion_had_app else dg.AssetCheckSeverity.WARN,
        description=verdict,
        metadata={"verdict": verdict, "dropped_share": share, "champion_had_app_ratings": champion_had_app},
    )


class TrainingTableConfig(dg.Config):
    min_ratings: int = 1_000
    min_users: int = 10


@dg.asset_check(
    asset="combined_ratings",
    blocking=True,
    additional_ins={
        name: dg.AssetIn(name) for name in ("catalog_ids", "tmdb_links", "ml_latest_raw", "supabase_ratings")
    },
)
def combined_ratings_are_valid(
    config: TrainingTableConfig,
    combined_ratings: pd.DataFrame,
    catalog_ids: Catalog,
    tmdb_links: pd.DataFrame,
    ml_latest_raw: MovieLensLatest,
    supabase_ratings: pd.DataFrame,
) -> dg.AssetCheckResult:
    """No phantom movie ids, ratings in range, one rating per (user, movie), enough to train on."""
    ratings = combined_ratings
    if catalog_ids.filter:
        known = set(catalog_ids.tmdb_ids)
    else:  # no catalog: every id must still come from a mapping, a release's links or the app's ratings
        known = (
            set(tmdb_links["tmdb_id"].dropna().astype("int64"))
            | set(ml_latest_raw.links["tmdb_id"].dropna().astype("int64"))
            | set(supabase_ratings["tmdb_id"].astype("int64"))
        )
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
        problems.append(
            f"only {len(ratings)} ratings from {users} users (need {config.min_ratings} / {config.min_users})"
        )
    verdict = "; ".join(problems) or f"{len(ratings)} valid ratings from {users} users, all in the catalog"
    return _result(
        not problems,
        verdict,
        phantom_movies=len(phantom),
        out_of_range=out_of_range,
        duplicates=duplicates,
        ratings=len(ratings),
    )


class AppRatingsKeptConfig(dg.Config):
    max_lost_share: float = 0.1
    """Largest share of the app's ratings ``combined_ratings`` may drop (a re-rating superseded by
    the same user's later rating is not lost). Losing every one always fails."""


@dg.asset_check(asset="combined_ratings", blocking=True)
def app_ratings_kept_in_training(
    context: dg.AssetCheckExecutionContext, config: AppRatingsKeptConfig
) -> dg.AssetCheckResult:
    """The app's ratings read by `supabase_ratings` reach the training table: a model must not
    ship with `real_ratings: 0` (or most of them gone) while the app has ratings, whatever the
    reason they were dropped (seed-prefixed user ids, films outside the catalog, ...)."""
    meta = materialization_metadata(context.instance, dg.AssetKey("combined_ratings"), context.run.run_id)
    if "app_ratings_in" not in meta:
        return _result(False, "combined_ratings recorded no app-rating accounting: materialise it again")
    rows_in, kept, dropped = meta["app_ratings_in"], meta[APP_RATINGS_COUNT], meta["app_ratings_dropped"]
    lost = app_ratings_lost(dropped)
    share = sum(lost.values()) / rows_in if rows_in else 0.0
    passed = not rows_in or (kept > 0 and share <= config.max_lost_share)
    if not rows_in:
        verdict = "no app ratings to keep"
    else:
        verdict = f"kept {kept} of {rows_in} app ratings; {share:.1%} lost (limit {config.max_lost_share:.0%})"
        if lost:
            why = "; ".join(f"{n} {APP_DROP_REASONS.get(reason, reason)} ({reason})" for reason, n in lost.items())
            verdict += f": {why}"
    return _result(passed, verdict, app_ratings_in=rows_in, app_ratings_kept=kept, app_ratings_lost_share=share)


@dg.asset_check(asset="svd_model", blocking=True)
def svd_artifacts_load_and_predict(svd_model: ModelVersion) -> dg.AssetCheckResult:
    """The files on disk are the ones recorded (sha256), they load, and predictions are finite and in range.

    Loaded as the app loads them (`serving.load_version`): `cf_model.npz` is read once, hashed,
    and parsed from that same buffer (never unpickled); the pickles beside it are hashed.
    """
    folder = Path(svd_model.path)
    try:
        model = load_version(folder, svd_model.files)
    except ArtifactVerificationError as error:
        return _result(False, str(error), version=svd_model.version)
    # The pickles are not loaded here (they are code), but the app's older code loads them: hash them
    # (a Spark-trained version has none: its factors are not a Surprise model).
    pickles = {name: svd_model.files[name] for name in PICKLE_FILES} if svd_model.trainer == "surprise" else {}
    problems = verification_problems(folder, pickles) if pickles else []
    if problems:
        return _result(False, "; ".join(problems), version=svd_model.version)
    sample = pd.read_parquet(folder / TRAINING_RATINGS_FILE).sample(n=200, replace=True, random_state=0)
    estimates = [model.predict(str(u), int(m)).rating for u, m in zip(sample["user_id"], sample["tmdb_id"])]
    estimates.append(model.predict("__unknown_user__", int(sample["tmdb_id"].iloc[0])).rating)
    lo, hi = model.rating_scale
    bad = [e for e in estimates if not (math.isfinite(e) and lo <= e <= hi)]
    verdict = (
        f"{len(bad)} of {len(estimates)} predictions not finite or outside {lo}..{hi}"
        if bad
        else f"sha256 verified; {len(estimates)} sample predictions finite and in {lo}..{hi}"
    )
    return _result(
        not bad,
        verdict,
        version=svd_model.version,
        min_estimate=float(np.min(estimates)),
        max_estimate=float(np.max(estimates)),
    )


class ModelQualityConfig(dg.Config):
    rmse_ceiling: float = 1.0
    """Absolute ceiling on the CV RMSE (predicting the global mean scores about 1.13 on ML-100K)."""
    champion_tolerance: float = 0.01
    """The challenger's RMSE may exceed the deployed champion's by at most this much; above it the
    champion is kept (a successful run, no alert)."""


@dg.asset_check(asset="cv_metrics", blocking=True)
def cv_rmse_under_ceiling(config: ModelQualityConfig, cv_metrics: ModelMetrics) -> dg.AssetCheckResult:
    """The cross-validated RMSE is under an absolute ceiling."""
    rmse = cv_metrics.summary["rmse_mean"]
    passed = rmse <= config.rmse_ceiling  # False for NaN too
    verdict = f"RMSE {rmse:.4f} {'<=' if passed else '>'} ceiling {config.rmse_ceiling}"
    return _result(passed, verdict, rmse_mean=rmse, rmse_ceiling=config.rmse_ceiling, version=cv_metrics.version)


@dg.asset_check(asset="cv_metrics", blocking=True)
def challenger_no_worse_than_champion(
    config: ModelQualityConfig, store: DataStore, serving: ServingTargetResource, cv_metrics: ModelMetrics
) -> dg.AssetCheckResult:
    """Against the deployed champion: RMSE no worse than its RMSE plus a tolerance, and trained
    on at least as many app (Supabase) ratings.

    Losing on RMSE is a normal outcome, not a fault: the check fails with WARN severity, the run
    goes on, and `deployed_model` keeps the champion and says so. Fewer app ratings than the
    champion means app data went missing (an outage, a bad read): that fails with ERROR severity,
    blocks the deployment and fails the run, so a model that forgot the app's users never ships.
    """
    rmse, app = cv_metrics.summary["rmse_mean"], cv_metrics.real_ratings
    champion = serving.open(store.serving_dir).read_manifest()
    if champion is None:
        return _result(True, "no champion deployed yet: nothing to compare with", version=cv_metrics.version)
    champ_rmse = champion["metrics"].get("rmse_mean")
    champ_app = champion["counts"].get(APP_RATINGS_COUNT, 0)
    worse = champ_rmse is not None and not rmse <= champ_rmse + config.champion_tolerance  # NaN is worse
    lost_app_ratings = app < champ_app
    problems = []
    if worse:
        problems.append(f"RMSE {rmse:.4f} > champion {champ_rmse:.4f} + {config.champion_tolerance}")
    if lost_app_ratings:
        problems.append(f"trained on {app} app ratings, fewer than the champion's {champ_app}")
    verdict = "; ".join(problems) or (
        f"RMSE {rmse:.4f} vs champion {champion['version']} {champ_rmse}; {app} app ratings vs {champ_app}"
    )
    if worse and not lost_app_ratings:
        verdict += f": champion {champion['version']} stays"
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR if lost_app_ratings else dg.AssetCheckSeverity.WARN,
        description=verdict,
        metadata={
            "verdict": verdict,
            "champion_version": champion["version"],
            **({"champion_rmse": champ_rmse} if champ_rmse is not None else {}),
            "challenger_rmse": rmse,
            "champion_tolerance": config.champion_tolerance,
            # metadata keys: "real" predates the name "app" (schema.APP_RATINGS_COUNT)
            "champion_real_ratings": champ_app,
            "challenger_real_ratings": app,
        },
    )


ALL_CHECKS = [
    ml100k_is_official_release,
    tmdb_mapping_coverage,
    supabase_ratings_were_read,
    supabase_rows_mostly_valid,
    combined_ratings_are_valid,
    app_ratings_kept_in_training,
    svd_artifacts_load_and_predict,
    cv_rmse_under_ceiling,
    challenger_no_worse_than_champion,
]

GATE_CHECKS = [spec.key for checks in ALL_CHECKS for spec in checks.check_specs if spec.blocking]
