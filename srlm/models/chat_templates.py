"""Chat templates by name, for models whose tokenizer has none (config `model.chat_template`).

srlm formats all of its data as chat messages (SFT examples, prompts, candidates, judge requests), so a pretrained
base model such as `meta-llama/Llama-2-70b-hf`, which ships no chat template, needs one. `model.chat_template` names
a built-in template below or a Jinja file in Hugging Face's chat-template dialect; SFT puts it on the tokenizer (so
every checkpoint trained from the model saves it), and generation and judging render prompts with it.

Built-ins:
- `chatml`: ChatML (`<|im_start|>role\\n…<|im_end|>`), no default system message. It suits tokenizers that have
  `<|im_start|>` / `<|im_end|>` as tokens; on others (Llama-2) the markers are plain text, and completions stop only
  at the tokenizer's eos.
- `smollm2`: SmolLM2-Instruct's own template (ChatML with SmolLM's default system message), as shipped in its
  tokenizer_config.json; `srlm model prepare smollm2-135m` uses it where the GGUF file carries none.
- `llama-2`: Meta's Llama-2-chat format (`<s>[INST] <<SYS>>\\n…\\n<</SYS>>\\n\\n… [/INST] … </s>`), as in the
  tokenizer of meta-llama/Llama-2-*-chat-hf. Every turn ends with the tokenizer's eos, so generation stops on a
  real token: the natural choice for the paper's Llama-2-70B base.

The Self-Rewarding paper (Yuan et al., 2024, arXiv 2401.10020) does not state the prompt format it fine-tuned the
Llama-2-70B base with: it gives the LLM-as-a-Judge prompt (srlm/judging/templates/additive_5pt.txt) and the
self-instruction prompt, but no chat/turn markup, so there is no "paper" template here.
"""

from __future__ import annotations

from pathlib import Path

from srlm.errors import ConfigError

KEY = "model.chat_template"

SMOLLM2_SYSTEM_MESSAGE = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def _chatml(default_system_message: str | None = None) -> str:
    """ChatML; with `default_system_message`, that system turn is put first when the conversation has none."""
    default_system = (
        "{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\n" + default_system_message + "<|im_end|>\n' }}"
        "{% endif %}"
        if default_system_message
        else ""
    )
    return (
        "{% for message in messages %}"
        + default_system
        + "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


# Meta's Llama-2-chat format: an optional system message folded into the first user turn, user turns as
# `<s>[INST] … [/INST]`, assistant turns as ` … </s>`. The generation prompt is implicit (a prompt ends with
# [/INST]), so add_generation_prompt changes nothing.
LLAMA_2 = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
    "{% else %}"
    "{% set system_message = none %}{% set loop_messages = messages %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Llama-2 chat: roles must alternate user/assistant/user/... after an optional system message') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system_message is not none %}"
    "{% set content = '<<SYS>>\n' + system_message.strip() + '\n<</SYS>>\n\n' + message['content'].strip() %}"
    "{% else %}"
    "{% set content = message['content'].strip() %}"
    "{% endif %}"
    "{{ bos_token + '[INST] ' + content + ' [/INST]' }}"
    "{% else %}"
    "{{ ' ' + message['content'].strip() + ' ' + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": _chatml(),
    "llama-2": LLAMA_2,
    "smollm2": _chatml(SMOLLM2_SYSTEM_MESSAGE),
}

# The conversation a template must render (as a training example would be, plus a generation prompt).
_CHECK_MESSAGES = (
    {"role": "user", "content": "srlm-check-question"},
    {"role": "assistant", "content": "srlm-check-answer"},
)


def builtin_names() -> list[str]:
    """The names model.chat_template accepts besides a file path, sorted (for help text and errors)."""
    return sorted(BUILTIN_TEMPLATES)


def builtin_template(name: str) -> str:
    try:
        return BUILTIN_TEMPLATES[name]
    except KeyError as exc:
        raise ConfigError(f"{KEY}: unknown built-in template {name!r}; built-ins: {', '.join(builtin_names())}") from exc


def resolve_chat_template(value: str) -> str:
    """The template text for a model.chat_template value: a built-in name, else a Jinja file, read and checked
    (it parses, and renders a user/assistant conversation with a generation prompt)."""
    if value in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[value]
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{KEY}: {value!r} is neither a built-in template ({', '.join(builtin_names())}) nor a file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{KEY}: {path}: cannot read the template: {exc}") from exc
    check_chat_template(text, str(path))
    return text


def check_chat_template(text: str, source: str) -> None:
    """Raise a one-line ConfigError naming `source` unless `text` renders a two-message conversation the way
    tokenizer.apply_chat_template will (transformers' own Jinja environment), keeping both messages' contents."""
    import jinja2
    from transformers.utils.chat_template_utils import render_jinja_template

    if not text.strip():
        raise ConfigError(f"{KEY}: {source}: the template is empty")
    try:
        rendered, _ = render_jinja_template(
            [list(_CHECK_MESSAGES)],
            chat_template=text,
            add_generation_prompt=True,
            bos_token="<s>",
            eos_token="</s>",
        )
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{KEY}: {source}: not a valid Jinja template: line {exc.lineno}: {exc.message}") from exc
    except Exception as exc:  # a template may raise anything while rendering (raise_exception, type errors, …)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"{KEY}: {source}: the template fails on a user/assistant conversation: {detail}") from exc
    missing = [m["role"] for m in _CHECK_MESSAGES if m["content"] not in rendered[0]]
    if missing:
        raise ConfigError(
            f"{KEY}: {source}: the template drops the {' and '.join(missing)} message content "
            "(it must render messages[i]['content'])"
        )
