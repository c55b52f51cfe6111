"""Step `engines`: start, free or stop the engine pool of backend.engine_scope (srlm.generation.engine_pool).

The srlm_iteration DAG runs it three times: `start` as its setup task (reap orphaned pools, then start the pool on
the model the generation steps use, so they all attach to one running pool), `free` before DPO (stop the scope's
pools and wait until Ray reports the resources training needs free), and `stop` as its teardown task (stop what
is left: the evaluation's pool on M_t, or everything after a failure). Outside a DAG, `srlm engines list|stop` does
the same by hand.

options: action (start | free | stop); start: reap_scope_prefix (pools of scopes starting with it, other than
this scope, are orphans: the DAG runs one run at a time).
"""

from __future__ import annotations

from typing import Any

from srlm.errors import ConfigError
from srlm.steps.context import StepCall, StepContext, StepResult

ACTIONS = ("start", "free", "stop")


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    from srlm.generation import engine_pool
    from srlm.generation.factory import resolve_backend_name

    action = call.options.get("action", "start")
    if action not in ACTIONS:
        raise ConfigError(f"engines: options.action must be one of {', '.join(ACTIONS)}, got {action!r}")
    cfg = ctx.config.backend
    if cfg.engine_scope is None:
        raise ConfigError("engines: backend.engine_scope is not set, so there is no shared pool to manage")
    outputs: dict[str, Any] = {"action": action, "scope": cfg.engine_scope}
    if resolve_backend_name(cfg.backend) != "vllm":
        ctx.echo(f"engines {action}: backend {cfg.backend} runs no engine pool; nothing to do")
        return StepResult(ctx.layout.run_uri, reused=None, outputs={**outputs, "pools": []})
    with engine_pool.connected(cfg.ray_address):
        if action == "start":
            outputs.update(_start(ctx, call))
        else:
            stopped = engine_pool.stop_scope(cfg.engine_scope)
            ctx.echo(f"engines {action}: stopped {len(stopped)} pool(s) of scope {cfg.engine_scope}")
            outputs["stopped"] = stopped
            if action == "free":
                needs = training_resources(ctx)
                engine_pool.wait_for_free(needs, cfg.engine_release_timeout_s)
                outputs["free"] = needs
    return StepResult(ctx.layout.run_uri, reused=None, outputs=outputs)


def _start(ctx: StepContext, call: StepCall) -> dict[str, Any]:
    from srlm.generation import engine_pool
    from srlm.steps.backends import new_backend_pool
    from srlm.steps.checkpoints import call_model

    prefix = call.options.get("reap_scope_prefix")
    reaped = engine_pool.reap_orphans(scope_prefix_to_reap=prefix, keep_scope=ctx.config.backend.engine_scope)
    for name in reaped:
        ctx.echo(f"engines start: reaped orphaned pool {name}")
    model = call_model(ctx, call, ctx.config.prompts.model)
    with new_backend_pool(ctx) as pool:  # closing a scoped backend detaches: the pool stays up
        backend = pool.get(model)
        info = backend.stats.extra
        nodes = sorted({engine["node_id"] for engine in getattr(backend, "engine_info", [])})
    return {
        "pool": info.get("engine_pool"),
        "started": bool(info.get("started_engines")),
        "replicas": info.get("replicas"),
        "nodes": nodes,
        "reaped": reaped,
        "model": model.label,
    }


def training_resources(ctx: StepContext) -> dict[str, float]:
    """What the iteration's training job reserves in Ray (dpo.backend ray): a GPU per worker when it trains on
    GPUs, else its CPUs. A local job reserves nothing in Ray; the engines' processes are gone once they stopped."""
    import ray

    dpo = ctx.config.dpo
    if dpo.backend != "ray":
        return {}
    use_gpu = dpo.use_gpu if dpo.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    if use_gpu:
        return {"GPU": float(dpo.num_processes)}
    return {"CPU": dpo.num_processes * dpo.cpus_per_worker}
