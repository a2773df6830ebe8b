"""Opt-in publishing: every app user's top-N in a Supabase table the app reads directly."""

from datetime import datetime, timezone

import dagster as dg

from cfrec_assets.defs.resources import DataStore, ServingTargetResource
from cfrec_assets.defs.supabase_io.recommendations import RecommendationsTable
from cfrec_assets.pipeline.preview import app_users, recommendation_rows
from cfrec_assets.pipeline.records import Deployment
from cfrec_serving.loader import load_deployed

GROUP = "publishing"


class UserRecommendationsConfig(dg.Config):
    n: int = 20
    """Films per user (the app pages through them)."""
    include_seed_users: bool = False
    """Also write the MovieLens seed users' lists (useful for demos; they are not app users)."""


@dg.asset(group_name=GROUP, kinds={"supabase", "postgres"})
def user_recommendations(
    context: dg.AssetExecutionContext,
    config: UserRecommendationsConfig,
    store: DataStore,
    serving: ServingTargetResource,
    recommendations: RecommendationsTable,
    deployed_model: Deployment,
) -> dg.MaterializeResult:
    """Each app user's top-N unseen films from the model ``deployed_model`` serves, replacing the
    previous set in one transaction. Downstream of ``deployed_model``, so only a model that passed
    every blocking check is published; off unless ``CFREC_RECOMMENDATIONS_TABLE`` is set."""
    if not recommendations.is_configured:
        raise dg.Failure("user_recommendations is off: set CFREC_RECOMMENDATIONS_TABLE (and SUPABASE_DB_URL)")
    model = load_deployed(serving.open(store.serving_dir), cache_dir=store.root / "serving-cache")
    if model.version != deployed_model.version:
        raise dg.Failure(
            f"the target now serves {model.version}, not {deployed_model.version} (deployed by run "
            f"{deployed_model.run_id}); not publishing a list for a model that is no longer served"
        )
    users = sorted(model.rated_counts()) if config.include_seed_users else app_users(model)
    rows = recommendation_rows(model, users, config.n, datetime.now(timezone.utc))
    written = recommendations.replace_all(rows)
    context.log.info(f"wrote {written} recommendations for {len(users)} users to {recommendations.table}")
    sample = rows[rows["user_id"].isin(users[:2])].assign(title=lambda f: f["tmdb_id"].map(model.describe))
    return dg.MaterializeResult(
        metadata={
            "table": recommendations.table,
            "model_version": model.version,
            "rows": written,
            "users": len(users),
            "n": config.n,
            "sample": dg.MetadataValue.md(
                sample[["user_id", "rank", "tmdb_id", "title", "score"]].round(3).to_markdown(index=False)
            ),
        }
    )
