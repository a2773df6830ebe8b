"""The MovieLens-format fixture writer (movielens_fixtures.py) must lay files out like the releases,
or the tests built on it prove nothing."""

from __future__ import annotations

import zipfile

import pytest

from cfrec_assets.pipeline import movielens_files as movielens
from cfrec_testkit.movielens_fixtures import write_movielens_fixture


def test_fixture_files_are_deterministic_and_laid_out_like_the_releases(tmp_path):
    first = write_movielens_fixture(tmp_path / "a", n_users=5, n_items=8, n_ratings=20, seed=4)
    again = write_movielens_fixture(tmp_path / "b", n_users=5, n_items=8, n_ratings=20, seed=4)
    other = write_movielens_fixture(tmp_path / "c", n_users=5, n_items=8, n_ratings=20, seed=5)
    for name in ("ml-100k/u.data", "ml-100k/u.item", "ml-latest-small/links.csv", "ml-latest-small/movies.csv"):
        assert (first.root / name).read_bytes() == (again.root / name).read_bytes(), name
    assert (first.root / "ml-100k/u.data").read_bytes() != (other.root / "ml-100k/u.data").read_bytes()
    with zipfile.ZipFile(first.ml100k_zip) as bundle:
        assert set(movielens.ML100K_MEMBERS) <= set(bundle.namelist())
        assert all(n.startswith("ml-100k/") for n in bundle.namelist())
    with zipfile.ZipFile(first.ml_latest_zip) as bundle:
        assert set(movielens.ML_LATEST_MEMBERS) <= set(bundle.namelist())
    ratings = movielens.parse_u_data(first.ml100k_dir / "u.data")
    assert len(ratings) == 20 and not ratings.duplicated(["user_id", "item_id"]).any()
    assert set(ratings.user_id) == set(range(1, 6)) and set(ratings.item_id) == set(range(1, 9))
    assert len(movielens.parse_u_item(first.ml100k_dir / "u.item")) == 8


def test_fixture_rejects_impossible_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_ratings must be in"):
        write_movielens_fixture(tmp_path, n_users=2, n_items=3, n_ratings=7)
