"""Coordination between processes on this host: file locks (the `filelock` package) and process liveness and
trees (`psutil`). Both are direct dependencies; nothing here hand-rolls fcntl, O_EXCL lock files or os.kill(pid, 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

DEFAULT_LOCK_TIMEOUT_S = 3600.0


@contextlib.contextmanager
def file_lock(path: str | Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an inter-process lock on `path` (created with its parent folders) for the `with` block.

    Raises filelock.Timeout after `timeout_s`; the lock is released when the block ends or the process dies.
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout_s):
        yield


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (also when another user owns it); zombies count as dead."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, owned by someone else
        return True


def descendant_pids(pid: int | None = None) -> list[int]:
    """The ids of all child processes of `pid` (default: this process), recursively."""
    import psutil

    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system, including reaped children) used so far by a process and all its descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # exited between listing and reading
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total
