"""Strict parsing of the MovieLens formats, on small files written here."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from cfrec_assets.pipeline.movielens_files import (
    MovieLensFormatError,
    parse_links,
    parse_movies,
    parse_ratings_csv,
    parse_u_data,
    parse_u_item,
)
from cfrec_assets.pipeline.records import MovieLensLatest

GENRES = "|0" * 19


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_u_data_parses_types_and_values(tmp_path: Path) -> None:
    frame = parse_u_data(write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t5\t891717742\n"))
    assert frame.to_dict("list") == {
        "user_id": [196, 186], "item_id": [242, 302], "rating": [3, 5], "timestamp": [881250949, 891717742],
    }  # fmt: skip
    assert str(frame["rating"].dtype) == "int8"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1\t2\t3\t4\n1\t2\t3\n", "u.data line 2: expected 4 tab-separated fields, got 3"),
        ("1\t2\t3\t4\n1\t2\tthree\t4\n", "u.data line 2: non-integer field"),
        ("1\t2\t6\t4\n", "u.data line 1: rating 6 outside 1..5"),
        ("1\t2\t0\t4\n", "u.data line 1: rating 0 outside 1..5"),
        ("0\t2\t3\t4\n", "u.data line 1: user id 0 outside 1..2147483647"),
        # once a bare OverflowError (numpy's int32/int64), which did not evict the cached archive
        ("1\t2\t3\t4\n2147483648\t2\t3\t4\n", "u.data line 2: user id 2147483648 outside 1..2147483647"),
        ("1\t4294967297\t3\t4\n", "u.data line 1: item id 4294967297 outside"),
        ("1\t2\t3\t99999999999999999999\n", "u.data line 1: timestamp 99999999999999999999 outside 0..9223372036"),
        ("1\t2\t3\t-4\n", "u.data line 1: timestamp -4 outside"),
        ("", "u.data: no ratings"),
    ],
)
def test_u_data_errors_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(MovieLensFormatError, match=message):
        parse_u_data(write(tmp_path / "u.data", body))


def test_u_item_reads_latin1_titles(tmp_path: Path) -> None:
    text = f"1|Café Society (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Caf%E9{GENRES}\n"
    frame = parse_u_item(write(tmp_path / "u.item", text, "latin-1"))
    assert frame.loc[0, "title"] == "Café Society (1995)"
    assert frame.loc[0, "item_id"] == 1 and frame.loc[0, "drama"] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"1|A (1995)|||url{GENRES}\n2|B (1995)|||url|0\n", r"u.item line 2: expected 24 '\|'-separated fields, got 6"),
        (f"x|A (1995)|||url{GENRES}\n", "u.item line 1: item id and genre flags must be integers"),
        (f"1|A (1995)|||url{GENRES}\n1|B (1995)|||url{GENRES}\n", "u.item line 2: duplicate item id 1"),
        (f"2147483648|A (1995)|||url{GENRES}\n", "u.item line 1: item id 2147483648 outside 1..2147483647"),
        (f"1|A (1995)|||url{GENRES[:-2]}|300\n", "u.item line 1: genre flag 300 outside 0..1"),  # was int8 44
    ],
)
def test_u_item_errors_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(MovieLensFormatError, match=message):
        parse_u_item(write(tmp_path / "u.item", body, "latin-1"))


def test_links_keep_missing_tmdb_ids_as_na(tmp_path: Path) -> None:
    frame = parse_links(write(tmp_path / "links.csv", "movieId,imdbId,tmdbId\n1,0114709,862\n2,0113497,\n"))
    assert list(frame.columns) == ["movie_id", "imdb_id", "tmdb_id"]
    assert frame["imdb_id"].tolist() == [114709, 113497]
    assert frame["tmdb_id"].iloc[0] == 862 and frame["tmdb_id"].isna().iloc[1]


def test_links_and_movies_errors(tmp_path: Path) -> None:
    with pytest.raises(MovieLensFormatError, match="links.csv line 1: expected header"):
        parse_links(write(tmp_path / "links.csv", "id,imdb,tmdb\n1,2,3\n"))
    with pytest.raises(MovieLensFormatError, match="links.csv line 3: non-integer id"):
        parse_links(write(tmp_path / "links.csv", "movieId,imdbId,tmdbId\n1,2,3\nx,2,3\n"))
    with pytest.raises(MovieLensFormatError, match="movies.csv line 2: expected 3 fields"):
        parse_movies(write(tmp_path / "movies.csv", "movieId,title,genres\n1,Toy Story (1995)\n"))
    movies = parse_movies(
        write(tmp_path / "movies.csv", 'movieId,title,genres\n1,"Usual Suspects, The (1995)",Crime\n')
    )
    assert movies.loc[0, "title"] == "Usual Suspects, The (1995)"


@pytest.mark.parametrize(
    ("body", "message"),
    [  # a film listed twice once had its ratings counted under both TMDB ids; 20 digits an OverflowError
        ("1,114709,862\n2,113497,8844\n1,114709,9999\n", "links.csv line 4: movieId 1 is already listed on line 2"),
        ("1,114709,-862\n", "links.csv line 2: tmdbId -862 outside 1..9223372036854775807"),
        ("1,114709,0\n", "links.csv line 2: tmdbId 0 outside"),
        ("1,0,862\n", "links.csv line 2: imdbId 0 outside"),
        ("1,114709,99999999999999999999\n", "links.csv line 2: tmdbId 99999999999999999999 outside"),
        ("4294967297,114709,862\n", "links.csv line 2: movieId 4294967297 outside 1..2147483647"),
    ],
)
def test_links_refuse_a_film_listed_twice_and_ids_out_of_range(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(MovieLensFormatError, match=f"^{message}"):
        parse_links(write(tmp_path / "links.csv", "movieId,imdbId,tmdbId\n" + body))


def test_movies_refuse_a_film_listed_twice_and_name_a_byte_that_is_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(MovieLensFormatError, match="^movies.csv line 3: movieId 1 is already listed on line 2"):
        parse_movies(write(tmp_path / "movies.csv", "movieId,title,genres\n1,A (1995),Drama\n1,B (1995),Drama\n"))
    (tmp_path / "movies.csv").write_bytes(b"movieId,title,genres\n1,A (1995),Drama\n2,Caf\xe9 (1995),Drama\n")
    with pytest.raises(MovieLensFormatError, match=r"^movies.csv line 3: not valid UTF-8 \(byte 0xe9 at column 6\)"):
        parse_movies(tmp_path / "movies.csv")


def test_every_parser_returns_snake_case_columns(tmp_path: Path) -> None:
    frames = [
        parse_u_data(write(tmp_path / "u.data", "196\t242\t3\t881250949\n")),
        parse_u_item(write(tmp_path / "u.item", f"1|Toy Story (1995)|01-Jan-1995||http://x{GENRES}\n", "latin-1")),
        parse_ratings_csv(write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,100\n")),
        parse_movies(write(tmp_path / "movies.csv", "movieId,title,genres\n1,Toy Story (1995),Animation\n")),
        parse_links(write(tmp_path / "links.csv", "movieId,imdbId,tmdbId\n1,114709,862\n")),
    ]
    columns = [column for frame in frames for column in frame.columns]
    assert [column for column in columns if not re.fullmatch(r"[a-z][a-z0-9_]*", column)] == []


def test_an_ml_latest_value_stored_with_the_files_column_names_reads_as_snake_case() -> None:
    links = pd.DataFrame({"movieId": [1], "imdbId": [114709], "tmdbId": pd.array([862], dtype="Int64")})
    movies = pd.DataFrame({"movieId": [1], "title": ["Toy Story (1995)"], "genres": ["Animation"]})
    ratings = pd.DataFrame({"user_id": [1], "movie_id": [1], "rating": [4.0], "timestamp": [100]})
    stored = MovieLensLatest(ratings=ratings, movies=movies, links=links)
    assert list(stored.links.columns) == ["movie_id", "imdb_id", "tmdb_id"]
    assert list(stored.movies.columns) == ["movie_id", "title", "genres"]
