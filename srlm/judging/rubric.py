"""Scoring responses with the judge's additive rubric, K samples each, outside the judge step.

The reward-model evaluation (`srlm eval reward-model`), the EFT build (`srlm data build-eft`) and the verdict's
rubric comparison (RubricJudge) all ask the same question the judge step asks of candidates: "score this response
to this instruction, K times, with judge.template and judge's sampling". They share this one loop, so the three
can never drift apart in how a prompt is rendered, which requests are set aside for not fitting the context, or
how a judgment is parsed. The judge step keeps its own loop over the same prompt (steps.judge.judge_request)
because it writes sharded, resumable tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from srlm.errors import ConfigError
from srlm.judging.parse import parse_score
from srlm.judging.template import render_judge_prompt

if TYPE_CHECKING:
    from srlm.config import JudgeConfig


@dataclass(frozen=True)
class RubricJudgment:
    text: str
    score: float | None  # None: no score could be parsed
    truncated: bool  # cut off at max_new_tokens (its score, if any, may be a quote from the response)


@dataclass(frozen=True)
class RubricSampling:
    """How a response is judged: the rubric text and the sampling of its K judgments."""

    template: str  # the rubric's text, with {instruction} and {response}
    num_samples: int = 3
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    injection_guard: bool = False

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"judge.num_samples: must be at least 1, got {self.num_samples}")

    @classmethod
    def of_judge(cls, judge: JudgeConfig, *, num_samples: int | None = None) -> RubricSampling:
        """The judge step's own settings (judge.template, num_samples, temperature, top_p, max_new_tokens,
        injection_guard), optionally with another number of samples."""
        from srlm.judging.template import load_template

        return cls(
            template=load_template(judge.template), num_samples=num_samples or judge.num_samples,
            temperature=judge.temperature, top_p=judge.top_p, max_new_tokens=judge.max_new_tokens,
            injection_guard=judge.injection_guard,
        )

    def prompt(self, instruction: str, response: str) -> str:
        """The judge prompt for one response, exactly as the judge step renders it."""
        return render_judge_prompt(self.template, instruction, response, injection_guard=self.injection_guard)


def judge_messages(prompt: str) -> list[dict[str, str]]:
    """The judge sees the filled rubric as one user turn: in the judge step, wherever else a response is judged,
    and in the EFT examples that teach it (their prompt_messages)."""
    return [{"role": "user", "content": prompt}]


def judge_prompts(
    backend: Any, prompts: Sequence[str], sampling: RubricSampling, *, progress: bool = True
) -> list[list[RubricJudgment] | None]:
    """K judgments per rendered judge prompt (one user turn, as the EFT examples present it), or None for a
    prompt that leaves no room to generate within the backend's context (set aside, never failing the batch)."""
    from srlm.generation.base import Sampling, generate_fitting

    if not prompts:
        return []
    requests = [judge_messages(prompt) for prompt in prompts]
    decoding = Sampling(
        n=sampling.num_samples, temperature=sampling.temperature, top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
    )
    return [
        None if completion is None else [
            RubricJudgment(text, parse_score(text).score, finish == "length")
            for text, finish in zip(completion.texts, completion.finish_reasons, strict=True)
        ]
        for completion in generate_fitting(backend, requests, decoding, progress=progress)
    ]


def score_responses(
    backend: Any, instruction_response: Sequence[tuple[str, str]], sampling: RubricSampling, *, progress: bool = True
) -> list[list[RubricJudgment] | None]:
    """K judgments per (instruction, response), or None where its judge prompt does not fit the context."""
    return judge_prompts(backend, [sampling.prompt(i, r) for i, r in instruction_response], sampling, progress=progress)


def mean_score(scores: Sequence[float | None], required_parsed: int) -> float | None:
    """The mean of the parsed scores (None: unparsed) when at least `required_parsed` of them parsed, else None."""
    parsed = [score for score in scores if score is not None]
    return sum(parsed) / len(parsed) if parsed and len(parsed) >= required_parsed else None
