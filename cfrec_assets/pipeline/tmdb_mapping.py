"""Map ML-100K item ids to TMDB ids, through ml-latest-small's ``links.csv``.

The two MovieLens releases number films independently (ML-100K item 2 is "GoldenEye",
ml-latest movieId 2 is "Jumanji"), so ids are never joined across releases. Instead:

1. ``imdb_id``: an IMDb number embedded in the item's URL (``...title-exact?imdb-title-119217``)
   is joined to links.csv's imdbId. It wins over every title rule.
2. Title + year against ``movies.csv``, through tiers tried in order: ``exact``, ``normalized``,
   ``alternate``, ``year_off_by_one``, ``fuzzy`` (see :func:`build_tmdb_mapping`).
3. ``override``: rows of the checked-in overrides file win over everything, except that an
   item titled "unknown" is never mapped.

Decisions fixed in advance:

* The first title tier that finds any candidate decides: one candidate is a match, several are
  ``ambiguous``. A looser tier never overrules an ambiguity a stricter tier found.
* Candidates that all carry the same TMDB id count as one film (ml-latest lists a few films
  twice); the lowest movie id is reported.
* ml-latest rows are not withdrawn once claimed: ML-100K lists 18 films twice (e.g. "Chasing
  Amy (1997)" is items 246 and 268) and both copies must reach the same film. Shared TMDB ids
  are counted in :func:`mapping_summary` instead.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from importlib import resources
from pathlib import Path
from urllib.parse import unquote_plus

import pandas as pd

from cfrec_assets.schema import TMDB_LINK_COLUMNS

log = logging.getLogger(__name__)

MATCH_KINDS = (
    "imdb_id", "exact", "normalized", "alternate", "year_off_by_one", "fuzzy", "override",
    "ambiguous", "unmatched", "unknown_title", "no_tmdb_id",
)  # fmt: skip
MAPPED_KINDS = frozenset(MATCH_KINDS[:7])

FUZZY_MIN_RATIO = 0.92
FUZZY_MIN_MARGIN = 0.05
FUZZY_MIN_LENGTH = 10
# Bracketed alternates this short are markers like "(V)" or "(TV)", not titles.
MIN_ALTERNATE_LENGTH = 3
# Shorter title segments ("Red" from "Three Colors: Red") are too generic to identify a film.
MIN_SEGMENT_LENGTH = 4

OVERRIDE_COLUMNS = ("ml100k_item_id", "tmdb_id", "reason")
OPTIONAL_OVERRIDE_COLUMNS = ("ml100k_title",)

# English, French, Italian, Spanish, Portuguese and German articles, as MovieLens moves them
# to the end of a title ("Usual Suspects, The", "Cérémonie, La", "Appartement, L'").
_ARTICLES = (
    "the", "a", "an", "la", "le", "les", "l'", "un", "une", "il", "lo", "gli", "i", "el", "los",
    "las", "o", "os", "as", "der", "die", "das", "den", "ein", "eine",
)  # fmt: skip
_TRAILING_ARTICLE = re.compile(
    r"^(?P<rest>.+?),\s*(?P<article>" + "|".join(re.escape(a) for a in _ARTICLES) + r")$",
    re.IGNORECASE,
)
_YEAR = re.compile(r"\((\d{4})(?:/[IVX]+)?\)")  # IMDb writes a second 1994 film "(1994/II)"
_AKA = re.compile(r"^(a\.?k\.?a\.?|aka)\s+", re.IGNORECASE)
_SEGMENT_SEPARATOR = re.compile(r":\s+|\s+-\s+")
# A credit before the title proper: "Stephen King's The Langoliers", "Cheech and Chong's Up in
# Smoke". Owner and rest need two words each so "Schindler's List" or "Ulee's Gold" stay whole.
_POSSESSIVE_CREDIT = re.compile(r"^(?P<owner>[^\s']+(?:\s+[^\s']+){1,3})'s\s+(?P<rest>\S+\s+\S.*)$")
_EMBEDDED_IMDB = re.compile(r"imdb-title-(\d+)")
_URL_TITLE = re.compile(r"(?:title-exact|Title)\?(?P<query>.+)$")
# Letters NFKD does not decompose into a base letter plus accents.
_EXTRA_FOLDS = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ð": "d", "þ": "th", "ł": "l", "đ": "d"})


@dataclass(frozen=True)
class ParsedTitle:
    """A MovieLens title split into its parts.

    ``base`` is the raw text before the year; ``names`` holds the main title first, then each
    bracketed alternate ("Seven (a.k.a. Se7en)" gives "Seven", "Se7en").
    """

    base: str
    names: tuple[str, ...]
    year: int | None


@lru_cache(maxsize=65536)
def parse_title(title: str) -> ParsedTitle:
    """Split "Main (Alternate) (1995)" into base text, names and year.

    The last "(dddd)" is the year; anything after it (ML-100K's "(1995) (V)") is dropped.
    """
    text = " ".join(title.split())
    year = None
    years = list(_YEAR.finditer(text))
    if years:
        year = int(years[-1].group(1))
        text = text[: years[-1].start()].strip()
    main, alternates = _split_brackets(text)
    main = main.strip('"')  # IMDb quotes TV titles: "\"Langoliers, The\" (1995) (mini)"
    alternates = [_AKA.sub("", alt).strip().strip('"') for alt in alternates]
    names = [main] if main else []
    names += [alt for alt in alternates if len(normalize_name(alt)) >= MIN_ALTERNATE_LENGTH]
    return ParsedTitle(base=text, names=tuple(names), year=year)


def display_title(title: str) -> tuple[str, int | None]:
    """How people write a MovieLens title: "Usual Suspects, The (1995)" -> ("The Usual Suspects", 1995);
    alternate titles in brackets are left out."""
    parsed = parse_title(title)
    return _article_first(parsed.names[0] if parsed.names else parsed.base), parsed.year


def _split_brackets(text: str) -> tuple[str, list[str]]:
    """Top-level text outside parentheses, and each top-level bracketed group."""
    outside: list[str] = []
    groups: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            if depth > 0:
                current.append(char)
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                groups.append("".join(current).strip())
                current = []
            else:
                current.append(char)
        elif depth > 0:
            current.append(char)
        else:
            outside.append(char)
    if current:  # unbalanced "(": keep the text rather than lose it
        outside.append("(" + "".join(current))
    main = " ".join("".join(outside).split())
    if not main and groups:
        main = groups.pop(0)
    return main, [g for g in groups if g]


def _article_first(name: str) -> str:
    """ "Usual Suspects, The" -> "The Usual Suspects"; "Appartement, L'" -> "L'Appartement"."""
    name = name.strip()
    moved = _TRAILING_ARTICLE.match(name)
    if not moved:
        return name
    article = moved.group("article")
    return article + ("" if article.endswith("'") else " ") + moved.group("rest")


@lru_cache(maxsize=65536)
def normalize_name(name: str) -> str:
    """Comparable form of one title: article in front, accents folded, case, "&", punctuation.

    Articles are kept (only moved), so "Fear, The" and "Fear" stay different keys.
    """
    name = _article_first(name)
    folded = unicodedata.normalize("NFKD", name.lower().translate(_EXTRA_FOLDS))
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = folded.replace("&", " and ")
    folded = re.sub(r"['’`´]", "", folded)  # "L'Appartement" and "Ulee's" close up, not split
    return " ".join(re.sub(r"[^0-9a-z]+", " ", folded).split())


def full_key(parsed: ParsedTitle) -> str:
    """The whole title normalised, alternates included, each with its own article moved."""
    return " ".join(filter(None, (normalize_name(n) for n in parsed.names)))


def name_keys(parsed: ParsedTitle) -> set[str]:
    """Normalised main title and alternates, each usable on its own."""
    return {key for key in (normalize_name(n) for n in parsed.names) if key}


def segment_keys(parsed: ParsedTitle) -> set[str]:
    """Normalised parts of each name: colon/dash segments and the title after a possessive credit.

    "Star Wars: Episode IV - A New Hope" gives "star wars", "episode iv", "a new hope";
    "Wallace & Gromit: The Wrong Trousers" gives "wallace and gromit", "the wrong trousers".
    """
    parts: list[str] = []
    for name in parsed.names:
        name = _article_first(name)
        segments = _SEGMENT_SEPARATOR.split(name)
        parts += segments if len(segments) > 1 else []
        credit = _POSSESSIVE_CREDIT.match(name)
        parts += [credit.group("rest")] if credit else []
    keys = {normalize_name(p) for p in parts}
    return {k for k in keys if len(k) >= MIN_SEGMENT_LENGTH} - name_keys(parsed)


def title_similarity(a: str, b: str) -> float:
    """Best difflib ratio between any normalised name or segment of ``a`` and of ``b`` (0..1)."""
    parsed_a, parsed_b = parse_title(a), parse_title(b)
    keys_a = name_keys(parsed_a) | segment_keys(parsed_a) | {full_key(parsed_a)}
    keys_b = name_keys(parsed_b) | segment_keys(parsed_b) | {full_key(parsed_b)}
    return max((_ratio(x, y) for x in keys_a for y in keys_b if x and y), default=0.0)


def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def embedded_imdb_id(url: str) -> int | None:
    """IMDb number embedded in an ML-100K URL, if the URL carries one."""
    found = _EMBEDDED_IMDB.search(url or "")
    return int(found.group(1)) if found else None


def url_title(url: str) -> str | None:
    """The title an ML-100K IMDb search URL asks for, URL-decoded (None for embedded ids)."""
    found = _URL_TITLE.search(url or "")
    if not found or found.group("query").startswith("imdb-title-"):
        return None
    query = found.group("query")
    try:
        return unquote_plus(query, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:  # the 1998 URLs percent-encode latin-1 bytes
        return unquote_plus(query, encoding="latin-1")


class _MovieIndex:
    """ml-latest movies keyed for each title tier."""

    def __init__(self, movies: pd.DataFrame, tmdb_by_movie: dict[int, int | None]) -> None:
        self.exact: dict[tuple[str, int | None], set[int]] = defaultdict(set)
        self.normalized: dict[tuple[str, int | None], set[int]] = defaultdict(set)
        self.by_name: dict[tuple[str, int | None], set[int]] = defaultdict(set)
        self.by_segment: dict[tuple[str, int | None], set[int]] = defaultdict(set)
        self.by_year: dict[int, list[tuple[int, set[str]]]] = defaultdict(list)
        self.tmdb_by_movie = tmdb_by_movie
        for movie_id, title in zip(movies["movie_id"].tolist(), movies["title"].tolist()):
            parsed = parse_title(str(title))
            self.exact[(parsed.base, parsed.year)].add(movie_id)
            self.normalized[(full_key(parsed), parsed.year)].add(movie_id)
            keys = name_keys(parsed)
            for key in keys:
                self.by_name[(key, parsed.year)].add(movie_id)
            for key in segment_keys(parsed):
                self.by_segment[(key, parsed.year)].add(movie_id)
            if parsed.year is not None:
                self.by_year[parsed.year].append((movie_id, keys | {full_key(parsed)}))

    def distinct(self, candidates: Iterable[int]) -> list[int]:
        """Candidates with one representative (lowest movie id) per known TMDB id."""
        chosen: dict[object, int] = {}
        for movie_id in sorted(set(candidates)):
            tmdb = self.tmdb_by_movie.get(movie_id)
            chosen.setdefault(("tmdb", tmdb) if tmdb is not None else ("movie", movie_id), movie_id)
        return sorted(chosen.values())


@dataclass(frozen=True)
class _ItemTitle:
    parsed: ParsedTitle
    url_parsed: ParsedTitle | None

    def keyed_names(self) -> set[tuple[str, int | None]]:
        """(name key, year) for the item's own names and the title in its IMDb URL."""
        return self._keyed(name_keys)

    def keyed_segments(self) -> set[tuple[str, int | None]]:
        """(segment key, year), as :meth:`keyed_names` but for :func:`segment_keys`."""
        return self._keyed(segment_keys)

    def _keyed(self, keys_of: Callable[[ParsedTitle], set[str]]) -> set[tuple[str, int | None]]:
        keyed = {(k, self.parsed.year) for k in keys_of(self.parsed)}
        if self.url_parsed is not None:
            url_year = self.url_parsed.year if self.url_parsed.year is not None else self.parsed.year
            keyed |= {(k, url_year) for k in keys_of(self.url_parsed)}
        return keyed


def _title_tiers(item: _ItemTitle, index: _MovieIndex) -> tuple[str, list[int]]:
    """(match kind, candidates) from the first title tier that finds any candidate."""
    parsed = item.parsed
    tiers = (
        ("exact", lambda: index.exact.get((parsed.base, parsed.year), set())),
        ("normalized", lambda: index.normalized.get((full_key(parsed), parsed.year), set())),
        ("alternate", lambda: _union(index.by_name.get(k, set()) for k in item.keyed_names())),
        # Whole names against segments, never segment against segment, so two films sharing a
        # franchise prefix ("Star Trek: ...") cannot meet through it.
        (
            "alternate",
            lambda: (
                _union(index.by_segment.get(k, set()) for k in item.keyed_names())
                | _union(index.by_name.get(k, set()) for k in item.keyed_segments())
            ),
        ),
        ("year_off_by_one", lambda: _year_off_by_one(item, index)),
    )
    for kind, find in tiers:
        candidates = index.distinct(find())
        if candidates:
            return kind, candidates
    return _fuzzy(item, index)


def _union(sets: Iterable[set[int]]) -> set[int]:
    found: set[int] = set()
    for s in sets:
        found |= s
    return found


def _year_off_by_one(item: _ItemTitle, index: _MovieIndex) -> set[int]:
    # Keys keep their article, so "Fear, The (1995)" cannot land on "Fear (1996)".
    found: set[int] = set()
    full = full_key(item.parsed)
    for key, year in item.keyed_names() | {(full, item.parsed.year)}:
        if year is None:
            continue
        for shifted in (year - 1, year + 1):
            found |= index.normalized.get((key, shifted), set())
            found |= index.by_name.get((key, shifted), set())
    return found


def _length_bound(a: str, b: str) -> float:
    return 2 * min(len(a), len(b)) / (len(a) + len(b))


def _fuzzy(item: _ItemTitle, index: _MovieIndex) -> tuple[str, list[int]]:
    """Same-year difflib match on long titles, with a clear margin over the runner-up."""
    year = item.parsed.year
    own_keys = {k for k in name_keys(item.parsed) | {full_key(item.parsed)} if len(k) >= FUZZY_MIN_LENGTH}
    if year is None or not own_keys:
        return "unmatched", []
    # Scores below this can neither win nor come within the margin of a winner.
    relevant = FUZZY_MIN_RATIO - FUZZY_MIN_MARGIN
    scores: dict[int, float] = {}
    matcher = SequenceMatcher(autojunk=False)
    for movie_id, movie_keys in index.by_year.get(year, []):
        best = 0.0
        for movie_key in movie_keys:
            for key in own_keys:
                floor = max(best, relevant)
                # Length alone bounds the ratio; skip before difflib indexes the string.
                if len(movie_key) < FUZZY_MIN_LENGTH or _length_bound(key, movie_key) < floor:
                    continue
                matcher.set_seqs(key, movie_key)
                if matcher.quick_ratio() >= floor:
                    best = max(best, matcher.ratio())
        scores[movie_id] = best
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked or ranked[0][1] < FUZZY_MIN_RATIO:
        return "unmatched", []
    top = index.distinct(m for m, s in ranked if s > ranked[0][1] - FUZZY_MIN_MARGIN)
    return ("fuzzy", top) if len(top) == 1 else ("ambiguous", top)


def load_overrides(path: str | Path | None = None) -> pd.DataFrame:
    """Read and validate an overrides CSV (default: the one shipped with the package).

    Columns ``ml100k_item_id,tmdb_id,reason`` and optionally ``ml100k_title``; when a title is
    given, the override applies only to an item with exactly that title, so ids pinned for the
    real ML-100K never leak onto another data set. Raises ``ValueError`` naming the line.
    """
    if path is None:
        source = resources.files("cfrec_assets.pipeline").joinpath("tmdb_overrides.csv")
        name, text = "tmdb_overrides.csv", source.read_text(encoding="utf-8")
    else:
        name, text = str(path), Path(path).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = tuple(reader.fieldnames or ())
    missing = [c for c in OVERRIDE_COLUMNS if c not in header]
    unexpected = [c for c in header if c not in OVERRIDE_COLUMNS + OPTIONAL_OVERRIDE_COLUMNS]
    if missing or unexpected:
        raise ValueError(f"{name}: header must be {','.join(OVERRIDE_COLUMNS)}[,ml100k_title]; got {header}")
    rows = []
    for row in reader:
        rows.append(_override_row(row, f"{name} line {reader.line_num}"))
    return validate_overrides(pd.DataFrame(rows, columns=[*OVERRIDE_COLUMNS, "ml100k_title"]), name)


def _override_row(row: dict[str, str | None], where: str) -> dict[str, object]:
    if None in row or any(v is None for v in row.values()):
        raise ValueError(f"{where}: wrong number of fields")
    ids = {}
    for column in ("ml100k_item_id", "tmdb_id"):
        try:
            ids[column] = int(row[column] or "")
        except ValueError:
            raise ValueError(f"{where}: {column} must be an integer, got {row[column]!r}") from None
        if ids[column] <= 0:
            raise ValueError(f"{where}: {column} must be positive, got {ids[column]}")
    reason = (row["reason"] or "").strip()
    if not reason:
        raise ValueError(f"{where}: reason is empty; say how the override was verified")
    return {**ids, "reason": reason, "ml100k_title": (row.get("ml100k_title") or "").strip()}


def no_overrides() -> pd.DataFrame:
    """An empty overrides frame, for mapping without the packaged pins."""
    return pd.DataFrame({"ml100k_item_id": [], "tmdb_id": [], "reason": [], "ml100k_title": []})


def validate_overrides(overrides: pd.DataFrame, name: str = "overrides") -> pd.DataFrame:
    """Check an overrides frame (types, positivity, one row per item) and return a clean copy."""
    missing = [c for c in OVERRIDE_COLUMNS if c not in overrides.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    clean = overrides.copy()
    if "ml100k_title" not in clean.columns:
        clean["ml100k_title"] = ""
    clean["ml100k_title"] = clean["ml100k_title"].fillna("").astype(str).str.strip()
    for column in ("ml100k_item_id", "tmdb_id"):
        numbers = pd.to_numeric(clean[column], errors="coerce")
        if numbers.isna().any() or (numbers % 1 != 0).any() or (numbers <= 0).any():
            raise ValueError(f"{name}: {column} must hold positive integers")
        clean[column] = numbers.astype("int64")
    clean["reason"] = clean["reason"].fillna("").astype(str).str.strip()
    if (clean["reason"] == "").any():
        raise ValueError(f"{name}: reason must be non-empty; say how each override was verified")
    duplicated = clean.loc[clean["ml100k_item_id"].duplicated(), "ml100k_item_id"].tolist()
    if duplicated:
        raise ValueError(f"{name}: several overrides for items {duplicated}")
    return clean[[*OVERRIDE_COLUMNS, "ml100k_title"]].reset_index(drop=True)


def _require(frame: pd.DataFrame, columns: Iterable[str], what: str, unique: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing columns {missing}")
    duplicated = frame.loc[frame[unique].duplicated(), unique].tolist()
    if duplicated:
        raise ValueError(f"{what} has duplicate {unique} values {duplicated[:5]}")


def build_tmdb_mapping(
    items: pd.DataFrame,
    links: pd.DataFrame,
    movies: pd.DataFrame,
    overrides: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per ML-100K item with its TMDB id (or the reason it has none).

    ``items`` has ``item_id, title, imdb_url``; ``links`` ``movie_id, imdb_id, tmdb_id``; ``movies``
    ``movie_id, title`` (as the parsers return them). ``overrides`` defaults to :func:`load_overrides` (the packaged file);
    pass :func:`no_overrides` to use none. Columns: ``ml100k_item_id, tmdb_id, match_kind,
    ml_latest_movie_id, ml100k_title, matched_title, embedded_imdb_id,
    embedded_imdb_movie_id``. ``match_kind`` is one of :data:`MATCH_KINDS`; only the kinds in
    :data:`MAPPED_KINDS` carry a tmdb_id.

    Title tiers (each accepted only with exactly one candidate film):
    ``exact`` title text and year; ``normalized`` title (see :func:`normalize_name`) and year;
    ``alternate`` any single name (main, bracketed alternate, or the title in the item's IMDb
    URL) and year, then, if none, a whole name against a segment of the other side
    (:func:`segment_keys`: "Star Wars" finds "Star Wars: Episode IV - A New Hope (1977)");
    ``year_off_by_one`` whole names at year ±1; ``fuzzy`` difflib ratio >= 0.92 on names of
    >= 10 characters, same year, 0.05 clear of the runner-up.
    """
    _require(items, ("item_id", "title", "imdb_url"), "items", "item_id")
    _require(links, ("movie_id", "imdb_id", "tmdb_id"), "links", "movie_id")
    _require(movies, ("movie_id", "title"), "movies", "movie_id")
    overrides = load_overrides() if overrides is None else validate_overrides(overrides)

    tmdb_by_movie = {int(m): (None if pd.isna(t) else int(t)) for m, t in zip(links["movie_id"], links["tmdb_id"])}
    movies_by_imdb: dict[int, list[int]] = defaultdict(list)
    for movie_id, imdb in zip(links["movie_id"].tolist(), links["imdb_id"].tolist()):
        movies_by_imdb[int(imdb)].append(int(movie_id))
    movies_by_tmdb: dict[int, list[int]] = defaultdict(list)
    for movie_id, tmdb in tmdb_by_movie.items():
        if tmdb is not None:
            movies_by_tmdb[tmdb].append(movie_id)
    title_by_movie = dict(zip(movies["movie_id"].astype("int64").tolist(), movies["title"].astype(str).tolist()))
    index = _MovieIndex(movies, tmdb_by_movie)
    override_by_item = {int(r.ml100k_item_id): r for r in overrides.itertuples(index=False)}

    rows = []
    for item_id, title, url in zip(items["item_id"].tolist(), items["title"].tolist(), items["imdb_url"].tolist()):
        item_id, title, url = int(item_id), str(title), "" if pd.isna(url) else str(url)
        imdb = embedded_imdb_id(url)
        imdb_movies = index.distinct(movies_by_imdb.get(imdb, [])) if imdb is not None else []
        kind, candidates = _match_item(title, url, imdb_movies, index)
        tmdb = None
        movie = candidates[0] if len(candidates) == 1 else None
        if kind in MAPPED_KINDS and movie is not None:
            tmdb = tmdb_by_movie.get(movie)
            kind = kind if tmdb is not None else "no_tmdb_id"
        elif kind in MAPPED_KINDS:  # several candidate films
            kind = "ambiguous"
        override = override_by_item.get(item_id)
        if override is not None and _override_applies(override.ml100k_title, item_id, title):
            tmdb = int(override.tmdb_id)
            same_tmdb = movies_by_tmdb.get(tmdb, [])
            movie = min(same_tmdb) if same_tmdb else None
            kind = "override"
        rows.append(
            {
                "ml100k_item_id": item_id,
                "tmdb_id": tmdb,
                "match_kind": kind,
                "ml_latest_movie_id": movie,
                "ml100k_title": title,
                "matched_title": title_by_movie.get(movie) if movie is not None else None,
                "embedded_imdb_id": imdb,
                "embedded_imdb_movie_id": imdb_movies[0] if len(imdb_movies) == 1 else None,
            }
        )
    mapping = pd.DataFrame(rows, columns=list(TMDB_LINK_COLUMNS))
    for column in ("tmdb_id", "ml_latest_movie_id", "embedded_imdb_id", "embedded_imdb_movie_id"):
        mapping[column] = mapping[column].astype("Int64")
    mapping["ml100k_item_id"] = mapping["ml100k_item_id"].astype("int64")
    return mapping


def _is_unknown(title: str) -> bool:
    return title.strip().lower() == "unknown"


def _match_item(title: str, url: str, imdb_movies: list[int], index: _MovieIndex) -> tuple[str, list[int]]:
    if _is_unknown(title):
        return "unknown_title", []
    if imdb_movies:
        return "imdb_id", imdb_movies
    url_name = url_title(url)
    item = _ItemTitle(parse_title(title), parse_title(url_name) if url_name else None)
    return _title_tiers(item, index)


def _override_applies(expected_title: str, item_id: int, title: str) -> bool:
    if expected_title and expected_title != title.strip():
        # Expected when the packaged overrides meet another data set (e.g. test fixtures).
        log.info("override for item %d skipped: title %r is not %r", item_id, title, expected_title)
        return False
    if _is_unknown(title):
        raise ValueError(f"override for item {item_id}: items titled 'unknown' are never mapped")
    return True


def mapping_summary(mapping: pd.DataFrame, ratings: pd.DataFrame | None = None) -> dict[str, object]:
    """Coverage figures for a mapping from :func:`build_tmdb_mapping`.

    ``ratings`` (``item_id`` column, one row per rating) is optional; without it every item
    counts 0 ratings. ``top_unmatched`` is a DataFrame of the
    10 most-rated items without a TMDB id (``item_id, title, match_kind, ratings``).
    """
    mapped = mapping["tmdb_id"].notna()
    kinds = mapping["match_kind"].value_counts()
    per_item = ratings["item_id"].value_counts() if ratings is not None else pd.Series(dtype="int64")
    mapped_items = set(mapping.loc[mapped, "ml100k_item_id"].tolist())
    in_links = mapping["embedded_imdb_movie_id"].notna()
    honoured = in_links & (mapping["ml_latest_movie_id"] == mapping["embedded_imdb_movie_id"]).fillna(False)
    tmdb_counts = mapping.loc[mapped, "tmdb_id"].value_counts()
    unmatched = mapping.loc[~mapped, ["ml100k_item_id", "ml100k_title", "match_kind"]].rename(
        columns={"ml100k_item_id": "item_id", "ml100k_title": "title"}
    )
    unmatched["ratings"] = unmatched["item_id"].map(per_item).fillna(0).astype("int64")
    top = unmatched.sort_values(["ratings", "item_id"], ascending=[False, True]).head(10)
    return {
        "items_total": int(len(mapping)),
        "items_mapped": int(mapped.sum()),
        "ratings_total": int(per_item.sum()),
        "ratings_mapped": int(per_item[per_item.index.isin(mapped_items)].sum()),
        "match_kinds": {kind: int(kinds.get(kind, 0)) for kind in MATCH_KINDS},
        "ambiguous": int(kinds.get("ambiguous", 0)),
        "unmatched": int(kinds.get("unmatched", 0)),
        "embedded_imdb_ids": int(mapping["embedded_imdb_id"].notna().sum()),
        "embedded_imdb_ids_in_links": int(in_links.sum()),
        "embedded_imdb_ids_honoured": int(honoured.sum()),
        "shared_tmdb_ids": int((tmdb_counts > 1).sum()),
        "top_unmatched": top.reset_index(drop=True),
    }
