"""`python -m srlm.orchestration.task STEP --spec JSON`: run one step of a plan, wherever it was sent.

This is the single entry point a Ray job, a Kubernetes pod or a local subprocess runs. It rebuilds the step's
context from the spec's resolved config, calls the library step (srlm.steps / the `srlm eval` commands), and
ends its output with one `srlm-task-result: {...}` line holding the output URIs (srlm.orchestration.result).

Exit codes: 0 done; 1 failed (a retry may help: a crash, a lost node, the store unreachable); 3 failed for a
reason a retry cannot fix (bad config or data: srlm's ConfigError / DataError), so orchestrators stop retrying.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from datetime import datetime, timezone
from typing import Any, Callable

from srlm.errors import ConfigError, DataError, SrlmError
from srlm.orchestration.result import PERMANENT_FAILURE_EXIT_CODE, publish_result
from srlm.orchestration.spec import STEPS, StepSpec

log = logging.getLogger(__name__)

EVAL_SUITE_VERSION = "v1"
DEFAULT_EVAL_SUITES = ("reward_model", "monitors")


def _context(spec: StepSpec, overrides: dict[str, Any] | None = None):
    from srlm.config import apply_overrides, config_from_dict
    from srlm.steps.context import StepContext

    config = config_from_dict(spec.config, f"{spec.step} spec config")
    if overrides:
        config = apply_overrides(config, overrides)
    return StepContext.from_config(config, progress=False)


def _model(ctx, spec: StepSpec):
    """The model iteration t runs on: the registered M_{t-1}, which the spec's model (when given) must be.

    DPO (srlm.steps.dpo) trains from the registry's M_{t-1}; generating and judging with any other model would
    break the self-rewarding loop, so a mismatch is refused before the first step does any work.
    """
    from srlm.steps.checkpoints import checkpoint_id, model_from_spec, registered_model

    parent = registered_model(ctx, checkpoint_id(spec.iteration - 1))
    if spec.model and spec.model != parent.label:
        given = model_from_spec(ctx, spec.model)
        if given.fingerprint != parent.fingerprint:
            raise ConfigError(
                f"input model {spec.model} is not the registered {parent.label} ({parent.spec}); iteration "
                f"{spec.iteration} generates with and trains from the registered {parent.label}"
            )
    return parent


def _model_or(ctx, configured: str | None, default):
    from srlm.steps.checkpoints import model_from_spec

    return model_from_spec(ctx, configured) if configured else default


def run_sft(spec: StepSpec) -> dict[str, Any]:
    from srlm.steps.sft import train_seed_model

    ctx = _context(spec, {"model.base": spec.model} if spec.model else None)
    result = train_seed_model(ctx, force=spec.force)
    return {"uri": result.uri, "checkpoint_id": "M0", "reused": result.reused}


def run_prompts(spec: StepSpec) -> dict[str, Any]:
    from srlm.steps.iterate import new_backend_pool
    from srlm.steps.prompts import generate_prompts
    from srlm.steps.seeds import seed_prompt_texts

    ctx = _context(spec)
    model = _model_or(ctx, ctx.config.prompts.model, _model(ctx, spec))
    with new_backend_pool(ctx) as pool:
        result = generate_prompts(
            ctx, spec.iteration, model=model, backends=pool, seeds=seed_prompt_texts(ctx), force=spec.force
        )
    return {"uri": result.uri, "reused": result.reused}


def run_generate(spec: StepSpec) -> dict[str, Any]:
    from srlm.steps.generate import generate_candidates
    from srlm.steps.iterate import new_backend_pool

    ctx = _context(spec)
    with new_backend_pool(ctx) as pool:
        result = generate_candidates(
            ctx, spec.iteration, model=_model(ctx, spec), backends=pool, prompts_uri=spec.inputs.get("prompts"),
            force=spec.force,
        )
    return {"uri": result.uri, "reused": result.reused}


def run_judge(spec: StepSpec) -> dict[str, Any]:
    from srlm.steps.iterate import new_backend_pool
    from srlm.steps.judge import judge_candidates

    ctx = _context(spec)
    model = _model_or(ctx, ctx.config.judge.model, _model(ctx, spec))
    with new_backend_pool(ctx) as pool:
        result = judge_candidates(
            ctx, spec.iteration, model=model, backends=pool, candidates_uri=spec.inputs.get("candidates"),
            force=spec.force,
        )
    return {"uri": result.uri, "reused": result.reused}


def run_pairs(spec: StepSpec) -> dict[str, Any]:
    from srlm.steps.pairs import build_pairs

    ctx = _context(spec)
    result = build_pairs(
        ctx, spec.iteration, candidates_uri=spec.inputs.get("candidates"),
        judgments_uri=spec.inputs.get("judgments"), force=spec.force,
    )
    return {"uri": result.uri, "reused": result.reused}


def run_train(spec: StepSpec) -> dict[str, Any]:
    from srlm.steps.checkpoints import checkpoint_id
    from srlm.steps.dpo import train_iteration_model

    ctx = _context(spec)
    _model(ctx, spec)  # the same input-model check as the generation steps
    result = train_iteration_model(ctx, spec.iteration, pairs_uri=spec.inputs.get("pairs"), force=spec.force)
    return {"uri": result.uri, "checkpoint_id": checkpoint_id(spec.iteration), "reused": result.reused}


def run_checkpoints(spec: StepSpec) -> dict[str, Any]:
    """The run's registered checkpoints, optionally only those registered in [registered_from, registered_to)."""
    from srlm.training.registry import list_records

    ctx = _context(spec)
    start = _instant(spec.options.get("registered_from"), "registered_from")
    end = _instant(spec.options.get("registered_to"), "registered_to")
    checkpoints = [
        {
            "checkpoint_id": record.checkpoint_id,
            "iteration": int(record.iteration),
            "uri": record.uri,
            "final": bool(record.final),
            "created_at": record.created_at.isoformat(),
        }
        for record in list_records(ctx.layout)
        if (start is None or record.created_at >= start) and (end is None or record.created_at < end)
    ]
    ctx.echo(f"{len(checkpoints)} checkpoint(s) registered in run {ctx.layout.run!r} between {start} and {end}")
    return {"uri": ctx.layout.registry, "checkpoints": checkpoints}


