"""Hostile model artifacts for tests and benches: npz members that lie, bomb or declare huge shapes."""

from __future__ import annotations

import io
import math
import os
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def call_unless_blocked_on(fifo: Path, call: Callable[[], Any], guard_seconds: float = 60.0) -> Any:
    """``call()``'s result or exception; if it is still blocked after ``guard_seconds`` (a FIFO
    opened without ``O_NONBLOCK`` waits for a writer forever), open ``fifo``'s write end so the
    reader sees EOF and returns, then raise ``AssertionError``. The guard is never reached by a
    loader that refuses FIFOs; it only turns the old hang into a failure."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(guard_seconds)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY))
        worker.join()
        raise AssertionError(f"blocked on the FIFO {fifo} for {guard_seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
