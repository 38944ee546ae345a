"""The run dir's lock: one live training job per run dir."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from sweep.contract.files import LOCK_FILE


# The training job holds an flock on LOCK_FILE of its run dir for its whole life (the lock goes with the
# process, however it dies), so a second job on the same dir (two submitters, a re-run while the first still
# trains) fails fast instead of interleaving metrics.jsonl and the checkpoint. The file says who holds it.
class RunDirBusy(Exception):
    """Another live process holds the run dir's lock: one line naming the dir and the holder."""


def lock_holder(run_dir: Path) -> str | None:
    """'pid 123 on host' while a live job holds `run_dir`'s lock, else None (the launcher and
    `bitlaw status` ask too)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "an unknown process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock while the block runs, or raise RunDirBusy at once if another process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "an unknown process"
            raise RunDirBusy(f"run dir {run_dir} is being trained by {holder}; nothing was changed: wait for "
                             "that job to end (or stop it), then run the same command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race with the next holder)
