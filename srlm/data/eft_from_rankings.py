"""`srlm data build-eft`: EFT data built the way the paper builds it, from human-ranked responses.

Yuan et al. (2024), §4.1 "EFT seed data": the prompts of Open Assistant with several human-ranked responses are
split into train and evaluation parts; the SFT baseline judges every training response with the LLM-as-a-Judge
prompt, a judgment is accepted when the ranking of the model's scores agrees with the human ranking, and the
accepted set is resampled so the score distribution is not dominated by one grade (the paper trims
over-represented scores; it ends with 1,630 train and 531 evaluation examples). Here:

- Groups: an `eval_groups` table (`srlm data import --format oasst` writes one), first turns only by default, as the
  paper. A group is held out for evaluation by a hash of its group_id (`eval_fraction`), so the split never depends
  on the order, the seed or the other groups, and adding groups never moves old ones.
- Judging: model M judges each training response K times (`samples`) with the judge template and the judge
  section's sampling settings, the same prompt and parser as the judge step and `srlm eval reward-model`. A
  judgment cut off at judge.max_new_tokens is not used (its score may be a quote, and it would teach the judge to
  stop mid-sentence); a response whose judge prompt does not fit the context is left out of its group and counted.
- Agreement: a group's judgments are kept when one sampled judgment per response can be chosen so that every pair
  of responses the humans ordered gets strictly ordered scores the same way (a model tie is not agreement, as in
  the paper's pairwise accuracy; human ties constrain nothing). With K = 1 this is exactly the paper's test of the
  single judgment; with K > 1 the model has K chances per response, and among several agreeing choices one is
  drawn at random (seeded per group). A group whose humans tied every response, with fewer than two judged
  responses, or with a response none of whose judgments is usable, cannot agree and is discarded, by reason.
- Balance: the paper resamples to even out the score distribution without giving a rule; here every grade keeps
  at most as many examples as the second most frequent grade (the dominant grade is trimmed to the runner-up),
  drawn at random with the seed. `balance=False` keeps everything.

Output under `out`: `train` (sft_examples, kind "eft": rendered judge prompt → the model's own judgment, score =
its parsed score; point seed_data.eft_uri at it), `eval_groups` (the held-out groups, unjudged, with their human
ranks: the evaluation set for `srlm eval reward-model --data`, never seen by the EFT) and `build_eft_summary.json`
(kept/discarded counts by reason, score histograms before and after balancing). Both tables carry a producer
fingerprint (model, groups table, settings): rerunning the same build is a no-op that reports the stored summary,
a different build into the same place is refused unless `force`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from srlm.errors import DataError
from srlm.evaluation.reward_model import RankedGroup, groups_from_table, judge_instruction
from srlm.judging.rubric import RubricSampling, judge_messages, judge_prompts
from srlm.judging.scores import score_bin, score_histogram
from srlm.store.schemas import schema
from srlm.store.uri import join_uri

TRAIN_TABLE = "train"
EVAL_TABLE = "eval_groups"
SUMMARY_NAME = "build_eft_summary.json"
SOURCE = "eft-from-rankings"
PRODUCER_STEP = "build eft"
DEFAULT_EVAL_FRACTION = 0.25  # the paper's 531 of 2,161 examples are evaluation (its group fraction is not given)
# Agreeing choices enumerated per group before one is drawn; beyond it the first ones found are drawn from.
MAX_CHOICES = 10_000

# Why a training group contributes no examples.
DISAGREES = "ranking_disagrees"
UNPARSED = "response_without_usable_judgment"
TOO_FEW = "fewer_than_two_judged_responses"
HUMAN_TIES = "human_ranks_all_equal"


@dataclass(frozen=True)
class BuildEftSettings:
    """What decides the content of a build besides the model and the groups (recorded in the producer)."""

    samples: int = 3
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    seed: int = 0
    max_groups: int | None = None
    first_turn_only: bool = True
    balance: bool = True
    template: str = "additive_5pt"
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    injection_guard: bool = False  # judge.injection_guard: the judge step's rendering of the response

    def rubric(self, template: str) -> RubricSampling:
        """How each response is judged: `template`'s text (the settings' template, loaded) and these samples."""
        return RubricSampling(
            template, num_samples=self.samples, temperature=self.temperature, top_p=self.top_p,
            max_new_tokens=self.max_new_tokens, injection_guard=self.injection_guard,
        )

    def check(self) -> None:
        if self.samples < 1:
            raise DataError(f"--samples: must be at least 1, got {self.samples}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise DataError(f"--eval-fraction: must be in [0, 1), got {self.eval_fraction}")
        if self.max_groups is not None and self.max_groups < 1:
            raise DataError(f"--max-groups: must be at least 1, got {self.max_groups}")


@dataclass
class Judgment:
    text: str
    score: float | None  # None: unparsed, or cut off at max_new_tokens
    truncated: bool = False


@dataclass
class JudgedResponse:
    response_id: str
    response: str
    human_rank: int
    prompt: str  # the rendered judge prompt
    judgments: list[Judgment] = field(default_factory=list)
    too_long: bool = False


@dataclass
class BuildEftSummary:
    model: str
    groups: str
    out: dict[str, str]
    settings: dict[str, Any]
    groups_read: int = 0
    eval_groups: int = 0
    eval_responses: int = 0
    train_groups: int = 0
    judgments: int = 0
    judgments_parsed: int = 0
    judgments_truncated: int = 0
    responses_too_long: int = 0
    groups_kept: int = 0
    groups_discarded: dict[str, int] = field(default_factory=dict)  # by reason
    examples_agreeing: int = 0  # judgments kept by the agreement filter, before balancing
    examples_balanced_out: int = 0
    train_examples: int = 0
    histogram_agreeing: dict[str, int] = field(default_factory=dict)
    histogram_train: dict[str, int] = field(default_factory=dict)
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        def hist(h: dict[str, int]) -> str:
            return " ".join(f"{k}:{v}" for k, v in h.items())

        discarded = ", ".join(f"{k} {v}" for k, v in sorted(self.groups_discarded.items())) or "none"
        parse_rate = f"{self.judgments_parsed / self.judgments:.1%}" if self.judgments else "n/a"
        return "\n".join(
            [
                f"{'Kept existing EFT build' if self.reused else 'Built EFT'} from {self.groups} judged by {self.model}",
                f"  groups:        {self.groups_read} read, {self.train_groups} train, {self.eval_groups} held out "
                f"({self.eval_responses} responses) → {self.out[EVAL_TABLE]}",
                f"  judgments:     {self.judgments} ({parse_rate} parsed, {self.judgments_truncated} cut off), "
                f"{self.responses_too_long} responses too long to judge",
                f"  agreement:     {self.groups_kept} groups kept; discarded: {discarded}",
                f"  scores before: {hist(self.histogram_agreeing)}  ({self.examples_agreeing} agreeing judgments)",
                f"  scores after:  {hist(self.histogram_train)}  ({self.examples_balanced_out} balanced out)",
                f"  train:         {self.train_examples} EFT examples → {self.out[TRAIN_TABLE]}",
            ]
        )


def is_eval_group(group_id: str, fraction: float) -> bool:
    """Whether a group is held out: a hash of its id, so the split depends on nothing else."""
    digest = hashlib.sha256(group_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def judge_requests(groups: Sequence[RankedGroup], sampling: RubricSampling) -> list[list[JudgedResponse]]:
    """Every response of every group with its rendered judge prompt (the judge step's and reward-model's prompt)."""
    return [
        [
            JudgedResponse(
                r.response_id, r.response, r.human_rank, sampling.prompt(judge_instruction(g.prompt_messages), r.response)
            )
            for r in g.responses
        ]
        for g in groups
    ]


def judge(groups: Sequence[list[JudgedResponse]], backend, sampling: RubricSampling) -> None:
    """Fill every response's `judgments` with K samples from `backend` (in place); responses whose judge prompt
    does not fit the backend's context are marked too_long and not judged."""
    responses = [r for group in groups for r in group]
    for response, judgments in zip(responses, judge_prompts(backend, [r.prompt for r in responses], sampling), strict=True):
        response.too_long = judgments is None
        # A judgment cut off at max_new_tokens is not used (see the module docstring), so it carries no score.
        response.judgments = [
            Judgment(j.text.strip(), None if j.truncated else j.score, j.truncated) for j in judgments or []
        ]


