"""Parsers for the MovieLens files the graph reads.

Every parser fails with a :class:`MovieLensFormatError` naming the file and the line, so a
malformed download is diagnosed at a glance instead of surfacing as a pandas traceback.

Every parser returns snake_case columns (``movie_id``, ``tmdb_id``...), whatever the file's header
says (``movieId``, ``tmdbId``); errors name the file's own column names.

Values are range-checked before they are stored in narrower types: film and user ids must fit
the int32 columns they are kept in (:data:`MAX_ID`; GroupLens' largest is below 300,000), so no
id is ever wrapped into another one; timestamps must fit any pandas time type (:data:`MAX_TIMESTAMP`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

ML100K_ARCHIVE = "ml-100k.zip"
ML100K_MEMBERS = ("ml-100k/u.data", "ml-100k/u.item")
ML_LATEST_RELEASES = ("ml-latest-small", "ml-32m", "ml-latest")
"""GroupLens releases in the ml-latest format (ratings.csv, movies.csv, links.csv in one folder)."""
DEFAULT_ML_LATEST_RELEASE = "ml-latest-small"
RATINGS_CSV_HEADER = "userId,movieId,rating,timestamp"
MAX_ID = 2**31 - 1
"""The largest MovieLens user or film id accepted: the parsed frames keep ids as int32."""
MAX_TIMESTAMP = pd.Timestamp.max.value // 10**9
"""The last unix second datetime64[ns] holds (2262-04-11), the narrowest time type a rating meets."""
MAX_EXTERNAL_ID = 2**63 - 1
"""The largest IMDb/TMDB id accepted in links.csv: they are stored as int64."""
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what ``errors="surrogateescape"`` makes of a byte that is not UTF-8


def ml_latest_archive(release: str) -> str:
    return f"{check_release(release)}.zip"


def ml_latest_members(release: str) -> tuple[str, str, str]:
    """ratings.csv, movies.csv, links.csv inside the release's archive."""
    return tuple(f"{check_release(release)}/{name}" for name in ("ratings.csv", "movies.csv", "links.csv"))


def check_release(release: str) -> str:
    if release not in ML_LATEST_RELEASES:
        raise ValueError(f"unknown MovieLens release {release!r}: use one of {', '.join(ML_LATEST_RELEASES)}")
    return release


# The default release's archive, and its members (ratings.csv, movies.csv, links.csv).
ML_LATEST_ARCHIVE = ml_latest_archive(DEFAULT_ML_LATEST_RELEASE)
ML_LATEST_MEMBERS = ml_latest_members(DEFAULT_ML_LATEST_RELEASE)


U_ITEM_GENRES = (
    "unknown", "action", "adventure", "animation", "childrens", "comedy", "crime",
    "documentary", "drama", "fantasy", "film_noir", "horror", "musical", "mystery",
    "romance", "sci_fi", "thriller", "war", "western",
)  # fmt: skip
U_ITEM_COLUMNS = ("item_id", "title", "release_date", "video_release_date", "imdb_url")


class MovieLensFormatError(ValueError):
    """A MovieLens file does not have the expected format."""


def _fail(path: Path, line_no: int, why: str) -> MovieLensFormatError:
    return MovieLensFormatError(f"{path.name} line {line_no}: {why}")


def _range_problem(*fields: tuple[str, int, int, int]) -> str | None:
    """The first ``(name, value, low, high)`` whose value lies outside ``low..high``, said in words."""
    for name, value, low, high in fields:
        if not low <= value <= high:
            return f"{name} {value} outside {low}..{high}"
    return None


def _ids_problem(user: int, item: int, stamp: int, names: tuple[str, str] = ("user id", "item id")) -> str | None:
    return _range_problem(
        (names[0], user, 1, MAX_ID), (names[1], item, 1, MAX_ID), ("timestamp", stamp, 0, MAX_TIMESTAMP)
    )


def _star_problem(rating: float) -> str | None:
    if not (math.isfinite(rating) and 0.5 <= rating <= 5.0 and (rating * 2) % 1 == 0):
        return f"rating {rating} is not 0.5..5 in halves"
    return None


