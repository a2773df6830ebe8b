"""Rating assets: the app's catalog, the app's own ratings, and the combined training table."""

from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd

from cfrec_assets import settings
from cfrec_assets.defs.assets.labels import OWNERS, PERSONAL_DATA, column_schema, stage
from cfrec_assets.defs.resources import CatalogSource
from cfrec_assets.defs.supabase_io import RatingsReader, SupabaseReadError
from cfrec_assets.pipeline.catalog import load_catalog_ids, normalize_ids
from cfrec_assets.pipeline.combine import (
    app_ratings_lost,
    catalog_coverage,
    combine,
    empty_app_ratings,
    ml100k_film_ids,
    ml100k_seed,
    ml_latest_film_ids,
    ml_latest_seed,
    uncovered_films,
)
from cfrec_assets.pipeline.records import Catalog, MovieLens100K, MovieLensLatest
from cfrec_assets.schema import (
    APP_RATING_COLUMNS,
    APP_RATING_TABLE,
    APP_RATINGS_COUNT,
    COMBINED_TABLE,
    SEED_ML100K,
    SEED_ML_LATEST,
    SEEDS,
    SOURCE_APP,
    SOURCE_ML100K,
    SOURCE_ML_LATEST,
)

GROUP = "ratings"
SUPABASE_RETRIES = 2
RATINGS_TABLE = dg.AssetKey("supabase_ratings_table")

app_ratings_table = dg.AssetSpec(
    RATINGS_TABLE,
    group_name=GROUP,
    kinds={"supabase", "postgres"},
    owners=OWNERS,
    tags=stage("ingest", **PERSONAL_DATA),
    description="The app's ratings table in Supabase (external): the retrain sensor records its row "
    "count and newest rating here, so the UI shows it growing between retrains.",
)


