"""Which model a step runs on: a registered checkpoint (M0, M1, …) or a model spec, and its local directory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from srlm.errors import ModelError, StoreError
from srlm.steps.context import StepContext


@dataclass(frozen=True)
class ModelRef:
    """A model as the steps see it.

    label: how outputs name it ("M1", or the spec). spec: what srlm.models.resolve_model accepts (a store URI of a
    checkpoint artifact, a local HF directory, an alias). fingerprint: its identity, so outputs made by another
    model (a retrained M0, say) are recognised as stale.
    """

    label: str
    spec: str
    fingerprint: str

    def as_input(self) -> dict[str, Any]:
        return {"label": self.label, "spec": self.spec, "fingerprint": self.fingerprint}


def checkpoint_id(iteration: int) -> str:
    """M0 is the seed SFT model; iteration t trains M_t."""
    return f"M{iteration}"


def registered_model(ctx: StepContext, checkpoint: str) -> ModelRef:
    """A checkpoint from the run's registry, or a clear error saying which step makes it."""
    from srlm.training.registry import get_checkpoint

    record = get_checkpoint(ctx.layout, checkpoint)
    if record is None:
        hint = "run `srlm sft` (or `srlm run`)" if checkpoint == "M0" else f"run `srlm iterate` up to {checkpoint}"
        raise ModelError(f"checkpoint {checkpoint} is not registered in run {ctx.layout.run!r}: {hint}")
    return ModelRef(label=checkpoint, spec=record.uri, fingerprint=_artifact_fingerprint(record.uri))


def model_from_spec(ctx: StepContext, spec: str) -> ModelRef:
    """A model named in config or on the command line: a registered id (M1), store URI, directory or alias."""
    if _looks_like_checkpoint_id(spec):
        return registered_model(ctx, spec)
    from srlm.store import is_committed

    try:
        committed = is_committed(spec)
    except StoreError:  # not a usable store URI (an alias, a hub id): resolve_model decides
        committed = False
    return ModelRef(label=spec, spec=spec, fingerprint=_artifact_fingerprint(spec) if committed else spec)


def local_model_path(ctx: StepContext, model: ModelRef) -> str:
    """A local directory holding the model (fetched from the store or prepared from an alias if needed)."""
    from srlm.models import resolve_model

    return str(resolve_model(model.spec, ctx.config.model.cache_dir))


def _artifact_fingerprint(uri: str) -> str:
    from srlm.store import read_manifest

    return read_manifest(uri).sha256 or uri


def _looks_like_checkpoint_id(spec: str) -> bool:
    return len(spec) > 1 and spec[0] == "M" and spec[1:].split("-", 1)[0].isdigit() and "/" not in spec
