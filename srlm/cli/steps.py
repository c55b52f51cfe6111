"""CLI group 'steps': `srlm sft / prompts / generate / judge / pairs / dpo / iterate / run`.

The single-step subcommands come from the step registry (srlm.steps.registry): each StepDef with `cli` options
becomes `srlm <name>`, its options map onto the StepCall (model, inputs, out) or onto config keys, and its
registered runner does the work. Every command reads the config (--config, --set section.key=value, and shortcuts for the common keys), works out
its input and output URIs from the run layout unless --input/--out say otherwise, prints a one-screen summary
after each step, and reuses committed outputs unless --force.
"""

from __future__ import annotations

import argparse
from typing import Any

from srlm.cli.common import add_backend_option, add_set_option
from srlm.steps.registry import GENERATION, ITERATION_STEPS, STEPS, StepDef


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="YAML", help="Config file (sections as in srlm/config.py). Default: built-in defaults (the paper's settings).")
    add_set_option(group)
    group.add_argument("--store", metavar="URI", help="Store root: a path, file://… or s3://bucket/prefix (store.uri).")
    group.add_argument("--run", dest="run_name", metavar="NAME", help="Run name; artifacts go to <store>/runs/<NAME>/ (run.name).")
    group.add_argument("--force", action="store_true", help="Recompute even if a committed output exists.")
    group.add_argument("--no-progress", action="store_true", help="No progress bars (default: shown on a terminal).")


def _backend(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)


def _iteration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--iteration", "-t", type=int, metavar="T",
        help="Iteration (1-based; iteration T uses M_{T-1} and trains M_T). Default: the one after the newest "
        "registered model.",
    )


def register(subparsers) -> None:
    # One subcommand per registry step that has CLI options (srlm.steps.registry), then the compositions.
    for definition in STEPS:
        if definition.cli is None:
            continue
        parser = subparsers.add_parser(
            definition.name, help=definition.summary, description=definition.description or definition.summary
        )
        _common(parser)
        if definition.resources == GENERATION:
            _backend(parser)
        if definition.iteration:
            _iteration(parser)
        for option in definition.cli:
            parser.add_argument(option.flag, dest=_dest(option.flag), metavar=option.metavar, help=option.help)
        parser.set_defaults(func=lambda args, definition=definition: run_registered_step(definition, args))

    iterate = subparsers.add_parser(
        "iterate", help="One self-rewarding iteration: prompts → candidates → judgments → pairs → judge health → DPO → M_T.",
        description="Runs prompts, generate and judge on one generation backend opened on M_{T-1} (closed before "
        "training), then pairs, the judge-health gate and DPO, registering M_T. Committed steps are reused, so a "
        "rerun resumes. An iteration whose judge fails the gate (judge_health thresholds), or that yields no "
        "preference pairs, stops with an error before DPO; its committed data stays for inspection.",
    )
    _common(iterate)
    _backend(iterate)
    _iteration(iterate)
    iterate.add_argument(
        "--from-step", choices=ITERATION_STEPS,
        help="Recompute this step (later steps follow, their inputs having changed). --force means --from-step prompts.",
    )
    _accept_judge_warnings(iterate)
    iterate.set_defaults(func=run_iterate)

    run = subparsers.add_parser(
        "run", help="The whole job: prepare the base model, seed SFT → M0, then the configured iterations.",
        description="Resolves (and if needed prepares) model.base, trains M0 by seed SFT, then runs run.iterations "
        "self-rewarding iterations. Everything committed is reused: rerunning continues where it stopped.",
    )
    _common(run)
    _backend(run)
    run.add_argument("--model", metavar="SPEC", help="Base model (model.base).")
    run.add_argument("--iterations", type=int, metavar="K", help="Iterations after the seed SFT (run.iterations).")
    _accept_judge_warnings(run)
    run.set_defaults(func=run_run)


def _accept_judge_warnings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accept-judge-warnings", action="store_true",
        help="Continue past a failed judge-health check before DPO (judge_health.accept_warnings); the override is "
        "recorded in the iteration's judge_health artifact.",
    )


def _judge_warnings(args: argparse.Namespace) -> dict[str, Any]:
    """The --accept-judge-warnings shortcut: set only when given, so the config's value stands otherwise."""
    return {"judge_health.accept_warnings": True if args.accept_judge_warnings else None}


def _dest(flag: str) -> str:
    return "step_" + flag.lstrip("-").replace("-", "_")


def _context(args: argparse.Namespace, **shortcuts: Any):
    from srlm.config import load_config, parse_set_options
    from srlm.steps.context import StepContext

    overrides = parse_set_options(args.overrides)
    # A shortcut given (--store, --run, --backend, a step's own flags) wins over --set; one not given leaves the
    # --set value (and the file's) alone.
    shortcuts = {
        "store.uri": args.store, "run.name": args.run_name, "backend.backend": getattr(args, "backend", None),
        **shortcuts,
    }
    overrides.update({key: value for key, value in shortcuts.items() if value is not None})
    config = load_config(args.config, overrides)
    return StepContext.from_config(config, progress=False if args.no_progress else None)


def _iteration_of(ctx, args: argparse.Namespace) -> int:
    from srlm.errors import ConfigError
    from srlm.steps.iterate import next_iteration

    if args.iteration is None:
        return next_iteration(ctx)
    if args.iteration < 1:
        raise ConfigError(f"--iteration: iterations are numbered from 1, got {args.iteration}")
    return args.iteration


def run_registered_step(definition: StepDef, args: argparse.Namespace) -> int:
    """`srlm <step>`: the step's registered runner on a StepCall built from the flags its StepDef declares."""
    from srlm.steps.context import StepCall

    values = {option.target: getattr(args, _dest(option.flag)) for option in definition.cli or ()}
    ctx = _context(args, **_prefixed(values, "config:"))
    call = StepCall(
        iteration=_iteration_of(ctx, args) if definition.iteration else 0,
        model=values.get("model"),
        inputs=_prefixed(values, "input:"),
        out=values.get("out"),
        options=_prefixed(values, "option:"),
        force=args.force,
    )
    result = definition.load_runner()(ctx, call)
    print(result.uri)
    return 0


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{NAME: value} of the options whose target is PREFIX + NAME and that were given."""
    return {target[len(prefix) :]: value for target, value in values.items() if target.startswith(prefix)
            and value is not None}


def run_iterate(args: argparse.Namespace) -> int:
    from srlm.steps.iterate import iterate

    ctx = _context(args, **_judge_warnings(args))
    t = _iteration_of(ctx, args)
    result = iterate(ctx, t, force_from=args.from_step or ("prompts" if args.force else None))
    print(result.checkpoint_uri)
    return 0


def run_run(args: argparse.Namespace) -> int:
    from srlm.planning.resources import refuse_unfit_plan
    from srlm.steps.iterate import run

    ctx = _context(args, **{"model.base": args.model, "run.iterations": args.iterations}, **_judge_warnings(args))
    refuse_unfit_plan(ctx.config)  # a cluster budget the run cannot fit stops it here, before any step
    result = run(ctx, force=args.force)
    print(result.final_checkpoint_uri)
    return 0
