"""Generation backends: vLLM engines on Ray, or transformers as the fallback, behind one interface.

    with open_backend(model_dir, config.backend, dtype=config.model.dtype) as backend:
        completions = backend.generate(requests, Sampling(n=4, temperature=0.7, top_p=0.9, max_new_tokens=512))
"""

from srlm.generation.base import ChatMessages, Completion, GenerationBackend, GenerationStats, Request, Sampling
from srlm.generation.factory import BACKENDS, open_backend, resolve_backend_name, vllm_available

__all__ = [
    "BACKENDS",
    "ChatMessages",
    "Completion",
    "GenerationBackend",
    "GenerationStats",
    "Request",
    "Sampling",
    "open_backend",
    "resolve_backend_name",
    "vllm_available",
]
