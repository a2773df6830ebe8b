"""The pickle-free artifact: parity with Surprise on the pickles, and hostile archives refused."""

import hashlib
import io
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from cfrec_assets.pipeline.training import SVDParams, fit_svd, save_artifacts
from cfrec_serving.loader import ArtifactVerificationError, load_deployed, load_version
from cfrec_serving.model_arrays import ModelArrays, ModelArraysError, read_model_arrays
from cfrec_serving.targets.manifest import Promotion
from cfrec_serving.targets.target import open_target
from cfrec_testkit.hostile_artifacts import npz_with_member
from cfrec_testkit.models import make_ratings_frame, train_tiny_svd
from cfrec_testkit.shared_data import real_movielens_or_skip


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_arrays() -> ModelArrays:
    algo, trainset = train_tiny_svd(make_ratings_frame())
    titles = pd.DataFrame({"tmdb_id": [107, 114], "title": ["Toy Story", "Heat"], "year": [1995, None]})
    return ModelArrays.from_surprise(algo, trainset, titles)


def test_round_trip_keeps_every_array(tiny_arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **tiny_arrays.as_dict())
    loaded = read_model_arrays(buffer.getvalue())
    for name, array in tiny_arrays.as_dict().items():
        assert np.array_equal(getattr(loaded, name), array), name
    assert loaded.titles[list(loaded.item_ids).index(107)] == "Toy Story"
    assert loaded.years[list(loaded.item_ids).index(114)] == 0  # unknown year


class _RunsCode:
    def __reduce__(self):
        return exec, ("raise SystemExit('pickle code ran')",)


def test_object_array_is_refused_without_running_it(tiny_arrays):
    hostile = {**tiny_arrays.as_dict(), "titles": np.array([_RunsCode()] * tiny_arrays.n_items, dtype=object)}
    with pytest.raises(ModelArraysError, match="allow_pickle=False"):
        read_model_arrays(npz_bytes(**hostile))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "bu": a["bu"][:-1]}, "shapes"),
        (lambda a: {**a, "qi": a["qi"][:, :-1]}, "shapes"),
        (lambda a: {**a, "seen_indices": a["seen_indices"] + 10_000}, "outside the item table"),
        (lambda a: {**a, "seen_indptr": a["seen_indptr"][::-1].copy()}, "CSR"),
        (lambda a: {**a, "pu": np.where(a["pu"] > 0, np.nan, a["pu"])}, "non-finite"),
        (lambda a: {**a, "item_ids": a["item_ids"].astype(np.float64)}, "expected kind 'i'"),
        (lambda a: {**a, "item_ids": np.zeros_like(a["item_ids"])}, "repeat an id"),
        (lambda a: {k: v for k, v in a.items() if k != "bi"}, "missing \\['bi'\\]"),
        (lambda a: {**a, "format_version": np.array(99)}, "format_version 99"),
    ],
)
def test_malformed_archive_is_refused(tiny_arrays, change, message):
    with pytest.raises(ModelArraysError, match=message):
        read_model_arrays(npz_bytes(**change(tiny_arrays.as_dict())))


def test_not_an_archive_is_refused():
    with pytest.raises(ModelArraysError, match="not a readable .npz"):
        read_model_arrays(b"PK\x03\x04 not really a zip")


def test_hostile_npz_with_a_matching_hash_is_still_refused(tmp_path, tiny_arrays):
    """Even bytes the manifest vouches for are parsed strictly (a compromised trainer)."""
    folder = tmp_path / "v"
    folder.mkdir()
    payload = npz_bytes(**{**tiny_arrays.as_dict(), "bi": tiny_arrays.bi[:3]})
    (folder / "cf_model.npz").write_bytes(payload)
    files = {name: {"sha256": "0" * 64} for name in ("svd_model.pkl", "cf_trainset.pkl")}
    files["cf_model.npz"] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    with pytest.raises(ArtifactVerificationError, match="cf_model.npz of version v: shapes"):
        load_version(folder, files)


