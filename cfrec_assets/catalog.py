"""Loading the app's catalog of TMDB ids from JSON, CSV or a (restricted) pickle.

The previous phase saved its catalog as ``movie_ids.pkl`` with joblib. A pickle is code, so
it is read with an unpickler that resolves only plain containers and numpy integer arrays and
refuses every other global with a clear error, before anything could run.
"""

from __future__ import annotations

import _compat_pickle
import csv
import json
import pickle
from pathlib import Path

import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler


class CatalogError(ValueError):
    """The catalog source is missing, malformed or not allowed."""


class _IntegerArrayWrapper(NumpyArrayWrapper):
    """joblib's array record, refusing object dtypes (their payload is a nested pickle)."""

    def read(self, unpickler, *args, **kwargs):
        if not np.issubdtype(self.dtype, np.integer):
            raise CatalogError(f"refusing numpy array of dtype {self.dtype}: only integer arrays are allowed")
        return super().read(unpickler, *args, **kwargs)


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


_reconstruct, _scalar = _numpy_reconstruct()
_ALLOWED_GLOBALS = {
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _IntegerArrayWrapper,
}


class RestrictedUnpickler(NumpyUnpickler):
    """Reads plain pickles and uncompressed joblib files, resolving only allow-listed globals."""

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # protocol 0-2 name Python 2 modules
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CatalogError(
                f"refusing to unpickle {module}.{name}: a catalog pickle may hold only a list, "
                "tuple or set of ints/strings or a numpy integer array"
            ) from None


def load_restricted_pickle(path: Path) -> object:
    with path.open("rb") as fh:
        head = fh.read(2)
        if not head or head[0] != pickle.PROTO[0]:
            raise CatalogError(
                f"{path.name}: not an uncompressed pickle/joblib file "
                "(re-save with joblib.dump(ids, path) without compression, or use JSON/CSV)"
            )
        fh.seek(0)
        try:
            return RestrictedUnpickler(str(path), fh, ensure_native_byte_order=True).load()
        except CatalogError:
            raise
        except Exception as exc:  # truncated or malformed stream
            raise CatalogError(f"{path.name}: unreadable pickle ({type(exc).__name__}: {exc})") from None


def load_catalog_ids(path: Path) -> list[int]:
    """Sorted unique TMDB ids from a ``.json``, ``.csv`` (column ``tmdb_id``) or ``.pkl``/``.joblib``."""
    if not path.is_file():
        raise CatalogError(f"catalog file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CatalogError(f"{path.name}: invalid JSON ({exc})") from None
        if not isinstance(raw, list):
            raise CatalogError(f"{path.name}: expected a JSON list of TMDB ids, got {type(raw).__name__}")
    elif suffix == ".csv":
        raw = _csv_column(path, "tmdb_id")
    elif suffix in (".pkl", ".pickle", ".joblib"):
        raw = load_restricted_pickle(path)
        if isinstance(raw, np.ndarray):
            if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
                raise CatalogError(f"{path.name}: expected a 1-d integer array, got {raw.dtype} {raw.shape}")
            raw = raw.tolist()
        elif not isinstance(raw, (list, tuple, set, frozenset)):
            raise CatalogError(f"{path.name}: expected a list of TMDB ids, got {type(raw).__name__}")
    else:
        raise CatalogError(f"unsupported catalog format {suffix!r}: use .json, .csv, .pkl or .joblib")
    return normalize_ids(raw, path.name)


def normalize_ids(values, where: str) -> list[int]:
    ids = set()
    for position, value in enumerate(values):
        ids.add(_as_tmdb_id(value, where, position))
    if not ids:
        raise CatalogError(f"{where}: the catalog is empty")
    return sorted(ids)


def _as_tmdb_id(value, where: str, position: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise CatalogError(f"{where}: entry {position} is a boolean, not a TMDB id")
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise CatalogError(f"{where}: entry {position} ({value!r}) is not a TMDB id")
    if number <= 0:
        raise CatalogError(f"{where}: entry {position} ({number}) is not a positive TMDB id")
    return number


def _csv_column(path: Path, column: str) -> list[str]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise CatalogError(f"{path.name}: no {column!r} column (columns: {reader.fieldnames})")
        return [row[column] for row in reader]
