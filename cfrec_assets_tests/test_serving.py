"""Serving: verified loading, predictions equal to Surprise's, fast top-N equal to a slow reference."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from surprise import SVD, BaselineOnly

from cfrec_serving.loader import (
    ArtifactVerificationError,
    DeployedModel,
    NoDeployedModelError,
    current_version,
    default_cache_dir,
    load_deployed,
    top_n_indices,
)
from cfrec_testkit.hostile_artifacts import call_unless_blocked_on
from cfrec_testkit.models import (
    TinyModelVersion,
    make_ratings_frame,
    promote_version,
    train_tiny_svd,
    write_model_version,
)
from cfrec_testkit.shared_data import real_movielens_or_skip

UNKNOWN_USER = "00000000-dead-beef-0000-000000000000"
UNKNOWN_MOVIE = 999_999_999


@pytest.fixture
def tiny(tmp_path: Path) -> TinyModelVersion:
    return write_model_version(tmp_path / "models")


@pytest.fixture
def serving(tmp_path: Path, tiny: TinyModelVersion) -> Path:
    return promote_version(tiny, tmp_path / "serving")


@pytest.fixture
def model(serving: Path) -> DeployedModel:
    return load_deployed(serving)


def reference_top_n(algo: SVD, user_id: str, movies, seen, n: int) -> list[int]:
    """Slow but obviously right: Surprise's own predict over every unseen movie."""
    scored = [(algo.predict(user_id, movie, clip=False).est, movie) for movie in movies if movie not in seen]
    return [movie for _, movie in sorted(scored, key=lambda pair: (-pair[0], pair[1]))[:n]]


def seen_by(ratings: pd.DataFrame, user_id: str) -> set[int]:
    return set(ratings.loc[ratings.user_id == user_id, "tmdb_id"])


def test_predict_equals_surprise_for_every_known_pair(tiny, model):
    assert model.version == tiny.version
    for user_id in tiny.ratings.user_id.unique():
        for movie in tiny.ratings.tmdb_id.unique():
            prediction = model.predict(user_id, int(movie))
            assert prediction.fallback is None
            assert prediction.rating == tiny.algo.predict(user_id, int(movie)).est


@pytest.mark.parametrize(
    ("user_id", "movie", "fallback"),
    [
        (UNKNOWN_USER, 107, "unknown_user"),
        ("ml_1", UNKNOWN_MOVIE, "unknown_movie"),
        (UNKNOWN_USER, UNKNOWN_MOVIE, "unknown_user_and_movie"),
    ],
)
def test_fallbacks_are_flagged_and_match_surprise(tiny, model, user_id, movie, fallback):
    trainset, algo = tiny.trainset, tiny.algo
    mu = trainset.global_mean
    expected = {
        "unknown_user": mu + algo.bi[trainset.to_inner_iid(107)],
        "unknown_movie": mu + algo.bu[trainset.to_inner_uid("ml_1")],
        "unknown_user_and_movie": mu,
    }[fallback]
    prediction = model.predict(user_id, movie)
    assert prediction.fallback == fallback
    assert prediction.rating == pytest.approx(expected, abs=1e-12)
    assert prediction.rating == algo.predict(user_id, movie).est


def test_predictions_are_clipped_like_surprise(tiny):
    algo = tiny.algo
    algo.bi[0] += 10.0  # push one movie far above the scale, another far below
    algo.bi[1] -= 10.0
    model = DeployedModel(algo, tiny.trainset)
    high, low = (tiny.trainset.to_raw_iid(inner) for inner in (0, 1))
    assert model.predict("ml_1", high).rating == 5.0 == algo.predict("ml_1", high).est
    assert model.predict("ml_1", low).rating == 0.5 == algo.predict("ml_1", low).est
    assert model.predict(UNKNOWN_USER, high).rating == 5.0