def agreeing_choice(responses: Sequence[JudgedResponse], rng: random.Random) -> tuple[list[int] | None, str | None]:
    """(index of the chosen judgment per response, None) when some choice of one usable judgment per response
    orders every human-ordered pair the same way, strictly; else (None, reason)."""
    if len(responses) < 2:
        return None, TOO_FEW
    if len({r.human_rank for r in responses}) < 2:
        return None, HUMAN_TIES
    options = [sorted({j.score for j in r.judgments if j.score is not None}) for r in responses]
    if any(not scores for scores in options):
        return None, UNPARSED
    # Backtrack over responses best-first; each choice must be below every human-better and above every
    # human-worse response chosen so far. Valid prefixes are few (six grades), so this stays small.
    order = sorted(range(len(responses)), key=lambda i: responses[i].human_rank)
    found: list[tuple[float, ...]] = []
    chosen: list[float] = []

    def extend(depth: int) -> None:
        if len(found) >= MAX_CHOICES:
            return
        if depth == len(order):
            found.append(tuple(chosen))
            return
        rank = responses[order[depth]].human_rank
        for score in options[order[depth]]:
            if all((responses[order[k]].human_rank == rank) or score < chosen[k] for k in range(depth)):
                chosen.append(score)
                extend(depth + 1)
                chosen.pop()

    extend(0)
    if not found:
        return None, DISAGREES
    scores = rng.choice(found)
    choice = [0] * len(responses)
    for position, index in enumerate(order):
        matching = [k for k, j in enumerate(responses[index].judgments) if j.score == scores[position]]
        choice[index] = rng.choice(matching)
    return choice, None


