"""Model bootstrap (known aliases from GGUF wheels), the tiny test model, and model resolution.

Heavy libraries (torch, transformers) are imported inside the functions that need them.
"""

from srlm.models.known import KNOWN_MODELS, known_model
from srlm.models.resolve import resolve_model

__all__ = ["KNOWN_MODELS", "known_model", "resolve_model"]
