"""Run a step command as a local subprocess (the `local` training backend), streaming its output line by line.

The child runs in its own session so `stop` ends it and everything it started (accelerate launches one process
per GPU) without touching the caller.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from srlm.orchestration.ray_head import stop_process_group
from srlm.orchestration.result import MARKER, parse_result


@dataclass
class ProcessOutcome:
    returncode: int
    result: dict | None


class LocalStepProcess:
    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(env or {})}
        self.cwd = cwd
        self._proc: subprocess.Popen | None = None

    def run(self, emit: Callable[[str], None]) -> ProcessOutcome:
        result_lines: list[str] = []
        self._proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            if MARKER in line:
                result_lines.append(line)
            emit(line)
        returncode = self._proc.wait()
        return ProcessOutcome(returncode, parse_result(result_lines))

    def stop(self, grace_seconds: float = 30.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            stop_process_group(self._proc.pid, grace_seconds)
