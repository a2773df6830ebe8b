"""ML-100K item -> TMDB id mapping: every tier and refusal on synthetic files, targets on the real data."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from cfrec_assets.pipeline import movielens_files as movielens
from cfrec_assets.pipeline import tmdb_mapping
from cfrec_assets.pipeline.tmdb_mapping import (
    MAPPED_KINDS,
    MATCH_KINDS,
    build_tmdb_mapping,
    load_overrides,
    mapping_summary,
    no_overrides,
    normalize_name,
    parse_title,
    title_similarity,
    url_title,
)
from cfrec_testkit.movielens_fixtures import TIER_CASES, MovieLensFixture, write_movielens_fixture
from cfrec_testkit.shared_data import real_movielens_or_skip


def _frames(fixture: MovieLensFixture) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (
        movielens.parse_u_item(fixture.ml100k_dir / "u.item"),
        movielens.parse_links(fixture.ml_latest_dir / "links.csv"),
        movielens.parse_movies(fixture.ml_latest_dir / "movies.csv"),
    )


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> MovieLensFixture:
    return write_movielens_fixture(tmp_path_factory.mktemp("movielens"), n_items=60, n_ratings=600)


@pytest.fixture(scope="module")
def frames(fixture: MovieLensFixture) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _frames(fixture)


@pytest.fixture(scope="module")
def mapping(frames) -> pd.DataFrame:
    return build_tmdb_mapping(*frames, overrides=no_overrides())


def _row(mapping: pd.DataFrame, item_id: int) -> pd.Series:
    return mapping.set_index("ml100k_item_id").loc[item_id]


def _optional(value) -> int | None:
    return None if pd.isna(value) else int(value)


# --- every tier and every refusal, one case each (see support/movielens_fixtures.py) ---


@pytest.mark.parametrize("case", [c.name for c in TIER_CASES])
def test_each_tier_case_maps_as_expected(fixture, mapping, case):
    expected = fixture.expected[fixture.item_id(case)]
    row = _row(mapping, expected.item_id)
    got = (row.match_kind, _optional(row.tmdb_id), _optional(row.ml_latest_movie_id))
    assert got == (expected.kind, expected.tmdb_id, expected.movie_id), expected.title


def test_invented_filler_films_map_exactly_and_never_by_number(fixture, mapping):
    fillers = [e for e in fixture.expected.values() if e.case == "filler"]
    assert fillers, "the fixture should hold filler films beyond the tier cases"
    for expected in fillers:
        row = _row(mapping, expected.item_id)
        assert (row.match_kind, _optional(row.tmdb_id)) == ("exact", expected.tmdb_id)
    # The fixture deranges ml-latest ids like the real releases: same number, other film.
    mapped = mapping[mapping.ml_latest_movie_id.notna()]
    assert (mapped.ml_latest_movie_id != mapped.ml100k_item_id).all()


def test_one_row_per_item_with_documented_columns_and_types(frames, mapping):
    items = frames[0]
    assert mapping.ml100k_item_id.tolist() == items.item_id.tolist()
    assert mapping.tmdb_id.dtype == "Int64" and mapping.ml_latest_movie_id.dtype == "Int64"
    assert mapping.ml100k_item_id.dtype == "int64"
    assert set(mapping.match_kind) <= set(MATCH_KINDS)
    assert mapping.tmdb_id.notna().equals(mapping.match_kind.isin(MAPPED_KINDS))
    assert mapping.loc[mapping.tmdb_id.isna() & (mapping.match_kind != "no_tmdb_id"), "matched_title"].isna().all()
    accents = mapping.loc[mapping.ml100k_title.str.startswith("Mis"), "ml100k_title"]
    assert accents.tolist() == ["Misérables, Les (1995)"]  # latin-1 decoded, not mojibake


def test_result_does_not_depend_on_input_row_order(frames, mapping):
    items, links, movies = frames
    shuffled = build_tmdb_mapping(
        items.sample(frac=1, random_state=1),
        links.sample(frac=1, random_state=2),
        movies.sample(frac=1, random_state=3),
        overrides=no_overrides(),
    )
    pd.testing.assert_frame_equal(shuffled.sort_values("ml100k_item_id").reset_index(drop=True), mapping)


# --- overrides ---


def test_overrides_pin_items_and_beat_title_tiers(fixture, frames):
    mapping = build_tmdb_mapping(*frames, overrides=fixture.overrides)
    assert len(fixture.overrides) == 2
    for expected in fixture.expected.values():
        row = _row(mapping, expected.item_id)
        assert (row.match_kind, _optional(row.tmdb_id)) == (expected.kind_with_overrides, expected.tmdb_with_overrides)
    emma = _row(mapping, fixture.item_id("ambiguous_then_overridden"))
    assert emma.matched_title == "Emma (1996)" and not pd.isna(emma.ml_latest_movie_id)


def test_override_also_beats_an_embedded_imdb_id(fixture, frames):
    item_id = fixture.item_id("imdb_id_beats_title")
    pin = pd.DataFrame({"ml100k_item_id": [item_id], "tmdb_id": [123], "reason": ["test"]})
    row = _row(build_tmdb_mapping(*frames, overrides=pin), item_id)
    assert (row.match_kind, row.tmdb_id) == ("override", 123)
    assert pd.isna(row.ml_latest_movie_id)  # no ml-latest row carries tmdb 123


def test_override_cannot_map_the_unknown_item(fixture, frames):
    pin = pd.DataFrame({"ml100k_item_id": [fixture.item_id("unknown_title")], "tmdb_id": [5], "reason": ["x"]})
    with pytest.raises(ValueError, match="'unknown' are never mapped"):
        build_tmdb_mapping(*frames, overrides=pin)


def test_override_for_another_title_is_skipped(fixture, frames, mapping):
    item_id = fixture.item_id("exact")
    pin = pd.DataFrame(
        {"ml100k_item_id": [item_id], "tmdb_id": [5], "reason": ["x"], "ml100k_title": ["Some Other Film (1990)"]}
    )
    assert _row(build_tmdb_mapping(*frames, overrides=pin), item_id).equals(_row(mapping, item_id))


def test_packaged_overrides_are_default_and_guarded_by_title(frames, mapping):
    packaged = load_overrides()
    assert len(packaged) >= 1 and (packaged.ml100k_title != "").all() and (packaged.reason != "").all()
    # Pinned for the real ML-100K ids; their titles keep them off the fixture's items.
    pd.testing.assert_frame_equal(build_tmdb_mapping(*frames), mapping)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("item,tmdb_id,reason\n1,2,x\n", "header must be"),
        ("ml100k_item_id,tmdb_id,reason,extra\n1,2,x,y\n", "header must be"),
        ("ml100k_item_id,tmdb_id,reason\nabc,2,x\n", "line 2: ml100k_item_id must be an integer"),
        ("ml100k_item_id,tmdb_id,reason\n1,-2,x\n", "line 2: tmdb_id must be positive"),
        ("ml100k_item_id,tmdb_id,reason\n1,2,x\n3,,x\n", "line 3: tmdb_id must be an integer"),
        ("ml100k_item_id,tmdb_id,reason\n1,2, \n", "line 2: reason is empty"),
        ("ml100k_item_id,tmdb_id,reason\n1,2\n", "line 2: wrong number of fields"),
        ("ml100k_item_id,tmdb_id,reason\n1,2,x,surplus\n", "line 2: wrong number of fields"),
        ("ml100k_item_id,tmdb_id,reason\n1,2,x\n1,3,y\n", r"several overrides for items \[1\]"),
    ],
)
def test_load_overrides_rejects_malformed_files(tmp_path, content, message):
    path = tmp_path / "overrides.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_overrides(path)


def test_load_overrides_reads_optional_title(tmp_path):
    path = tmp_path / "overrides.csv"
    path.write_text('ml100k_item_id,tmdb_id,reason,ml100k_title\n7,11,checked,"Usual Suspects, The (1995)"\n')
    loaded = load_overrides(path)
    assert loaded.to_dict("records") == [
        {"ml100k_item_id": 7, "tmdb_id": 11, "reason": "checked", "ml100k_title": "Usual Suspects, The (1995)"}
    ]


def test_override_frames_are_validated_too(frames):
    bad = pd.DataFrame({"ml100k_item_id": [1], "tmdb_id": [0], "reason": ["x"]})
    with pytest.raises(ValueError, match="tmdb_id must hold positive integers"):
        build_tmdb_mapping(*frames, overrides=bad)
    with pytest.raises(ValueError, match="reason must be non-empty"):
        build_tmdb_mapping(*frames, overrides=bad.assign(tmdb_id=3, reason=[""]))


# --- inputs ---


def test_malformed_inputs_are_refused_with_clear_errors(frames):
    items, links, movies = frames
    with pytest.raises(ValueError, match=r"items is missing columns \['imdb_url'\]"):
        build_tmdb_mapping(items.drop(columns="imdb_url"), links, movies, no_overrides())
    with pytest.raises(ValueError, match="links has duplicate movie_id"):
        build_tmdb_mapping(items, pd.concat([links, links.head(1)]), movies, no_overrides())
    with pytest.raises(ValueError, match="items has duplicate item_id"):
        build_tmdb_mapping(pd.concat([items, items.head(1)]), links, movies, no_overrides())


# --- summary ---


def test_mapping_summary_counts(fixture, mapping):
    summary = mapping_summary(mapping, fixture.ratings)
    expected = fixture.expected.values()
    mapped_items = {e.item_id for e in expected if e.tmdb_id is not None}
    assert summary["items_total"] == len(fixture.expected)
    assert summary["items_mapped"] == len(mapped_items)
    assert summary["ratings_total"] == len(fixture.ratings)
    assert summary["ratings_mapped"] == fixture.ratings.item_id.isin(mapped_items).sum()
    for kind in MATCH_KINDS:
        assert summary["match_kinds"][kind] == sum(e.kind == kind for e in expected), kind
    assert summary["ambiguous"] == 2 and summary["unmatched"] == sum(e.kind == "unmatched" for e in expected)
    # Good Will Hunting, Deceiver, Hard Rain in links; Spice World's id is not.
    assert (summary["embedded_imdb_ids"], summary["embedded_imdb_ids_in_links"]) == (4, 3)
    assert summary["embedded_imdb_ids_honoured"] == 3
    assert summary["shared_tmdb_ids"] == 1  # the two "Chasing Amy (1997)" items
    top = summary["top_unmatched"]
    assert list(top.columns) == ["item_id", "title", "match_kind", "ratings"]
    assert len(top) == 10 and top.ratings.is_monotonic_decreasing
    unmapped = {e.item_id for e in expected if e.tmdb_id is None}
    assert set(top.item_id) <= unmapped
    counts = fixture.ratings.item_id.value_counts()
    assert top.ratings.tolist() == [int(counts.get(i, 0)) for i in top.item_id]
    assert top.ratings.iloc[0] == max(int(counts.get(i, 0)) for i in unmapped)


def test_mapping_summary_without_ratings(mapping):
    summary = mapping_summary(mapping)
    assert (summary["ratings_total"], summary["ratings_mapped"]) == (0, 0)
    assert summary["items_mapped"] == int(mapping.tmdb_id.notna().sum())


def test_honoured_count_drops_when_an_embedded_id_is_overruled(fixture, frames):
    item_id = fixture.item_id("imdb_id")
    pin = pd.DataFrame({"ml100k_item_id": [item_id], "tmdb_id": [123], "reason": ["test"]})
    summary = mapping_summary(build_tmdb_mapping(*frames, overrides=pin))
    assert (summary["embedded_imdb_ids_in_links"], summary["embedded_imdb_ids_honoured"]) == (3, 2)


# --- title handling details ---


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Usual Suspects, The", "the usual suspects"),
        ("Cérémonie, La", "la ceremonie"),
        ("Appartement, L'", "lappartement"),
        ("Postino, Il", "il postino"),
        ("Boot, Das", "das boot"),
        ("Tie Me Up! Tie Me Down!", "tie me up tie me down"),
        ("Willy Wonka & the Chocolate Factory", "willy wonka and the chocolate factory"),
        ("Mrs. Dalloway", "mrs dalloway"),
        ("Smörgåsbord Æon", "smorgasbord aeon"),
    ],
)
def test_normalize_name(raw, key):
    assert normalize_name(raw) == key


def test_parse_title_splits_names_and_year():
    parsed = parse_title("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)")
    assert (parsed.names, parsed.year) == (("Shanghai Triad", "Yao a yao yao dao waipo qiao"), 1995)
    assert parse_title("Seven (a.k.a. Se7en) (1995)").names == ("Seven", "Se7en")
    assert parse_title("Land Before Time III (1995) (V)").year == 1995
    assert parse_title('"Langoliers, The" (1994/II) (mini)').names[0] == "Langoliers, The"
    assert parse_title("Babylon 5").year is None


def test_url_title_decodes_latin1_and_plus_signs():
    assert url_title("http://us.imdb.com/M/title-exact?M%E9pris%2C+Le+(1963)") == "Mépris, Le (1963)"
    assert url_title("http://us.imdb.com/Title?Chasing+Amy+(1997)") == "Chasing Amy (1997)"
    assert url_title("http://us.imdb.com/M/title-exact?imdb-title-119217") is None
    assert url_title("") is None


def test_title_similarity_sees_through_articles_and_segments():
    assert title_similarity("Return of the Jedi (1983)", "Star Wars: Episode VI - Return of the Jedi (1983)") == 1.0
    assert title_similarity("GoldenEye (1995)", "Jumanji (1995)") < 0.5


# --- the real data (skips without the shared MovieLens zips) ---


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    folder = real_movielens_or_skip()
    archives = [folder / movielens.ML100K_ARCHIVE, folder / movielens.ML_LATEST_ARCHIVE]
    target = tmp_path_factory.mktemp("real_movielens")
    for archive, members in zip(archives, (movielens.ML100K_MEMBERS, movielens.ML_LATEST_MEMBERS)):
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(target, members=members)
    return {
        "items": movielens.parse_u_item(target / "ml-100k/u.item"),
        "ratings": movielens.parse_u_data(target / "ml-100k/u.data"),
        "links": movielens.parse_links(target / "ml-latest-small/links.csv"),
        "movies": movielens.parse_movies(target / "ml-latest-small/movies.csv"),
    }


@pytest.fixture(scope="module")
def real_mapping(real) -> tuple[pd.DataFrame, None]:
    # Speed is measured by bench/mapping_report.py, not asserted on shared 2-core machines.
    return build_tmdb_mapping(real["items"], real["links"], real["movies"]), None


@pytest.mark.real_data
def test_real_data_meets_coverage_targets(real, real_mapping):
    mapping, _ = real_mapping
    summary = mapping_summary(mapping, real["ratings"])
    assert len(mapping) == 1682
    assert summary["items_mapped"] >= 1350, summary
    assert summary["ratings_mapped"] >= 98_000, summary
    assert summary["embedded_imdb_ids_honoured"] == summary["embedded_imdb_ids_in_links"] > 0


@pytest.mark.real_data
def test_real_data_spot_checks(real_mapping):
    mapping = real_mapping[0].set_index("ml100k_item_id")
    known = {1: 862, 2: 710, 50: 11, 172: 1891, 181: 1892, 283: 3573}  # Toy Story .. Emma (Paltrow)
    assert {item: _optional(mapping.tmdb_id[item]) for item in known} == known
    assert mapping.match_kind[267] == "unknown_title" and pd.isna(mapping.tmdb_id[267])
    # ML-100K lists "Chasing Amy (1997)" twice; both copies reach the same film.
    assert mapping.tmdb_id[246] == mapping.tmdb_id[268]
    assert mapping.match_kind[1520] == "unmatched"  # "Fear, The (1995)" never becomes a "Fear"


@pytest.mark.real_data
def test_real_data_every_override_applies(real_mapping):
    mapping = real_mapping[0].set_index("ml100k_item_id")
    for pin in load_overrides().itertuples():
        assert mapping.ml100k_title[pin.ml100k_item_id] == pin.ml100k_title
        item = pin.ml100k_item_id
        assert (mapping.match_kind[item], mapping.tmdb_id[item]) == ("override", pin.tmdb_id)


@pytest.mark.real_data
def test_real_data_title_matches_name_the_same_film(real, real_mapping):
    """Every title-tier mapping has near-identical titles, so none is a join by number in disguise."""
    mapping = real_mapping[0]
    urls = real["items"].set_index("item_id").imdb_url
    by_title = mapping[mapping.match_kind.isin(["exact", "normalized", "alternate", "year_off_by_one", "fuzzy"])]
    low = []
    for row in by_title.itertuples():
        candidates = [row.ml100k_title, url_title(urls[row.ml100k_item_id]) or row.ml100k_title]
        similarity = max(title_similarity(t, row.matched_title) for t in candidates)
        if similarity < 0.9:
            low.append((row.ml100k_item_id, row.ml100k_title, row.matched_title, round(similarity, 3)))
    assert low == []
    # Where the numbers coincide, the films must still be the same one.
    same_number = mapping[mapping.ml_latest_movie_id == mapping.ml100k_item_id]
    assert all(title_similarity(r.ml100k_title, r.matched_title) >= 0.9 for r in same_number.itertuples())
    # Several items share a TMDB id only as ML-100K duplicates or through an embedded IMDb id.
    shared = mapping[mapping.tmdb_id.notna() & mapping.tmdb_id.duplicated(keep=False)]
    for _, group in shared.groupby("tmdb_id"):
        assert group.ml100k_title.nunique() == 1 or (group.match_kind == "imdb_id").all(), group


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Usual Suspects, The (1995)", ("The Usual Suspects", 1995)),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", ("The City of Lost Children", 1995)),
        ("Appartement, L' (1996)", ("L'Appartement", 1996)),
        ("Toy Story (1995)", ("Toy Story", 1995)),
        ("Cosmos", ("Cosmos", None)),
    ],
)
def test_display_title_reads_as_people_write_it(raw, shown):
    assert tmdb_mapping.display_title(raw) == shown