def _bad_byte(path: Path, text: str, first_line: int = 1) -> MovieLensFormatError | None:
    """The first byte that is not UTF-8 in ``text`` (decoded with ``surrogateescape``, starting at
    line ``first_line``), named by line and column; None when there is none."""
    found = _NOT_UTF8.search(text)
    if found is None:
        return None
    line_no = first_line + text.count("\n", 0, found.start())
    column = found.start() - text.rfind("\n", 0, found.start())
    return _fail(path, line_no, f"not valid UTF-8 (byte 0x{ord(found.group()) - 0xDC00:02x} at column {column})")


def parse_u_data(path: Path) -> pd.DataFrame:
    """``u.data``: tab-separated user id, item id, rating (1..5), unix timestamp."""
    users, items, ratings, stamps = [], [], [], []
    with path.open("r", encoding="latin-1", newline="") as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 4:
                raise _fail(path, line_no, f"expected 4 tab-separated fields, got {len(fields)}")
            try:
                user, item, rating, stamp = (int(f) for f in fields)
            except ValueError:
                raise _fail(path, line_no, f"non-integer field in {line!r}") from None
            if why := _range_problem(("rating", rating, 1, 5)) or _ids_problem(user, item, stamp):
                raise _fail(path, line_no, why)
            users.append(user)
            items.append(item)
            ratings.append(rating)
            stamps.append(stamp)
    if not users:
        raise MovieLensFormatError(f"{path.name}: no ratings")
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, dtype=np.int32),
            "item_id": np.asarray(items, dtype=np.int32),
            "rating": np.asarray(ratings, dtype=np.int8),
            "timestamp": np.asarray(stamps, dtype=np.int64),
        }
    )


def parse_u_item(path: Path) -> pd.DataFrame:
    """``u.item``: pipe-separated, latin-1; id, title, dates, IMDb URL, 19 genre flags."""
    expected = len(U_ITEM_COLUMNS) + len(U_ITEM_GENRES)
    rows = []
    seen: set[int] = set()
    with path.open("r", encoding="latin-1", newline="") as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("|")
            if len(fields) != expected:
                raise _fail(path, line_no, f"expected {expected} '|'-separated fields, got {len(fields)}")
            try:
                item_id = int(fields[0])
                genres = [int(f) for f in fields[len(U_ITEM_COLUMNS) :]]
            except ValueError:
                raise _fail(path, line_no, "item id and genre flags must be integers") from None
            if why := _range_problem(("item id", item_id, 1, MAX_ID), *(("genre flag", g, 0, 1) for g in genres)):
                raise _fail(path, line_no, why)
            if item_id in seen:
                raise _fail(path, line_no, f"duplicate item id {item_id}")
            seen.add(item_id)
            rows.append([item_id, *fields[1 : len(U_ITEM_COLUMNS)], *genres])
    if not rows:
        raise MovieLensFormatError(f"{path.name}: no items")
    frame = pd.DataFrame(rows, columns=[*U_ITEM_COLUMNS, *U_ITEM_GENRES])
    return frame.astype({"item_id": np.int32, **dict.fromkeys(U_ITEM_GENRES, np.int8)})


