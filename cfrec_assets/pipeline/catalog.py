"""Loading the app's catalog of TMDB ids from JSON, CSV or a (restricted) pickle.

The previous phase saved its catalog as ``movie_ids.pkl`` with joblib. A pickle is code, so
it is read with an unpickler that resolves only plain containers and numpy integer arrays and
refuses every other global with a clear error, before anything could run.

Allowed types alone can still exhaust a machine: tuples shared through the memo double at
every level, so a few hundred bytes describe a structure whose hashing (in a frozenset) or
printing takes forever. The unpickler therefore enforces hard limits *while* it runs:

- :data:`MAX_CATALOG_BYTES` = 16 MiB per catalog file (any format). Every TMDB film (~1.2M
  ids) pickles to ~6 MB as a list and ~10 MB as an int64 array.
- :data:`MAX_DEPTH` = 16 levels of nesting, and as many open MARKs. A catalog is depth 1;
  joblib/numpy array records reach 5. The limit keeps hashing, comparing and printing far
  from Python's recursion limit.
- :data:`MAX_ELEMENTS` = 3,000,000 units of work: one per opcode run plus, for every opcode
  that fills a container or calls a constructor (APPEND(S), SETITEM(S), ADDITEMS, TUPLE*,
  LIST, DICT, FROZENSET, REDUCE, NEWOBJ*, OBJ, INST, BUILD), the full expanded size of each
  element it takes, so a reference repeated through the memo counts every time. That bounds
  the work of hashing, iterating or printing anything built, and admits ~1.4M int ids or
  ~950k string ids (an id costs 2-3 units). A numpy array record may hold as many elements.
- :data:`MAX_CONTAINERS` = 100,000 containers or constructor results, and
  :data:`MAX_MEMO` = 1,000,000 memo entries: a catalog needs a handful of containers and one
  memo entry per string id, while each costs ~100 bytes to keep, so these bound memory. The
  measured worst case (16 MiB of MEMOIZE opcodes) is refused in ~0.4 s at ~150 MB peak RSS.

A container may not be filled after it was put into another one or passed to a constructor
(that would let its size grow behind the count); only recursive or crafted pickles do that.
Error messages show at most ~200 characters of any value.
"""

from __future__ import annotations

import _compat_pickle
import csv
import io
import json
import os
import pickle
import reprlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

MAX_CATALOG_BYTES = 16 << 20
MAX_DEPTH = 16
MAX_ELEMENTS = 3_000_000
MAX_CONTAINERS = 100_000
MAX_MEMO = 1_000_000
MAX_TMDB_ID = 2**63 - 1  # stored as int64 downstream


class CatalogError(ValueError):
    """The catalog source is missing, malformed or not allowed."""


