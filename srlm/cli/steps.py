"""CLI group 'steps': `srlm sft / prompts / generate / judge / pairs / dpo / iterate / run`.

Every command reads the config (--config, --set section.key=value, and shortcuts for the common keys), works out
its input and output URIs from the run layout unless --input/--out say otherwise, prints a one-screen summary
after each step, and reuses committed outputs unless --force.
"""

from __future__ import annotations

import argparse
from typing import Any

STEP_NAMES = ("prompts", "generate", "judge", "pairs", "dpo")


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="YAML", help="Config file (sections as in srlm/config.py). Default: built-in defaults (the paper's settings).")
    group.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="Override one config value, e.g. --set dpo.beta=0.2 (repeatable; values are YAML scalars).",
    )
    group.add_argument("--store", metavar="URI", help="Store root: a path, file://… or s3://bucket/prefix (store.uri).")
    group.add_argument("--run", dest="run_name", metavar="NAME", help="Run name; artifacts go to <store>/runs/<NAME>/ (run.name).")
    group.add_argument("--force", action="store_true", help="Recompute even if a committed output exists.")
    group.add_argument("--no-progress", action="store_true", help="No progress bars (default: shown on a terminal).")


def _backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=("auto", "vllm", "transformers"),
        help="Generation backend (backend.backend): auto = vLLM on Ray when it imports, else transformers.",
    )


def _iteration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--iteration", "-t", type=int, metavar="T",
        help="Iteration (1-based; iteration T uses M_{T-1} and trains M_T). Default: the one after the newest "
        "registered model.",
    )


def register(subparsers) -> None:
    sft = subparsers.add_parser(
        "sft", help="Seed SFT on IFT + EFT data: base model → M0 (registered).",
        description="Fine-tune the base model on the seed IFT (instruction following) and EFT (judging) examples, "
        "loss on completions only, in a separate training process; register the result as M0.",
    )
    _common(sft)
    sft.add_argument("--model", metavar="SPEC", help="Base model: alias, HF directory, checkpoint URI or hub id (model.base).")
    sft.add_argument("--ift", metavar="URI", help="IFT sft_examples table (seed_data.ift_uri). Default: srlm's shipped seed set.")
    sft.add_argument("--eft", metavar="URI", help="EFT sft_examples table (seed_data.eft_uri). Default: srlm's shipped seed set.")
    sft.set_defaults(func=run_sft)

    prompts = subparsers.add_parser(
        "prompts", help="Self-instruct new prompts (8-shot from the seed prompts), filtered and de-duplicated.",
    )
    _common(prompts)
    _backend(prompts)
    _iteration(prompts)
    prompts.add_argument("--model", metavar="SPEC", help="Generating model (prompts.model). Default: M_{T-1}.")
    prompts.add_argument("--seeds", metavar="URI", help="Seed prompts (prompts or sft_examples table). Default: the run's seed IFT prompts.")
    prompts.add_argument("--out", metavar="URI", help="Output prompts table. Default: <run>/iterations/T/prompts.")
    prompts.set_defaults(func=run_prompts)

    generate = subparsers.add_parser("generate", help="Sample N candidate responses per prompt (candidates table).")
    _common(generate)
    _backend(generate)
    _iteration(generate)
    generate.add_argument("--model", metavar="SPEC", help="Responding model: M<k>, checkpoint URI, directory or alias. Default: M_{T-1}.")
    generate.add_argument("--input", metavar="URI", help="Prompts table. Default: <run>/iterations/T/prompts.")
    generate.add_argument("--out", metavar="URI", help="Output candidates table. Default: <run>/iterations/T/candidates.")
    generate.set_defaults(func=run_generate)

    judge = subparsers.add_parser("judge", help="Score every candidate K times with the judge rubric (judgments table).")
    _common(judge)
    _backend(judge)
    _iteration(judge)
    judge.add_argument("--model", metavar="SPEC", help="Judge model (judge.model). Default: M_{T-1} (self-rewarding).")
    judge.add_argument("--input", metavar="URI", help="Candidates table. Default: <run>/iterations/T/candidates.")
    judge.add_argument("--out", metavar="URI", help="Output judgments table. Default: <run>/iterations/T/judgments.")
    judge.set_defaults(func=run_judge)

    pairs = subparsers.add_parser("pairs", help="Best vs worst mean judge score per prompt (pairs table); ties dropped.")
    _common(pairs)
    _iteration(pairs)
    pairs.add_argument("--candidates", metavar="URI", help="Candidates table. Default: <run>/iterations/T/candidates.")
    pairs.add_argument("--judgments", metavar="URI", help="Judgments table. Default: <run>/iterations/T/judgments.")
    pairs.add_argument("--out", metavar="URI", help="Output pairs table. Default: <run>/iterations/T/pairs.")
    pairs.set_defaults(func=run_pairs)

    dpo = subparsers.add_parser(
        "dpo", help="DPO on the iteration's pairs: M_{T-1} → M_T (registered); reference model = M_{T-1}.",
        description="Trains M_T from M_{T-1} on the pairs table in a separate training process and registers it. "
        "An empty pairs table (every prompt tied, or judgments unparsable) is an error: nothing is registered, "
        "and M_T is never silently a copy of M_{T-1}.",
    )
    _common(dpo)
    _iteration(dpo)
    dpo.add_argument("--input", metavar="URI", help="Pairs table. Default: <run>/iterations/T/pairs.")
    dpo.set_defaults(func=run_dpo)

    iterate = subparsers.add_parser(
        "iterate", help="One self-rewarding iteration: prompts → candidates → judgments → pairs → DPO → M_T.",
        description="Runs prompts, generate and judge on one generation backend opened on M_{T-1} (closed before "
        "training), then pairs and DPO, registering M_T. Committed steps are reused, so a rerun resumes. An "
        "iteration that yields no preference pairs stops with an error before DPO (see the judge and pairs "
        "summaries); its committed data stays for inspection.",
    )
    _common(iterate)
    _backend(iterate)
    _iteration(iterate)
    iterate.add_argument(
        "--from-step", choices=STEP_NAMES,
        help="Recompute this step (later steps follow, their inputs having changed). --force means --from-step prompts.",
    )
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
    run.set_defaults(func=run_run)