def test_ids_of_the_wrong_type_are_refused(model):
    with pytest.raises(TypeError, match="tmdb_id must be an int"):
        model.predict("ml_1", "107")
    with pytest.raises(TypeError, match="user_id must be a str"):
        model.predict(1, 107)
    assert model.predict("ml_1", np.int64(107)) == model.predict("ml_1", 107)


def test_recommend_equals_slow_surprise_reference(tiny, model):
    movies = sorted(tiny.ratings.tmdb_id.unique())
    for user_id in tiny.ratings.user_id.unique():
        result = model.recommend(user_id, n=7)
        assert result.fallback is None
        assert list(result.items) == reference_top_n(tiny.algo, user_id, movies, seen_by(tiny.ratings, user_id), 7)
        assert list(result.scores) == pytest.approx(
            [tiny.algo.predict(user_id, movie).est for movie in result.items], abs=1e-12
        )
        assert not set(result.items) & seen_by(tiny.ratings, user_id)


def test_recommend_can_include_seen_movies(tiny, model):
    movies = sorted(tiny.ratings.tmdb_id.unique())
    result = model.recommend("ml_1", n=len(movies) + 5, exclude_seen=False)
    assert list(result.items) == reference_top_n(tiny.algo, "ml_1", movies, set(), len(movies))


def test_recommend_ranks_by_unclipped_score_with_clipped_scores(tiny):
    algo = tiny.algo
    algo.bi[:3] += [10.0, 12.0, 11.0]  # three movies predicted above 5 for everyone
    model = DeployedModel(algo, tiny.trainset)
    result = model.recommend(UNKNOWN_USER, n=3)
    assert [tiny.trainset.to_inner_iid(movie) for movie in result.items] == [1, 2, 0]
    assert result.scores == (5.0, 5.0, 5.0)


def test_recommend_within_a_catalog_counts_unknown_movies(tiny, model):
    unseen = sorted(set(tiny.ratings.tmdb_id) - seen_by(tiny.ratings, "ml_1"))
    catalog = unseen[:5] + [unseen[0], UNKNOWN_MOVIE]  # duplicates are scored once
    result = model.recommend("ml_1", n=10, catalog=catalog)
    assert list(result.items) == reference_top_n(tiny.algo, "ml_1", unseen[:5], set(), 10)
    assert result.skipped_unknown_movies == 1


def test_unknown_user_gets_best_bias_movies_flagged(tiny, model):
    movies = sorted(tiny.ratings.tmdb_id.unique())
    result = model.recommend(UNKNOWN_USER, n=5)
    assert result.fallback == "unknown_user"
    assert list(result.items) == reference_top_n(tiny.algo, UNKNOWN_USER, movies, set(), 5)


def test_recommend_validates_n(model):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            model.recommend("ml_1", n=bad)


def test_top_n_breaks_ties_by_tmdb_id_whatever_the_input_order():
    scores = np.array([1.0, 2.0, 2.0, 2.0, 0.0, 2.0])
    tmdb = np.array([5, 40, 30, 90, 1, 10])
    assert tmdb[top_n_indices(scores, tmdb, 2)].tolist() == [10, 30]
    rng = np.random.default_rng(1)
    for _ in range(20):
        order = rng.permutation(len(scores))
        assert tmdb[order][top_n_indices(scores[order], tmdb[order], 3)].tolist() == [10, 30, 40]
    assert tmdb[top_n_indices(scores, tmdb, 10)].tolist() == [10, 30, 40, 90, 5, 1]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def served_file(serving: Path, name: str) -> Path:
    manifest = json.loads((serving / "manifest.json").read_text())
    return serving / "versions" / manifest["version"] / name


def test_tampered_artifact_is_refused(serving):
    flip_a_byte(served_file(serving, "cf_model.npz"))
    with pytest.raises(ArtifactVerificationError, match="cf_model.npz does not match the sha256"):
        load_deployed(serving)


