"""Parsers for the MovieLens files the graph reads.

Every parser fails with a :class:`MovieLensFormatError` naming the file and the line, so a
malformed download is diagnosed at a glance instead of surfacing as a pandas traceback.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

ML100K_ARCHIVE = "ml-100k.zip"
ML100K_MEMBERS = ("ml-100k/u.data", "ml-100k/u.item")
ML_LATEST_RELEASES = ("ml-latest-small", "ml-32m", "ml-latest")
"""GroupLens releases in the ml-latest format (ratings.csv, movies.csv, links.csv in one folder)."""
DEFAULT_ML_LATEST_RELEASE = "ml-latest-small"
RATINGS_CSV_HEADER = "userId,movieId,rating,timestamp"


def ml_latest_archive(release: str) -> str:
    return f"{check_release(release)}.zip"


def ml_latest_members(release: str) -> tuple[str, str, str]:
    """ratings.csv, movies.csv, links.csv inside the release's archive."""
    return tuple(f"{check_release(release)}/{name}" for name in ("ratings.csv", "movies.csv", "links.csv"))


def check_release(release: str) -> str:
    if release not in ML_LATEST_RELEASES:
        raise ValueError(f"unknown MovieLens release {release!r}: use one of {', '.join(ML_LATEST_RELEASES)}")
    return release


ML_LATEST_ARCHIVE = ml_latest_archive(DEFAULT_ML_LATEST_RELEASE)
ML_LATEST_MEMBERS = ml_latest_members(DEFAULT_ML_LATEST_RELEASE)
"""The default release's archive and members (ratings.csv, movies.csv, links.csv)."""


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
            if not 1 <= rating <= 5:
                raise _fail(path, line_no, f"rating {rating} outside 1..5")
            if user < 1 or item < 1:
                raise _fail(path, line_no, f"ids must be positive, got user {user} item {item}")
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
            if item_id in seen:
                raise _fail(path, line_no, f"duplicate item id {item_id}")
            seen.add(item_id)
            rows.append([item_id, *fields[1 : len(U_ITEM_COLUMNS)], *genres])
    if not rows:
        raise MovieLensFormatError(f"{path.name}: no items")
    frame = pd.DataFrame(rows, columns=[*U_ITEM_COLUMNS, *U_ITEM_GENRES])
    return frame.astype({"item_id": np.int32, **dict.fromkeys(U_ITEM_GENRES, np.int8)})


def parse_links(path: Path) -> pd.DataFrame:
    """``links.csv``: movieId, imdbId, tmdbId (tmdbId may be empty)."""
    rows = _read_csv(path, ("movieId", "imdbId", "tmdbId"))
    out = {"movieId": [], "imdbId": [], "tmdbId": []}
    for line_no, row in rows:
        try:
            out["movieId"].append(int(row["movieId"]))
            out["imdbId"].append(int(row["imdbId"]))
            out["tmdbId"].append(int(row["tmdbId"]) if row["tmdbId"].strip() else None)
        except ValueError:
            raise _fail(path, line_no, f"non-integer id in {row}") from None
    return pd.DataFrame(out).astype({"movieId": "int64", "imdbId": "int64", "tmdbId": "Int64"})


def parse_movies(path: Path) -> pd.DataFrame:
    """``movies.csv``: movieId, title, genres (quoted CSV, utf-8)."""
    rows = _read_csv(path, ("movieId", "title", "genres"))
    out = {"movieId": [], "title": [], "genres": []}
    for line_no, row in rows:
        try:
            out["movieId"].append(int(row["movieId"]))
        except ValueError:
            raise _fail(path, line_no, f"non-integer movieId {row['movieId']!r}") from None
        out["title"].append(row["title"])
        out["genres"].append(row["genres"])
    return pd.DataFrame(out).astype({"movieId": "int64"})


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MovieLensFormatError(f"{path.name}: not valid UTF-8 ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != columns:
        raise _fail(path, 1, f"expected header {','.join(columns)}, got {reader.fieldnames}")
    rows = []
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            raise _fail(path, reader.line_num, f"expected {len(columns)} fields")
        rows.append((reader.line_num, row))
    return rows


def parse_ratings_csv(path: Path) -> pd.DataFrame:
    """``ratings.csv`` of an ml-latest release: userId, movieId, rating (0.5..5 in half stars),
    timestamp. Parsed by pandas' C reader (32M rows in seconds); any bad row fails the file,
    naming its line."""
    with path.open("r", encoding="utf-8", newline="") as fh:
        header = fh.readline().rstrip("\r\n")
    if header != RATINGS_CSV_HEADER:
        raise _fail(path, 1, f"expected header {RATINGS_CSV_HEADER}, got {header[:80]!r}")
    try:
        frame = pd.read_csv(
            path,
            dtype={"userId": "int64", "movieId": "int64", "rating": "float64", "timestamp": "int64"},
            engine="c",
            na_filter=False,
        )
    except (ValueError, pd.errors.ParserError) as error:
        raise _first_bad_line(path, error) from None
    if frame.empty:
        raise MovieLensFormatError(f"{path.name}: no ratings")
    bad = (
        (frame["userId"] < 1)
        | (frame["movieId"] < 1)
        | ~frame["rating"].between(0.5, 5.0)
        | ((frame["rating"] * 2) % 1 != 0)
        | (frame["timestamp"] < 0)
    )
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(path, row + 2, f"invalid rating row {frame.iloc[row].tolist()} (ids >= 1, rating 0.5..5 in halves)")
    return pd.DataFrame(
        {
            "user_id": frame["userId"].to_numpy(np.int32),
            "movie_id": frame["movieId"].to_numpy(np.int32),
            "rating": frame["rating"].to_numpy(np.float32),
            "timestamp": frame["timestamp"].to_numpy(np.int64),
        }
    )


def _first_bad_line(path: Path, error: Exception) -> MovieLensFormatError:
    """Only on failure: find the first line that does not hold four integers/number fields."""
    with path.open("r", encoding="utf-8", newline="") as fh:
        next(fh)
        for line_no, line in enumerate(fh, start=2):
            fields = line.rstrip("\r\n").split(",")
            try:
                if len(fields) != 4:
                    raise ValueError(f"expected 4 fields, got {len(fields)}")
                int(fields[0]), int(fields[1]), float(fields[2]), int(fields[3])
            except ValueError as why:
                return _fail(path, line_no, f"{why} in {line.strip()[:80]!r}")
    return MovieLensFormatError(f"{path.name}: {str(error).splitlines()[0][:200]}")


def link_report(links: pd.DataFrame) -> dict[str, int]:
    """links.csv health: films without a tmdbId, and tmdbIds listed for more than one film."""
    tmdb = links["tmdbId"].dropna()
    shared = tmdb[tmdb.duplicated(keep=False)]
    return {
        "links": len(links),
        "links_missing_tmdb_id": int(links["tmdbId"].isna().sum()),
        "tmdb_ids_shared_by_several_films": int(shared.nunique()),
        "films_sharing_a_tmdb_id": len(shared),
    }
