"""The overlap test, N times in a row, while busy-loop processes keep every core busy (issue 16).

Usage: ``python bench/overlap_under_load.py [--runs N] [--load-processes P] [--max-seconds S]``

``cfrec_assets_tests/test_overlap.py`` runs two whole graphs (``dg launch``) on one instance,
forced to overlap. It once failed only on a busy machine, so this runs it ``--runs`` times
(default 10), each in a fresh pytest process, while ``--load-processes`` (default: one per core)
spin in pure-Python loops. The load stops when the last run ends, and in any case after
``--max-seconds``. Prints one line per run (pass/fail, wall seconds, load average, the cause
of a failure), then passes/failures and the median wall time, and the tail of each failure's
output (the whole of it is kept in a temp file).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import REPO, positive_int, print_preamble  # bench/ is sys.path[0] when a script here runs

TEST = "cfrec_assets_tests/test_overlap.py"
# The project's own errors (a wrapper such as DagsterExecutionStepExecutionError or AssertionError
# says less), e.g. "GateClosedError: refusing to promote: ..."
CAUSE = re.compile(r"\b((?!Dagster|Assertion)\w+Error): ([^\n'\\]{0,200})")


def spin(deadline: float) -> None:
    """Burn one core until ``deadline`` (time.monotonic)."""
    while time.monotonic() < deadline:
        pass


def run_overlap_test() -> tuple[bool, float, str]:
    """(passed, wall seconds, output) of one pytest run of the overlap test."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-vv", "-p", "no:cacheprovider", "-p", "no:warnings", TEST],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return done.returncode == 0, time.perf_counter() - started, done.stdout + done.stderr


def failure_cause(output: str) -> str:
    """The first of the project's own error messages in a failed run's output (else its last line)."""
    found = CAUSE.search(output)
    return f"{found[1]}: {found[2][:160]}" if found else (output.strip().splitlines() or [""])[-1][:160]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=positive_int, default=10)
    parser.add_argument("--load-processes", type=int, default=os.cpu_count() or 1, help="0: no load")
    parser.add_argument("--max-seconds", type=positive_int, default=3 * 3600, help="the load stops after this anyway")
    args = parser.parse_args(argv)
    print_preamble("overlap_under_load.py", sys.argv[1:] if argv is None else argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the load (finally)
    context = multiprocessing.get_context("spawn")
    deadline = time.monotonic() + args.max_seconds
    load = [context.Process(target=spin, args=(deadline,), daemon=True) for _ in range(args.load_processes)]
    for process in load:
        process.start()
    print(f"load: {len(load)} busy-loop process(es), at most {args.max_seconds} s\n")
    results = []
    try:
        print("| run | result | wall s | load average (1 min) | cause |\n|---:|---|---:|---:|---|")
        for index in range(1, args.runs + 1):
            passed, seconds, output = run_overlap_test()
            results.append((passed, seconds, output))
            cause = "" if passed else failure_cause(output)
            print(f"| {index} | {'pass' if passed else 'FAIL'} | {seconds:.1f} | {os.getloadavg()[0]:.2f} | {cause} |")
            sys.stdout.flush()
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
            with tempfile.NamedTemporaryFile("w", prefix=f"overlap-run{index}-", suffix=".log", delete=False) as log:
                log.write(output)
            print(f"\n--- run {index} failed (whole output: {log.name}); last lines:")
            print("\n".join(output.splitlines()[-25:]))
    return 0 if passes == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