def balance_by_score(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Trim every grade to the count of the second most frequent grade (the paper evens out a distribution
    dominated by one score without stating a rule); which rows go is drawn with `seed`. Order is kept."""
    by_grade: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_grade.setdefault(score_bin(row["score"]), []).append(index)
    counts = sorted((len(v) for v in by_grade.values()), reverse=True)
    if len(counts) < 2:
        return list(rows)
    cap = counts[1]
    rng = random.Random(seed)
    keep: list[int] = []
    for grade in sorted(by_grade):
        indices = by_grade[grade]
        keep.extend(indices if len(indices) <= cap else rng.sample(indices, cap))
    return [rows[i] for i in sorted(keep)]


def build_from_groups(
    groups: Sequence[RankedGroup], backend, settings: BuildEftSettings, summary: BuildEftSummary, template: str
) -> tuple[list[dict[str, Any]], list[RankedGroup]]:
    """(EFT rows for the train table, held-out groups); fills the counts of `summary`."""
    settings.check()
    if settings.max_groups is not None:
        groups = list(groups)[: settings.max_groups]
    summary.groups_read = len(groups)
    held_out = [g for g in groups if is_eval_group(g.group_id, settings.eval_fraction)]
    train = [g for g in groups if not is_eval_group(g.group_id, settings.eval_fraction)]
    summary.eval_groups, summary.train_groups = len(held_out), len(train)
    summary.eval_responses = sum(len(g.responses) for g in held_out)

    sampling = settings.rubric(template)
    judged = judge_requests(train, sampling)
    judge(judged, backend, sampling)
    all_judgments = [j for group in judged for r in group for j in r.judgments]
    summary.judgments = len(all_judgments)
    summary.judgments_parsed = sum(j.score is not None for j in all_judgments)
    summary.judgments_truncated = sum(j.truncated for j in all_judgments)
    summary.responses_too_long = sum(r.too_long for group in judged for r in group)

    rows: list[dict[str, Any]] = []
    discarded: Counter[str] = Counter()
    for group, responses in zip(train, judged, strict=True):
        fitting = [r for r in responses if not r.too_long]
        rng = random.Random(f"{settings.seed}:{group.group_id}")  # per group: other groups never shift its draw
        choice, reason = agreeing_choice(fitting, rng)
        if choice is None:
            discarded[reason] += 1
            continue
        summary.groups_kept += 1
        for response, index in zip(fitting, choice, strict=True):
            judgment = response.judgments[index]
            rows.append(
                {
                    "example_id": f"{group.group_id}/{response.response_id}",
                    "kind": "eft",
                    "prompt_messages": judge_messages(response.prompt),
                    "completion": judgment.text,
                    "source": SOURCE,
                    "score": float(judgment.score),
                }
            )
    summary.groups_discarded = dict(sorted(discarded.items()))
    summary.examples_agreeing = len(rows)
    summary.histogram_agreeing = score_histogram(row["score"] for row in rows)
    if settings.balance:
        rows = balance_by_score(rows, settings.seed)
    summary.examples_balanced_out = summary.examples_agreeing - len(rows)
    summary.train_examples = len(rows)
    summary.histogram_train = score_histogram(row["score"] for row in rows)
    return rows, held_out


def eval_groups_rows(groups: Sequence[RankedGroup], table: pa.Table) -> pa.Table:
    """The rows of `table` (an eval_groups table) belonging to the held-out groups, as read."""
    import pyarrow.compute as pc

    wanted = pa.array(sorted({g.group_id for g in groups}), type=pa.string())
    return table.filter(pc.is_in(table.column("group_id"), value_set=wanted))


@dataclass(frozen=True)
class BuildEftRequest:
    model: str
    groups: str
    out: str
    settings: BuildEftSettings = field(default_factory=BuildEftSettings)
    force: bool = False
    allow_empty: bool = False


def output_uris(out: str) -> dict[str, str]:
    return {TRAIN_TABLE: join_uri(out, TRAIN_TABLE), EVAL_TABLE: join_uri(out, EVAL_TABLE)}


def build_eft(ctx, request: BuildEftRequest, *, backend=None) -> BuildEftSummary:
    """Run a build (see the module docstring); `backend` replaces the model's own (tests, callers holding one)."""
    from srlm.errors import StoreError
    from srlm.evaluation.use_cases import eval_groups_source, model_ref_for, open_model_backend
    from srlm.judging.template import load_template
    from srlm.steps.reuse import fingerprint, make_producer
    from srlm.store import artifacts

    settings = request.settings
    settings.check()
    groups_uri = eval_groups_source(request.groups)
    uris = output_uris(request.out)
    summary = BuildEftSummary(request.model, groups_uri, uris, asdict(settings))
    model_ref = model_ref_for(ctx, request.model)
    producer = make_producer(
        PRODUCER_STEP,
        {"model": model_ref.as_input(), "eval_groups": fingerprint(groups_uri)},
        {**asdict(settings), "max_model_len": ctx.config.backend.max_model_len},
    )
    if not request.force and _existing_build(uris, producer):
        try:
            stored = json.loads(artifacts.read_text(join_uri(request.out, SUMMARY_NAME)))
        except StoreError:  # a build that stopped between committing its tables and writing the summary: redo it
            stored = None
        if stored is not None:
            stored.update(out=uris, reused=True)
            return BuildEftSummary(**stored)

    table = artifacts.read_table(groups_uri, "eval_groups")
    groups = groups_from_table(table, first_turn_only=settings.first_turn_only)
    if not groups:
        raise DataError(
            f"{groups_uri}: no human-ranked groups" + (" with a first-turn prompt" if settings.first_turn_only else "")
        )
    template = load_template(settings.template)
    if backend is None:
        with open_model_backend(ctx, model_ref) as opened:
            rows, held_out = build_from_groups(groups, opened, settings, summary, template)
    else:
        rows, held_out = build_from_groups(groups, backend, settings, summary, template)
    if not rows and not request.allow_empty:
        raise DataError(
            f"{groups_uri}: no judgment of {request.model} agreed with the human ranking "
            f"({summary.train_groups} training groups; discarded: {summary.groups_discarded or 'none'}); "
            "nothing committed (--allow-empty commits an empty EFT table)"
        )
    artifacts.write_table(
        uris[TRAIN_TABLE],
        pa.Table.from_pylist(rows, schema=schema("sft_examples")),
        "sft_examples",
        producer=producer,
        force=True,
    )
    artifacts.write_table(
        uris[EVAL_TABLE], eval_groups_rows(held_out, table), "eval_groups", producer=producer, force=True
    )
    artifacts.write_text(
        join_uri(request.out, SUMMARY_NAME), json.dumps(summary.to_dict(), indent=1, ensure_ascii=False) + "\n"
    )
    return summary


def _existing_build(uris: dict[str, str], producer: dict[str, Any]) -> bool:
    """True when both tables hold this very build; DataError when one holds another build (use force)."""
    from srlm.steps.reuse import check_committed

    same = []
    for uri in uris.values():
        verdict = check_committed(uri, producer)
        if verdict.manifest is None:
            same.append(False)
            continue
        if not verdict.reusable or verdict.outside:
            why = "; ".join(verdict.reasons) or "written without a producer to compare"
            raise DataError(f"{uri}: already holds another EFT build or other data ({why}); use --force to replace it")
        same.append(True)
    return all(same)


__all__ = [
    "BuildEftRequest",
    "BuildEftSettings",
    "BuildEftSummary",
    "agreeing_choice",
    "balance_by_score",
    "build_eft",
    "build_from_groups",
    "is_eval_group",
]
