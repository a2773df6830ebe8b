"""Small synthetic MovieLens releases in the exact file formats, for tests.

Writes ML-100K (``u.data``, ``u.item`` latin-1 and pipe-separated, ``u.user``, ``u.genre``) and
ml-latest-small (``links.csv``, ``movies.csv``) folders and zips them as the real archives are
laid out (``ml-100k/...``, ``ml-latest-small/...``). Nothing is copied from MovieLens: titles
are well-known films typed here or invented, and every id is invented.

The first items are :data:`TIER_CASES`, one or more per rule of
:mod:`cfrec_assets.pipeline.tmdb_mapping` (every tier and every refusal), each with its expected result;
the rest are invented films that match exactly. ml-latest ids are deranged so that joining the
two releases by number always lands on a different film, as it does with the real data.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import pandas as pd

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
OCCUPATIONS = ("artist", "educator", "engineer", "librarian", "student", "technician", "writer")
IMDB_SEARCH = "http://us.imdb.com/M/title-exact?"
FIRST_TIMESTAMP = 874_724_710


@dataclass(frozen=True)
class LatestRow:
    """One ml-latest film: title as in movies.csv, IMDb number, tmdbId (None: empty cell)."""

    title: str
    imdb_id: int
    tmdb_id: int | None


@dataclass(frozen=True)
class TierCase:
    """An ML-100K item, its ml-latest rows, and what the mapping must make of it.

    ``url`` None means an IMDb search URL built from the title; ``expected_row`` indexes
    ``latest`` (the film the item must map to); ``override_tmdb`` pins the item in
    :attr:`MovieLensFixture.overrides`, after which its kind must be ``override``.
    """

    name: str
    title: str
    latest: tuple[LatestRow, ...]
    expected_kind: str
    expected_row: int | None = None
    url: str | None = None
    release_date: str | None = None
    override_tmdb: int | None = None


def _embedded(imdb_id: int) -> str:
    return f"{IMDB_SEARCH}imdb-title-{imdb_id}"


TIER_CASES: tuple[TierCase, ...] = (
    TierCase("exact", "Toy Story (1995)", (LatestRow("Toy Story (1995)", 110001, 700001),), "exact", 0),
    TierCase(
        "imdb_id", "Good Will Hunting (1997)",
        (LatestRow("Good Will Hunting (1997)", 110002, 700002),), "imdb_id", 0, url=_embedded(110002),
    ),
    # The title alone would pick the decoy "Deceiver (1997)"; the embedded id must win.
    TierCase(
        "imdb_id_beats_title", "Deceiver (1997)",
        (LatestRow("Liar (1997)", 110003, 700003), LatestRow("Deceiver (1997)", 110004, 700004)),
        "imdb_id", 0, url=_embedded(110003),
    ),
    TierCase(
        "imdb_id_absent_from_links", "Spice World (1997)",
        (LatestRow("Spice World (1997)", 110005, 700005),), "exact", 0, url=_embedded(119999),
    ),
    TierCase(
        "imdb_id_without_tmdb", "Hard Rain (1998)",
        (LatestRow("Hard Rain (1998)", 110006, None),), "no_tmdb_id", 0, url=_embedded(110006),
    ),
    TierCase(
        "normalized_article", "Usual Suspects, The (1995)",
        (LatestRow("The Usual Suspects (1995)", 110007, 700007),), "normalized", 0,
    ),
    TierCase(  # written latin-1 in u.item, utf-8 in movies.csv, accent dropped there
        "normalized_accents", "Misérables, Les (1995)",
        (LatestRow("Les Miserables (1995)", 110008, 700008),), "normalized", 0,
    ),
    TierCase(
        "normalized_ampersand", "Sense and Sensibility (1995)",
        (LatestRow("Sense & Sensibility (1995)", 110009, 700009),), "normalized", 0,
    ),
    TierCase(
        "normalized_case_punctuation", "Mr. Holland's Opus (1995)",
        (LatestRow("Mr Holland's opus (1995)", 110010, 700010),), "normalized", 0,
    ),
    TierCase(
        "normalized_elided_article", "Appartement, L' (1996)",
        (LatestRow("L'Appartement (1996)", 110011, 700011),), "normalized", 0,
    ),
    TierCase(
        "alternate_bracketed", "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)",
        (LatestRow("Yao a yao yao dao waipo qiao (1995)", 110012, 700012),), "alternate", 0,
    ),
    TierCase(
        "alternate_aka", "Twelve Monkeys (1995)",
        (LatestRow("Twelve Monkeys (a.k.a. 12 Monkeys) (1995)", 110013, 700013),), "alternate", 0,
    ),
    TierCase(  # the search URL percent-encodes latin-1: "Mépris, Le (1963)"
        "alternate_url_title", "Contempt (1963)",
        (LatestRow("Le Mépris (1963)", 110014, 700014),), "alternate", 0,
        url=IMDB_SEARCH + "M%E9pris%2C+Le+(1963)",
    ),
    TierCase(
        "alternate_segment", "Return of the Jedi (1983)",
        (LatestRow("Star Wars: Episode VI - Return of the Jedi (1983)", 110015, 700015),), "alternate", 0,
    ),
    TierCase(
        "alternate_possessive_credit", "Up in Smoke (1978)",
        (LatestRow("Cheech and Chong's Up in Smoke (1978)", 110016, 700016),), "alternate", 0,
    ),
    TierCase(  # the item's segment against the film's whole (article-first) name
        "alternate_item_segment", "Robert A. Heinlein's The Puppet Masters (1994)",
        (LatestRow("Puppet Masters, The (1994)", 110032, 700032),), "alternate", 0,
    ),
    # Two films sharing a franchise prefix never meet through it.
    TierCase(
        "segments_never_meet_segments", "Galaxy Rangers: Into the Void (1996)",
        (LatestRow("Galaxy Rangers: Final Orbit (1996)", 110033, 700033),), "unmatched",
    ),
    TierCase(
        "year_off_by_one", "Dolores Claiborne (1994)",
        (LatestRow("Dolores Claiborne (1995)", 110017, 700017),), "year_off_by_one", 0,
    ),
    # Only a year away, but "The Fear" is not "Fear": articles are never dropped.
    TierCase(
        "year_off_by_one_keeps_article", "Fear, The (1995)", (LatestRow("Fear (1996)", 110018, 700018),), "unmatched"
    ),
    TierCase(
        "fuzzy", "Children of the Corn: The Gathering (1996)",
        (LatestRow("Children of the Corn IV: The Gathering (1996)", 110019, 700019),), "fuzzy", 0,
    ),
    # Both score above 0.92 (0.963 and 0.929): the winner is not 0.05 clear of the runner-up.
    TierCase(
        "fuzzy_without_margin", "Harbour Lights Return Part (1996)",
        (
            LatestRow("Harbour Lights Return Part A (1996)", 110020, 700020),
            LatestRow("Harbour Lights Return Parts AB (1996)", 110021, 700021),
        ),
        "ambiguous",
    ),
    # One letter apart (ratio 0.95), but too short for the fuzzy tier to trust.
    TierCase("fuzzy_too_short", "Moonstruk (1987)", (LatestRow("Moonstruck (1987)", 110022, 700022),), "unmatched"),
    TierCase(
        "fuzzy_other_year", "Lighthouse Keepers Reunion (1990)",
        (LatestRow("Lighthouse Keeper Reunion (1993)", 110023, 700023),), "unmatched",
    ),
    TierCase(
        "ambiguous_then_overridden", "Emma (1996)",
        (LatestRow("Emma (1996)", 110024, 700024), LatestRow("Emma (1996)", 110025, 700025)),
        "ambiguous", release_date="02-Aug-1996", override_tmdb=700024,
    ),
    TierCase(  # ml-latest lists one film twice; one TMDB id, so not ambiguous
        "duplicate_rows_same_tmdb", "Confessions of a Dangerous Mind (2002)",
        (
            LatestRow("Confessions of a Dangerous Mind (2002)", 110026, 700026),
            LatestRow("Confessions of a Dangerous Mind (2002)", 110027, 700026),
        ),
        "exact", 0,
    ),
    TierCase("title_without_tmdb", "Nico Icon (1995)", (LatestRow("Nico Icon (1995)", 110028, None),), "no_tmdb_id", 0),
    # A same-titled ml-latest row makes sure the guard, not a missing candidate, refuses it.
    TierCase(
        "unknown_title", "unknown", (LatestRow("unknown", 110029, 700029),), "unknown_title", url="", release_date=""
    ),
    TierCase(
        "override_where_titles_fail", "Grand Day Out, A (1992)",
        (LatestRow("Grand Day Out with Wallace and Gromit, A (1989)", 110030, 700030),),
        "unmatched", override_tmdb=700030,
    ),
    TierCase("unmatched", "Invented Lost Reel (1994)", (), "unmatched"),
    # ML-100K lists some films twice under two item ids; both copies map to the same film.
    TierCase(
        "ml100k_duplicate_first", "Chasing Amy (1997)", (LatestRow("Chasing Amy (1997)", 110031, 700031),), "exact", 0
    ),
    TierCase("ml100k_duplicate_second", "Chasing Amy (1997)", (), "exact"),
)  # fmt: skip

# ml-latest films that no ML-100K item maps to: the rows a join by number would hit instead.
DECOY_FILMS = ("Jumanji (1995)", "Grumpier Old Men (1995)", "Waiting to Exhale (1995)", "Sabrina (1995)")


@dataclass(frozen=True)
class ExpectedItem:
    """What :func:`cfrec_assets.pipeline.tmdb_mapping.build_tmdb_mapping` must return for one item."""

    item_id: int
    case: str
    title: str
    kind: str
    tmdb_id: int | None
    movie_id: int | None
    kind_with_overrides: str
    tmdb_with_overrides: int | None


@dataclass(frozen=True)
class MovieLensFixture:
    """Paths of a written fixture and the expected mapping of every item."""

    root: Path
    ml100k_dir: Path
    ml_latest_dir: Path
    ml100k_zip: Path | None
    ml_latest_zip: Path | None
    expected: dict[int, ExpectedItem]
    overrides: pd.DataFrame
    ratings: pd.DataFrame = field(repr=False)

    def item_id(self, case: str) -> int:
        """Item id of the named :data:`TIER_CASES` entry."""
        return next(e.item_id for e in self.expected.values() if e.case == case)


@dataclass
class _Film:
    item_id: int
    title: str
    url: str
    release_date: str
    latest_index: int | None  # index into the ml-latest rows of the film it must map to


def write_movielens_fixture(
    root: Path,
    *,
    n_users: int = 30,
    n_items: int = 60,
    n_ratings: int = 600,
    seed: int = 0,
    make_zips: bool = True,
) -> MovieLensFixture:
    """Write both releases under ``root`` (and zip them unless ``make_zips`` is False).

    Items 1..len(TIER_CASES) are the tier cases (fewer if ``n_items`` is smaller); the rest
    are invented films with an exact ml-latest counterpart. Ratings are drawn from a small
    latent-factor model, one per (user, item) pair at most, every user and item rated when
    ``n_ratings`` allows. Same arguments, same bytes.
    """
    if n_users < 1 or n_items < 1:
        raise ValueError("need at least one user and one item")
    if not max(n_users, n_items) <= n_ratings <= n_users * n_items:
        raise ValueError(f"n_ratings must be in [{max(n_users, n_items)}, {n_users * n_items}]")
    rng = np.random.default_rng(seed)
    films, latest, targets = _films_and_rows(n_items)
    movie_ids = _deranged_movie_ids(targets, rng)
    ratings = _ratings(n_users, n_items, n_ratings, rng)

    ml100k_dir, ml_latest_dir = root / "ml-100k", root / "ml-latest-small"
    ml100k_dir.mkdir(parents=True, exist_ok=True)
    ml_latest_dir.mkdir(parents=True, exist_ok=True)
    _write_u_item(ml100k_dir / "u.item", films, rng)
    _write_u_data(ml100k_dir / "u.data", ratings)
    _write_u_user(ml100k_dir / "u.user", n_users, rng)
    (ml100k_dir / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n", encoding="latin-1")
    _write_latest(ml_latest_dir, latest, movie_ids)
    _write_latest_ratings(ml_latest_dir / "ratings.csv", latest, movie_ids, n_users, np.random.default_rng(seed + 1))

    zips = (None, None)
    if make_zips:
        zips = (_zip_folder(ml100k_dir, root / "ml-100k.zip"), _zip_folder(ml_latest_dir, root / "ml-latest-small.zip"))
    expected, overrides = _expectations(films, latest, movie_ids)
    return MovieLensFixture(root, ml100k_dir, ml_latest_dir, *zips, expected, overrides, ratings)


def _films_and_rows(n_items: int) -> tuple[list[_Film], list[LatestRow], list[int | None]]:
    """ML-100K films, ml-latest rows, and for each row the item id it belongs to (or None)."""
    films: list[_Film] = []
    latest: list[LatestRow] = []
    targets: list[int | None] = []
    self_cases = {}
    for case in TIER_CASES[:n_items]:
        item_id = len(films) + 1
        first_row = len(latest)
        for row in case.latest:
            latest.append(row)
            targets.append(item_id)
        index = first_row + case.expected_row if case.expected_row is not None else None
        if case.name == "ml100k_duplicate_second":  # reuses the first copy's row
            index = self_cases.get("ml100k_duplicate_first")
        self_cases[case.name] = index
        url = case.url if case.url is not None else IMDB_SEARCH + quote(case.title, safe="(),:'!", encoding="latin-1")
        films.append(_Film(item_id, case.title, url, case.release_date if case.release_date is not None else "", index))
    for item_id in range(len(films) + 1, n_items + 1):
        title = f"Invented Film Number {item_id} ({1980 + item_id % 20})"
        films.append(_Film(item_id, title, IMDB_SEARCH + quote_plus(title), "", len(latest)))
        latest.append(LatestRow(title, 200_000 + item_id, 800_000 + item_id))
        targets.append(item_id)
    for number, title in enumerate(DECOY_FILMS):
        latest.append(LatestRow(title, 190_000 + number, 790_000 + number))
        targets.append(None)
    for film in films:
        if not film.release_date and film.title != "unknown":
            film.release_date = f"01-Jan-{film.title[-5:-1]}"
    return films, latest, targets


def _deranged_movie_ids(targets: list[int | None], rng: np.random.Generator) -> list[int]:
    """A shuffled 1..n movieId per row, none equal to the item id of the film it holds."""
    ids = [int(i) for i in rng.permutation(len(targets)) + 1]
    for row, target in enumerate(targets):
        if ids[row] == target:  # swapping with a neighbour cannot create a new clash
            other = (row + 1) % len(ids)
            ids[row], ids[other] = ids[other], ids[row]
    return ids


def _ratings(n_users: int, n_items: int, n_ratings: int, rng: np.random.Generator) -> pd.DataFrame:
    """Ratings from user/item factors plus noise, so a recommender has something to learn."""
    cover = max(n_users, n_items)
    pairs = {(i % n_users, i % n_items) for i in range(cover)}
    for flat in rng.permutation(n_users * n_items):
        if len(pairs) >= n_ratings:
            break
        pairs.add((int(flat) // n_items, int(flat) % n_items))
    chosen = np.array(sorted(pairs))
    users, items = chosen[:, 0], chosen[:, 1]
    user_factors, item_factors = rng.normal(0, 0.8, (n_users, 3)), rng.normal(0, 0.8, (n_items, 3))
    score = 3.5 + (user_factors[users] * item_factors[items]).sum(axis=1) + rng.normal(0, 0.5, len(users))
    order = rng.permutation(len(users))  # u.data is not sorted
    return pd.DataFrame(
        {
            "user_id": users[order] + 1,
            "item_id": items[order] + 1,
            "rating": np.clip(np.rint(score), 1, 5).astype(int)[order],
            "timestamp": FIRST_TIMESTAMP + rng.integers(0, 20_000_000, len(users)),
        }
    )


def _write_u_item(path: Path, films: list[_Film], rng: np.random.Generator) -> None:
    lines = []
    for film in films:
        flags = ["0"] * len(GENRES)
        flags[0 if film.title == "unknown" else int(rng.integers(1, len(GENRES)))] = "1"
        lines.append("|".join([str(film.item_id), film.title, film.release_date, "", film.url, *flags]))
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def _write_u_data(path: Path, ratings: pd.DataFrame) -> None:
    rows = ratings[["user_id", "item_id", "rating", "timestamp"]].astype(str).agg("\t".join, axis=1)
    path.write_text("\n".join(rows) + "\n", encoding="latin-1")


def _write_u_user(path: Path, n_users: int, rng: np.random.Generator) -> None:
    lines = [
        f"{u}|{int(rng.integers(16, 70))}|{'MF'[int(rng.integers(0, 2))]}|"
        f"{OCCUPATIONS[int(rng.integers(0, len(OCCUPATIONS)))]}|{int(rng.integers(10000, 99999))}"
        for u in range(1, n_users + 1)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def _write_latest(folder: Path, latest: list[LatestRow], movie_ids: list[int]) -> None:
    order = sorted(range(len(latest)), key=lambda row: movie_ids[row])
    with (folder / "movies.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        writer.writerows([movie_ids[row], latest[row].title, "Drama"] for row in order)
    with (folder / "links.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["movieId", "imdbId", "tmdbId"])
        for row in order:
            tmdb = latest[row].tmdb_id
            writer.writerow([movie_ids[row], f"{latest[row].imdb_id:07d}", "" if tmdb is None else tmdb])


def _write_latest_ratings(
    path: Path, latest: list[LatestRow], movie_ids: list[int], n_users: int, rng: np.random.Generator
) -> None:
    """ml-latest's own users (ids 1..n_users, another population than ML-100K's), half stars,
    every film rated at least once, sorted by user then film as GroupLens ships it."""
    rows = set()
    for index in range(len(latest)):
        rows.add((int(rng.integers(1, n_users + 1)), movie_ids[index]))
    for _ in range(4 * len(latest)):
        rows.add((int(rng.integers(1, n_users + 1)), movie_ids[int(rng.integers(0, len(latest)))]))
    lines = ["userId,movieId,rating,timestamp"]
    for user, movie in sorted(rows):
        lines.append(f"{user},{movie},{int(rng.integers(1, 11)) / 2:g},{FIRST_TIMESTAMP + int(rng.integers(0, 10**8))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(zipfile.ZipInfo(folder.name + "/"), "")
        for path in sorted(folder.iterdir()):
            info = zipfile.ZipInfo(f"{folder.name}/{path.name}", date_time=(1998, 4, 1, 0, 0, 0))
            bundle.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return archive


def _expectations(
    films: list[_Film], latest: list[LatestRow], movie_ids: list[int]
) -> tuple[dict[int, ExpectedItem], pd.DataFrame]:
    cases = {i + 1: case for i, case in enumerate(TIER_CASES)}
    expected: dict[int, ExpectedItem] = {}
    overrides = []
    for film in films:
        case = cases.get(film.item_id)
        kind = case.expected_kind if case else "exact"
        row = film.latest_index if kind not in ("ambiguous", "unmatched", "unknown_title") else None
        tmdb = latest[row].tmdb_id if row is not None else None
        movie = movie_ids[row] if row is not None else None
        if case and case.name == "duplicate_rows_same_tmdb":  # the lower of the two rows is reported
            movie = min(movie_ids[row], movie_ids[row + 1])
        pinned = case.override_tmdb if case else None
        if pinned is not None:
            overrides.append((film.item_id, pinned, f"fixture case {case.name}", film.title))
        expected[film.item_id] = ExpectedItem(
            item_id=film.item_id,
            case=case.name if case else "filler",
            title=film.title,
            kind=kind,
            tmdb_id=tmdb,
            movie_id=movie,
            kind_with_overrides="override" if pinned is not None else kind,
            tmdb_with_overrides=pinned if pinned is not None else tmdb,
        )
    frame = pd.DataFrame(overrides, columns=["ml100k_item_id", "tmdb_id", "reason", "ml100k_title"])
    return expected, frame


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A deflated zip at ``path`` holding ``members`` (name -> bytes), parent folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path
