"""How srlm loads model files: never running code that comes with a model, and failing in one line naming the file.

- `trust_remote_code` is off for every transformers and vLLM load: a model directory's own Python (`auto_map`) is
  never imported.
- Weights are read from safetensors only. Pickle weights (`pytorch_model.bin`, `*.pt`) run code when unpickled;
  they are loaded only when the user opts in (SRLM_ALLOW_PICKLE_WEIGHTS=1), with a warning.
- `check_model_files` reads what a loader would (the JSON files, each safetensors header and its coverage of the
  file) before a library does, so a truncated or corrupt config.json or model.safetensors is one line naming the
  file instead of a library's exception.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from srlm.errors import ModelError

log = logging.getLogger(__name__)

PICKLE_WEIGHTS_ENV = "SRLM_ALLOW_PICKLE_WEIGHTS"
PICKLE_WEIGHT_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
# The JSON files transformers reads from a model directory (config, generation, tokenizer, shard index).
MODEL_JSON_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
)
_TRUE = ("1", "true", "yes", "on")


def allow_pickle_weights() -> bool:
    """Whether the user opted in to pickle weights: SRLM_ALLOW_PICKLE_WEIGHTS=1. An environment setting of the
    machines, not a run's config key, because it is a decision about what code those machines may run, not about
    what a run computes."""
    return os.environ.get(PICKLE_WEIGHTS_ENV, "").strip().lower() in _TRUE


def _warn_pickle_opt_in(model_path: str) -> None:
    log.warning(
        "%s: pickle weights are allowed (%s): unpickling a checkpoint runs code from it; load only models you trust",
        model_path,
        PICKLE_WEIGHTS_ENV,
    )


def pretrained_kwargs(model_path: str) -> dict[str, Any]:
    """Keyword arguments for every transformers `from_pretrained` of a model's weights."""
    if allow_pickle_weights():
        _warn_pickle_opt_in(model_path)
        return {"trust_remote_code": False}
    return {"trust_remote_code": False, "use_safetensors": True}


def vllm_kwargs(model_path: str) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM`: no remote code, safetensors unless pickle weights are allowed."""
    if allow_pickle_weights():
        _warn_pickle_opt_in(model_path)
        return {"trust_remote_code": False, "load_format": "auto"}
    return {"trust_remote_code": False, "load_format": "safetensors"}


def check_model_files(model_path: str | os.PathLike, *, weights: bool = True) -> None:
    """Raise ModelError naming the file when a local model directory's JSON files or (with `weights`) its
    safetensors weights are truncated or corrupt, or when it has only pickle weights and they are not allowed. A
    hub id (no such directory) is left to the loader."""
    directory = Path(model_path)
    if not directory.is_dir():
        return
    for name in MODEL_JSON_FILES:
        path = directory / name
        if path.is_file():
            _check_json(path)
    if weights:
        _check_weights(directory)


def _check_weights(directory: Path) -> None:
    weights = sorted(directory.glob("*.safetensors"))
    for path in weights:
        _check_safetensors(path)
    if weights:
        return
    pickled = sorted(p.name for pattern in PICKLE_WEIGHT_PATTERNS for p in directory.glob(pattern))
    if pickled and not allow_pickle_weights():
        raise ModelError(
            f"{directory}: has only pickle weights ({', '.join(pickled)}), which can run code when loaded; srlm "
            f"loads safetensors only: convert them, or opt in with {PICKLE_WEIGHTS_ENV}=1 for a model you trust"
        )
    if not pickled and (directory / "config.json").is_file():
        raise ModelError(f"{directory}: has a config.json but no weights (no *.safetensors file)")


def _check_json(path: Path) -> None:
    try:
        data = json.loads(path.read_bytes() or b"null")
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); the file is truncated "
            "or corrupt"
        ) from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise ModelError(f"{path}: cannot be read as JSON ({exc}); the file is truncated or corrupt") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(data).__name__}; the file is truncated or corrupt")


def _check_safetensors(path: Path) -> None:
    """The safetensors library validates the header and that its tensors cover the file exactly (what a load
    does first), without reading the tensor data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as weights:
            weights.keys()
    except (SafetensorError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a valid safetensors file ({detail}); the file is truncated or corrupt") from exc


def pretrained_config(model_path: str) -> Any:
    """The model's transformers config, without remote code: a config that needs its own Python (`auto_map`) is
    refused in one line."""
    from transformers import AutoConfig

    check_model_files(model_path, weights=False)
    try:
        return AutoConfig.from_pretrained(model_path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{Path(model_path) / 'config.json'}: cannot load the model config: {first_line(exc)}"
        ) from exc


def first_line(exc: BaseException) -> str:
    """A library exception's first line (some span screens)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
