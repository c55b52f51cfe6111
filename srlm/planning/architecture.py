"""The shape of a model, read from its config alone (no weights): what the resource plan's formulas need.

Where the config comes from, in order (never the network, never the weights):
- a known alias (smollm2-135m): the prepared directory's config.json when it was prepared, else the built-in table;
- a committed checkpoint artifact (local or s3://): its manifest's config.json, read on its own;
- a local Hugging Face directory: its config.json;
- a hub id: the built-in table (the models srlm's shipped configs name), else the local Hugging Face cache
  (`local_files_only`).

The parameter count is exact: the model is built on the meta device from its config (accelerate's
`init_empty_weights`, which allocates no storage) and its parameters are counted the way `num_parameters()` counts
them (tied embeddings once).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srlm.errors import ModelError, SrlmError

CONFIG_FILE = "config.json"

_LLAMA = {"model_type": "llama", "hidden_act": "silu", "attention_bias": False, "mlp_bias": False}
_LLAMA_2 = {**_LLAMA, "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False}
_LLAMA_3 = {**_LLAMA, "vocab_size": 128256, "max_position_embeddings": 8192, "tie_word_embeddings": False}
_LLAMA_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8}  # fmt: skip
_LLAMA_70B = {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
              "num_key_value_heads": 8}  # fmt: skip

# Architectures of the models srlm's configs name, for when their config.json is not on this machine (air-gapped
# clusters, CI). Only what shapes memory is given; the values are the models' published config.json files.
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    **{
        f"meta-llama/Llama-2-{size}-{flavour}": {**_LLAMA_2, **shape}
        for size, shape in {
            "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32},
            "13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                    "num_attention_heads": 40, "num_key_value_heads": 40},
            "70b": {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                    "num_attention_heads": 64, "num_key_value_heads": 8},
        }.items()
        for flavour in ("hf", "chat-hf")
    },  # fmt: skip
    **{
        f"meta-llama/{name}": {**_LLAMA_3, **shape}
        for base, shape in (("8B", _LLAMA_8B), ("70B", _LLAMA_70B))
        for name in (f"Meta-Llama-3-{base}", f"Meta-Llama-3-{base}-Instruct", f"Llama-3.1-{base}",
                     f"Llama-3.1-{base}-Instruct", f"Meta-Llama-3.1-{base}", f"Meta-Llama-3.1-{base}-Instruct")
    },  # fmt: skip
    "meta-llama/Llama-3.3-70B-Instruct": {**_LLAMA_3, **_LLAMA_70B},
    # SmolLM2-135M-Instruct (the smollm2-135m alias before it is prepared).
    "smollm2-135m": {**_LLAMA, "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True,
                     "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3},  # fmt: skip
}


@dataclass(frozen=True)
class Architecture:
    """What the memory and FLOP formulas need to know about a decoder-only model."""

    source: str  # where the config came from (a path, "built-in table", "local Hugging Face cache")
    model_type: str
    parameters: int  # exact, tied embeddings counted once
    layer_parameters: int  # one decoder layer (FSDP's wrap unit)
    embedding_parameters: int  # input embeddings + untied output head
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    linears: tuple[tuple[str, int, int], ...]  # (name, in, out) of each Linear in one decoder layer (LoRA targets)

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


def model_architecture(spec: str, cache_dir: str | os.PathLike | None = None) -> Architecture:
    """The Architecture of the model `spec` names (model.base's forms); ModelError naming it when none is found."""
    config_data, source = _config_data(str(spec).strip(), cache_dir)
    return _architecture_from_config(json.dumps(config_data, sort_keys=True), source)


def _config_data(spec: str, cache_dir: str | os.PathLike | None) -> tuple[dict[str, Any], str]:
    from srlm.models.known import KNOWN_MODELS
    from srlm.models.resolve import SUCCESS_FILE, _looks_local
    from srlm.store.uri import S3_SCHEME, local_path

    if spec in KNOWN_MODELS:
        from srlm.models.cache import is_complete
        from srlm.models.prepare import default_model_dir

        prepared = default_model_dir(spec, cache_dir)
        if is_complete(prepared) and (prepared / CONFIG_FILE).is_file():
            return _read_json(prepared / CONFIG_FILE), str(prepared / CONFIG_FILE)
        return dict(BUILTIN_CONFIGS[spec]), "built-in table"
    if spec.startswith(S3_SCHEME):
        return _checkpoint_config(spec), f"{spec} ({CONFIG_FILE})"
    path = Path(local_path(spec)).expanduser()
    if (path / SUCCESS_FILE).is_file():
        return _checkpoint_config(spec), f"{spec} ({CONFIG_FILE})"
    if (path / CONFIG_FILE).is_file():
        return _read_json(path / CONFIG_FILE), str(path / CONFIG_FILE)
    if path.exists() or _looks_local(spec):
        raise ModelError(f"model.base {spec}: no {CONFIG_FILE} there, so its architecture is unknown")
    if spec in BUILTIN_CONFIGS:
        return dict(BUILTIN_CONFIGS[spec]), "built-in table"
    return _hub_cache_config(spec), "local Hugging Face cache"


def _checkpoint_config(uri: str) -> dict[str, Any]:
    """config.json of a committed checkpoint artifact, read on its own and checked against the manifest (the
    weights stay where they are)."""
    from srlm.store import read_file

    try:
        return json.loads(read_file(uri, CONFIG_FILE))
    except ValueError as exc:
        raise ModelError(f"model.base {uri}: {CONFIG_FILE} is not valid JSON: {exc}") from exc
    except SrlmError as exc:
        raise ModelError(f"model.base {uri}: cannot read its {CONFIG_FILE}: {exc}") from exc


def _hub_cache_config(spec: str) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(spec, local_files_only=True).to_dict()
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"model.base {spec}: architecture unknown offline (not a local directory, a checkpoint, one of the "
            "Llama-2 / Llama-3.x ids of srlm.planning.architecture.BUILTIN_CONFIGS, or in the local Hugging Face "
            f"cache); give a directory holding its {CONFIG_FILE}"
        ) from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the model config: {exc}") from exc


@functools.lru_cache(maxsize=16)
def _architecture_from_config(config_json: str, source: str) -> Architecture:
    """Build the model on the meta device from its config and read its shape (seconds even for 70B: no storage)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    data = json.loads(config_json)
    model_type = data.pop("model_type", None)
    try:
        config = AutoConfig.for_model(model_type, **data)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config)
        model.tie_weights()  # from_config leaves tied embeddings as two tensors; from_pretrained ties them
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{source}: cannot build model type {model_type!r} from its config: {exc}") from exc
    layers = model.model.layers if hasattr(model, "model") and hasattr(model.model, "layers") else None
    if layers is None or not len(layers):
        raise ModelError(f"{source}: {type(model).__name__} is not a decoder stack srlm can plan (no model.layers)")
    layer = layers[0]
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    embeddings = {id(p): p.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m
                  for p in m.parameters()}  # fmt: skip
    linears = tuple((name, m.in_features, m.out_features) for name, m in layer.named_modules()
                    if type(m).__name__ == "Linear")  # fmt: skip
    return Architecture(
        source=source,
        model_type=str(model_type),
        parameters=sum(p.numel() for p in model.parameters()),
        layer_parameters=sum(p.numel() for p in layer.parameters()),
        embedding_parameters=sum(embeddings.values()),
        num_layers=len(layers),
        hidden_size=config.hidden_size,
        intermediate_size=getattr(config, "intermediate_size", 4 * config.hidden_size),
        num_attention_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab_size=config.vocab_size,
        linears=linears,
    )
