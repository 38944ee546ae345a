"""SIGINT or SIGTERM to the submitter ends its local runs too. They are its children but not in the way of a
`kill PID` (only ^C reaches the whole process group): left running, they would train on unwatched, and the
next sweep would start second copies beside them."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def cancel_on_signal(cancel: Callable[[int], None]) -> Iterator[None]:
    """Inside the block, SIGINT/SIGTERM calls `cancel(signum)` once, then exits with 128 + signum."""

    def stop(signum: int, frame: Any) -> None:
        for sig in _SIGNALS:  # one clean-up: a second ^C must not interrupt the cancelling
            signal.signal(sig, signal.SIG_IGN)
        raise _Interrupted(signum)

    try:
        previous = {sig: signal.signal(sig, stop) for sig in _SIGNALS}
    except ValueError:  # not the main thread: signals cannot be caught here
        yield
        return
    try:
        yield
    except _Interrupted as interrupted:
        cancel(interrupted.signum)
        raise SystemExit(128 + interrupted.signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