def _context(args: argparse.Namespace, **shortcuts: Any):
    from srlm.config import load_config, parse_set_options
    from srlm.steps.context import StepContext

    overrides = parse_set_options(args.overrides)
    overrides.update(
        {"store.uri": args.store, "run.name": args.run_name, "backend.backend": getattr(args, "backend", None)}
    )
    overrides.update(shortcuts)
    config = load_config(args.config, {k: v for k, v in overrides.items() if v is not None})
    return StepContext.from_config(config, progress=False if args.no_progress else None)


def _iteration_of(ctx, args: argparse.Namespace) -> int:
    from srlm.errors import ConfigError
    from srlm.steps.iterate import next_iteration

    if args.iteration is None:
        return next_iteration(ctx)
    if args.iteration < 1:
        raise ConfigError(f"--iteration: iterations are numbered from 1, got {args.iteration}")
    return args.iteration


def _pool(ctx):
    from srlm.steps.iterate import new_backend_pool

    return new_backend_pool(ctx)


def _model(ctx, spec: str | None, iteration: int):
    from srlm.steps.checkpoints import checkpoint_id, model_from_spec, registered_model

    return model_from_spec(ctx, spec) if spec else registered_model(ctx, checkpoint_id(iteration - 1))


def run_sft(args: argparse.Namespace) -> int:
    from srlm.steps.sft import train_seed_model

    ctx = _context(args, **{"model.base": args.model, "seed_data.ift_uri": args.ift, "seed_data.eft_uri": args.eft})
    result = train_seed_model(ctx, force=args.force)
    print(result.uri)
    return 0


def run_prompts(args: argparse.Namespace) -> int:
    from srlm.steps.prompts import generate_prompts
    from srlm.steps.seeds import seed_prompt_texts

    ctx = _context(args, **{"prompts.model": args.model})
    t = _iteration_of(ctx, args)
    model = _model(ctx, ctx.config.prompts.model, t)
    with _pool(ctx) as pool:
        result = generate_prompts(
            ctx, t, model=model, backends=pool, seeds=seed_prompt_texts(ctx, args.seeds), out_uri=args.out,
            force=args.force,
        )
    print(result.uri)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from srlm.steps.generate import generate_candidates

    ctx = _context(args)
    t = _iteration_of(ctx, args)
    with _pool(ctx) as pool:
        result = generate_candidates(
            ctx, t, model=_model(ctx, args.model, t), backends=pool, prompts_uri=args.input, out_uri=args.out,
            force=args.force,
        )
    print(result.uri)
    return 0


def run_judge(args: argparse.Namespace) -> int:
    from srlm.steps.judge import judge_candidates

    ctx = _context(args, **{"judge.model": args.model})
    t = _iteration_of(ctx, args)
    with _pool(ctx) as pool:
        result = judge_candidates(
            ctx, t, model=_model(ctx, ctx.config.judge.model, t), backends=pool, candidates_uri=args.input,
            out_uri=args.out, force=args.force,
        )
    print(result.uri)
    return 0


def run_pairs(args: argparse.Namespace) -> int:
    from srlm.steps.pairs import build_pairs

    ctx = _context(args)
    t = _iteration_of(ctx, args)
    result = build_pairs(
        ctx, t, candidates_uri=args.candidates, judgments_uri=args.judgments, out_uri=args.out, force=args.force
    )
    print(result.uri)
    return 0


def run_dpo(args: argparse.Namespace) -> int:
    from srlm.steps.dpo import train_iteration_model

    ctx = _context(args)
    t = _iteration_of(ctx, args)
    result = train_iteration_model(ctx, t, pairs_uri=args.input, force=args.force)
    print(result.uri)
    return 0


def run_iterate(args: argparse.Namespace) -> int:
    from srlm.steps.iterate import iterate

    ctx = _context(args)
    t = _iteration_of(ctx, args)
    result = iterate(ctx, t, force_from=args.from_step or ("prompts" if args.force else None))
    print(result.checkpoint_uri)
    return 0


def run_run(args: argparse.Namespace) -> int:
    from srlm.steps.iterate import run

    ctx = _context(args, **{"model.base": args.model, "run.iterations": args.iterations})
    result = run(ctx, force=args.force)
    print(result.final_checkpoint_uri)
    return 0
