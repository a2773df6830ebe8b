"""The overlap test, N times in a row, while busy-loop processes keep every core busy (issue 16).

Usage: ``python bench/overlap_under_load.py [--runs N] [--load-processes P] [--max-seconds S]``

``cfrec_assets_tests/test_overlap.py`` runs two whole graphs (``dg launch``) on one instance,
forced to overlap. It once failed only on a busy machine, so this runs it ``--runs`` times
(default 10), each in a fresh pytest process, while ``--load-processes`` (default: one per core)
spin in pure-Python loops. The load stops when the last run ends, and in any case after
``--max-seconds``. Prints one line per run (pass/fail, wall seconds, load average), then
passes/failures and the median wall time, and the tail of each failure's output.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from benchlib import REPO, positive_int, print_preamble  # bench/ is sys.path[0] when a script here runs

TEST = "cfrec_assets_tests/test_overlap.py"


def spin(deadline: float) -> None:
    """Burn one core until ``deadline`` (time.monotonic)."""
    while time.monotonic() < deadline:
        pass


def run_overlap_test() -> tuple[bool, float, str]:
    """(passed, wall seconds, output) of one pytest run of the overlap test."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings", TEST],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return done.returncode == 0, time.perf_counter() - started, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=positive_int, default=10)
    parser.add_argument("--load-processes", type=int, default=os.cpu_count() or 1, help="0: no load")
    parser.add_argument("--max-seconds", type=positive_int, default=3 * 3600, help="the load stops after this anyway")
    args = parser.parse_args(argv)
    print_preamble("overlap_under_load.py", sys.argv[1:] if argv is None else argv)

    context = multiprocessing.get_context("spawn")
    deadline = time.monotonic() + args.max_seconds
    load = [context.Process(target=spin, args=(deadline,), daemon=True) for _ in range(args.load_processes)]
    for process in load:
        process.start()
    print(f"load: {len(load)} busy-loop process(es), at most {args.max_seconds} s\n")
    results = []
    try:
        print("| run | result | wall s | load average (1 min) |\n|---:|---|---:|---:|")
        for index in range(1, args.runs + 1):
            passed, seconds, output = run_overlap_test()
            results.append((passed, seconds, output))
            print(
                f"| {index} | {'pass' if passed else 'FAIL'} | {seconds:.1f} | {os.getloadavg()[0]:.2f} |", flush=True
            )
    finally:
        for process in load:
            process.terminate()
        for process in load:
            process.join()
    passes = sum(passed for passed, _, _ in results)
    print(f"\n{passes} of {len(results)} passed, {len(results) - passes} failed; ", end="")
    print(f"median wall {statistics.median(s for _, s, _ in results):.1f} s")
    for index, (passed, _, output) in enumerate(results, 1):
        if not passed:
            print(f"\n--- run {index} failed; last lines:\n" + "\n".join(output.splitlines()[-25:]))
    return 0 if passes == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
