"""Helpers shared by the benchmark scripts (run as ``python bench/<script>.py``)."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path


def timed(work: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    """Wall seconds of each of ``repeat`` calls, and the last call's result."""
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def missing_movielens(datasets: Path) -> str | None:
    """Why ``datasets/movielens`` cannot serve the benchmarks (None when both zips are there)."""
    folder = (datasets / "movielens").resolve()
    missing = [name for name in ("ml-100k.zip", "ml-latest-small.zip") if not (folder / name).is_file()]
    if missing:
        return f"MovieLens zips not found in {folder}: {missing} (set CFREC_SHARED_DATASETS or --datasets)"
    return None


REPO = Path(__file__).resolve().parents[1]


def add_datasets_argument(parser: argparse.ArgumentParser) -> None:
    """``--datasets DIR`` holding ``movielens/*.zip`` (default: $CFREC_SHARED_DATASETS or ../shared/datasets)."""
    default = Path(os.environ.get("CFREC_SHARED_DATASETS") or REPO / "../shared/datasets")
    parser.add_argument("--datasets", type=Path, default=default)


def parse_real_data_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, script: str, **versions: str
) -> argparse.Namespace:
    """What every bench on the real MovieLens zips does first: parse ``argv`` with ``--datasets``
    added, stop with exit code 2 when the zips are missing, and print the preamble."""
    add_datasets_argument(parser)
    args = parser.parse_args(argv)
    if problem := missing_movielens(args.datasets):
        parser.exit(2, problem + "\n")
    print_preamble(script, sys.argv[1:] if argv is None else argv, **versions)
    return args


def print_preamble(script: str, argv: list[str], **versions: str) -> None:
    """The machine's load, the versions the numbers depend on (Python, plus ``versions``: e.g.
    ``dagster=dg.__version__``) and the command that reproduces this run, for notes."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    shown = ", ".join(
        f"{name} {version}" for name, version in {"Python": platform.python_version(), **versions}.items()
    )
    print(f"machine: {os.cpu_count()} cores, load average {load}; {shown}")
    print(f"reproduce: cd {shlex.quote(str(REPO))} && .venv/bin/python {shlex.join([f'bench/{script}', *argv])}")