@dg.asset(group_name=GROUP, kinds={"json", "csv", "supabase"}, owners=OWNERS, tags=stage("ingest"))
def catalog_ids(
    context: dg.AssetExecutionContext,
    catalog: CatalogSource,
    supabase: RatingsReader,
    tmdb_links: pd.DataFrame,
    ml_latest_raw: MovieLensLatest,
) -> dg.Output[Catalog]:
    """The app's catalog of TMDB ids, which training is restricted to.

    With no source configured there is no filter: the catalog is every mapped TMDB id, and
    the metadata says so.
    """
    mapped_ids = set(tmdb_links["tmdb_id"].dropna().astype("int64").tolist()) | set(
        ml_latest_raw.links["tmdb_id"].dropna().astype("int64").tolist()
    )
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
    owners=OWNERS,
    tags=stage("ingest", **PERSONAL_DATA),
    metadata=column_schema(APP_RATING_TABLE),
    deps=[app_ratings_table],  # read by the resource, not handed over by an IO manager
    retry_policy=dg.RetryPolicy(max_retries=SUPABASE_RETRIES, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def supabase_ratings(
    context: dg.AssetExecutionContext, config: SupabaseRatingsConfig, supabase: RatingsReader
) -> dg.Output[pd.DataFrame]:
    """Every rating the app's users made, read from Supabase page by page until an empty page.

    Reads through PostgREST (`SUPABASE_URL`/`SUPABASE_KEY`), or directly from Postgres when
    `SUPABASE_DB_URL` is set. Not configured: an empty table, status `not_configured`.
    """
    if not supabase.is_configured:
        frame, stats, status = empty_app_ratings(), {}, "not_configured"
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
            frame, stats, status = empty_app_ratings(), {"error": str(exc)}, "unreachable"
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


class CombineConfig(dg.Config):
    seeds: str | None = None
    """Seed ratings trained on besides the app's, comma-separated: `ml100k`, `ml-latest` (the
    ml_latest_raw release), both (`ml100k,ml-latest`), or `none` (app ratings only: a mature app).
    Unset: `CFREC_SEEDS` as the run's environment sets it, else both."""
    max_seed_ratings: int | None = None
    """Cap on seed ratings (after the catalog filter): whole seed users in a seeded random order
    until the cap, so ml-32m fits a machine whose memory pre-check refuses all of it. App ratings
    are never capped."""


def chosen_seeds(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in SEEDS]
    if unknown or not names:
        raise ValueError(f"seeds {text!r}: use any of {', '.join(SEEDS)} (comma-separated) or none")
    return list(dict.fromkeys(names))


@dg.asset(
    group_name=GROUP,
    kinds={"pandas"},
    owners=OWNERS,
    tags=stage("prepare", **PERSONAL_DATA),
    metadata=column_schema(COMBINED_TABLE),
)
def combined_ratings(
    context: dg.AssetExecutionContext,
    config: CombineConfig,
    ml100k_raw: MovieLens100K,
    tmdb_links: pd.DataFrame,
    ml_latest_raw: MovieLensLatest,
    movie_titles: pd.DataFrame,
    catalog_ids: Catalog,
    supabase_ratings: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    """The chosen seed ratings plus the app's ratings, keyed by TMDB id, filtered to the catalog.

    Seeds (`config.seeds`): ML-100K users prefixed `ml_`, ml-latest users `mll_`, so the
    populations never merge; the same film from both releases is one TMDB id. Invalid rows are
    dropped and counted by reason; the latest rating per (user, movie) wins; rows are sorted by
    user then movie. Metadata compares every seed's coverage of the catalog, chosen or not.
    """
    seeds = chosen_seeds(settings.SEEDS.read() if config.seeds is None else config.seeds)
    dropped: Counter[str] = Counter()
    parts = {}
    if SEED_ML100K in seeds:
        parts[SEED_ML100K] = ml100k_seed(ml100k_raw.ratings, tmdb_links, dropped)
    if SEED_ML_LATEST in seeds:
        parts[SEED_ML_LATEST] = ml_latest_seed(ml_latest_raw.ratings, ml_latest_raw.links, dropped)
    # The coverage report compares every seed, chosen or not; a seed not trained on is only keyed
    # by TMDB id (no user ids built: cheap even for ml-32m).
    films = {
        SEED_ML100K: parts[SEED_ML100K][["tmdb_id"]]
        if SEED_ML100K in parts
        else ml100k_film_ids(ml100k_raw.ratings, tmdb_links),
        SEED_ML_LATEST: parts[SEED_ML_LATEST][["tmdb_id"]]
        if SEED_ML_LATEST in parts
        else ml_latest_film_ids(ml_latest_raw.ratings, ml_latest_raw.links),
    }
    catalog_set = catalog_ids.tmdb_ids if catalog_ids.filter else None
    app_dropped: Counter[str] = Counter()
    combined, dropped_counts = combine(
        parts,
        supabase_ratings,
        catalog_set,
        dropped=dropped,
        max_seed_ratings=config.max_seed_ratings,
        app_dropped=app_dropped,
    )
    if combined.empty:
        raise ValueError(
            f"no ratings left to train on after filtering (seeds {seeds or 'none'}; dropped: {dropped_counts})"
        )
    by_source = combined.groupby("source")
    kept = {
        source: {"ratings": len(rows), "users": int(rows["user_id"].nunique()), "films": int(rows["tmdb_id"].nunique())}
        for source, rows in by_source
    }
    coverage = catalog_coverage({**films, SOURCE_APP: supabase_ratings, "training": combined}, catalog_ids.tmdb_ids)
    movies = set(combined["tmdb_id"].unique().tolist())
    context.log.info(f"combined {len(combined)} ratings from seeds {seeds or 'none'} + app; dropped {dropped_counts}")
    app_kept = kept.get(SOURCE_APP, {}).get("ratings", 0)
    lost = app_ratings_lost(app_dropped)
    if lost:
        context.log.warning(f"{sum(lost.values())} of {len(supabase_ratings)} app ratings dropped here: {lost}")
    popularity = pd.concat(films.values())
    return dg.Output(
        combined,
        metadata={
            "seeds": ",".join(seeds) or "none",
            "ratings": len(combined),
            "ml_ratings": kept.get(SOURCE_ML100K, {}).get("ratings", 0),
            "ml_latest_ratings": kept.get(SOURCE_ML_LATEST, {}).get("ratings", 0),
            APP_RATINGS_COUNT: app_kept,
            # What the check app_ratings_kept_in_training judges: every app row is kept or dropped once.
            "app_ratings_in": len(supabase_ratings),
            "app_ratings_dropped": dg.MetadataValue.json({k: int(v) for k, v in sorted(app_dropped.items())}),
            "app_ratings_lost": sum(lost.values()),
            "users": int(combined["user_id"].nunique()),
            "real_users": kept.get(SOURCE_APP, {}).get("users", 0),  # "real": the key predates the name "app"
            "movies": len(movies),
            "kept_by_source": dg.MetadataValue.json(kept),
            "catalog_size": len(catalog_ids.tmdb_ids),
            "catalog_filter_applied": catalog_ids.filter,
            "catalog_overlap_movies": len(movies.intersection(catalog_ids.tmdb_ids)),
            **{f"catalog_films_rated_{name}": c["films_rated"] for name, c in coverage.items()},
            **{f"catalog_films_20plus_{name}": c["films_with_20_plus"] for name, c in coverage.items()},
            "catalog_coverage": dg.MetadataValue.json(coverage),
            "coverage_report": dg.MetadataValue.md(
                coverage_markdown(coverage, catalog_ids, combined, popularity, movie_titles, seeds)
            ),
            "dropped": dg.MetadataValue.json(dropped_counts),
            **{f"dropped_{reason}": count for reason, count in dropped_counts.items()},
        },
    )


def coverage_markdown(
    coverage: dict,
    catalog: Catalog,
    training: pd.DataFrame,
    popularity: pd.DataFrame,
    titles: pd.DataFrame,
    seeds: list,
) -> str:
    """Seeds compared on the catalog, then the most-rated catalog films no training rating covers."""
    size = len(catalog.tmdb_ids)
    label = {
        SEED_ML100K: "ML-100K",
        SEED_ML_LATEST: "ml-latest",
        SOURCE_APP: "app ratings",
        "training": "**training table**",
    }
    lines = [
        f"Catalog: {size} films ({catalog.source}). Seeds chosen: {', '.join(seeds) or 'none'}.",
        "",
        "| source | catalog films rated | with 20+ ratings | ratings on catalog films |",
        "|---|---:|---:|---:|",
    ]
    for name, c in coverage.items():
        share = f" ({c['films_rated'] / size:.0%})" if size else ""
        lines.append(
            f"| {label.get(name, name)} | {c['films_rated']}{share} | {c['films_with_20_plus']} | {c['ratings_on_catalog']:,} |"
        )
    missing = uncovered_films(catalog.tmdb_ids, training, popularity)
    if len(missing):
        named = missing.merge(titles, on="tmdb_id", how="left")
        lines += ["", "Most-rated catalog films with no training rating (the model cannot rank them):", ""]
        lines += ["| tmdb_id | title | MovieLens ratings (any release) |", "|---:|---|---:|"]
        for row in named.itertuples():
            title = (
                f"{row.title} ({row.year})"
                if isinstance(row.title, str) and pd.notna(row.year)
                else (row.title if isinstance(row.title, str) else "")
            )
            lines.append(f"| {row.tmdb_id} | {title.replace('|', '/')} | {row.movielens_ratings:,} |")
    return "\n".join(lines)
