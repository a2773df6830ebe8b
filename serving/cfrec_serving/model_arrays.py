"""The pickle-free serving artifact: a fitted SVD as plain numpy arrays in one ``.npz``.

Why npz: NumPy reads it with ``allow_pickle=False``, which refuses object arrays, so loading
can never run code (a joblib/pickle file is a program); it needs nothing beyond numpy, maps
one-to-one onto the arrays ``serving`` computes with, and loads without rebuilding Surprise's
dict-of-lists trainset. Stored uncompressed: the factors are floats that barely compress, and
reading is then a copy, not an inflate. The reader relies on that: it parses the archive itself
(not ``np.load``) and refuses a compressed member before inflating it, and a member whose header
declares a shape its bytes do not hold before allocating the array.

Layout (``FORMAT_VERSION`` 1), rows in Surprise's inner order::

    format_version ()  int64    rating_scale (2,)  float64   global_mean ()  float64
    user_ids (U,)      str      bu (U,)            float64   pu (U, k)       float64
    item_ids (I,)      int64    bi (I,)            float64   qi (I, k)       float64
    seen_indptr (U+1,) int64    seen_indices (nnz,) int32    (CSR: the items each user rated)
    titles (I,)        str      years (I,)         int32     ("" / 0 where unknown)
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is heavy; the app's serving path never needs it
    import pandas as pd

FORMAT_VERSION = 1


class ModelArraysError(ValueError):
    """The archive is not a valid cfrec model: wrong keys, kinds, shapes or values."""


@dataclass(frozen=True)
class ModelArrays:
    """A fitted biased SVD, its ids and its users' seen items, validated."""

    format_version: np.ndarray
    rating_scale: np.ndarray
    global_mean: np.ndarray
    user_ids: np.ndarray
    bu: np.ndarray
    pu: np.ndarray
    item_ids: np.ndarray
    bi: np.ndarray
    qi: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    titles: np.ndarray
    years: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def seen(self, user: int) -> np.ndarray:
        """Inner ids of the items inner user ``user`` rated in training."""
        return self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]

    @classmethod
    def from_surprise(cls, algo: Any, trainset: Any, titles: pd.DataFrame | None = None) -> ModelArrays:
        """Arrays of a fitted ``surprise.SVD`` and its trainset; ``titles`` (tmdb_id, title, year)
        names the films, where known."""
        users = [trainset.to_raw_uid(inner) for inner in trainset.all_users()]
        items = np.array([trainset.to_raw_iid(inner) for inner in trainset.all_items()], dtype=np.int64)
        lengths = np.array([len(trainset.ur[inner]) for inner in trainset.all_users()], dtype=np.int64)
        indices = [item for inner in trainset.all_users() for item, _ in sorted(trainset.ur[inner])]
        arrays = cls(
            format_version=np.array(FORMAT_VERSION, dtype=np.int64),
            rating_scale=np.array(trainset.rating_scale, dtype=np.float64),
            global_mean=np.array(trainset.global_mean, dtype=np.float64),
            user_ids=np.array(users, dtype=str),
            bu=np.asarray(algo.bu, dtype=np.float64),
            pu=np.asarray(algo.pu, dtype=np.float64),
            item_ids=items,
            bi=np.asarray(algo.bi, dtype=np.float64),
            qi=np.asarray(algo.qi, dtype=np.float64),
            seen_indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            seen_indices=np.array(indices, dtype=np.int32),
            **_title_arrays(items, titles),
        )
        return validate(arrays.as_dict())

    @classmethod
    def from_factors(
        cls,
        *,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        global_mean: float,
        bu: np.ndarray,
        pu: np.ndarray,
        bi: np.ndarray,
        qi: np.ndarray,
        seen_indptr: np.ndarray,
        seen_indices: np.ndarray,
        rating_scale: np.ndarray,
        titles: pd.DataFrame | None = None,
    ) -> ModelArrays:
        """Arrays of a model fitted elsewhere (the pipeline's Spark ALS trainer), validated like any other."""
        items = np.asarray(item_ids, dtype=np.int64)
        arrays = cls(
            format_version=np.array(FORMAT_VERSION, dtype=np.int64),
            rating_scale=np.asarray(rating_scale, dtype=np.float64),
            global_mean=np.array(global_mean, dtype=np.float64),
            user_ids=np.asarray(user_ids, dtype=str),
            bu=bu,
            pu=pu,
            item_ids=items,
            bi=bi,
            qi=qi,
            seen_indptr=seen_indptr,
            seen_indices=seen_indices,
            **_title_arrays(items, titles),
        )
        return validate(arrays.as_dict())

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def write_model_arrays(arrays: ModelArrays, path: Path) -> None:
    """Write ``arrays`` to ``path`` (an ``.npz``; the caller makes it atomic)."""
    with open(path, "wb") as handle:
        np.savez(handle, **arrays.as_dict())


