"""Releasing Spark's resources without hiding why a step failed.

When the cluster is what failed (a Connect server whose SparkContext died, a lost master), the
release fails too, and a ``finally: release()`` would raise its error ("Application error
processing RPC") in place of the one that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress


@contextmanager
def releasing(release: Callable[[], object]) -> Iterator[None]:
    """Calls ``release`` on exit; if the block failed, a failing ``release`` is ignored."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            release()
        raise
    release()
