"""Load the deployed SVD model safely and answer predict / top-N queries fast.

This is what the app imports. It reads the pickle-free ``cf_model.npz`` (numpy arrays,
``allow_pickle=False``), after checking its sha256 against the manifest; the bytes that were
hashed are the bytes that get parsed (no window to swap the file in between). Nothing is read
before it is known to be a regular file of the size the manifest records (a FIFO, ``/dev/zero``
or a 3 GiB file are refused unread), and the npz is parsed member by member, each declared
shape checked against the bytes it holds before anything is allocated. The joblib
pickles stay beside it for the app's older code; they are code, so they are only loaded on
request (``allow_pickle=True``, for versions made before the npz) and only after the same check.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cfrec_serving import settings
from cfrec_serving.artifacts import ARTIFACT_FILES, MODEL_FILE, PICKLE_FILES, SERVING_FILE, TRAINSET_FILE
from cfrec_serving.model_arrays import ModelArrays, ModelArraysError, read_model_arrays
from cfrec_serving.storage import UnsafePathError, read_regular_file
from cfrec_serving.targets.manifest import (
    CacheError,
    DeploymentError,
    TargetUnavailableError,
    nothing_deployed,
    recorded_size,
    valid_file_list,
)
from cfrec_serving.targets.s3_store import is_object_store_url
from cfrec_serving.targets.target import ServingTarget, open_target

if TYPE_CHECKING:  # Surprise, joblib and pandas load only on the pickle path: an app reading npz skips ~70 MB
    from surprise import SVD, Trainset


class ServingError(RuntimeError):
    """Base class for errors that stop the deployed model from being served."""


class NoDeployedModelError(ServingError):
    """The serving target (a folder or a bucket) has no manifest: nothing has been promoted yet."""


class ArtifactVerificationError(ServingError):
    """A manifest or artifact is missing, tampered with, or not the expected kind of model."""


class ModelCacheError(ServingError):
    """The local folder remote models are downloaded into is not safe to use (another user's,
    a symlink, a file, writable by others) or cannot be written."""


class ServingTargetUnavailableError(ArtifactVerificationError):
    """The bucket could not be read (endpoint unreachable, credentials refused, no such bucket), so
    nothing could be verified. A subclass, so code that catches ArtifactVerificationError still does."""


@dataclass(frozen=True)
class Prediction:
    """A predicted rating; ``fallback`` says which defined fallback was used, if any.

    Fallbacks: ``"unknown_user"`` -> mu + b_i, ``"unknown_movie"`` -> mu + b_u,
    ``"unknown_user_and_movie"`` -> mu. ``None`` means the full model was used.
    """

    user_id: str
    tmdb_id: int
    rating: float
    fallback: str | None


@dataclass(frozen=True)
class Recommendations:
    """Top-N movies, best first, with their predicted ratings (clipped to the scale).

    ``fallback="unknown_user"`` means the user is not in the model and the list
    is the movies with the highest learned bias (mu + b_i). Catalog movies the
    model never saw cannot be scored and are counted in ``skipped_unknown_movies``.
    """

    user_id: str
    items: tuple[int, ...]
    scores: tuple[float, ...]
    fallback: str | None
    model_version: str | None
    skipped_unknown_movies: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "items": list(self.items), "scores": list(self.scores)}


class DeployedModel:
    """A fitted biased SVD as arrays (``model_arrays.ModelArrays``), with id lookups precomputed.

    Immutable once built: the hot-reload watcher swaps whole models, never edits one.
    """

    def __init__(
        self, algo: SVD, trainset: Trainset, manifest: Mapping[str, Any] | None = None, titles: Any = None
    ) -> None:
        """From Surprise objects (the pickle path); ``titles`` (tmdb_id, title, year) names films."""
        _check_compatible(algo, trainset)
        self._init(ModelArrays.from_surprise(algo, trainset, titles), manifest)

    @classmethod
    def from_arrays(cls, arrays: ModelArrays, manifest: Mapping[str, Any] | None = None) -> DeployedModel:
        """From the pickle-free artifact's validated arrays (what ``load_deployed`` does)."""
        model = cls.__new__(cls)
        model._init(arrays, manifest)
        return model

    def _init(self, arrays: ModelArrays, manifest: Mapping[str, Any] | None) -> None:
        self.manifest = dict(manifest or {})
        self.version: str | None = self.manifest.get("version")
        self.rating_scale: tuple[float, float] = (float(arrays.rating_scale[0]), float(arrays.rating_scale[1]))
        self._arrays = arrays
        self._mu = float(arrays.global_mean)
        self._bu, self._bi = arrays.bu, arrays.bi
        self._pu, self._qi = arrays.pu, arrays.qi
        self._user_index = {str(user): inner for inner, user in enumerate(arrays.user_ids.tolist())}
        self._item_ids = arrays.item_ids
        self._item_index = {int(raw): inner for inner, raw in enumerate(arrays.item_ids.tolist())}

    @property
    def n_users(self) -> int:
        return len(self._user_index)

    @property
    def n_movies(self) -> int:
        return len(self._item_ids)

    def knows_user(self, user_id: str) -> bool:
        return user_id in self._user_index

    def rated_counts(self) -> dict[str, int]:
        """How many training ratings each known user has."""
        return dict(zip(self._arrays.user_ids.tolist(), np.diff(self._arrays.seen_indptr).tolist()))

    def title_of(self, tmdb_id: int) -> tuple[str, int | None] | None:
        """(title, year) of a film the model knows, when the artifact names it."""
        item = self._item_index.get(_check_tmdb_id(tmdb_id))
        if item is None or not self._arrays.titles[item]:
            return None
        year = int(self._arrays.years[item])
        return str(self._arrays.titles[item]), year or None

    def describe(self, tmdb_id: int) -> str:
        """ "Toy Story (1995)", or "" for a film without a title (app-only films)."""
        named = self.title_of(tmdb_id)
        if named is None:
            return ""
        title, year = named
        return f"{title} ({year})" if year else title

    def predict(self, user_id: str, tmdb_id: int) -> Prediction:
        """Predicted rating, identical to ``algo.predict(user_id, tmdb_id).est``, fallback flagged."""
        _check_user_id(user_id)
        tmdb_id = _check_tmdb_id(tmdb_id)
        user = self._user_index.get(user_id)
        item = self._item_index.get(tmdb_id)
        # Same operations in the same order as SVD.estimate, so results match bit for bit.
        estimate = self._mu
        if user is not None:
            estimate += self._bu[user]
        if item is not None:
            estimate += self._bi[item]
        if user is not None and item is not None:
            estimate += np.dot(self._qi[item], self._pu[user])
        return Prediction(user_id, tmdb_id, self._clip(estimate), _fallback(user is None, item is None))

    def recommend(
        self,
        user_id: str,
        n: int = 10,
        catalog: Iterable[int] | None = None,
        exclude_seen: bool = True,
    ) -> Recommendations:
        """Top-``n`` movies for ``user_id`` among ``catalog`` (default: every movie the model knows).

        Ranked by the unclipped score ``mu + b_u + b_i + q_i . p_u`` (clipping would
        tie everything above the scale's top), ties broken by ascending tmdb id.
        With ``exclude_seen`` the user's training ratings are left out.
        """
        _check_user_id(user_id)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        candidates, skipped = self._candidates(catalog)
        user = self._user_index.get(user_id)
        if user is None:
            scores = self._mu + self._bi[candidates]
        else:
            if exclude_seen:
                unseen = np.ones(self.n_movies, dtype=bool)
                unseen[self._arrays.seen(user)] = False
                candidates = candidates[unseen[candidates]]
            scores = self._mu + self._bu[user] + self._bi[candidates] + self._qi[candidates] @ self._pu[user]
        best = top_n_indices(scores, self._item_ids[candidates], int(n))
        return Recommendations(
            user_id=user_id,
            items=tuple(int(item) for item in self._item_ids[candidates[best]]),
            scores=tuple(float(score) for score in np.clip(scores[best], *self.rating_scale)),
            fallback="unknown_user" if user is None else None,
            model_version=self.version,
            skipped_unknown_movies=skipped,
        )

    def _candidates(self, catalog: Iterable[int] | None) -> tuple[np.ndarray, int]:
        """Inner ids to score, and how many catalog movies were unknown to the model."""
        if catalog is None:
            return np.arange(self.n_movies), 0
        wanted = {_check_tmdb_id(tmdb_id) for tmdb_id in catalog}
        known = [self._item_index[tmdb_id] for tmdb_id in wanted if tmdb_id in self._item_index]
        return np.array(sorted(known), dtype=np.int64), len(wanted) - len(known)

    def _clip(self, estimate: float) -> float:
        low, high = self.rating_scale
        return float(max(low, min(high, estimate)))


