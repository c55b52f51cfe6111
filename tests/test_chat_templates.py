"""model.chat_template: built-in templates, Jinja files, and the same template in SFT, generation and judging for a
model whose tokenizer has none (a pretrained base such as Llama-2-70b-hf)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from srlm.config import BackendConfig
from srlm.errors import BackendError, ConfigError, ModelError, SrlmError
from srlm.generation import Sampling, open_backend
from srlm.generation.transformers_backend import TransformersBackend
from srlm.models.chat_templates import builtin_names, builtin_template, resolve_chat_template
from srlm.models.known import known_model
from tests.test_training_launch import sft_spec
from tests.test_training_sft import write_sft_examples

CHAT = [{"role": "user", "content": "Name a colour."}]
TRANSFORMERS = BackendConfig(backend="transformers", transformers_batch_size=2, seed=0)


@pytest.fixture(scope="module")
def templateless_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A copy of the tiny model whose tokenizer has no chat template, as a pretrained base model ships."""
    from transformers import AutoTokenizer

    target = tmp_path_factory.mktemp("base-model") / "model"
    shutil.copytree(tiny_model_dir, target)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    config_path = target / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config.pop("chat_template", None)
    config_path.write_text(json.dumps(tokenizer_config))
    assert not AutoTokenizer.from_pretrained(target).chat_template
    return target