def read_model_arrays(payload: bytes) -> ModelArrays:
    """Parse and validate archive bytes; never unpickles (object arrays are refused), never
    allocates more than the archive holds (each member's declared size is checked first)."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            members = archive.infolist()
            names = [info.filename for info in members]
            unknown = sorted(set(names) - {f"{name}.npy" for name in _KINDS})
            repeated = sorted({name for name in names if names.count(name) > 1})
            if unknown or repeated:
                raise ModelArraysError(f"unknown members {unknown}, repeated {repeated}: not a cfrec model archive")
            found = {info.filename.removesuffix(".npy"): _read_member(archive, info, len(payload)) for info in members}
    except ModelArraysError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ModelArraysError(f"not a readable .npz archive: {error}") from None
    return validate(found)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, archive_bytes: int) -> np.ndarray:
    """One ``.npy`` member, its header checked against the bytes it holds before the array exists."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise ModelArraysError(
            f"member {info.filename} is compressed (zip method {info.compress_type}); cfrec stores members "
            "uncompressed, so it is refused before inflating"
        )
    if info.file_size != info.compress_size or info.file_size > archive_bytes:
        raise ModelArraysError(f"member {info.filename} claims {info.file_size:,} bytes: not in this archive")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise ModelArraysError(f"member {info.filename} is .npy format {version}, expected 1.0 or 2.0")
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = header(member)
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or not dtype.itemsize:
            raise ModelArraysError(
                f"member {info.filename} holds {dtype} values: only plain numbers and strings are read "
                "(object arrays would need unpickling, which allow_pickle=False refuses)"
            )
        count = math.prod(shape)
        held = info.file_size - member.tell()
        if count * dtype.itemsize != held:
            raise ModelArraysError(
                f"member {info.filename} declares {dtype} of shape {shape} ({count * dtype.itemsize:,} bytes) "
                f"but holds {held:,} bytes"
            )
        array = np.empty(count, dtype)
        _read_into(member, array.view(np.uint8), info.filename)
    return array.reshape(shape, order="F" if fortran_order else "C")


def _read_into(member: io.BufferedIOBase, target: np.ndarray, name: str) -> None:
    """Fill ``target`` (bytes) from ``member`` in bounded chunks (the last read checks the CRC)."""
    filled = 0
    while filled < len(target):
        chunk = member.read(min(len(target) - filled, 1 << 24))
        if not chunk:
            raise ModelArraysError(f"member {name} ends after {filled:,} of its {len(target):,} bytes")
        target[filled : filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
        filled += len(chunk)


_KINDS = {  # name: (numpy kind, number of dimensions)
    "format_version": ("i", 0), "rating_scale": ("f", 1), "global_mean": ("f", 0),
    "user_ids": ("U", 1), "bu": ("f", 1), "pu": ("f", 2),
    "item_ids": ("i", 1), "bi": ("f", 1), "qi": ("f", 2),
    "seen_indptr": ("i", 1), "seen_indices": ("i", 1), "titles": ("U", 1), "years": ("i", 1),
}  # fmt: skip


def validate(found: Mapping[str, np.ndarray]) -> ModelArrays:
    """Check keys, kinds, shapes and values, so scoring can index without further checks."""
    if set(found) != set(_KINDS):
        missing, extra = sorted(set(_KINDS) - set(found)), sorted(set(found) - set(_KINDS))
        raise ModelArraysError(f"unexpected arrays: missing {missing}, unknown {extra}")
    for name, (kind, ndim) in _KINDS.items():
        array = found[name]
        if array.dtype.kind != kind or array.ndim != ndim:
            raise ModelArraysError(
                f"{name} is {array.dtype} with {array.ndim} dimension(s), expected kind {kind!r}/{ndim}"
            )
    if int(found["format_version"]) != FORMAT_VERSION:
        raise ModelArraysError(f"format_version {int(found['format_version'])}, this code reads {FORMAT_VERSION}")
    n_users, n_items = len(found["user_ids"]), len(found["item_ids"])
    n_factors = found["pu"].shape[1]
    shapes = {
        "bu": (n_users,), "pu": (n_users, n_factors), "bi": (n_items,), "qi": (n_items, n_factors),
        "seen_indptr": (n_users + 1,), "titles": (n_items,), "years": (n_items,), "rating_scale": (2,),
    }  # fmt: skip
    wrong = {name: found[name].shape for name, shape in shapes.items() if found[name].shape != shape}
    if wrong:
        raise ModelArraysError(f"shapes {wrong} do not fit {n_users} users, {n_items} items, {n_factors} factors")
    for name in ("rating_scale", "global_mean", "bu", "pu", "bi", "qi"):
        if not np.isfinite(found[name]).all():
            raise ModelArraysError(f"{name} has non-finite values")
    low, high = found["rating_scale"]
    if not low < high:
        raise ModelArraysError(f"rating_scale {low}..{high} is empty")
    if len(np.unique(found["user_ids"])) != n_users or len(np.unique(found["item_ids"])) != n_items:
        raise ModelArraysError("user_ids or item_ids repeat an id")
    indptr, indices = found["seen_indptr"], found["seen_indices"]
    if indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
        raise ModelArraysError("seen_indptr is not a valid CSR index pointer")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise ModelArraysError("seen_indices points outside the item table")
    return ModelArrays(**{name: found[name] for name in _KINDS})


def _title_arrays(items: np.ndarray, titles: pd.DataFrame | None) -> dict[str, np.ndarray]:
    if titles is None or titles.empty:
        return {"titles": np.full(len(items), "", dtype=str).astype("<U1"), "years": np.zeros(len(items), np.int32)}
    by_id = titles.drop_duplicates("tmdb_id").set_index("tmdb_id")
    found = by_id.reindex(items)
    names = found["title"].fillna("").astype(str).to_numpy()
    import pandas as pd  # only when writing a version with titles

    years = pd.to_numeric(found["year"], errors="coerce").fillna(0).astype(np.int32).to_numpy()
    return {"titles": np.array(names, dtype=str) if len(names) else np.array([], dtype="<U1"), "years": years}