@pytest.mark.parametrize("name", ["svd_model.pkl", "cf_trainset.pkl"])
def test_tampered_pickle_is_refused_on_the_pickle_path(tmp_path, name):
    serving = promote_version(write_model_version(tmp_path / "models", pickles_only=True), tmp_path / "serving")
    flip_a_byte(served_file(serving, name))
    with pytest.raises(ArtifactVerificationError, match=f"{name} does not match the sha256"):
        load_deployed(serving, allow_pickle=True)


class _SideEffectOnLoad:
    """Unpickling this runs os.mkdir(marker): proof of whether a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_swapped_pickle_is_refused_before_it_is_unpickled(tmp_path):
    serving = promote_version(write_model_version(tmp_path / "models", pickles_only=True), tmp_path / "serving")
    marker = tmp_path / "pickle-code-ran"
    joblib.dump(_SideEffectOnLoad(marker), served_file(serving, "svd_model.pkl"))
    with pytest.raises(ArtifactVerificationError, match="svd_model.pkl .* bytes, expected"):  # refused by size
        load_deployed(serving, allow_pickle=True)
    assert not marker.exists()


def test_default_load_never_unpickles(serving, tmp_path):
    """The pickles beside the npz are not read at all: code planted in them never runs."""
    marker = tmp_path / "pickle-code-ran"
    for name in ("svd_model.pkl", "cf_trainset.pkl"):
        joblib.dump(_SideEffectOnLoad(marker), served_file(serving, name))
    assert load_deployed(serving).n_users > 0
    assert not marker.exists()


def test_version_without_npz_is_refused_unless_pickles_are_allowed(tmp_path):
    old = write_model_version(tmp_path / "models", pickles_only=True)
    serving = promote_version(old, tmp_path / "serving")
    with pytest.raises(ArtifactVerificationError, match="predates the pickle-free cf_model.npz"):
        load_deployed(serving)
    model = load_deployed(serving, allow_pickle=True)
    assert model.version == old.version
    user, item = old.trainset.to_raw_uid(0), old.trainset.to_raw_iid(0)
    assert model.predict(user, item).rating == old.algo.predict(user, item).est


def test_swapped_valid_model_of_another_run_is_refused(serving, tmp_path):
    other = write_model_version(tmp_path / "other", seed=7)
    for name in ("cf_model.npz", "svd_model.pkl", "cf_trainset.pkl"):
        served_file(serving, name).write_bytes((other.path / name).read_bytes())
    with pytest.raises(ArtifactVerificationError, match="does not match the sha256|bytes, expected"):
        load_deployed(serving)


def test_missing_artifact_is_refused(serving):
    served_file(serving, "cf_model.npz").unlink()
    with pytest.raises(ArtifactVerificationError, match="cf_model.npz of version .* is unreadable"):
        load_deployed(serving)


def test_nothing_deployed_and_corrupt_manifests_are_distinguished(tmp_path, serving):
    with pytest.raises(NoDeployedModelError, match="no model is deployed"):
        load_deployed(tmp_path / "empty")
    manifest_path = serving / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "version": "../../models/x"}))
    with pytest.raises(ArtifactVerificationError, match="invalid version name"):
        load_deployed(serving)
    with pytest.raises(ArtifactVerificationError, match="invalid version name"):
        current_version(serving)  # the same manifest reader: the watcher never chases that name
    manifest_path.write_text("{not json")
    with pytest.raises(ArtifactVerificationError, match="cannot trust the deployment manifest"):
        load_deployed(serving)


def test_model_and_trainset_from_different_runs_are_refused(tiny):
    _, bigger_trainset = train_tiny_svd(make_ratings_frame(n_users=31, seed=3))
    with pytest.raises(ArtifactVerificationError, match="different training runs"):
        DeployedModel(tiny.algo, bigger_trainset)
    baseline = BaselineOnly(verbose=False).fit(tiny.trainset)
    with pytest.raises(ArtifactVerificationError, match="expected a biased surprise.SVD"):
        DeployedModel(baseline, tiny.trainset)


@pytest.mark.real_data
def test_recommend_on_movielens_100k_matches_reference():
    """Real scale (943 users x 1682 movies): same top-N as Surprise (speed: bench/serving_bench.py)."""
    archive = real_movielens_or_skip() / "ml-100k.zip"
    with zipfile.ZipFile(archive) as bundle, bundle.open("ml-100k/u.data") as raw:
        ratings = pd.read_csv(raw, sep="\t", names=["user", "tmdb_id", "rating", "ts"])
    # MovieLens item ids stand in for TMDB ids: only the integer type matters here.
    ratings = ratings.assign(user_id="ml_" + ratings.user.astype(str))
    algo, trainset = train_tiny_svd(ratings, n_factors=50)
    model = DeployedModel(algo, trainset)

    movies = sorted(ratings.tmdb_id.unique())
    for user_id in ("ml_196", "ml_1", "ml_405"):
        assert list(model.recommend(user_id, n=10).items) == reference_top_n(
            algo, user_id, movies, seen_by(ratings, user_id), 10
        )


def test_the_app_path_imports_neither_pandas_nor_surprise(serving, tiny):
    """An app that loads the npz and recommends pays for numpy only (import ~0.1 s, ~30 MB)."""
    import subprocess
    import sys

    user = tiny.trainset.to_raw_uid(0)
    code = (
        "import sys; from cfrec_assets.serving import load_deployed; "
        f"model = load_deployed({str(serving)!r}); model.recommend({user!r}, 3); "
        "print(sorted(m for m in ('pandas', 'surprise', 'joblib', 'boto3', 'dagster') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_sparse_3_gib_artifact_is_refused_by_its_size_unread(serving):
    os.truncate(served_file(serving, "cf_model.npz"), 3 << 30)  # a hole: no disk, 3 GiB of zeros to read
    with pytest.raises(ArtifactVerificationError, match="refused before reading: .* is 3,221,225,472 bytes, expected"):
        load_deployed(serving)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_artifact_that_is_not_a_regular_file_is_refused_without_blocking(serving, kind):
    npz = served_file(serving, "cf_model.npz")
    npz.unlink()
    if kind == "fifo":
        os.mkfifo(npz)
    elif kind == "dev-zero":
        npz.symlink_to("/dev/zero")
    else:
        npz.mkdir()
    with pytest.raises(ArtifactVerificationError, match="cf_model.npz of version .* is not a regular file"):
        call_unless_blocked_on(npz, lambda: load_deployed(serving))


def test_record_without_a_size_is_refused(serving):
    manifest_path = serving / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"]["cf_model.npz"]["bytes"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactVerificationError, match="cf_model.npz has no valid byte size"):
        load_deployed(serving)


def test_manifest_that_is_a_fifo_or_oversized_is_refused(serving):
    manifest_path = serving / "manifest.json"
    manifest_path.unlink()
    os.mkfifo(manifest_path)
    with pytest.raises(ArtifactVerificationError, match="manifest.json is not a regular file \\(a FIFO\\)"):
        call_unless_blocked_on(manifest_path, lambda: load_deployed(serving))
    manifest_path.unlink()
    with open(manifest_path, "wb") as sparse:
        sparse.truncate(64 << 20)
    with pytest.raises(ArtifactVerificationError, match="is 67,108,864 bytes, more than the 262,144 allowed"):
        current_version(serving)


def test_deeply_nested_manifest_is_refused_before_parsing(serving):
    (serving / "manifest.json").write_bytes(b"[" * 100_000)
    with pytest.raises(ArtifactVerificationError, match="nested deeper than 32 levels"):
        load_deployed(serving)


def test_default_cache_is_per_user_never_a_shared_temp_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uid = os.geteuid()
    assert default_cache_dir({"CFREC_MODEL_CACHE_DIR": "/srv/cache", "HOME": "/home/a"}) == Path("/srv/cache")
    assert default_cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/home/a"}) == Path("/x/cache/cfrec/models")
    assert default_cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/home/a"}) == Path("/home/a/.cache/cfrec/models")
    assert default_cache_dir({}) == tmp_path / f"cfrec-model-cache-{uid}"
