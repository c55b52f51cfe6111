"""The step registry: every step srlm runs is declared here once, and everything that lists steps reads it.

Readers: `srlm iterate` (srlm.steps.iterate: the iteration's step order and --from-step), the step subcommands
(srlm.cli.steps: names, help, options), the orchestrated task entry point (srlm.orchestration.task: which runner
a spec's step calls), step specs (srlm.orchestration.spec: which steps exist, which need an iteration), the DAGs
(task timeouts) and the reuse rule (srlm.steps.reuse: which config keys decide whether a committed output is
still current).

Adding a step touches three places:
  1. its module under srlm/steps/ with the step function and `run_step(ctx, call) -> StepResult`;
  2. one `StepDef(...)` in STEPS below (name, runner path, inputs, output, timeout, config keys, CLI options);
  3. its DAG wiring (the task in dags/ that runs it and passes its inputs).
The CLI subcommand, the orchestrated runner, spec validation, the iterate order (for an iteration step) and the
reuse fingerprint follow from the StepDef; nothing else lists steps.

Only the standard library (and srlm.checkpoint_ids, itself stdlib-only) is imported here, so DAG files can read
the registry at parse time; runners are dotted paths ("srlm.steps.generate:run_step") resolved on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from srlm.checkpoint_ids import checkpoint_id

# What a step holds while it runs: a generation engine (one GPU: the DAGs put these in the GPU pool), a training
# job (its own process, GPUs too), or plain CPU work.
GENERATION = "generation"
TRAINING = "training"
CPU = "cpu"
RESOURCE_KINDS = (GENERATION, TRAINING, CPU)


@dataclass(frozen=True)
class CliOption:
    """One step-specific flag of the step's `srlm <step>` subcommand.

    target says where the value goes: "model" (StepCall.model), "out" (StepCall.out), "input:NAME"
    (StepCall.inputs[NAME]), "option:NAME" (StepCall.options[NAME]) or "config:SECTION.KEY" (a config override,
    as --set would make it).
    """

    flag: str
    target: str
    help: str
    metavar: str = "URI"


@dataclass(frozen=True)
class StepDef:
    """One step, declared once.

    name: the step's name everywhere (CLI subcommand, spec.step, DAG task id, summary directory).
    summary: one line saying what it does (CLI help). description: optional longer CLI text.
    runner: "module:function" of `run_step(ctx: StepContext, call: StepCall) -> StepResult`.
    inputs: names of the upstream outputs it reads (spec.inputs keys); "model" is the model the iteration runs on
        (M_{t-1}): an orchestrated iteration step with a "model" input refuses any other model.
    output: where its output lives in the run layout: a RunLayout attribute (called with the iteration when it is
        a method) or a callable (layout, iteration) -> URI.
    timeout: default time limit of its orchestrated task.
    iteration: whether it belongs to a self-rewarding iteration (in order: STEPS lists them in run order).
    resources: GENERATION, TRAINING or CPU.
    config_keys: config sections ("dpo") or keys ("backend.seed") that change its output: a committed output is
        reused only while their values (and the inputs' fingerprints and the schema version) are unchanged.
    operational_keys: keys inside config_keys that change how the step runs but not what it produces.
    model_key: the config key an orchestrated spec's `model` sets (sft: the base model), if any.
    cli: its subcommand's step-specific options; None when the step has no `srlm <step>` subcommand.
    """

    name: str
    summary: str
    runner: str
    inputs: tuple[str, ...]
    output: str | Callable[[Any, int], str]
    timeout: timedelta
    iteration: bool
    resources: str
    config_keys: tuple[str, ...] = ()
    operational_keys: tuple[str, ...] = ()
    model_key: str | None = None
    cli: tuple[CliOption, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.resources not in RESOURCE_KINDS:
            raise ValueError(f"step {self.name}: resources must be one of {', '.join(RESOURCE_KINDS)}")
        if ":" not in self.runner:
            raise ValueError(f"step {self.name}: runner must be 'module:function', got {self.runner!r}")

    def load_runner(self) -> Callable[..., Any]:
        """The runner function (imports its module: torch-free, but pyarrow and the store)."""
        module, _, attr = self.runner.partition(":")
        return getattr(importlib.import_module(module), attr)

    def output_uri(self, layout: Any, iteration: int) -> str:
        if callable(self.output):
            return self.output(layout, iteration)
        where = getattr(layout, self.output)
        return where(iteration) if callable(where) else where


# The training sections' keys that decide how a job runs, not the model it produces: the global batch size is
# fixed (accumulation makes it up from the micro-batch over however many processes), gradient checkpointing
# recomputes the same activations, precomputing the reference log-probs computes the same numbers up front, and
# where the workers run or how their state is sharded does not change the arithmetic. For sft, save_steps only adds
# intermediate saves; for dpo it is not operational, because checkpoint selection chooses M_t among those saves.
# mixed_precision, master_weights, seed, dropout, … stay in: they change the weights.
TRAINING_OPERATIONAL = (
    "per_device_batch_size", "num_processes", "gradient_checkpointing", "precompute_ref_log_probs",
    "backend", "use_gpu", "cpus_per_worker", "placement_strategy", "max_failures", "sharding", "fsdp_offload",
)
# How many outputs a generation step packs into one committed shard: a resumption detail, not a result.
SHARDING = ("shard_size",)


def _model_of(layout: Any, iteration: int) -> str:
    return layout.model(checkpoint_id(iteration))


def _evaluation_of(layout: Any, iteration: int) -> str:
    return layout.eval_result(checkpoint_id(iteration), "", "")


def _run_of(layout: Any, iteration: int) -> str:
    return layout.run_uri  # the engines step commits nothing; its result names the run it served


def _judgment_pairs_of(layout: Any, iteration: int) -> str:
    return f"{layout.iteration(iteration).rstrip('/')}/judgment_pairs"  # the store's join_uri, kept stdlib-only


def _judge_health_of(layout: Any, iteration: int) -> str:
    # Beside the iteration's tables (RunLayout.iteration(t) has no trailing slash, local or s3).
    return f"{layout.iteration(iteration)}/judge_health"


def _iteration_dir(flag_help: str) -> str:
    return f"{flag_help} Default: <run>/iterations/T/"


STEPS: tuple[StepDef, ...] = (
    StepDef(
        name="sft",
        summary="Seed SFT on IFT + EFT data: base model → M0 (registered).",
        description="Fine-tune the base model on the seed IFT (instruction following) and EFT (judging) examples, "
        "loss on completions only, in a separate training process; register the result as M0.",
        runner="srlm.steps.sft:run_step",
        inputs=(),  # its data are the run's seed tables (config seed_data), its model is model.base
        output=_model_of,
        timeout=timedelta(hours=24),
        iteration=False,
        resources=TRAINING,
        config_keys=("sft", "model.chat_template"),
        operational_keys=tuple(f"sft.{k}" for k in (*TRAINING_OPERATIONAL, "save_steps")),
        model_key="model.base",
        cli=(
            CliOption("--model", "config:model.base",
                      "Base model: alias, HF directory, checkpoint URI or hub id (model.base).", "SPEC"),
            CliOption("--ift", "config:seed_data.ift_uri",
                      "IFT sft_examples table (seed_data.ift_uri). Default: srlm's shipped seed set."),
            CliOption("--eft", "config:seed_data.eft_uri",
                      "EFT sft_examples table (seed_data.eft_uri). Default: srlm's shipped seed set."),
        ),
    ),
    StepDef(
        name="prompts",
        summary="Self-instruct new prompts (8-shot: seed prompts and prompts generated earlier in the run), filtered, "
        "de-duplicated and screened against the earlier iterations' prompts.",
        runner="srlm.steps.prompts:run_step",
        # earlier_prompts: the prompts tables of iterations 1 … t-1, read from the run's layout (no task passes
        # them); their fingerprints are inputs, so a recomputed earlier table recomputes these prompts.
        inputs=("model", "seeds", "earlier_prompts"),
        output="prompts",
        timeout=timedelta(hours=4),
        iteration=True,
        resources=GENERATION,
        # prompts.model is the "model" input (its fingerprint); backend.seed seeds the shots each round shows. The
        # whole section counts: the demonstration mix (num_shots, num_generated_shots) and every filter setting.
        config_keys=("prompts", "backend.seed", "model.chat_template"),
        operational_keys=("prompts.model",),
        cli=(
            CliOption("--model", "config:prompts.model", "Generating model (prompts.model). Default: M_{T-1}.",
                      "SPEC"),
            CliOption("--seeds", "input:seeds",
                      "Seed prompts (prompts or sft_examples table). Default: the run's seed IFT prompts."),
            CliOption("--out", "out", _iteration_dir("Output prompts table.") + "prompts."),
        ),
    ),
    StepDef(
        name="generate",
        summary="Sample N candidate responses per prompt (candidates table).",
        runner="srlm.steps.generate:run_step",
        inputs=("model", "prompts"),
        output="candidates",
        timeout=timedelta(hours=8),
        iteration=True,
        resources=GENERATION,
        config_keys=("generate", "backend.seed", "model.chat_template"),
        # drop_truncated is read by the pairs step; the candidates do not depend on it.
        operational_keys=(*(f"generate.{k}" for k in SHARDING), "generate.drop_truncated"),
        cli=(
            CliOption("--model", "model",
                      "Responding model: M<k>, checkpoint URI, directory or alias. Default: M_{T-1}.", "SPEC"),
            CliOption("--input", "input:prompts", _iteration_dir("Prompts table.") + "prompts."),
            CliOption("--out", "out", _iteration_dir("Output candidates table.") + "candidates."),
        ),
    ),
    StepDef(
        name="judge",
        summary="Score every candidate K times with the judge rubric (judgments table).",
        runner="srlm.steps.judge:run_step",
        inputs=("model", "candidates"),
        output="judgments",
        timeout=timedelta(hours=12),
        iteration=True,
        resources=GENERATION,
        # judge.model is the "model" input; the template's text is an input too (its sha256), not its name.
        # backend.max_model_len decides which judge prompts are set aside as too long; min_parsed_samples is read
        # by the pairs step only.
        config_keys=("judge", "backend.seed", "backend.max_model_len", "model.chat_template"),
        operational_keys=(
            "judge.model", "judge.template", "judge.min_parsed_samples", *(f"judge.{k}" for k in SHARDING)
        ),
        cli=(
            CliOption("--model", "config:judge.model",
                      "Judge model (judge.model). Default: M_{T-1} (self-rewarding).", "SPEC"),
            CliOption("--input", "input:candidates", _iteration_dir("Candidates table.") + "candidates."),
            CliOption("--out", "out", _iteration_dir("Output judgments table.") + "judgments."),
        ),
    ),
    StepDef(
        name="meta_judge",
        summary="Meta-Rewarding: the model compares its own judgments in both orders (judgment_pairs table).",
        description="run.method meta_rewarding: per prompt, every pair of the judgments of the candidate they "
        "disagree most on is compared by the meta-judge in both orders; the battles, weighted against position "
        "bias, rate each judgment (Elo), and the best vs the worst judgment becomes a judge preference pair that dpo "
        "adds to the actor pairs. run.method self_rewarding: commits an empty table without opening a backend.",
        runner="srlm.steps.meta_judge:run_step",
        inputs=("model", "candidates", "judgments"),
        output=_judgment_pairs_of,
        timeout=timedelta(hours=12),
        iteration=True,
        resources=GENERATION,
        # judge.model is the "model" input; the meta-judge and judge templates' texts are inputs too (sha256).
        # length_control_rho shapes the actor pairs (the pairs step), not these.
        config_keys=("meta_rewarding", "run.method", "backend.seed", "model.chat_template"),
        operational_keys=("meta_rewarding.template", "meta_rewarding.shard_size", "meta_rewarding.length_control_rho"),
        cli=(
            CliOption("--model", "config:judge.model",
                      "Meta-judge model (judge.model). Default: M_{T-1} (the judge's own model).", "SPEC"),
            CliOption("--candidates", "input:candidates", _iteration_dir("Candidates table.") + "candidates."),
            CliOption("--judgments", "input:judgments", _iteration_dir("Judgments table.") + "judgments."),
            CliOption("--out", "out", _iteration_dir("Output judgment_pairs table.") + "judgment_pairs."),
        ),
    ),
    StepDef(
        name="pairs",
        summary="Best vs worst mean judge score per prompt (pairs table); ties dropped.",
        runner="srlm.steps.pairs:run_step",
        inputs=("candidates", "judgments"),
        output="pairs",
        timeout=timedelta(minutes=30),
        iteration=True,
        resources=CPU,
        # judge.min_parsed_samples and generate.drop_truncated are selection rules; judge.num_samples is the default
        # of the former.
        config_keys=(
            "pairs", "judge.min_parsed_samples", "judge.num_samples", "generate.drop_truncated", "run.method",
            "meta_rewarding.length_control_rho",
        ),
        cli=(
            CliOption("--candidates", "input:candidates", _iteration_dir("Candidates table.") + "candidates."),
            CliOption("--judgments", "input:judgments", _iteration_dir("Judgments table.") + "judgments."),
            CliOption("--out", "out", _iteration_dir("Output pairs table.") + "pairs."),
        ),
    ),
    StepDef(
        name="judge_health",
        summary="Judge-health gate before DPO: parse rate, score entropy, share of 5s, tie rate, length gap.",
        description="Measures the iteration's judgments and pairs against the judge_health thresholds and commits "
        "the result (judge_health artifact). A failed check stops the iteration with one line naming the metric, "
        "its value and its threshold; everything committed stays. --set judge_health.accept_warnings=true (srlm "
        "iterate/run: --accept-judge-warnings) continues past it and records the override.",
        runner="srlm.steps.judge_health:run_step",
        inputs=("judgments", "pairs"),
        output=_judge_health_of,
        timeout=timedelta(minutes=15),
        iteration=True,
        resources=CPU,
        # accept_warnings decides whether the iteration continues, not what the gate measures.
        config_keys=("judge_health",),
        operational_keys=("judge_health.accept_warnings",),
        cli=(
            CliOption("--judgments", "input:judgments", _iteration_dir("Judgments table.") + "judgments."),
            CliOption("--pairs", "input:pairs", _iteration_dir("Pairs table.") + "pairs."),
            CliOption("--out", "out", _iteration_dir("Output judge-health artifact.") + "judge_health."),
        ),
    ),
    StepDef(
        name="dpo",
        summary="DPO on the iteration's pairs: M_{T-1} → M_T (registered); reference model = M_{T-1}.",
        description="Trains M_T from M_{T-1} on the pairs table in a separate training process and registers it. "
        "An empty pairs table (every prompt tied, or judgments unparsable) is an error: nothing is registered, "
        "and M_T is never silently a copy of M_{T-1}.",
        runner="srlm.steps.dpo:run_step",
        inputs=("model", "pairs", "judgment_pairs"),  # judgment_pairs: read only when run.method is meta_rewarding
        output=_model_of,
        timeout=timedelta(hours=24),
        iteration=True,
        resources=TRAINING,
        config_keys=("dpo",),
        operational_keys=tuple(f"dpo.{k}" for k in TRAINING_OPERATIONAL),
        cli=(
            CliOption("--input", "input:pairs", _iteration_dir("Pairs table.") + "pairs."),
            CliOption("--judgment-pairs", "input:judgment_pairs",
                      _iteration_dir("Judgment pairs (run.method meta_rewarding).") + "judgment_pairs."),
        ),
    ),
    StepDef(
        name="engines",
        summary="Start, free or stop the engine pool of backend.engine_scope (options: action start | free | stop).",
        description="start: reap orphaned pools, then start the pool on the model the generation steps use (M_{T-1}); "
        "free: stop the scope's pools and wait until the resources the training job needs are free; stop: stop "
        "the scope's pools (a DAG's teardown). `srlm engines list|stop` shows and stops pools by hand.",
        runner="srlm.steps.engines:run_step",
        inputs=("model",),
        output=_run_of,
        timeout=timedelta(hours=1),
        iteration=False,
        resources=GENERATION,
    ),
    StepDef(
        name="evaluate",
        summary="Evaluate one checkpoint on the orchestrated suites (options: checkpoint, suites).",
        runner="srlm.steps.evaluate:run_step",
        inputs=("model",),
        output=_evaluation_of,
        timeout=timedelta(hours=4),
        iteration=False,
        resources=GENERATION,
        # Each suite records its own settings in its results' producers (srlm.evaluation).
    ),
    StepDef(
        name="checkpoints",
        summary="List the run's registered checkpoints (options: registered_from, registered_to).",
        runner="srlm.steps.checkpoints:run_step",
        inputs=(),
        output="registry",
        timeout=timedelta(minutes=15),
        iteration=False,
        resources=CPU,
    ),
)

STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)
# The steps of one self-rewarding iteration, in the order they run.
ITERATION_STEPS: tuple[str, ...] = tuple(step.name for step in STEPS if step.iteration)
# The orchestrated tasks' default time limits, by step.
TIMEOUTS: dict[str, timedelta] = {step.name: step.timeout for step in STEPS}

_BY_NAME = {step.name: step for step in STEPS}
assert len(_BY_NAME) == len(STEPS), "step names must be unique"


def step(name: str) -> StepDef:
    """The StepDef called `name`; KeyError listing the known steps otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown step {name!r}; steps: {', '.join(STEP_NAMES)}") from None


def is_step(name: str) -> bool:
    return name in _BY_NAME