def prompt_tokens(tokenizer_dir: Path, template: str, messages: list[dict]) -> int:
    """How many tokens `messages` become under `template`, rendered as the backends render them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------------------------------------ the built-ins


def test_builtin_templates_render_their_formats():
    from transformers.utils.chat_template_utils import render_jinja_template

    def render(name: str, messages: list[dict]) -> str:
        rendered, _ = render_jinja_template(
            [messages], chat_template=builtin_template(name), add_generation_prompt=True, bos_token="<s>",
            eos_token="</s>",
        )
        return rendered[0]

    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]
    assert render("llama-2", conversation) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Again [/INST]"
    )
    assert render("llama-2", CHAT) == "<s>[INST] Name a colour. [/INST]"
    assert render("chatml", CHAT) == "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    assert render("smollm2", CHAT).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    with pytest.raises(Exception, match="roles must alternate"):
        render("llama-2", [{"role": "assistant", "content": "first"}])
    assert builtin_names() == ["chatml", "llama-2", "smollm2"]


def test_smollm2_template_lives_in_one_place(tiny_model_dir):
    from transformers import AutoTokenizer

    assert known_model("smollm2-135m").chat_template == builtin_template("smollm2")
    assert AutoTokenizer.from_pretrained(tiny_model_dir).chat_template == builtin_template("smollm2")


# ------------------------------------------------------------------------------------------------ resolution


def test_resolve_names_and_files(tmp_path):
    assert resolve_chat_template("llama-2") == builtin_template("llama-2")
    good = tmp_path / "mine.jinja"
    good.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                    "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert resolve_chat_template(str(good)) == good.read_text()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, r"'{path}' is neither a built-in template \(chatml, llama-2, smollm2\) nor a file"),
        ("{% for m in messages %}{{ m['content'] }", r"{path}: not a valid Jinja template: line 1: "),
        ("{% for m in messages %}{{ m['content'] }}{% endfor %}{% endif %}", r"{path}: not a valid Jinja template"),
        ("{{ raise_exception('no chats here') }}", r"{path}: the template fails on a user/assistant conversation: "
                                                   "no chats here"),
        ("Answer the question.", r"{path}: the template drops the user and assistant message content"),
        ("   \n", r"{path}: the template is empty"),
        (b"\xff\xfe{{ x }}", r"{path}: cannot read the template"),
    ],
    ids=["missing", "unclosed", "stray-endif", "raises", "drops-messages", "empty", "not-utf8"],
)
def test_bad_template_files_are_one_line_config_errors(tmp_path, content, problem):
    path = tmp_path / "template.jinja"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        resolve_chat_template(str(path))
    message = str(info.value)
    assert message.startswith("model.chat_template: ") and "\n" not in message
    assert re.search(problem.format(path=re.escape(str(path))), message), message


def test_unknown_name_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^model.chat_template: 'llama2' is neither a built-in template "
                                          r"\(chatml, llama-2, smollm2\) nor a file$"):
        resolve_chat_template("llama2")
    with pytest.raises(ConfigError, match="unknown built-in template 'llama2'; built-ins: chatml, llama-2"):
        builtin_template("llama2")


# ------------------------------------------------------------------------------------------------ SFT


def test_sft_refuses_a_model_without_chat_template(templateless_model_dir, tmp_store):
    from srlm.training.launch import execute

    ift = write_sft_examples(f"{tmp_store}/seed/ift", n=4)
    spec = sft_spec(tmp_store, str(templateless_model_dir), [ift], max_steps=1)
    with pytest.raises(ModelError, match="no chat template.*set model.chat_template"):
        execute(spec)


def test_sft_job_with_a_builtin_template_trains_and_saves_it(templateless_model_dir, tmp_store):
    from transformers import AutoTokenizer

    from srlm.models import resolve_model
    from srlm.training.launch import run_training_job

    ift = write_sft_examples(f"{tmp_store}/seed/ift", n=4)
    spec = sft_spec(tmp_store, str(templateless_model_dir), [ift], max_steps=1, chat_template="chatml")
    record = run_training_job(spec, echo=False)
    assert record.final and record.step == 1
    saved = AutoTokenizer.from_pretrained(resolve_model(record.uri))
    assert saved.chat_template == builtin_template("chatml")  # every model trained from it carries the template


def test_sft_job_with_a_bad_template_file_fails_naming_it(templateless_model_dir, tmp_store, tmp_path):
    from srlm.training.launch import run_training_job

    bad = tmp_path / "broken.jinja"
    bad.write_text("{% if %}")
    ift = write_sft_examples(f"{tmp_store}/seed/ift", n=4)
    spec = sft_spec(tmp_store, str(templateless_model_dir), [ift], max_steps=1, chat_template=str(bad))
    with pytest.raises(SrlmError, match=rf"model.chat_template: {bad}: not a valid Jinja template"):
        run_training_job(spec, echo=False)


# ------------------------------------------------------------------------------------------------ generation


def test_transformers_backend_formats_chats_with_the_configured_template(templateless_model_dir):
    sampling = Sampling(n=1, temperature=0, max_new_tokens=1)
    with TransformersBackend(str(templateless_model_dir), TRANSFORMERS, dtype="float32") as plain:
        assert plain.generate(["a raw string needs no template"], sampling, progress=False)
        with pytest.raises(BackendError, match="has none; set model.chat_template"):
            plain.generate([CHAT], sampling, progress=False)

    for name in ("llama-2", "chatml"):
        with open_backend(str(templateless_model_dir), TRANSFORMERS, dtype="float32", chat_template=name) as opened:
            (completion,) = opened.generate([CHAT], sampling, progress=False)
        assert completion.prompt_tokens == prompt_tokens(templateless_model_dir, builtin_template(name), CHAT)
    assert prompt_tokens(templateless_model_dir, builtin_template("llama-2"), CHAT) != prompt_tokens(
        templateless_model_dir, builtin_template("chatml"), CHAT
    )  # else the check above could not tell the templates apart


def test_configured_template_replaces_the_tokenizers_own(tiny_model_dir, tmp_path):
    template = tmp_path / "judge.jinja"
    template.write_text("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}### assistant:{% endif %}")
    sampling = Sampling(n=1, temperature=0, max_new_tokens=1)
    with TransformersBackend(str(tiny_model_dir), TRANSFORMERS, dtype="float32", chat_template=str(template)) as b:
        (completion,) = b.generate([CHAT], sampling, progress=False)
    assert completion.prompt_tokens == prompt_tokens(tiny_model_dir, template.read_text(), CHAT)
    assert completion.prompt_tokens != prompt_tokens(tiny_model_dir, builtin_template("smollm2"), CHAT)


def test_backend_refuses_a_bad_template_before_loading_the_model(tiny_model_dir):
    with pytest.raises(ConfigError, match="^model.chat_template: 'nope' is neither a built-in template"):
        TransformersBackend(str(tiny_model_dir), TRANSFORMERS, chat_template="nope")


def test_vllm_engines_get_prompts_rendered_with_the_configured_template(templateless_model_dir, monkeypatch):
    """The vLLM backend renders and tokenizes on the driver; the engines receive token ids, never apply a template
    of their own. So what reaches them is what the configured template renders (engines replaced by a recorder)."""
    import ray
    from transformers import AutoTokenizer

    from srlm.generation import vllm_backend

    received: list[list[int]] = []

    class RecordingEngine:
        class generate:  # noqa: N801  (stands in for an actor method: engine.generate.remote(...))
            @staticmethod
            def remote(prompts: list[list[int]], params: dict) -> list:
                received.extend(prompts)
                return [([""] * params["n"], [1] * params["n"], ["stop"] * params["n"]) for _ in prompts]

    monkeypatch.setattr(vllm_backend.ray_cluster, "connect", lambda address: False)
    monkeypatch.setattr(vllm_backend.ray_cluster, "has_gpus", lambda: False)
    recorder = vllm_backend.engine_pool.AttachedPool("recorder", None, "test", [RecordingEngine()], [], True)
    monkeypatch.setattr(vllm_backend.engine_pool, "attach", lambda spec, plan: recorder)
    monkeypatch.setattr(ray, "get", lambda refs, **kwargs: refs)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    cfg = BackendConfig(backend="vllm")
    backend = vllm_backend.VLLMBackend(str(templateless_model_dir), cfg, chat_template="llama-2")
    try:
        (completion,) = backend.generate([CHAT], Sampling(n=1, max_new_tokens=4), progress=False)
    finally:
        backend.close()
    tokenizer = AutoTokenizer.from_pretrained(templateless_model_dir)
    text = tokenizer.apply_chat_template(CHAT, chat_template=builtin_template("llama-2"), tokenize=False,
                                         add_generation_prompt=True)
    assert text == f"{tokenizer.bos_token}[INST] Name a colour. [/INST]"
    expected = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert received == [expected] and completion.prompt_tokens == len(expected)
