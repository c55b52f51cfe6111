"""CLI command `srlm plan-resources`: the memory and time plan of a config's run, and whether it fits a cluster.

The formulas are srlm.planning.resources's (its docstring); the flags override the config's `cluster` section.
Exit 0 when every phase fits, 1 when one does not (the reasons are printed, one line each).
"""

from __future__ import annotations

import argparse
import json
import sys

from srlm.cli.common import add_set_option

BUDGET_FLAGS = {  # flag -> cluster key it overrides
    "gpus": "gpus",
    "gpu_memory_gb": "gpu_memory_gb",
    "gpus_per_node": "gpus_per_node",
    "host_memory_gb": "host_memory_gb",
}


def register(subparsers) -> None:
    from srlm.config import field_doc
    from srlm.planning.resources import DEFAULT_MFU, DEFAULT_PEAK_TFLOPS

    parser = subparsers.add_parser(
        "plan-resources", help="Estimate per-device memory and step time of each job; say whether the run fits.",
        description="For the seed SFT, DPO and the generation engine of the config's run: per-device memory "
        "(parameters, gradients, optimizer state, reference model, activations, logits; engine weights and KV "
        "cache), the GPUs each needs, and the time per optimizer step. Builds the model on the meta device from "
        "its config (no weights, no network). Exit 1 when a job does not fit the budget.",
    )  # fmt: skip
    parser.add_argument("--config", metavar="YAML", help="Config file. Default: built-in defaults.")
    add_set_option(parser)
    for flag, key in BUDGET_FLAGS.items():
        kind, metavar = (int, "N") if flag.startswith("gpus") else (float, "GB")
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, metavar=metavar,
                            help=f"{field_doc('cluster.' + key).help} (cluster.{key})")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS, metavar="F",
                        help=f"Assumed dense bf16 peak per GPU, TFLOP/s (default {DEFAULT_PEAK_TFLOPS:g}, an A100).")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, metavar="F",
                        help=f"Assumed model FLOPs utilisation (default {DEFAULT_MFU:g}).")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="The plan as one JSON object.")
    parser.set_defaults(func=run_plan_resources)


def run_plan_resources(args: argparse.Namespace) -> int:
    from srlm.config import load_config, parse_set_options
    from srlm.planning.resources import format_plan, plan_resources

    overrides = parse_set_options(args.overrides)
    overrides.update({f"cluster.{key}": getattr(args, flag) for flag, key in BUDGET_FLAGS.items()})
    config = load_config(args.config, overrides)
    plan = plan_resources(config, peak_tflops=args.peak_tflops, mfu=args.mfu)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(format_plan(plan, args.config or "the built-in defaults"))
    if not plan.fits:
        print(f"srlm: {plan.refusal()}", file=sys.stderr)
        return 1
    return 0
