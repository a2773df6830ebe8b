"""MovieLens assets: the raw ML-100K and ml-latest releases, the ML-100K item -> TMDB id mapping, and film titles."""

import tempfile
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd

from cfrec_assets.defs.assets.labels import OWNERS, column_schema, stage
from cfrec_assets.defs.resources import DataStore, MovieLensSource
from cfrec_assets.pipeline.downloads import CachedArchive, evict, fetch_archive, safe_extract
from cfrec_assets.pipeline.memory import MemoryBudgetError, require_memory
from cfrec_assets.pipeline.movielens_files import (
    ML100K_ARCHIVE,
    ML100K_MEMBERS,
    MovieLensFormatError,
    check_release,
    link_report,
    ml_latest_archive,
    ml_latest_members,
    parse_links,
    parse_movies,
    parse_ratings_csv,
    parse_u_data,
    parse_u_item,
)
from cfrec_assets.pipeline.records import MovieLens100K, MovieLensLatest
from cfrec_assets.pipeline.tmdb_mapping import build_tmdb_mapping, display_title, load_overrides, mapping_summary
from cfrec_assets.schema import MOVIE_TITLE_TABLE, SEED_ML100K, SEED_ML_LATEST, TMDB_LINK_TABLE

GROUP = "movielens"


def _archive_metadata(archive: CachedArchive) -> dict:
    return {
        "sha256": archive.sha256,
        "source_url": archive.source_url,  # redacted: no credentials, no query string
        "final_url": archive.final_url,
        "from_cache": archive.from_cache,
        "archive_bytes": archive.bytes,
        "archive_path": dg.MetadataValue.path(str(archive.path)),
    }


@contextmanager
def _members(movielens: MovieLensSource, store: DataStore, filename: str, members: tuple[str, ...]):
    """The verified (cached) archive and its members extracted into a folder of this step's own,
    removed afterwards. If extracting or parsing them fails in any way, the cached archive is
    evicted, so a fixed mirror is downloaded again instead of the bad archive being reused forever.
    Kept only when the memory pre-check refuses: that says the machine is too small, not the
    archive bad, and the next attempt on a bigger machine should not download it again."""
    archive = fetch_archive(movielens.base_url, filename, store.cache_dir, members, movielens.timeout_seconds)
    store.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=store.cache_dir) as folder:
        try:
            yield archive, safe_extract(archive.path, Path(folder), members)
        except MemoryBudgetError:
            raise
        except Exception:  # not BaseException: an interrupted run says nothing about the archive
            evict(archive)
            raise


@dg.asset(group_name=GROUP, kinds={"pandas"}, owners=OWNERS, tags=stage("ingest"))
def ml100k_raw(
    context: dg.AssetExecutionContext, movielens: MovieLensSource, store: DataStore
) -> dg.Output[MovieLens100K]:
    """ML-100K ratings (u.data) and items (u.item), downloaded once and parsed strictly.

    The archive is cached only after it verifies, so a later run reuses it without a network call.
    """
    with _members(movielens, store, ML100K_ARCHIVE, ML100K_MEMBERS) as (archive, files):
        context.log.info(f"ml-100k.zip {'reused from cache' if archive.from_cache else 'downloaded'}: {archive.path}")
        ratings = parse_u_data(files["ml-100k/u.data"])
        items = parse_u_item(files["ml-100k/u.item"])
        unknown_items = set(ratings["item_id"].unique()) - set(items["item_id"])
        if unknown_items:
            raise ValueError(
                f"u.data rates {len(unknown_items)} item id(s) missing from u.item, e.g. {min(unknown_items)}"
            )
    histogram = ratings["rating"].value_counts().sort_index()
    return dg.Output(
        MovieLens100K(ratings=ratings, items=items),
        metadata={
            "ratings": len(ratings),
            "users": int(ratings["user_id"].nunique()),
            "items": len(items),
            "rated_items": int(ratings["item_id"].nunique()),
            "mean_rating": round(float(ratings["rating"].mean()), 4),
            "rating_histogram": dg.MetadataValue.json({str(k): int(v) for k, v in histogram.items()}),
            "dagster/row_count": len(ratings),
            **_archive_metadata(archive),
        },
    )


class MovieLensLatestConfig(dg.Config):
    memory_budget_bytes: int | None = None
    """Memory the parse may use (default: what the machine has available now)."""


