"""One generation backend shared by the steps of an iteration, opened only when a step has work for it.

Prompt generation, candidates and judging all run on M_{t-1}; starting a vLLM engine takes minutes, so an
iteration opens one backend for all three, and a rerun whose outputs are all committed opens none. At most one
backend is open at a time: asking for a different model (prompts.model / judge.model) closes the current one
first, so two engines never compete for the same memory.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from srlm.config import BackendConfig
from srlm.generation.base import GenerationBackend

if TYPE_CHECKING:
    from srlm.steps.context import StepCall, StepContext

log = logging.getLogger(__name__)

# (local model directory, backend config, weights dtype) -> an open backend
BackendOpener = Callable[[str, BackendConfig, str], GenerationBackend]


def open_generation_backend(
    model_path: str, backend_config: BackendConfig, dtype: str, chat_template: str | None = None
) -> GenerationBackend:
    from srlm.generation.factory import open_backend

    return open_backend(model_path, backend_config, dtype=dtype, chat_template=chat_template)


class BackendPool:
    """Holds at most one open backend, keyed by model; `get` opens (or switches) lazily, `close` frees it."""

    def __init__(
        self,
        backend_config: BackendConfig,
        *,
        dtype: str = "auto",
        resolve_path: Callable[[object], str] | None = None,
        opener: BackendOpener | None = None,
        echo: Callable[[str], None] = print,
        fixed: GenerationBackend | None = None,
    ) -> None:
        self.backend_config = backend_config
        self.dtype = dtype
        self._resolve_path = resolve_path
        self._opener = opener or open_generation_backend
        self._echo = echo
        self._key: str | None = None
        self._backend: GenerationBackend | None = None
        self._fixed = fixed
        self.uses = 0  # how many times a step asked for a backend
        self.opened = 0  # how many engine starts this pool has paid for
        self.open_seconds = 0.0

    @classmethod
    def serving(cls, backend: GenerationBackend) -> BackendPool:
        """A pool that serves an already-open backend for every model; its owner closes it (tests, notebooks)."""
        return cls(BackendConfig(), fixed=backend)

    def get(self, model) -> GenerationBackend:
        """The open backend serving `model` (a steps.checkpoints.ModelRef), opening it if needed."""
        self.uses += 1
        if self._fixed is not None:
            return self._fixed
        key = model.fingerprint
        if self._backend is not None and self._key == key:
            return self._backend
        self.close()
        path = self._resolve_path(model) if self._resolve_path else model.spec
        self._echo(f"starting the generation backend ({self.backend_config.backend}) on {model.label}: {path}")
        start = time.perf_counter()
        self._backend = self._opener(path, self.backend_config, self.dtype)
        seconds = time.perf_counter() - start
        self.open_seconds += seconds
        self.opened += 1
        self._echo(f"{self._backend.name} backend ready in {seconds:.1f}s")
        self._key = key
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            try:
                self._backend.close()
            finally:
                self._backend = None
                self._key = None

    def __enter__(self) -> BackendPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_backend_pool(ctx: StepContext, opener: BackendOpener | None = None) -> BackendPool:
    """A pool opening ctx's configured backend (or `opener`'s) on models resolved to local directories."""
    from srlm.steps.checkpoints import local_model_path

    return BackendPool(
        ctx.config.backend,
        dtype=ctx.config.model.dtype,
        resolve_path=lambda model: local_model_path(ctx, model),
        opener=opener or functools.partial(open_generation_backend, chat_template=ctx.config.model.chat_template),
        echo=ctx.echo,
    )


@contextlib.contextmanager
def call_backends(ctx: StepContext, call: StepCall) -> Iterator[BackendPool]:
    """The pool a step call generates with: the caller's shared one (left open), else a new one closed after."""
    if call.backends is not None:
        yield call.backends
        return
    with new_backend_pool(ctx) as pool:
        yield pool