class _IntegerArrayWrapper(NumpyArrayWrapper):
    """joblib's array record, refusing object dtypes (their payload is a nested pickle)."""

    def read(self, unpickler, *args, **kwargs):
        if not np.issubdtype(self.dtype, np.integer):
            raise CatalogError(
                f"{unpickler._where}: refusing numpy array of dtype {self.dtype}: only integer arrays are allowed"
            )
        count = 1
        for extent in self.shape:
            count *= int(extent)
        if not 0 <= count <= MAX_ELEMENTS:
            raise CatalogError(
                f"{unpickler._where}: refusing numpy array of shape {_short(self.shape)}: "
                f"over {MAX_ELEMENTS:,} elements"
            )
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
    """Reads plain pickles and uncompressed joblib files, resolving only allow-listed globals and
    enforcing the limits of the module doc opcode by opcode."""

    def __init__(self, filename: str, file_handle, ensure_native_byte_order: bool) -> None:
        super().__init__(filename, file_handle, ensure_native_byte_order)
        self._where = os.path.basename(filename)
        self._work = 0
        self._containers = 0
        self._built: dict[int, tuple[object, int, int]] = {}  # id -> (object kept alive, size, depth)
        self._sealed: set[int] = set()

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # protocol 0-2 name Python 2 modules
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CatalogError(
                f"{self._where}: refusing to unpickle {_short_text(module)}.{_short_text(name)}: "
                "a catalog pickle may hold only a list, tuple or set of ints/strings or a numpy integer array"
            ) from None

    def _size(self, obj: object) -> int:
        entry = self._built.get(id(obj))
        return entry[1] if entry else 1

    def _depth(self, obj: object) -> int:
        entry = self._built.get(id(obj))
        return entry[2] if entry else 0

    def _admit(self, items: list, target: object | None) -> tuple[int, int]:
        """Charge ``items`` (elements about to be added or passed) against the limits, before
        the opcode runs: the expensive part (hashing into a frozenset, say) happens inside it."""
        size = sum(self._size(item) for item in items)
        depth = 1 + max((self._depth(item) for item in items), default=0)
        if target is not None:
            if id(target) in self._sealed:
                raise CatalogError(
                    f"{self._where}: refusing a container filled after it was used (a recursive or crafted pickle)"
                )
            depth = max(depth, self._depth(target))
        self._charge(size)
        if depth > MAX_DEPTH:
            raise CatalogError(f"{self._where}: refusing a pickle nested deeper than {MAX_DEPTH} levels")
        self._sealed.update(id(item) for item in items if id(item) in self._built)
        return size, depth

    def _charge(self, units: int) -> None:
        self._work += units
        if self._work > MAX_ELEMENTS:
            raise CatalogError(
                f"{self._where}: refusing a pickle that builds more than {MAX_ELEMENTS:,} elements "
                "(references repeated through the memo count every time)"
            )

    def _limit(self, used: int, limit: int, what: str) -> None:
        if used > limit:
            raise CatalogError(f"{self._where}: refusing a pickle with more than {limit:,} {what}")

    def _record(self, obj: object, added: int, depth: int, fresh: bool) -> None:
        size = 1 + added if fresh else self._size(obj) + added
        self._built[id(obj)] = (obj, size, depth)


Accessor = Callable[[RestrictedUnpickler], list]


def _top(count: int) -> Accessor:
    return lambda u: u.stack[len(u.stack) - count :] if count else []


def _after_mark(u: RestrictedUnpickler) -> list:
    return list(u.stack)  # pickle._Unpickler keeps the items pushed since MARK in self.stack


def _creates(opcode: bytes, consumed: Accessor):
    """Wrap an opcode that builds a new container (or calls a constructor) from ``consumed``."""
    original = NumpyUnpickler.dispatch[opcode[0]]

    def handler(u: RestrictedUnpickler) -> None:
        u._containers += 1
        u._limit(u._containers, MAX_CONTAINERS, "containers")
        added, depth = u._admit(consumed(u), None)
        original(u)
        u._record(u.stack[-1], added, depth, fresh=True)

    return handler


def _fills(opcode: bytes, consumed: Accessor, target: Callable[[RestrictedUnpickler], object]):
    """Wrap an opcode that adds ``consumed`` to an existing ``target``."""
    original = NumpyUnpickler.dispatch[opcode[0]]

    def handler(u: RestrictedUnpickler) -> None:
        into = target(u)
        added, depth = u._admit(consumed(u), into)
        original(u)
        u._record(into, added, depth, fresh=False)

    return handler


def _counted(original):
    def handler(u: RestrictedUnpickler) -> None:
        u._charge(1)
        original(u)

    return handler


def _memo_write(original):
    def handler(u: RestrictedUnpickler) -> None:
        u._limit(len(u.memo) + 1, MAX_MEMO, "memo entries")
        original(u)

    return handler


def _mark(u: RestrictedUnpickler) -> None:
    if len(u.metastack) >= MAX_DEPTH:  # each open MARK is a level of nesting being built
        raise CatalogError(f"{u._where}: refusing a pickle nested deeper than {MAX_DEPTH} levels")
    NumpyUnpickler.dispatch[pickle.MARK[0]](u)


def _below_mark(u: RestrictedUnpickler) -> object:
    return u.metastack[-1][-1]