@dg.asset(group_name=GROUP, kinds={"pandas"}, owners=OWNERS, tags=stage("ingest"))
def ml_latest_raw(
    context: dg.AssetExecutionContext, config: MovieLensLatestConfig, movielens: MovieLensSource, store: DataStore
) -> dg.Output[MovieLensLatest]:
    """The configured ml-latest-format release (`movielens.latest_release`: ml-latest-small by
    default, ml-32m or ml-latest): ratings (half stars), movies and links (movie_id -> tmdb_id in
    the same release, so its films map to TMDB ids exactly). Downloaded and cached like `ml100k_raw`."""
    release = check_release(movielens.latest_release)
    members = ml_latest_members(release)
    with _members(movielens, store, ml_latest_archive(release), members) as (archive, files):
        ratings_file = files[members[0]]
        # pandas holds ~1.5x the CSV's bytes while parsing (bench/seed_scale_bench.py).
        require_memory(
            int(1.5 * ratings_file.stat().st_size),
            f"parsing {release}/ratings.csv ({ratings_file.stat().st_size / 1e6:,.0f} MB)",
            "choose a smaller release (CFREC_ML_LATEST_RELEASE=ml-latest-small) or a bigger machine",
            config.memory_budget_bytes,
        )
        ratings = parse_ratings_csv(ratings_file)
        movies = parse_movies(files[members[1]])
        links = parse_links(files[members[2]])
        unknown = set(ratings["movie_id"].unique().tolist()) - set(movies["movie_id"].tolist())
        if unknown:  # raised inside, so the cached archive is evicted like any other bad content
            raise MovieLensFormatError(
                f"{release}/ratings.csv rates {len(unknown)} movieId(s) missing from movies.csv, e.g. {min(unknown)}"
            )
    report = link_report(links)
    linked = set(links.loc[links["tmdb_id"].notna(), "movie_id"].tolist())
    rated_linked = ratings["movie_id"].isin(list(linked))
    context.log.info(f"{release}: {len(ratings):,} ratings, {len(movies):,} films; links {report}")
    return dg.Output(
        MovieLensLatest(ratings=ratings, movies=movies, links=links),
        metadata={
            "release": release,
            "ratings": len(ratings),
            "users": int(ratings["user_id"].nunique()),
            "movies": len(movies),
            "rated_movies": int(ratings["movie_id"].nunique()),
            **report,
            "ratings_of_films_with_tmdb_id": int(rated_linked.sum()),
            "rating_link_coverage": round(float(rated_linked.mean()), 4),
            "dagster/row_count": len(ratings),
            **_archive_metadata(archive),
        },
    )


@dg.asset(
    group_name=GROUP, kinds={"pandas"}, owners=OWNERS, tags=stage("prepare"), metadata=column_schema(TMDB_LINK_TABLE)
)
def tmdb_links(
    context: dg.AssetExecutionContext, ml100k_raw: MovieLens100K, ml_latest_raw: MovieLensLatest
) -> dg.Output[pd.DataFrame]:
    """ML-100K item id -> TMDB id, matched by embedded IMDb id, then title and year.

    The two MovieLens releases number films differently, so ids are never joined across them:
    the ml-latest release only contributes its (title, year) -> TMDB id and IMDb id -> TMDB id tables.
    """
    mapping = build_tmdb_mapping(ml100k_raw.items, ml_latest_raw.links, ml_latest_raw.movies, load_overrides())
    summary = mapping_summary(mapping, ml100k_raw.ratings)
    top_unmatched = summary.pop("top_unmatched")
    context.log.info(
        f"mapped {summary['items_mapped']}/{summary['items_total']} items, "
        f"{summary['ratings_mapped']}/{summary['ratings_total']} ratings"
    )
    return dg.Output(
        mapping,
        metadata={
            **{k: (dg.MetadataValue.json(v) if isinstance(v, dict) else v) for k, v in summary.items()},
            **{f"match_{kind}": count for kind, count in summary["match_kinds"].items()},
            "item_coverage": round(summary["items_mapped"] / summary["items_total"], 4),
            "rating_coverage": round(summary["ratings_mapped"] / summary["ratings_total"], 4),
            "most_rated_unmatched": dg.MetadataValue.md(top_unmatched.to_markdown(index=False)),
        },
    )


@dg.asset(
    group_name=GROUP, kinds={"pandas"}, owners=OWNERS, tags=stage("prepare"), metadata=column_schema(MOVIE_TITLE_TABLE)
)
def movie_titles(
    ml100k_raw: MovieLens100K, tmdb_links: pd.DataFrame, ml_latest_raw: MovieLensLatest
) -> dg.Output[pd.DataFrame]:
    """Title and year of every film with a TMDB id (tmdb_id, title, year), so the model artifact,
    the CLI and the recommendation previews name films instead of printing bare ids. The ml-latest
    release's own titles first (exact links), then ML-100K's for films only it has."""
    links = ml_latest_raw.links.dropna(subset=["tmdb_id"])
    latest = links.merge(ml_latest_raw.movies[["movie_id", "title"]], on="movie_id")[["tmdb_id", "title"]]
    mapped = tmdb_links.loc[tmdb_links["tmdb_id"].notna(), ["ml100k_item_id", "tmdb_id"]]
    old = mapped.merge(ml100k_raw.items[["item_id", "title"]], left_on="ml100k_item_id", right_on="item_id")
    named = pd.concat(
        [
            pd.DataFrame(
                {"tmdb_id": latest["tmdb_id"].astype("int64"), "raw": latest["title"], "source": SEED_ML_LATEST}
            ),
            pd.DataFrame({"tmdb_id": old["tmdb_id"].astype("int64"), "raw": old["title"], "source": SEED_ML100K}),
        ],
        ignore_index=True,
    ).drop_duplicates("tmdb_id")  # ml-latest's first
    shown = [display_title(title) for title in named["raw"]]
    titles = pd.DataFrame(
        {
            "tmdb_id": named["tmdb_id"].to_numpy(),
            "title": [title for title, _ in shown],
            "year": pd.array([year for _, year in shown], dtype="Int64"),
        }
    ).sort_values("tmdb_id", ignore_index=True)
    return dg.Output(
        titles,
        metadata={
            "films": len(titles),
            "from_ml_latest": int((named["source"] == SEED_ML_LATEST).sum()),
            "from_ml100k_only": int((named["source"] == SEED_ML100K).sum()),
            "with_year": int(titles["year"].notna().sum()),
            "dagster/row_count": len(titles),
        },
    )
