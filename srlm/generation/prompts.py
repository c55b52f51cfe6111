"""Turning requests into prompt token ids, and generated tokens back into texts, the same way for every backend.

Both backends tokenize on the driver with the model's own tokenizer, so a chat request becomes exactly the same
prompt tokens whichever backend serves it, and both stop on the same token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlm.errors import BackendError, ModelError
from srlm.generation.base import Request

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# ChatML ends every turn with this token; a model trained on ChatML must stop there even when its config only
# names <|endoftext|> as eos.
CHATML_END_OF_TURN = "<|im_end|>"


def load_tokenizer(model_path: str, chat_template: str | None = None) -> PreTrainedTokenizerBase:
    """The model's tokenizer, padding on the left (decoder-only batches grow to the right). `chat_template` is
    config model.chat_template (a built-in name or a Jinja file): when given it replaces the tokenizer's own, as it
    does in SFT, so generation and judging format chats exactly as training did."""
    from srlm.models.chat_templates import resolve_chat_template

    if not Path(model_path).is_dir():
        raise ModelError(f"{model_path}: model directory not found")
    template = resolve_chat_template(chat_template) if chat_template else None  # a bad value fails before loading
    try:
        tokenizer = tokenizer_class(model_path).from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_path}: cannot load tokenizer: {exc}") from exc
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_class(model_path: str) -> Any:
    """The class AutoTokenizer would pick, found without importing AutoTokenizer.

    Importing transformers' auto classes pulls in its model registry and torch: about 5 s of a generation step's
    start on a 2-core machine, paid again by every orchestrated step (each is its own process). A directory whose
    tokenizer_config.json names its tokenizer class (as every save_pretrained writes it) and carries no remote code
    gets that class directly, the fast variant first, as AutoTokenizer resolves it; anything else goes through
    AutoTokenizer itself.
    """
    import json

    import transformers

    try:
        config = json.loads((Path(model_path) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    name = config.get("tokenizer_class") if isinstance(config, dict) and "auto_map" not in config else None
    if isinstance(name, str) and name.isidentifier():
        for candidate in (f"{name}Fast", name):
            cls = getattr(transformers, candidate, None)
            if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerBase):
                return cls
    from transformers import AutoTokenizer

    return AutoTokenizer


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model_path: str) -> list[int]:
    """Every token id that ends a completion: generation config eos, tokenizer eos, and ChatML's end of turn."""
    ids: list[int] = []

    def add(value: Any) -> None:
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(token_id, int) and token_id not in ids:
                ids.append(token_id)

    try:
        from transformers import GenerationConfig

        add(GenerationConfig.from_pretrained(model_path).eos_token_id)
    except OSError:
        pass  # no generation_config.json: the tokenizer's eos is all there is
    add(tokenizer.eos_token_id)
    end_of_turn = tokenizer.convert_tokens_to_ids(CHATML_END_OF_TURN)
    if CHATML_END_OF_TURN in tokenizer.get_vocab() and end_of_turn != tokenizer.unk_token_id:
        add(end_of_turn)
    if not ids:
        raise ModelError(f"{model_path}: the model defines no eos token, so completions could never stop")
    return ids


def _check_chat(request: list, index: int) -> None:
    for turn, message in enumerate(request):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(
            message.get("content"), str
        ):
            raise BackendError(
                f"request {index}, message {turn}: expected {{'role': str, 'content': str}}, got {message!r:.80}"
            )


def render_prompt_ids(tokenizer: PreTrainedTokenizerBase, requests: Sequence[Request]) -> list[list[int]]:
    """Prompt token ids per request: chat messages through the chat template (with the generation prompt),
    raw strings tokenized as they are."""
    prompts: list[list[int]] = []
    for index, request in enumerate(requests):
        if isinstance(request, str):
            prompts.append(list(tokenizer(request)["input_ids"]))
        elif isinstance(request, list) and request:
            _check_chat(request, index)
            if not tokenizer.chat_template:
                raise BackendError(
                    f"request {index}: chat messages need a chat template, and {tokenizer.name_or_path} has none; "
                    "set model.chat_template to a built-in name or a Jinja file"
                )
            # Rendered to text first, then tokenized without special tokens: the template already holds any BOS.
            text = tokenizer.apply_chat_template(request, tokenize=False, add_generation_prompt=True)
            prompts.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
        else:
            raise BackendError(f"request {index}: expected chat messages or a string, got {type(request).__name__}")
    return prompts


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in text, or -1."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def prompts_fit(prompts: list[list[int]], max_model_len: int) -> list[bool]:
    """Whether each prompt leaves room for at least one new token within max_model_len."""
    return [len(ids) < max_model_len for ids in prompts]


def check_prompt_lengths(prompts: list[list[int]], max_model_len: int) -> None:
    """Fail before any work when a prompt leaves no room for even one new token. (Completions that run into
    max_model_len stop there with finish reason "length", as vLLM does.)"""
    for index, (ids, fits) in enumerate(zip(prompts, prompts_fit(prompts, max_model_len))):
        if not ids:
            raise BackendError(f"request {index}: the prompt is empty")
        if not fits:
            raise BackendError(
                f"request {index}: {len(ids)} prompt tokens leave no room to generate within "
                f"backend.max_model_len {max_model_len}; raise backend.max_model_len (the model's context "
                "permitting) or shorten the input"
            )
