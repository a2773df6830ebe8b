"""Rating assets: the app's catalog, the app's own ratings, and the combined training table."""

from pathlib import Path

import dagster as dg
import pandas as pd

from cfrec_assets.catalog import load_catalog_ids, normalize_ids
from cfrec_assets.combine import combine_ratings, empty_real_ratings
from cfrec_assets.records import Catalog, MovieLens100K
from cfrec_assets.resources import CatalogSource
from cfrec_assets.schema import APP_RATING_COLUMNS, SOURCE_APP, SOURCE_MOVIELENS
from cfrec_assets.supabase_io import RatingsReader, SupabaseReadError

GROUP = "ratings"
SUPABASE_RETRIES = 2
RATINGS_TABLE = dg.AssetKey("supabase_ratings_table")

app_ratings_table = dg.AssetSpec(
    RATINGS_TABLE,
    group_name=GROUP,
    kinds={"supabase", "postgres"},
    description="The app's ratings table in Supabase (external): the retrain sensor records its row "
    "count and newest rating here, so the UI shows it growing between retrains.",
)


@dg.asset(group_name=GROUP, kinds={"python"})
def catalog_ids(
    context: dg.AssetExecutionContext, catalog: CatalogSource, supabase: RatingsReader, tmdb_links: pd.DataFrame
) -> dg.Output[Catalog]:
    """The app's catalog of TMDB ids, which training is restricted to.

    With no source configured there is no filter: the catalog is every mapped TMDB id, and
    the metadata says so.
    """
    mapped_ids = set(tmdb_links["tmdb_id"].dropna().astype("int64").tolist())
    if catalog.path and catalog.supabase_table:
        raise ValueError("CatalogSource: set either path or supabase_table, not both")
    if catalog.supabase_table:
        if not supabase.is_configured:
            raise ValueError("CatalogSource.supabase_table is set but SUPABASE_URL / SUPABASE_KEY are not")
        raw = supabase.read_catalog_ids(catalog.supabase_table, catalog.supabase_column)
        ids = normalize_ids(raw, catalog.supabase_table)
        source, filtered = f"supabase table {catalog.supabase_table}.{catalog.supabase_column}", True
    elif catalog.path:
        ids, source, filtered = load_catalog_ids(Path(catalog.path).expanduser()), f"file {catalog.path}", True
    else:
        ids, source, filtered = sorted(mapped_ids), "none: no catalog configured, every mapped TMDB id is kept", False
    overlap = len(mapped_ids.intersection(ids))
    context.log.info(f"catalog: {len(ids)} TMDB ids from {source}; {overlap} have MovieLens ratings")
    return dg.Output(
        Catalog(filter=filtered, source=source, tmdb_ids=ids),
        metadata={
            "catalog_size": len(ids),
            "source": source,
            "filter_applied": filtered,
            "catalog_movies_with_movielens_ratings": overlap,
        },
    )


class SupabaseRatingsConfig(dg.Config):
    allow_fallback: bool = False
    """Opt-in: when Supabase cannot be read, continue with no app ratings (status: unreachable)
    instead of failing. A WARN check then flags the run, and the deployment gate refuses a model
    trained on fewer app ratings than the one serving."""


@dg.asset(
    group_name=GROUP,
    kinds={"supabase", "pandas"},
    deps=[app_ratings_table],  # read by the resource, not handed over by an IO manager
    retry_policy=dg.RetryPolicy(max_retries=SUPABASE_RETRIES, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def supabase_ratings(
    context: dg.AssetExecutionContext, config: SupabaseRatingsConfig, supabase: RatingsReader
) -> dg.Output[pd.DataFrame]:
    """Every rating the app's users made, read from Supabase page by page until an empty page.

    Reads through PostgREST (SUPABASE_URL/SUPABASE_KEY), or directly from Postgres when
    SUPABASE_DB_URL is set. Not configured: an empty table, status ``not_configured``.
    """
    if not supabase.is_configured:
        frame, stats, status = empty_real_ratings(), {}, "not_configured"
        context.log.info("Supabase is not configured (SUPABASE_URL/SUPABASE_KEY unset): no app ratings")
    else:
        try:
            frame, stats = supabase.read_ratings()
            # "Read N, kept 0" is not "ok": a column of the wrong type drops every row.
            status = "all_rows_invalid" if stats["rows_read"] and not stats["valid_rows"] else "ok"
        except SupabaseReadError as exc:
            if not config.allow_fallback or context.retry_number < SUPABASE_RETRIES:
                raise
            context.log.warning(f"Supabase unreachable, continuing without app ratings (allow_fallback): {exc}")
            frame, stats, status = empty_real_ratings(), {"error": str(exc)}, "unreachable"
    latest = frame["created_at"].max() if len(frame) else None
    examples = stats.pop("dropped_examples", {})
    if examples:
        context.log.warning(f"dropped app ratings, e.g. {examples}")
    rows_read = stats.get("rows_read", 0)
    return dg.Output(
        frame[list(APP_RATING_COLUMNS)],
        metadata={
            "status": status,
            "reader": supabase.reader_name if status != "not_configured" else "none",
            "ratings": len(frame),
            "users": int(frame["user_id"].nunique()),
            "movies": int(frame["tmdb_id"].nunique()),
            "latest_created_at": str(latest) if latest is not None else "",
            **stats,
            "dropped_share": round((rows_read - len(frame)) / rows_read, 4) if rows_read else 0.0,
            "dropped_examples": dg.MetadataValue.json(examples),
        },
    )


@dg.asset(group_name=GROUP, kinds={"pandas"})
def combined_ratings(
    context: dg.AssetExecutionContext,
    ml100k_raw: MovieLens100K,
    tmdb_links: pd.DataFrame,
    catalog_ids: Catalog,
    supabase_ratings: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    """MovieLens ratings mapped to TMDB ids plus the app's ratings, filtered to the catalog.

    MovieLens users are prefixed ``ml_``; invalid rows are dropped and counted by reason; the
    latest rating per (user, movie) wins; rows are sorted by user then movie.
    """
    catalog_set = catalog_ids.tmdb_ids if catalog_ids.filter else None
    combined, dropped = combine_ratings(ml100k_raw.ratings, tmdb_links, supabase_ratings, catalog_set)
    if combined.empty:
        raise ValueError(f"no ratings left to train on after filtering (dropped: {dropped})")
    by_source = combined["source"].value_counts()
    movies = set(combined["tmdb_id"].unique().tolist())
    context.log.info(f"combined {len(combined)} ratings; dropped {dropped}")
    return dg.Output(
        combined,
        metadata={
            "ratings": len(combined),
            "ml_ratings": int(by_source.get(SOURCE_MOVIELENS, 0)),
            "real_ratings": int(by_source.get(SOURCE_APP, 0)),
            "users": int(combined["user_id"].nunique()),
            "real_users": int(combined.loc[combined["source"] == SOURCE_APP, "user_id"].nunique()),
            "movies": len(movies),
            "catalog_size": len(catalog_ids.tmdb_ids),
            "catalog_filter_applied": catalog_ids.filter,
            "catalog_overlap_movies": len(movies.intersection(catalog_ids.tmdb_ids)),
            "dropped": dg.MetadataValue.json(dropped),
            **{f"dropped_{reason}": count for reason, count in dropped.items()},
        },
    )