def parse_links(path: Path) -> pd.DataFrame:
    """``links.csv``: movieId, imdbId, tmdbId (tmdbId may be empty), as ``movie_id``, ``imdb_id``,
    ``tmdb_id``. One row per movieId: a film listed twice would have its ratings counted under two
    TMDB ids, so that is refused."""
    rows = _read_csv(path, ("movieId", "imdbId", "tmdbId"))
    out = {"movie_id": [], "imdb_id": [], "tmdb_id": []}
    first_line: dict[int, int] = {}
    for line_no, row in rows:
        try:
            movie, imdb = int(row["movieId"]), int(row["imdbId"])
            tmdb = int(row["tmdbId"]) if row["tmdbId"].strip() else None
        except ValueError:
            raise _fail(path, line_no, f"non-integer id in {row}") from None
        ranges = [("movieId", movie, 1, MAX_ID), ("imdbId", imdb, 1, MAX_EXTERNAL_ID)]
        if why := _range_problem(*ranges, *([("tmdbId", tmdb, 1, MAX_EXTERNAL_ID)] if tmdb is not None else [])):
            raise _fail(path, line_no, why)
        if movie in first_line:
            raise _fail(path, line_no, f"movieId {movie} is already listed on line {first_line[movie]}")
        first_line[movie] = line_no
        out["movie_id"].append(movie)
        out["imdb_id"].append(imdb)
        out["tmdb_id"].append(tmdb)
    return pd.DataFrame(out).astype({"movie_id": "int64", "imdb_id": "int64", "tmdb_id": "Int64"})


def parse_movies(path: Path) -> pd.DataFrame:
    """``movies.csv``: movieId, title, genres (quoted CSV, utf-8), as ``movie_id``, ``title``, ``genres``."""
    rows = _read_csv(path, ("movieId", "title", "genres"))
    out = {"movie_id": [], "title": [], "genres": []}
    first_line: dict[int, int] = {}
    for line_no, row in rows:
        try:
            movie = int(row["movieId"])
        except ValueError:
            raise _fail(path, line_no, f"non-integer movieId {row['movieId']!r}") from None
        if why := _range_problem(("movieId", movie, 1, MAX_ID)):
            raise _fail(path, line_no, why)
        if movie in first_line:
            raise _fail(path, line_no, f"movieId {movie} is already listed on line {first_line[movie]}")
        first_line[movie] = line_no
        out["movie_id"].append(movie)
        out["title"].append(row["title"])
        out["genres"].append(row["genres"])
    return pd.DataFrame(out).astype({"movie_id": "int64"})


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    if bad_byte := _bad_byte(path, text):
        raise bad_byte
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != columns:
        raise _fail(path, 1, f"expected header {','.join(columns)}, got {reader.fieldnames}")
    rows = []
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            raise _fail(path, reader.line_num, f"expected {len(columns)} fields")
        rows.append((reader.line_num, row))
    return rows


RATINGS_DTYPES = {"userId": "int64", "movieId": "int64", "rating": "float64", "timestamp": "int64"}
_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# A line this matches is valid (ids up to 999,999,999, a half star, a timestamp below 9e9): it
# skips the exact checks, which keeps the search for a bad line in 32M ones to seconds.
_SURELY_VALID = re.compile(
    r"[1-9][0-9]{0,8},[1-9][0-9]{0,8},(?:[0-4]?\.50*|[1-5](?:\.0*)?),(?:[0-9]{1,9}|[1-8][0-9]{9})"
)


def parse_ratings_csv(path: Path) -> pd.DataFrame:
    """``ratings.csv`` of an ml-latest release: userId, movieId, rating (0.5..5 in half stars),
    timestamp, as ``user_id``, ``movie_id``, ``rating``, ``timestamp``. Parsed by pandas' C reader (32M rows in seconds) and checked column by column; any
    bad row fails the file, naming its line (looked for line by line, only once the file failed)."""
    with path.open("rb") as fh:
        header = fh.readline().rstrip(b"\r\n")
    if header != RATINGS_CSV_HEADER.encode():
        raise _fail(path, 1, f"expected header {RATINGS_CSV_HEADER}, got {header[:80].decode(errors='replace')!r}")
    try:  # QUOTE_NONE: a quoted number is refused, as the line-by-line rules refuse it
        frame = pd.read_csv(path, dtype=RATINGS_DTYPES, engine="c", na_filter=False, quoting=csv.QUOTE_NONE)
    except (ValueError, OverflowError, pd.errors.ParserError) as error:  # beyond int64, not UTF-8, not a number
        raise _first_bad_line(path, error) from None
    if frame.empty:
        raise MovieLensFormatError(f"{path.name}: no ratings")
    users, movies, stars, stamps = (frame[column].to_numpy() for column in RATINGS_DTYPES)
    with np.errstate(invalid="ignore"):  # inf % 1 is nan: refused below like any other bad rating
        bad = (
            (users < 1) | (users > MAX_ID) | (movies < 1) | (movies > MAX_ID)
            | ~((stars >= 0.5) & (stars <= 5.0)) | ((stars * 2) % 1 != 0)
            | (stamps < 0) | (stamps > MAX_TIMESTAMP)
        )  # fmt: skip
    if bad.any():
        row = int(np.argmax(bad))
        line_no, line = _line_of_row(path, row)
        why = _rating_row_problem(int(users[row]), int(movies[row]), float(stars[row]), int(stamps[row]))
        raise _fail(path, line_no, f"{why} in {line[:80]!r}")
    return pd.DataFrame(
        {  # int32 holds every id: checked against MAX_ID above
            "user_id": users.astype(np.int32),
            "movie_id": movies.astype(np.int32),
            "rating": stars.astype(np.float32),
            "timestamp": stamps,
        }
    )


