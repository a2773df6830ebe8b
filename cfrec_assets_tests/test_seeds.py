"""Seed ratings from an ml-latest release beside ML-100K: parsing, links, seed choice, coverage, memory."""

import re
import sys
import zipfile
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from cfrec_assets.defs.assets.model import SVDConfig, svd_model
from cfrec_assets.defs.assets.movielens import _members
from cfrec_assets.defs.assets.ratings import chosen_seeds
from cfrec_assets.defs.resources import CatalogSource, DataStore, SparkResource
from cfrec_assets.defs.supabase_io import SupabasePostgresResource
from cfrec_assets.pipeline.combine import catalog_coverage, ml_latest_seed, uncovered_films
from cfrec_assets.pipeline.memory import (
    MemoryBudgetError,
    available_bytes,
    cross_validation_bytes,
    fit_bytes,
    require_memory,
)
from cfrec_assets.pipeline.movielens_files import (
    _SURELY_VALID,
    ML100K_ARCHIVE,
    ML100K_MEMBERS,
    MovieLensFormatError,
    _rating_line_problem,
    link_report,
    parse_links,
    parse_movies,
    parse_ratings_csv,
)
from cfrec_testkit.graph import UP_TO_COMBINED, failure_messages, make_graph_env, metadata
from cfrec_testkit.movielens_fixtures import write_zip
from cfrec_testkit.postgres import insert_ratings
from cfrec_testkit.shared_data import real_movielens_or_skip

HEADER = "userId,movieId,rating,timestamp\n"


