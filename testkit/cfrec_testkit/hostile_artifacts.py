"""Hostile model artifacts for tests and benches: npz members that lie, bomb or declare huge shapes."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20


def npz_with_member(
    source: Path,
    target: Path,
    member: str,
    shape: tuple[int, ...],
    *,
    data_bytes: int | None = None,
    deflate: bool = False,
) -> Path:
    """Copy the npz ``source`` to ``target`` with ``member`` (e.g. ``"bu"``) replaced by a float64
    ``.npy`` header declaring ``shape`` and ``data_bytes`` zero bytes after it (default: as many as
    the shape needs), stored, or deflated with ``deflate`` (then zeros shrink about 1000-fold)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    remaining = 8 * math.prod(shape) if data_bytes is None else data_bytes
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        for info in original.infolist():
            if info.filename != f"{member}.npy":
                out.writestr(info.filename, original.read(info))
        method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        info = zipfile.ZipInfo(f"{member}.npy")
        info.compress_type = method
        with out.open(info, "w", force_zip64=True) as written:
            written.write(header.getvalue())
            while remaining > 0:
                written.write(bytes(min(remaining, _CHUNK)))
                remaining -= _CHUNK
    return target
