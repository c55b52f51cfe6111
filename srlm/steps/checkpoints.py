"""Which model a step runs on: a registered checkpoint (M0, M1, …) or a model spec, and its local directory; and
the `checkpoints` step, which lists the run's registered checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from srlm.checkpoint_ids import checkpoint_id, looks_like_checkpoint_id
from srlm.errors import ConfigError, ModelError, StoreError
from srlm.steps.context import StepCall, StepContext, StepResult


@dataclass(frozen=True)
class ModelRef:
    """A model as the steps see it.

    label: how outputs name it ("M1", or the spec). spec: what srlm.models.resolve_model accepts (a store URI of a
    checkpoint artifact, a local HF directory, an alias). fingerprint: its identity (a committed artifact's
    manifest sha256, else the spec), so outputs made by another model (a retrained M0, say) are recognised as
    stale, and the same model found at another URI (a moved store) is not.
    """

    label: str
    spec: str
    fingerprint: str

    def as_input(self) -> dict[str, Any]:
        """The model as a producer input: its name and identity, not where this process found it (reuse compares
        content, srlm.steps.reuse)."""
        return {"label": self.label, "fingerprint": self.fingerprint}


def registered_model(ctx: StepContext, checkpoint: str) -> ModelRef:
    """A checkpoint from the run's registry, or a clear error saying which step makes it (or, registered but not in
    this store, that it is missing)."""
    from srlm.training.registry import committed_checkpoint

    record = committed_checkpoint(ctx.layout, checkpoint)
    if record is None:
        hint = "run `srlm sft` (or `srlm run`)" if checkpoint == "M0" else f"run `srlm iterate` up to {checkpoint}"
        raise ModelError(f"checkpoint {checkpoint} is not registered in run {ctx.layout.run!r}: {hint}")
    return ModelRef(label=checkpoint, spec=record.uri, fingerprint=_artifact_fingerprint(record.uri))


def model_from_spec(ctx: StepContext, spec: str) -> ModelRef:
    """A model named in config or on the command line: a registered id (M1), store URI, directory or alias."""
    if looks_like_checkpoint_id(spec):
        return registered_model(ctx, spec)
    from srlm.store import is_committed

    try:
        committed = is_committed(spec)
    except StoreError:  # not a usable store URI (an alias, a hub id): resolve_model decides
        committed = False
    return ModelRef(label=spec, spec=spec, fingerprint=_artifact_fingerprint(spec) if committed else spec)


def call_model(ctx: StepContext, call: StepCall, configured: str | None = None) -> ModelRef:
    """The model a step call runs on: the call's model, else the step's configured one (prompts.model,
    judge.model), else the registered M_{t-1}."""
    spec = call.model or configured
    return model_from_spec(ctx, spec) if spec else registered_model(ctx, checkpoint_id(call.iteration - 1))


def local_model_path(ctx: StepContext, model: ModelRef) -> str:
    """A local directory holding the model (fetched from the store or prepared from an alias if needed)."""
    from srlm.models import resolve_model

    return str(resolve_model(model.spec, ctx.config.model.cache_dir))


def _artifact_fingerprint(uri: str) -> str:
    from srlm.store import read_manifest

    return read_manifest(uri).sha256 or uri


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `checkpoints` step: the run's registered checkpoints, optionally only those registered in
    [options.registered_from, options.registered_to)."""
    from srlm.training.registry import list_records

    start = _instant(call.options.get("registered_from"), "registered_from")
    end = _instant(call.options.get("registered_to"), "registered_to")
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
    return StepResult(ctx.layout.registry, reused=None, outputs={"checkpoints": checkpoints})


def _instant(value: Any, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"checkpoints: options.{name} {value!r} is not an ISO-8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