@pytest.mark.real_data
def test_npz_model_equals_surprise_on_the_pickles_for_every_movielens_user(tmp_path):
    """Every one of ML-100K's 943 users: predictions identical to Surprise's predict on the
    unpickled pickles (bit for bit), and the same top-10 as a Surprise-predict reference."""
    with zipfile.ZipFile(real_movielens_or_skip() / "ml-100k.zip") as bundle, bundle.open("ml-100k/u.data") as raw:
        data = pd.read_csv(raw, sep="\t", names=["user", "tmdb_id", "rating", "ts"])
    # Item ids stand in for TMDB ids (parity does not depend on the mapping).
    ratings = pd.DataFrame({"user_id": "ml_" + data.user.astype(str), "tmdb_id": data.tmdb_id, "rating": data.rating})
    ratings = ratings.sort_values(["user_id", "tmdb_id"]).reset_index(drop=True)
    algo, trainset, _ = fit_svd(ratings, SVDParams())  # the seed settings: 100 factors, 20 epochs
    files = save_artifacts(algo, trainset, ratings.assign(source="movielens"), tmp_path / "models", "v1")
    shipped = {name: files[name]["sha256"] for name in ("cf_model.npz", "svd_model.pkl", "cf_trainset.pkl")}
    serving = tmp_path / "serving"
    open_target(serving).promote(
        tmp_path / "models" / "v1",
        Promotion(
            version="v1",
            metrics={},
            counts={},
            trained_at="2026-11-27T00:00:00+00:00",
            expected_sha256=shipped,
        ),
    )
    model = load_deployed(serving)
    pickled = joblib.load(tmp_path / "models" / "v1" / "svd_model.pkl")
    movies = np.array(sorted(ratings.tmdb_id.unique()))
    seen = ratings.groupby("user_id")["tmdb_id"].agg(set)
    rng = np.random.default_rng(0)
    users = sorted(ratings.user_id.unique())
    assert len(users) == 943
    for user in users:
        sample = [*rng.choice(movies, 25, replace=False).tolist(), 999_999]  # one unknown movie
        for movie in sample:
            assert model.predict(user, int(movie)).rating == pickled.predict(user, int(movie)).est
        scores = np.array([pickled.predict(user, int(m), clip=False).est for m in movies])
        unseen = ~np.isin(movies, list(seen[user]))
        order = np.lexsort((movies[unseen], -scores[unseen]))[:10]
        assert list(model.recommend(user, n=10).items) == movies[unseen][order].tolist(), user
    assert model.predict("new-user", int(movies[0])).fallback == "unknown_user"


def test_version_files_include_the_npz(tmp_path):
    ratings = make_ratings_frame().assign(source="app")
    algo, trainset, _ = fit_svd(ratings, SVDParams(n_factors=5, n_epochs=5))
    files = save_artifacts(algo, trainset, ratings, tmp_path, "v")
    assert {"cf_model.npz", "svd_model.pkl", "cf_trainset.pkl"} <= set(files)
    arrays = read_model_arrays(Path(tmp_path / "v" / "cf_model.npz").read_bytes())
    assert arrays.n_users == trainset.n_users and arrays.n_items == trainset.n_items


def stored_npz(tmp_path: Path, arrays: ModelArrays) -> Path:
    path = tmp_path / "stored.npz"
    path.write_bytes(npz_bytes(**arrays.as_dict()))
    return path


def test_compressed_members_are_refused_before_inflating(tmp_path, tiny_arrays):
    # 8 MB of zeros deflate to ~8 KB: the reader must refuse the method, not inflate and then complain.
    bomb = npz_with_member(stored_npz(tmp_path, tiny_arrays), tmp_path / "bomb.npz", "bu", (10**6,), deflate=True)
    with pytest.raises(ModelArraysError, match="member bu.npy is compressed .* refused before inflating"):
        read_model_arrays(bomb.read_bytes())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **tiny_arrays.as_dict())  # a valid model, but not as cfrec writes it
    with pytest.raises(ModelArraysError, match="is compressed"):
        read_model_arrays(buffer.getvalue())


@pytest.mark.parametrize(
    ("shape", "data_bytes", "message"),
    [
        ((30, 10**11), 0, "declares float64 of shape \\(30, 100000000000\\) \\(24,000,000,000,000 bytes\\)"),
        ((1000,), 16, "shape \\(1000,\\) \\(8,000 bytes\\) but holds 16 bytes"),
        ((2,), 800, "shape \\(2,\\) \\(16 bytes\\) but holds 800 bytes"),
    ],
)
def test_declared_shapes_are_checked_against_the_member_size_before_allocating(
    tmp_path, tiny_arrays, shape, data_bytes, message
):
    hostile = npz_with_member(stored_npz(tmp_path, tiny_arrays), tmp_path / "h.npz", "pu", shape, data_bytes=data_bytes)
    with pytest.raises(ModelArraysError, match=message):
        read_model_arrays(hostile.read_bytes())


def npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_unknown_or_repeated_members_are_refused(tiny_arrays):
    with pytest.raises(ModelArraysError, match="unknown members \\['extra.npy'\\], repeated \\[\\]"):
        read_model_arrays(npz_bytes(**tiny_arrays.as_dict(), extra=np.zeros(3)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in tiny_arrays.as_dict().items():
            archive.writestr(f"{name}.npy", npz_member(array))
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("bu.npy", npz_member(tiny_arrays.bu))
    with pytest.raises(ModelArraysError, match="unknown members \\[\\], repeated \\['bu.npy'\\]"):
        read_model_arrays(buffer.getvalue())


def test_fortran_ordered_and_big_endian_arrays_read_back_equal(tiny_arrays):
    arrays = {**tiny_arrays.as_dict(), "pu": np.asfortranarray(tiny_arrays.pu), "bi": tiny_arrays.bi.astype(">f8")}
    loaded = read_model_arrays(npz_bytes(**arrays))
    assert np.array_equal(loaded.pu, tiny_arrays.pu) and np.array_equal(loaded.bi, tiny_arrays.bi)
