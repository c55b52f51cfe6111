"""CLI group 'engines': `srlm engines list` (the engine pools running on the Ray cluster: scope, model, state,
lease, nodes) and `srlm engines stop` (stop pools by name, by scope, or all of them)."""

from __future__ import annotations

import argparse
import json
import time

from srlm.cli.common import command_group
from srlm.errors import ConfigError


def register(subparsers) -> None:
    commands = command_group(subparsers, "engines", "Show and stop the vLLM engine pools on the Ray cluster.")
    for name, help_text in (
        ("list", "List the engine pools (scope, model, state, lease left, replicas, nodes)."),
        ("stop", "Stop engine pools and free their CPUs/GPUs: by --name, by --scope, or --all."),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--ray-address", default=None,
            help="Ray cluster (GCS address, ray://…, or auto). Default: RAY_ADDRESS, else the backend.ray_address "
            "of --config; without either, the embedded local head of `make up`.",
        )  # fmt: skip
        sub.add_argument("--config", default=None, help="Config file whose backend.ray_address to use.")
        if name == "list":
            sub.add_argument("--json", action="store_true", help="Print one JSON object per pool.")
            sub.set_defaults(func=run_list)
        else:
            sub.add_argument("--name", action="append", default=[], help="A pool's name (repeatable).")
            sub.add_argument("--scope", default=None, help="Every pool of this backend.engine_scope.")
            sub.add_argument("--all", action="store_true", help="Every srlm engine pool on the cluster.")
            sub.set_defaults(func=run_stop)


def _address(args: argparse.Namespace) -> str:
    """The cluster to talk to: never a fresh local head (it would hold no pools)."""
    import os

    from srlm.orchestration.ray_head import jobs_api_ready, recorded_head

    if args.ray_address:
        return args.ray_address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    if args.config:
        from srlm.config import load_config

        address = load_config(args.config).backend.ray_address
        if address:
            return address
    head = recorded_head()
    if head is None or not jobs_api_ready(head.address):
        raise ConfigError(
            "no Ray cluster to ask: pass --ray-address or set RAY_ADDRESS (no embedded local head runs here; an "
            "`srlm iterate` without a cluster keeps its pools in its own Ray, which ends with it)"
        )
    return head.gcs_address


def run_list(args: argparse.Namespace) -> int:
    from srlm.generation import engine_pool

    with engine_pool.connected(_address(args)):
        pools = engine_pool.list_pools()
    if args.json:
        for pool in pools:
            print(json.dumps(pool, sort_keys=True))
        return 0
    if not pools:
        print("no engine pools")
        return 0
    now = time.time()
    for pool in pools:
        lease = pool.get("lease_until")
        left = f"{max(0.0, lease - now):.0f}s" if lease else "-"
        print(
            f"{pool['name']}  state={pool['state']}  scope={pool.get('scope', '')}  "
            f"model={pool.get('labels', {}).get('model', '')}  replicas={pool.get('replicas', 0)}  lease_left={left}  "
            f"holders={len(pool.get('holders', []))}  nodes={','.join(pool.get('nodes', []))}"
        )
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from srlm.generation import engine_pool

    if not (args.name or args.scope or args.all):
        raise ConfigError("srlm engines stop: say which pools: --name NAME, --scope SCOPE or --all")
    with engine_pool.connected(_address(args)):
        pools = engine_pool.list_pools()
        chosen = [
            pool["name"] for pool in pools
            if args.all or pool["name"] in args.name or (args.scope is not None and pool.get("scope") == args.scope)
        ]  # fmt: skip
        missing = [name for name in args.name if name not in {pool["name"] for pool in pools}]
        stopped = [name for name in chosen if engine_pool.stop_pool(name)]
    for name in stopped:
        print(f"stopped {name}")
    if missing:
        raise ConfigError(f"srlm engines stop: no pool named {', '.join(missing)} (see `srlm engines list`)")
    if not stopped:
        print("no matching engine pools")
    return 0