def run_evaluate(spec: StepSpec) -> dict[str, Any]:
    """Evaluate one checkpoint on each suite through the `srlm eval` commands; committed results are kept."""
    ctx = _context(spec)
    checkpoint = str(spec.options["checkpoint"])
    suites = tuple(spec.options.get("suites") or DEFAULT_EVAL_SUITES)
    unknown = sorted(set(suites) - set(SUITE_RUNNERS))
    if unknown:
        raise ConfigError(
            f"evaluate: unknown suite(s) {', '.join(unknown)}; orchestrated suites: {', '.join(SUITE_RUNNERS)}"
        )
    results: dict[str, str] = {}
    skipped: dict[str, str] = {}
    with _config_file(ctx.config) as config_path:
        for suite in suites:
            outcome = SUITE_RUNNERS[suite](ctx, checkpoint, config_path, spec.force)
            if outcome.startswith("skipped: "):
                skipped[suite] = outcome[len("skipped: ") :]
                ctx.echo(f"evaluate {checkpoint}: {suite} {outcome}")
            else:
                results[suite] = outcome
    return {"uri": ctx.layout.eval_result(checkpoint, "", ""), "results": results, "skipped": skipped}


def _reward_model_suite(ctx, checkpoint: str, config_path: str, force: bool) -> str:
    from srlm.store import artifacts

    data = ctx.config.seed_data.eval_groups_uri or ctx.layout.eval_groups
    if not artifacts.is_committed(data):
        return f"skipped: no human-ranked eval groups at {data} (set seed_data.eval_groups_uri)"
    _srlm_cli(
        ["eval", "reward-model", "--model", checkpoint, "--data", data, "--config", config_path,
         "--run", ctx.layout.run, "--store", ctx.layout.root, "--checkpoint", checkpoint,
         "--suite-version", EVAL_SUITE_VERSION, *(["--force"] if force else [])]
    )
    return ctx.layout.eval_result(checkpoint, "reward_model", EVAL_SUITE_VERSION)


