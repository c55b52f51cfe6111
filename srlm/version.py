"""The code version recorded in every artifact manifest: srlm's version plus the git commit when known."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from srlm import __version__

# Images built without a .git directory pass the commit in explicitly.
GIT_SHA_ENV = "SRLM_GIT_SHA"


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the srlm source tree ('<sha>' or '<sha>-dirty'), or None outside a git checkout."""
    explicit = os.environ.get(GIT_SHA_ENV)
    if explicit:
        return explicit.strip()
    source_root = Path(__file__).resolve().parent.parent
    try:
        toplevel = _git(source_root, "rev-parse", "--show-toplevel")
        # An installed srlm inside some unrelated repository must not report that repository's commit.
        if toplevel is None or Path(toplevel).resolve() != source_root:
            return None
        sha = _git(source_root, "rev-parse", "HEAD")
        if sha is None:
            return None
        dirty = _git(source_root, "status", "--porcelain", "--untracked-files=no")
        return f"{sha}-dirty" if dirty else sha
    except OSError:  # git not installed
        return None


def code_version() -> str:
    """'0.1.0' or '0.1.0+g<sha>[-dirty]'."""
    sha = git_sha()
    return f"{__version__}+g{sha}" if sha else __version__


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None