def _rating_row_problem(user: int, movie: int, rating: float, stamp: int) -> str | None:
    return _ids_problem(user, movie, stamp, ("userId", "movieId")) or _star_problem(rating)


def _rating_lines(path: Path):
    """``(line number, line)`` of every data line, split and skipped as pandas does: ``\\n``,
    ``\\r\\n`` or ``\\r`` end a line, blank lines are not rows. Bytes that are not UTF-8 are kept
    as surrogates, for :func:`_bad_byte` to name."""
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline=None) as fh:
        next(fh, None)
        for line_no, line in enumerate(fh, start=2):
            if line.strip():
                yield line_no, line.rstrip("\n")


def _line_of_row(path: Path, row: int) -> tuple[int, str]:
    """The line number and text of data row ``row`` (0-based) as pandas counted it."""
    for index, (line_no, line) in enumerate(_rating_lines(path)):
        if index == row:
            return line_no, line
    raise AssertionError(f"{path.name} has no row {row}")  # pandas read it: unreachable


def _first_bad_line(path: Path, error: Exception) -> MovieLensFormatError:
    """Only on failure: the first line that is not four numbers within their ranges. The rules
    are stricter than pandas' reader (plain ASCII digits, no signs or exponents), so whatever
    made the reader fail is found here too."""
    for line_no, line in _rating_lines(path):
        if _SURELY_VALID.fullmatch(line):
            continue
        if bad_byte := _bad_byte(path, line, line_no):
            return bad_byte
        if why := _rating_line_problem(line):
            return _fail(path, line_no, f"{why} in {line[:80]!r}")
    return MovieLensFormatError(f"{path.name}: {str(error).splitlines()[0][:200]}")


def _rating_line_problem(line: str) -> str | None:
    fields = line.split(",")
    if len(fields) != 4:
        return f"expected 4 fields, got {len(fields)}"
    for name, field, shape in zip(RATINGS_DTYPES, fields, (_WHOLE, _WHOLE, _DECIMAL, _WHOLE), strict=True):
        if len(field) > 40:  # int() refuses thousands of digits; no valid field is this long
            return f"{name} is {len(field):,} characters long"
        if not shape.fullmatch(field):
            return f"{name} {field!r} is not a {'decimal' if shape is _DECIMAL else 'whole'} number"
    return _rating_row_problem(int(fields[0]), int(fields[1]), float(fields[2]), int(fields[3]))


def link_report(links: pd.DataFrame) -> dict[str, int]:
    """links.csv health: films without a TMDB id, and TMDB ids listed for more than one film."""
    tmdb = links["tmdb_id"].dropna()
    shared = tmdb[tmdb.duplicated(keep=False)]
    return {
        "links": len(links),
        "links_missing_tmdb_id": int(links["tmdb_id"].isna().sum()),
        "tmdb_ids_shared_by_several_films": int(shared.nunique()),
        "films_sharing_a_tmdb_id": len(shared),
    }
