"""Forked worker pools that Ctrl-C ends at once: the bootstrap's and plan's refits.

``concurrent.futures.ProcessPoolExecutor`` joins its workers on the way out, so Ctrl-C in the parent waited
for every running chunk to finish (11 s on a `--bootstrap 2000` fit) and a Ctrl-C from the terminal, which
reaches the whole process group, printed one traceback per worker.  Here the workers ignore SIGINT (the
parent alone decides) and leaving the block for any reason other than normal completion terminates them.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def forked_pool(workers: int) -> Iterator[Pool]:
    """A pool of ``workers`` forked processes (they inherit numpy/scipy already imported: no re-import
    cost); closed and joined after the block, terminated (SIGTERM, not joined) if the block raises."""
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=_ignore_sigint)
    try:
        yield pool
    except BaseException:
        pool.terminate()  # KeyboardInterrupt included: do not wait for the chunks in flight
        pool.join()
        raise
    pool.close()
    pool.join()