def top_n_indices(scores: np.ndarray, tie_keys: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first, equal scores ordered by ``tie_keys``.

    ``argpartition`` picks the top ``n`` in linear time; everything tied with the
    n-th score is then kept in the pool so tie-breaking never depends on it.
    """
    if n < len(scores):
        cutoff = scores[np.argpartition(-scores, n - 1)[n - 1]]
        pool = np.flatnonzero(scores >= cutoff)
    else:
        pool = np.arange(len(scores))
    return pool[np.lexsort((tie_keys[pool], -scores[pool]))][:n]


def load_deployed(
    target: Path | str | ServingTarget,
    *,
    allow_pickle: bool = False,
    cache_dir: Path | str | None = None,
) -> DeployedModel:
    """Load the version the manifest points at from its pickle-free ``cf_model.npz``, after
    checking the file's sha256 against the manifest (``allow_pickle`` only for old versions).

    ``target`` is a serving folder, an ``s3://bucket/prefix`` URL (endpoint and keys from
    ``CFREC_S3_ENDPOINT_URL``, ``CFREC_S3_REGION``, ``CFREC_S3_ACCESS_KEY_ID``,
    ``CFREC_S3_SECRET_ACCESS_KEY``) or an opened target (``targets.open_target``). Remote files
    are downloaded into ``cache_dir`` (default: :func:`default_cache_dir`), verified, and reused while
    their sha256 still matches; that folder must be this user's alone (``ModelCacheError`` if not).
    """
    opened = _opened(target)
    manifest = _trusted_manifest(opened)
    if manifest is None:
        raise NoDeployedModelError(nothing_deployed(opened.describe()))
    names = ARTIFACT_FILES if allow_pickle else (SERVING_FILE,)
    try:
        folder = opened.version_folder(manifest, names, cache_dir=Path(cache_dir or default_cache_dir()))
    except CacheError as error:
        raise ModelCacheError(
            f"cannot use the model cache: {error} ({settings.MODEL_CACHE_DIR.name} or cache_dir choose another folder)"
        ) from None
    except TargetUnavailableError as error:
        raise ServingTargetUnavailableError(f"cannot reach the deployed model: {error}") from None
    except DeploymentError as error:
        raise ArtifactVerificationError(f"cannot fetch the deployed model: {error}") from None
    return load_version(folder, manifest["files"], manifest, allow_pickle=allow_pickle)


def current_version(target: Path | str | ServingTarget) -> str | None:
    """The version the manifest points at (None: nothing deployed); reads the manifest only."""
    manifest = _trusted_manifest(_opened(target))
    return None if manifest is None else manifest["version"]


def _opened(target: Path | str | ServingTarget) -> ServingTarget:
    """A folder or URL opened as a target (``s3://`` with the app's environment), or ``target`` itself."""
    if isinstance(target, str) and is_object_store_url(target):
        return open_target_from_env(target)
    return open_target(target) if isinstance(target, (str, Path)) else target


def _trusted_manifest(target: ServingTarget) -> dict[str, Any] | None:
    try:
        return target.read_manifest()
    except TargetUnavailableError as error:
        raise ServingTargetUnavailableError(f"cannot reach the deployment manifest: {error}") from None
    except DeploymentError as error:
        raise ArtifactVerificationError(f"cannot trust the deployment manifest: {error}") from None


def open_target_from_env(url: str | Path, environ: Mapping[str, str] | None = None) -> ServingTarget:
    """A folder, or an ``s3://`` target with the endpoint and credentials from the app's
    environment (``CFREC_S3_*``, read through :mod:`cfrec_serving.settings`)."""
    return open_target(
        url,
        endpoint_url=settings.S3_ENDPOINT_URL.read(environ),
        region=settings.S3_REGION.read(environ),
        access_key_id=settings.S3_ACCESS_KEY_ID.read(environ),
        secret_access_key=settings.S3_SECRET_ACCESS_KEY.read(environ),
    )


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where remote models are cached: ``$CFREC_MODEL_CACHE_DIR``, else this user's cache folder
    (``$XDG_CACHE_HOME/cfrec/models``, ``~/.cache/cfrec/models``), else a per-user temp folder.
    Never a path shared between users: another user could plant ``<cache>/<version>`` there."""
    if chosen := settings.MODEL_CACHE_DIR.read(environ):
        return Path(chosen)
    environ = os.environ if environ is None else environ  # the OS's own variables, not cfrec settings
    xdg_cache, home = environ.get("XDG_CACHE_HOME", ""), environ.get("HOME", "")
    if os.path.isabs(xdg_cache):  # the XDG spec ignores a relative value
        return Path(xdg_cache) / "cfrec" / "models"
    if os.path.isabs(home):
        return Path(home) / ".cache" / "cfrec" / "models"
    return Path(tempfile.gettempdir()) / f"cfrec-model-cache-{os.geteuid()}"


def load_version(
    folder: Path,
    files: Mapping[str, Any],
    manifest: Mapping[str, Any] | None = None,
    *,
    allow_pickle: bool = False,
) -> DeployedModel:
    """The model in ``folder``: each artifact read once, checked against ``files[name]["sha256"]``
    and parsed from those very bytes (a file swapped on disk meanwhile is never loaded).

    Reads ``cf_model.npz`` (never unpickles). A version from before that artifact has only the
    pickles: refused unless ``allow_pickle`` (then verified and unpickled, as the old loader did).
    """
    version = (manifest or {}).get("version") or folder.name
    artifacts = {name: files[name] for name in ARTIFACT_FILES if name in files} if isinstance(files, Mapping) else None
    if not valid_file_list(artifacts):  # other files a record lists (the training table) are not loaded
        listed = sorted(files) if isinstance(files, Mapping) else files
        raise ArtifactVerificationError(
            f"manifest lists {listed}, expected {sorted(ARTIFACT_FILES)} or {SERVING_FILE} alone"
        )
    if SERVING_FILE in files:
        try:
            arrays = read_model_arrays(_read_verified(folder / SERVING_FILE, files[SERVING_FILE], version))
        except ModelArraysError as error:
            raise ArtifactVerificationError(f"{SERVING_FILE} of version {version}: {error}") from None
        return DeployedModel.from_arrays(arrays, manifest)
    if not allow_pickle:
        raise ArtifactVerificationError(
            f"version {version} predates the pickle-free {SERVING_FILE} (it has only pickles, which are code): "
            "retrain and promote a new version, or pass allow_pickle=True to load its verified pickles"
        )
    loaded = {name: _unpickle(io.BytesIO(_read_verified(folder / name, files[name], version))) for name in PICKLE_FILES}
    return DeployedModel(loaded[MODEL_FILE], loaded[TRAINSET_FILE], manifest)


def _read_verified(path: Path, record: Any, version: str) -> bytes:
    """The file's bytes, read only if it is a regular file of the recorded size, and hashed."""
    expected = record.get("sha256") if isinstance(record, Mapping) else None
    if not isinstance(expected, str):
        raise ArtifactVerificationError(f"manifest has no sha256 for {path.name}")
    try:
        payload = read_regular_file(path, recorded_size(record, path.name), exact=True)
    except DeploymentError as error:
        raise ArtifactVerificationError(f"manifest: {error}") from None
    except UnsafePathError as error:
        raise ArtifactVerificationError(f"{path.name} of version {version} refused before reading: {error}") from None
    except OSError as error:
        raise ArtifactVerificationError(f"{path.name} of version {version} is unreadable: {error}") from None
    if hashlib.sha256(payload).hexdigest() != expected:
        raise ArtifactVerificationError(
            f"{path} does not match the sha256 in the manifest (tampered or swapped); refusing to load it"
        )
    return payload


def _unpickle(payload: io.BytesIO) -> Any:
    import joblib

    return joblib.load(payload)


def _check_compatible(algo: Any, trainset: Any) -> None:
    """Refuse objects the vectorised scoring would silently mis-handle."""
    from surprise import SVD, Trainset

    if not isinstance(algo, SVD) or not algo.biased:
        raise ArtifactVerificationError(f"{MODEL_FILE} holds {type(algo).__name__}, expected a biased surprise.SVD")
    if not isinstance(trainset, Trainset):
        raise ArtifactVerificationError(f"{TRAINSET_FILE} holds {type(trainset).__name__}, expected a Trainset")
    shapes = (len(algo.bu), len(algo.pu), len(algo.bi), len(algo.qi))
    if shapes != (trainset.n_users, trainset.n_users, trainset.n_items, trainset.n_items):
        raise ArtifactVerificationError(
            f"{MODEL_FILE} and {TRAINSET_FILE} come from different training runs "
            f"(model users/items {shapes[0]}/{shapes[2]}, trainset {trainset.n_users}/{trainset.n_items})"
        )
    raw_items = (trainset.to_raw_iid(inner) for inner in trainset.all_items())
    if not all(isinstance(raw, (int, np.integer)) and not isinstance(raw, bool) for raw in raw_items):
        raise ArtifactVerificationError(f"{TRAINSET_FILE} has non-integer movie ids; expected TMDB ids")


def _check_user_id(user_id: Any) -> None:
    if not isinstance(user_id, str):
        raise TypeError(f"user_id must be a str, got {type(user_id).__name__}")


def _check_tmdb_id(tmdb_id: Any) -> int:
    # A str "862" would silently miss every movie (the keys are ints), so refuse it.
    if isinstance(tmdb_id, bool) or not isinstance(tmdb_id, (int, np.integer)):
        raise TypeError(f"tmdb_id must be an int, got {type(tmdb_id).__name__}")
    return int(tmdb_id)


def _fallback(unknown_user: bool, unknown_movie: bool) -> str | None:
    if unknown_user and unknown_movie:
        return "unknown_user_and_movie"
    if unknown_user:
        return "unknown_user"
    if unknown_movie:
        return "unknown_movie"
    return None