def ratings_file(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "ratings.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_ratings_csv_parses_half_stars(tmp_path):
    frame = parse_ratings_csv(ratings_file(tmp_path, "1,10,0.5,100\n1,11,5.0,101\n2,10,3.5,102\n"))
    assert frame["rating"].tolist() == [0.5, 5.0, 3.5] and frame["user_id"].tolist() == [1, 1, 2]
    assert list(frame.columns) == ["user_id", "movie_id", "rating", "timestamp"]


@pytest.mark.parametrize(
    ("body", "line", "why"),
    [
        ("1,10,4.0,100\n1,x,4.0,101\n", 3, "movieId 'x' is not a whole number"),
        ("1,10,4.0,100\n1,11,4.0\n", 3, "expected 4 fields, got 3"),
        ("1,10,4.0,100\n1,11,4.0,101,7\n", 3, "expected 4 fields, got 5"),
        ("1,10,4.25,100\n", 2, "rating 4.25 is not 0.5..5 in halves"),
        ("1,10,5.5,100\n", 2, "rating 5.5 is not 0.5..5 in halves"),
        ("0,10,4.0,100\n", 2, "userId 0 outside 1..2147483647"),
        # ids beyond int32 were wrapped into other ids (2^32 + 1 became film 1), not refused
        ("1,10,4.0,100\n2147483648,10,4.0,100\n", 3, "userId 2147483648 outside 1..2147483647"),
        ("1,1,4.0,100\n1,4294967297,3.0,100\n", 3, "movieId 4294967297 outside 1..2147483647"),
        # beyond int64 and beyond uint64: the reader's own error, without a line
        ("1,10,4.0,100\n9223372036854775808,10,4.0,100\n", 3, "userId 9223372036854775808 outside"),
        ("1,10,4.0,100\n99999999999999999999,10,4.0,100\n", 3, "userId 99999999999999999999 outside"),
        ("1,10,4.0,100\n1,11,4.0,99999999999999999999\n", 3, "timestamp 99999999999999999999 outside 0..9223372036"),
        ("1,10,4.0,100\n1,11,4.0,1000000000000\n", 3, "timestamp 1000000000000 outside"),  # year 33658
        ("1,10,4.0,100\n" + "9" * 5000 + ",11,4.0,100\n", 3, "userId is 5,000 characters long"),
        ("1,10,4.0,100\n1,11,NaN,100\n", 3, "rating 'NaN' is not a decimal number"),
        ("1,10,4.0,100\n1,12,inf,100\n", 3, "rating inf is not 0.5..5"),  # parsed, then refused
        ('1,10,4.0,100\n"1",11,4.0,100\n', 3, "userId '\"1\"' is not a whole number"),
        # blank lines are skipped, but still counted: the line named is the file's
        ("1,10,4.0,100\n\n\n1,10,9.0,100\n", 5, "rating 9.0 is not"),
        ("1,10,4.0,100\n\n1,x,4.0,100\n", 4, "movieId 'x'"),
    ],
)
def test_malformed_ratings_row_names_its_line(tmp_path, body, line, why):
    with pytest.raises(MovieLensFormatError, match=f"^ratings.csv line {line}: {re.escape(why)}"):
        parse_ratings_csv(ratings_file(tmp_path, body))


def test_ratings_byte_that_is_not_utf8_names_its_line_and_column(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(HEADER.encode() + b"1,10,4.0,100\n1,1\xff,4.0,100\n")
    with pytest.raises(MovieLensFormatError, match=r"^ratings.csv line 3: not valid UTF-8 \(byte 0xff at column 4\)"):
        parse_ratings_csv(path)
    path.write_bytes(b"userId,movieId,rating,timestam\xe9\n1,10,4.0,100\n")
    with pytest.raises(MovieLensFormatError, match="^ratings.csv line 1: expected header"):
        parse_ratings_csv(path)


def test_column_checks_line_rules_and_their_shortcut_agree(tmp_path):
    """The reader + column checks (the fast path) accept exactly the lines the line-by-line rules
    accept (they name the line once the file failed), and their shortcut only skips valid lines."""
    ids = ["0", "1", "01", "999999999", "2147483647", "2147483648"]
    stars = ["0", "0.5", ".5", "4.50", "5", "5.", "5.0", "5.5", "0.0", "1.25", "10", "4.5.5"]
    stamps = ["0", "09", "8999999999", "9223372036", "9223372037"]
    lines = [
        f"{user},{movie},{star},{stamp}"
        for user in ids
        for movie in ("1", ids[-1])
        for star in stars
        for stamp in stamps
    ]
    for line in lines:
        valid = _rating_line_problem(line) is None
        assert valid or not _SURELY_VALID.fullmatch(line), line
        try:
            parse_ratings_csv(ratings_file(tmp_path, line + "\n"))
        except MovieLensFormatError as refused:
            assert not valid and str(refused).startswith("ratings.csv line 2: "), (line, refused)
        else:
            assert valid, line


def test_largest_ids_and_timestamps_are_kept_exactly(tmp_path):
    frame = parse_ratings_csv(ratings_file(tmp_path, "2147483647,2147483647,4.0,9223372036\n1,1,0.5,0\n"))
    assert frame["user_id"].tolist() == frame["movie_id"].tolist() == [2147483647, 1]
    assert frame["timestamp"].tolist() == [9223372036, 0]


def test_wrong_header_and_empty_file_are_refused(tmp_path):
    with pytest.raises(MovieLensFormatError, match="line 1: expected header"):
        parse_ratings_csv(ratings_file(tmp_path, "1,10,4.0,100\n", header="user,movie,rating,ts\n"))
    with pytest.raises(MovieLensFormatError, match="no ratings"):
        parse_ratings_csv(ratings_file(tmp_path, ""))


def test_missing_and_shared_tmdb_ids_are_counted_and_dropped():
    links = pd.DataFrame({"movie_id": [1, 2, 3, 4], "imdb_id": [1, 2, 3, 4], "tmdb_id": [862, None, 500, 500]})
    links["tmdb_id"] = links["tmdb_id"].astype("Int64")
    assert link_report(links) == {
        "links": 4,
        "links_missing_tmdb_id": 1,
        "tmdb_ids_shared_by_several_films": 1,
        "films_sharing_a_tmdb_id": 2,
    }
    ratings = pd.DataFrame({"user_id": [7, 7, 7, 8], "movie_id": [1, 2, 3, 4], "rating": [4.0, 3.0, 2.5, 5.0]})
    ratings["timestamp"] = 100
    dropped = Counter()
    seed = ml_latest_seed(ratings, links, dropped)
    assert dropped["ml_latest_unlinked_film"] == 1
    assert seed["user_id"].tolist() == ["mll_7", "mll_7", "mll_8"] and seed["tmdb_id"].tolist() == [862, 500, 500]


def test_seed_refuses_links_listing_a_film_twice():
    links = pd.DataFrame({"movie_id": [1, 1], "imdb_id": [1, 1], "tmdb_id": pd.array([862, 863], dtype="Int64")})
    ratings = pd.DataFrame({"user_id": [7], "movie_id": [1], "rating": [4.0], "timestamp": [100]})
    with pytest.raises(pd.errors.MergeError, match="not a many-to-one merge"):
        ml_latest_seed(ratings, links, Counter())


def test_seed_choice_parsing():
    assert chosen_seeds("ml100k") == ["ml100k"]
    assert chosen_seeds("ml100k, ml-latest") == ["ml100k", "ml-latest"]
    assert chosen_seeds("none") == []
    with pytest.raises(ValueError, match="use any of ml100k, ml-latest"):
        chosen_seeds("ml-1m")


def test_coverage_counts_and_uncovered_films():
    sources = {"a": pd.DataFrame({"tmdb_id": [1] * 25 + [2, 99]}), "b": pd.DataFrame({"tmdb_id": [3]})}
    cov = catalog_coverage(sources, [1, 2, 3, 4])
    assert cov["a"] == {"films_rated": 2, "films_with_20_plus": 1, "ratings_on_catalog": 26}
    assert cov["b"] == {"films_rated": 1, "films_with_20_plus": 0, "ratings_on_catalog": 1}
    missing = uncovered_films([1, 2, 3, 4], pd.DataFrame({"tmdb_id": [1]}), pd.DataFrame({"tmdb_id": [3, 3, 2]}))
    assert missing.to_dict("list") == {"tmdb_id": [3, 2, 4], "movielens_ratings": [2, 1, 0]}


def run_graph(env, instance, seeds: str, **ops):
    config = {"combined_ratings": {"config": {"seeds": seeds}}, **ops}
    return env.materialize(instance, ops=config)


def test_both_seeds_train_together_without_merging_users(tmp_path):
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        result = run_graph(env, instance, "ml100k,ml-latest")
    assert result.success, failure_messages(result)
    combined = pd.read_parquet(metadata(result, "combined_ratings")["path"])
    ml = combined[combined["source"] == "movielens"]
    latest = combined[combined["source"] == "ml-latest"]
    assert ml["user_id"].str.startswith("ml_").all() and latest["user_id"].str.startswith("mll_").all()
    assert set(ml["user_id"]).isdisjoint(set(latest["user_id"]))
    # Films in both releases are one TMDB id: ratings from both sources on the same ids.
    shared = set(ml["tmdb_id"]) & set(latest["tmdb_id"])
    assert len(shared) >= 10
    meta = metadata(result, "combined_ratings")
    assert meta["seeds"] == "ml100k,ml-latest" and meta["ml_latest_ratings"] == len(latest)
    assert meta["ratings"] == len(combined) == meta["ml_ratings"] + meta["ml_latest_ratings"]
    assert "| ml-latest |" in meta["coverage_report"] and "**training table**" in meta["coverage_report"]
    raw = metadata(result, "ml_latest_raw")
    assert raw["release"] == "ml-latest-small" and raw["links_missing_tmdb_id"] >= 1
    assert metadata(result, "svd_model")["users"] == combined["user_id"].nunique()


def test_catalog_coverage_compares_every_seed_chosen_or_not(tmp_path):
    env = make_graph_env(tmp_path)
    links = pd.read_csv(env.mirror.ml_latest_dir / "links.csv").dropna(subset=["tmdbId"])
    catalog = tmp_path / "catalog.json"
    wanted = sorted(int(t) for t in links["tmdbId"])[:12] + [99_999_999]  # one film nobody rated
    catalog.write_text(str(wanted))
    env.catalog = CatalogSource(path=str(catalog))
    with dg.instance_for_test() as instance:
        result = run_graph(env, instance, "ml100k")
    assert result.success, failure_messages(result)
    meta = metadata(result, "combined_ratings")
    cov = meta["catalog_coverage"]
    assert cov["ml-latest"]["films_rated"] == 12  # every linked film has ratings in the fixture
    assert cov["training"]["films_rated"] == cov["ml100k"]["films_rated"] <= 12
    assert "99999999" in meta["coverage_report"]


def test_seed_none_trains_on_app_ratings_only(tmp_path, ratings_db):
    env = make_graph_env(tmp_path)
    links = pd.read_csv(env.mirror.ml_latest_dir / "links.csv").dropna(subset=["tmdbId"])
    films = [int(t) for t in links["tmdbId"]][:15]
    rows = [(f"user-{u}", films[(u * 7 + k) % 15], float(1 + (u + k) % 5), None) for u in range(12) for k in range(8)]
    insert_ratings(ratings_db, rows)
    env.supabase = SupabasePostgresResource(db_url=ratings_db)
    with dg.instance_for_test() as instance:
        result = run_graph(
            env,
            instance,
            "none",
            combined_ratings_combined_ratings_are_valid={"config": {"min_ratings": 50, "min_users": 5}},
            cv_metrics_cv_rmse_under_ceiling={"config": {"rmse_ceiling": 5.0}},  # patterned, not learnable
        )
    assert result.success, failure_messages(result)
    combined = pd.read_parquet(metadata(result, "combined_ratings")["path"])
    assert set(combined["source"]) == {"app"} and len(combined) == len({(r[0], r[1]) for r in rows})
    assert metadata(result, "combined_ratings")["seeds"] == "none"


def test_seed_none_without_app_ratings_says_so(tmp_path):
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        result = env.materialize(
            instance,
            selection=UP_TO_COMBINED,
            ops={"combined_ratings": {"config": {"seeds": "none"}}},
        )
    assert "no ratings left to train on after filtering (seeds none" in failure_messages(result)["combined_ratings"]


def test_memory_precheck_fails_fast_with_advice(tmp_path):
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        tight = env.materialize(instance, ops={"svd_model": {"config": {"memory_budget_bytes": 1000}}})
        message = failure_messages(tight)["svd_model"]
        assert "fitting SVD with 100 factors on" in message and "GiB is available" in message
        assert "max_seed_ratings" in message and "fewer n_factors" in message
        assert not (env.data_dir / "models").exists() or not any((env.data_dir / "models").iterdir())
        folds = env.materialize(instance, ops={"cv_metrics": {"config": {"memory_budget_bytes": 1000, "n_jobs": 2}}})
        assert "n_jobs: 1" in failure_messages(folds)["cv_metrics"]
        parse = env.materialize(instance, ops={"ml_latest_raw": {"config": {"memory_budget_bytes": 10}}})
        assert "CFREC_ML_LATEST_RELEASE=ml-latest-small" in failure_messages(parse)["ml_latest_raw"]


def test_memory_estimates_grow_with_parallel_folds(tmp_path):
    assert cross_validation_bytes(1_000_000, 6_000, 3_000, 100, 3, 2) > cross_validation_bytes(
        1_000_000, 6_000, 3_000, 100, 3, 1
    )
    with pytest.raises(MemoryBudgetError, match="needs about 2.0 GiB but 1.0 GiB is available: do less"):
        require_memory(2 << 30, "a step", "do less", budget=1 << 30)
    require_memory(2 << 30, "a step", "do less", budget=3 << 30)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:  2048 kB\n")
    assert available_bytes(meminfo, tmp_path / "no-cgroup") == 2048 * 1024
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("1000000\n")
    (cgroup / "memory.current").write_text("400000\n")
    assert available_bytes(meminfo, cgroup) == 600_000  # the container's headroom, below MemAvailable


@pytest.mark.parametrize(
    ("ratings", "users", "items", "factors"),
    [(300_000, 300_000, 800, 100), (300_000, 300_000, 800, 400), (1_000_000, 6_250, 2_700, 100), (10, 2, 5, 1000)],
)
def test_memory_estimates_cover_what_surprise_must_hold(ratings, users, items, factors):
    """A lower bound computed from what a fit cannot do without: the float64 arrays pu
    (users x factors), qi, bu, bi, and per rating the trainset's two tuples (in ur and in ir).
    With one rating per user the arrays dominate: 300,000 users x 400 factors hold 0.96 GB, the
    old 700 B per rating estimated 0.21 GB for the whole fit."""
    arrays = (users + items) * (factors + 1) * np.dtype(np.float64).itemsize
    tuples = ratings * 2 * sys.getsizeof((0, 0.0))
    assert fit_bytes(ratings, users, items, factors) >= arrays + tuples
    # cv_metrics fits fold after fold, then loads the version's cf_model.npz: its bytes and its arrays
    assert cross_validation_bytes(ratings, users, items, factors, 3, 1) >= 2 * arrays


def test_svd_model_refuses_many_one_rating_users_at_many_factors(tmp_path):
    """3,000 users with one rating each at 400 factors: pu alone is 9.6 MB, more than the 6 MB
    budget, which the old per-rating estimate (2.1 MB) let through."""
    ratings = pd.DataFrame(
        {"user_id": [f"user-{i}" for i in range(3000)], "tmdb_id": [100 + i % 50 for i in range(3000)], "rating": 4.0}
    ).assign(source="app", created_at=pd.Timestamp("2026-01-01", tz="UTC"))
    titles = pd.DataFrame({"tmdb_id": pd.Series(dtype="int64"), "title": pd.Series(dtype=str), "year": []})
    store = DataStore(data_dir=str(tmp_path))
    config = SVDConfig(params="seed", n_factors=400, memory_budget_bytes=6_000_000)
    with dg.build_asset_context(resources={"store": store, "spark": SparkResource()}) as context:
        with pytest.raises(MemoryBudgetError, match="fitting SVD with 400 factors on 3,000 ratings of 3,000 users"):
            svd_model(context, config=config, combined_ratings=ratings, movie_titles=titles)
    assert not store.models_dir.exists() or not any(store.models_dir.iterdir())


@pytest.mark.real_data
def test_ml_latest_small_real_release(tmp_path):
    archive = real_movielens_or_skip() / "ml-latest-small.zip"
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(
            tmp_path, members=[f"ml-latest-small/{n}" for n in ("ratings.csv", "movies.csv", "links.csv")]
        )
    folder = tmp_path / "ml-latest-small"
    ratings = parse_ratings_csv(folder / "ratings.csv")
    movies, links = parse_movies(folder / "movies.csv"), parse_links(folder / "links.csv")
    assert (len(ratings), ratings["user_id"].nunique(), len(movies)) == (100_836, 610, 9_742)
    assert set(ratings["rating"].unique()) == {x / 2 for x in range(1, 11)}
    report = link_report(links)
    assert report["links"] == 9_742 and report["links_missing_tmdb_id"] == links["tmdb_id"].isna().sum() > 0
    seed = ml_latest_seed(ratings, links, Counter())
    by_movie = links.set_index("movie_id")["tmdb_id"]
    assert (by_movie[1], by_movie[2], by_movie[6]) == (862, 8844, 949)  # Toy Story, Jumanji, Heat
    assert (seed["tmdb_id"] == 862).sum() == (ratings["movie_id"] == 1).sum() == 215


def test_seed_cap_keeps_whole_users_and_every_app_rating(tmp_path, ratings_db):
    env = make_graph_env(tmp_path)
    insert_ratings(ratings_db, [(f"app-{u}", 862, 4.0, None) for u in range(5)])
    env.supabase = SupabasePostgresResource(db_url=ratings_db)
    with dg.instance_for_test() as instance:
        full = env.materialize(
            instance, selection=UP_TO_COMBINED, ops={"combined_ratings": {"config": {"seeds": "ml100k,ml-latest"}}}
        )
        capped = env.materialize(
            instance,
            selection=UP_TO_COMBINED,
            ops={"combined_ratings": {"config": {"seeds": "ml100k,ml-latest", "max_seed_ratings": 1000}}},
        )
    before = pd.read_parquet(metadata(full, "combined_ratings")["path"])
    after = pd.read_parquet(metadata(capped, "combined_ratings")["path"])
    seeds_before, seeds_after = before[before["source"] != "app"], after[after["source"] != "app"]
    assert len(seeds_before) > 1000 >= len(seeds_after) > 800
    per_user = seeds_before.groupby("user_id").size()
    assert (seeds_after.groupby("user_id").size() == per_user[seeds_after["user_id"].unique()]).all()  # whole users
    assert (after["source"] == "app").sum() == (before["source"] == "app").sum() == 5
    dropped = metadata(capped, "combined_ratings")["dropped"]
    # Counted before duplicates are resolved, so at least the rows that are gone.
    assert dropped["ml_over_seed_cap"] + dropped["ml_latest_over_seed_cap"] >= len(seeds_before) - len(seeds_after)
    assert set(seeds_after["user_id"]) < set(seeds_before["user_id"])


def test_release_rating_an_unknown_film_fails_and_is_not_cached(tmp_path):
    env = make_graph_env(tmp_path)
    folder = env.mirror.ml_latest_dir
    members = {f"ml-latest-small/{name}": (folder / name).read_bytes() for name in ("movies.csv", "links.csv")}
    ratings = (folder / "ratings.csv").read_text() + "1,987654,4.0,1500000000\n"  # movieId not in movies.csv
    write_zip(env.mirror.root / "ml-latest-small.zip", {**members, "ml-latest-small/ratings.csv": ratings.encode()})
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=["ml_latest_raw"])
    assert "rates 1 movieId(s) missing from movies.csv, e.g. 987654" in failure_messages(result)["ml_latest_raw"]
    assert not (env.data_dir / "cache" / "ml-latest-small.zip").exists()  # evicted: a fixed mirror is fetched again


def _release_with(env, **tails: str) -> None:
    """Rewrite the mirror's ml-latest-small.zip with ``tails`` appended to its members (``ratings``,
    ``movies``, ``links``)."""
    folder = env.mirror.ml_latest_dir
    members = {
        f"ml-latest-small/{name}.csv": ((folder / f"{name}.csv").read_text() + tails.get(name, "")).encode()
        for name in ("ratings", "movies", "links")
    }
    write_zip(env.mirror.root / "ml-latest-small.zip", members)


@pytest.mark.parametrize(
    ("tails", "message"),
    [  # an OverflowError once, and the bad archive stayed cached
        ({"ratings": "1,1,4.0,99999999999999999999\n"}, "timestamp 99999999999999999999 outside"),
        # once wrapped to film 1 (which exists): accepted, a rating silently replaced
        ({"ratings": "1,4294967297,3.0,1500000000\n"}, "movieId 4294967297 outside 1..2147483647"),
        # once two tmdbIds for one film: its ratings doubled under another film
        ({"links": "1,99,4242\n"}, "movieId 1 is already listed on line 2"),
        ({"links": "987654,99,-862\n"}, "tmdbId -862 outside"),
    ],
)
def test_hostile_release_fails_naming_file_and_line_and_is_not_cached(tmp_path, tails, message):
    env = make_graph_env(tmp_path)
    _release_with(env, **tails)
    name = next(iter(tails))
    lines = len((env.mirror.ml_latest_dir / f"{name}.csv").read_text().splitlines()) + 1
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=["ml_latest_raw"])
    error = failure_messages(result)["ml_latest_raw"]
    assert "MovieLensFormatError" in error and f"{name}.csv line {lines}: {message}" in error
    assert not (env.data_dir / "cache" / "ml-latest-small.zip").exists()
    assert not (env.data_dir / "cache" / "ml-latest-small.zip.source.json").exists()


def test_any_failure_while_parsing_evicts_the_archive_but_a_memory_refusal_keeps_it(tmp_path):
    env = make_graph_env(tmp_path)
    cached = env.data_dir / "cache" / "ml-100k.zip"
    movielens = env.resources()["movielens"]
    with pytest.raises(KeyError, match="u.genre"):  # any exception, not only the parsers' own
        with _members(movielens, env.store, ML100K_ARCHIVE, ML100K_MEMBERS) as (_, files):
            assert cached.is_file()
            files["ml-100k/u.genre"]
    assert not cached.exists()
    with dg.instance_for_test() as instance:
        result = env.materialize(
            instance, selection=["ml_latest_raw"], ops={"ml_latest_raw": {"config": {"memory_budget_bytes": 1000}}}
        )
    assert "MemoryBudgetError" in failure_messages(result)["ml_latest_raw"]
    assert (env.data_dir / "cache" / "ml-latest-small.zip").is_file()  # the machine is small, not the archive bad