def _guarded_dispatch() -> dict:
    dispatch = {key: _counted(handler) for key, handler in NumpyUnpickler.dispatch.items()}
    for opcode in (pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.EMPTY_SET, pickle.EMPTY_TUPLE):
        dispatch[opcode[0]] = _counted(_creates(opcode, _top(0)))
    for opcode in (pickle.LIST, pickle.TUPLE, pickle.DICT, pickle.FROZENSET, pickle.OBJ, pickle.INST):
        dispatch[opcode[0]] = _counted(_creates(opcode, _after_mark))
    for opcode, count in (
        (pickle.TUPLE1, 1),
        (pickle.TUPLE2, 2),
        (pickle.TUPLE3, 3),
        (pickle.REDUCE, 2),
        (pickle.NEWOBJ, 2),
        (pickle.NEWOBJ_EX, 3),
    ):
        dispatch[opcode[0]] = _counted(_creates(opcode, _top(count)))
    for opcode in (pickle.APPENDS, pickle.SETITEMS, pickle.ADDITEMS):
        dispatch[opcode[0]] = _counted(_fills(opcode, _after_mark, _below_mark))
    for opcode, count in ((pickle.APPEND, 1), (pickle.SETITEM, 2), (pickle.BUILD, 1)):
        dispatch[opcode[0]] = _counted(_fills(opcode, _top(count), lambda u, c=count: u.stack[-1 - c]))
    for opcode in (pickle.MEMOIZE, pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT):
        dispatch[opcode[0]] = _counted(_memo_write(NumpyUnpickler.dispatch[opcode[0]]))
    dispatch[pickle.MARK[0]] = _counted(_mark)
    return dispatch


RestrictedUnpickler.dispatch = _guarded_dispatch()


def load_restricted_pickle(path: Path) -> object:
    with path.open("rb") as fh:
        data = fh.read(MAX_CATALOG_BYTES + 1)
    _check_size(path, len(data))
    if not data or data[0] != pickle.PROTO[0]:
        raise CatalogError(
            f"{path.name}: not an uncompressed pickle/joblib file "
            "(re-save with joblib.dump(ids, path) without compression, or use JSON/CSV)"
        )
    # From memory: a length field claiming gigabytes then reads only what is there.
    try:
        return RestrictedUnpickler(str(path), io.BytesIO(data), ensure_native_byte_order=True).load()
    except CatalogError:
        raise
    except Exception as exc:  # noqa: BLE001 (truncated or malformed stream)
        raise CatalogError(f"{path.name}: unreadable pickle ({type(exc).__name__}: {_short_text(str(exc))})") from None


def _check_size(path: Path, size: int) -> None:
    if size > MAX_CATALOG_BYTES:
        raise CatalogError(f"{path.name}: catalog file is larger than {MAX_CATALOG_BYTES:,} bytes")


def load_catalog_ids(path: Path) -> list[int]:
    """Sorted unique TMDB ids from a ``.json``, ``.csv`` (column ``tmdb_id``) or ``.pkl``/``.joblib``."""
    if not path.is_file():
        raise CatalogError(f"catalog file not found: {path}")
    _check_size(path, path.stat().st_size)
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise CatalogError(f"{path.name}: invalid JSON ({_short_text(str(exc))})") from None
        if not isinstance(raw, list):
            raise CatalogError(f"{path.name}: expected a JSON list of TMDB ids, got {type(raw).__name__}")
    elif suffix == ".csv":
        raw = _csv_column(path, "tmdb_id")
    elif suffix in (".pkl", ".pickle", ".joblib"):
        raw = load_restricted_pickle(path)
        if isinstance(raw, np.ndarray):
            if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
                raise CatalogError(f"{path.name}: expected a 1-d integer array, got {raw.dtype} {_short(raw.shape)}")
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
    elif isinstance(value, str) and len(value) <= 40 and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise CatalogError(f"{where}: entry {position} ({_short(value)}) is not a TMDB id")
    if number <= 0:
        raise CatalogError(f"{where}: entry {position} ({_short(number)}) is not a positive TMDB id")
    if number > MAX_TMDB_ID:
        raise CatalogError(f"{where}: entry {position} ({_short(number)}) is too large for a TMDB id")
    return number


def _csv_column(path: Path, column: str) -> list[str]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        try:
            reader = csv.DictReader(fh)
            if column not in (reader.fieldnames or []):
                raise CatalogError(f"{path.name}: no {column!r} column (columns: {_short(reader.fieldnames)})")
            return [row[column] for row in reader]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CatalogError(f"{path.name}: unreadable CSV ({_short_text(str(exc))})") from None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 60, 40, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 6
MAX_SHOWN = 200


def _short(value: object) -> str:
    """A repr bounded in length *and* in the work to make it (reprlib stops at depth and width)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 (an int too long to print, say)
        text = f"<{type(value).__name__}>"
    return _short_text(text)


def _short_text(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."
