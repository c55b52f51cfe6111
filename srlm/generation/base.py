"""One interface over every generation backend (vLLM on Ray, transformers), with one output shape."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

from srlm.errors import BackendError

# A request is either chat messages (the backend applies the model's chat template with a generation prompt)
# or a raw string (sent to the model as-is, no template).
ChatMessages = list[dict[str, str]]
Request = Union[ChatMessages, str]


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    """The n samples for one request, in sample order."""

    texts: list[str]
    num_tokens: list[int]
    finish_reasons: list[str]  # "stop" or "length" per sample
    prompt_tokens: int = 0


def tokens_per_second(output_tokens: int, seconds: float, untimed: float = 0.0) -> float:
    """Generation throughput; `untimed` when no generation time was measured."""
    return output_tokens / seconds if seconds > 0 else untimed


@dataclass
class GenerationStats:
    requests: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return tokens_per_second(self.output_tokens, self.seconds)


class GenerationBackend(ABC):
    """Open once per step, generate many times, close to release engines and memory before the next step."""

    name: str = "base"

    @abstractmethod
    def generate(self, requests: Sequence[Request], sampling: Sampling, *, progress: bool = True) -> list[Completion]:
        """Return one Completion per request, in request order."""

    def fits(self, requests: Sequence[Request]) -> list[bool]:
        """Whether each request's prompt leaves room to generate within the backend's context (generate refuses a
        batch holding one that does not), so callers can set such requests aside. Without a limit, all fit."""
        return [True] * len(requests)

    def prompt_token_counts(self, requests: Sequence[Request]) -> list[int] | None:
        """Each request's prompt length in tokens, as generate() would tokenize it; None: this backend cannot
        count (callers fall back to fits())."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Shut engines down and free (GPU) memory. Idempotent."""

    @property
    def stats(self) -> GenerationStats:
        return getattr(self, "_stats", GenerationStats())

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def generate_fitting(
    backend: GenerationBackend, requests: Sequence[Request], sampling: Sampling, *, progress: bool = True
) -> list[Completion | None]:
    """One Completion per request, or None for a request whose prompt leaves no room to generate within the
    backend's context (GenerationBackend.fits): those are set aside instead of failing the whole batch."""
    fitting = [i for i, fits in enumerate(backend.fits(requests)) if fits]
    completions = backend.generate([requests[i] for i in fitting], sampling, progress=progress) if fitting else []
    if len(completions) != len(fitting):
        raise BackendError(f"{backend.name}: {len(completions)} completions for {len(fitting)} requests")
    results: list[Completion | None] = [None] * len(requests)
    for i, completion in zip(fitting, completions, strict=True):
        results[i] = completion
    return results