def _monitors_suite(ctx, checkpoint: str, config_path: str, force: bool) -> str:
    # Monitors describe the data a model generated (iteration t's data comes from M_{t-1}), and are recorded
    # under that model for every iteration of the run (idempotently: committed ones are kept unless forced).
    from srlm.store import artifacts

    _srlm_cli(
        ["eval", "monitors", "--run", ctx.layout.run, "--store", ctx.layout.root, "--record",
         "--suite-version", EVAL_SUITE_VERSION, *(["--force"] if force else [])]
    )
    uri = ctx.layout.eval_result(checkpoint, "monitors", EVAL_SUITE_VERSION)
    if not artifacts.is_committed(uri):
        return f"skipped: no iteration data generated by {checkpoint} yet (monitors of the run are recorded)"
    return uri


SUITE_RUNNERS: dict[str, Callable[..., str]] = {"reward_model": _reward_model_suite, "monitors": _monitors_suite}


def _srlm_cli(argv: list[str]) -> None:
    """Run an `srlm` command in this process; a non-zero exit is an error naming the command."""
    from srlm.cli.main import main as srlm_main

    log.info("srlm %s", " ".join(argv))
    code = srlm_main(["--debug", *argv])
    if code:
        raise SrlmError(f"`srlm {' '.join(argv[:2])}` exited with code {code}")


@contextlib.contextmanager
def _config_file(config):
    """The resolved config as a YAML file for `srlm … --config` (deleted afterwards)."""
    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="srlm-config-", delete=False) as handle:
        yaml.safe_dump(config.to_dict(), handle, sort_keys=True)
    try:
        yield handle.name
    finally:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)


def _instant(value: Any, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"checkpoints: options.{name} {value!r} is not an ISO-8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


RUNNERS: dict[str, Callable[[StepSpec], dict[str, Any]]] = {
    "sft": run_sft,
    "prompts": run_prompts,
    "generate": run_generate,
    "judge": run_judge,
    "pairs": run_pairs,
    "train": run_train,
    "evaluate": run_evaluate,
    "checkpoints": run_checkpoints,
}
assert set(RUNNERS) == set(STEPS)


def run_step(spec: StepSpec) -> dict[str, Any]:
    """Run the spec's step in this process and return its outputs (at least {"uri": …})."""
    return RUNNERS[spec.step](spec)


def _read_spec(value: str) -> StepSpec:
    if value.startswith("@"):
        path = value[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                return StepSpec.from_json(handle.read(), source=path)
        except OSError as exc:
            raise ConfigError(f"--spec {path}: cannot read: {exc.strerror}") from None
    return StepSpec.from_json(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m srlm.orchestration.task",
        description="Run one orchestrated srlm step from a JSON spec (what the Airflow tasks send to Ray/Kubernetes).",
    )
    parser.add_argument("step", choices=STEPS, help="The step to run; must match the spec's step.")
    parser.add_argument("--spec", required=True, help="The StepSpec as JSON, or @FILE holding it.")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks.")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        spec = _read_spec(args.spec)
        if spec.step != args.step:
            raise ConfigError(f"the command runs step {args.step!r} but the spec is for {spec.step!r}")
        outputs = run_step(spec)
    except (ConfigError, DataError) as exc:
        if args.debug:
            raise
        print(f"srlm: error (not retryable): {exc}", file=sys.stderr, flush=True)
        return PERMANENT_FAILURE_EXIT_CODE
    except SrlmError as exc:
        if args.debug:
            raise
        print(f"srlm: error: {exc}", file=sys.stderr, flush=True)
        return 1
    publish_result(outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
