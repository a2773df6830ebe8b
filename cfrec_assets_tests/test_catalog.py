"""Catalog sources, and the restricted unpickler that refuses anything but ids."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from cfrec_assets.pipeline.catalog import CatalogError, load_catalog_ids


class Exploit:
    """Pickles to a call of os.system: what a malicious movie_ids.pkl would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "write",
    [
        lambda p: joblib.dump([862, 710, "11", 862], p),
        lambda p: joblib.dump(np.array([862, 710, 11], dtype=np.int64), p),
        lambda p: pickle.dump(np.array([862, 710, 11], dtype=np.int32), p.open("wb")),
        lambda p: pickle.dump((np.int64(862), 710, 11), p.open("wb")),
        lambda p: pickle.dump({862, 710, 11}, p.open("wb"), protocol=2),
    ],
    ids=["joblib-list", "joblib-array", "pickle-array", "pickle-numpy-scalars", "pickle-set-protocol2"],
)
def test_pickled_catalogs_load_sorted_unique(tmp_path: Path, write) -> None:
    path = tmp_path / "movie_ids.pkl"
    write(path)
    assert load_catalog_ids(path) == [11, 710, 862]


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "movie_ids.pkl"
    joblib.dump([862, Exploit(marker)], path)
    with pytest.raises(CatalogError, match=r"refusing to unpickle posix\.system"):
        load_catalog_ids(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (np.array([862, 11], dtype=object), "dtype object"),
        (np.array([1.5]), "dtype float64"),
        (pd.Series([862, 11]), "refusing to unpickle pandas"),
        ({"ids": [1]}, "refusing|expected a list"),
        ([862, 2.5], "entry 1 .* is not a TMDB id"),
        ([862, -3], "not a positive TMDB id"),
        ([True], "boolean"),
        ([], "empty"),
    ],
)
def test_other_pickled_content_is_refused(tmp_path: Path, obj, message: str) -> None:
    path = tmp_path / "movie_ids.joblib"
    joblib.dump(obj, path)
    with pytest.raises(CatalogError, match=message):
        load_catalog_ids(path)


def test_compressed_or_truncated_pickles_are_refused(tmp_path: Path) -> None:
    compressed = tmp_path / "c.pkl"
    joblib.dump([1, 2], compressed, compress=3)
    with pytest.raises(CatalogError, match="not an uncompressed pickle"):
        load_catalog_ids(compressed)
    truncated = tmp_path / "t.pkl"
    truncated.write_bytes(pickle.dumps(list(range(100)))[:-20])
    with pytest.raises(CatalogError, match="unreadable pickle"):
        load_catalog_ids(truncated)


def test_json_and_csv_catalogs(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("[862, 710, 862]")
    assert load_catalog_ids(tmp_path / "c.json") == [710, 862]
    (tmp_path / "c.csv").write_text("tmdb_id,title\n862,Toy Story\n710,GoldenEye\n")
    assert load_catalog_ids(tmp_path / "c.csv") == [710, 862]
    (tmp_path / "bad.csv").write_text("id\n862\n")
    with pytest.raises(CatalogError, match="no 'tmdb_id' column"):
        load_catalog_ids(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text('{"ids": [1]}')
    with pytest.raises(CatalogError, match="expected a JSON list"):
        load_catalog_ids(tmp_path / "bad.json")
    with pytest.raises(CatalogError, match="unsupported catalog format '.txt'"):
        (tmp_path / "c.txt").write_text("1")
        load_catalog_ids(tmp_path / "c.txt")
    with pytest.raises(CatalogError, match="not found"):
        load_catalog_ids(tmp_path / "missing.json")
