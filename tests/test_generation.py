"""The transformers backend and the backend factory, on the tiny random-weight model.

The model's weights are random, so tests never assert on what it says, only on how the backend handles it:
order, sample counts, token accounting, finish reasons, stop strings and the prompt rendering."""

from __future__ import annotations

import re

import pytest

from srlm.config import BackendConfig
from srlm.errors import BackendError
from srlm.generation import Sampling, factory, open_backend, resolve_backend_name
from srlm.generation.prompts import load_tokenizer, render_prompt_ids, stop_token_ids
from srlm.generation.transformers_backend import TransformersBackend, finish_sample

CHAT = [{"role": "user", "content": "What is the capital of France?"}]
# Distinct prompt lengths, not in length order: the backend sorts by length to batch, then must restore order.
REQUESTS = [
    "Hi",
    CHAT,
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    "One two three four five",
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    # float32: batched and single-row decoding then agree to the bit, which the stop-string test relies on.
    cfg = BackendConfig(backend="transformers", transformers_batch_size=2, seed=0)
    with TransformersBackend(str(tiny_model_dir), cfg, dtype="float32") as opened:
        yield opened


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_one_completion_per_request_in_request_order(backend, tokenizer):
    completions = backend.generate(REQUESTS, Sampling(n=3, max_new_tokens=6), progress=False)

    expected_prompt_tokens = [len(ids) for ids in render_prompt_ids(tokenizer, REQUESTS)]
    assert len(set(expected_prompt_tokens)) == len(REQUESTS)  # else the order check below proves nothing
    assert [c.prompt_tokens for c in completions] == expected_prompt_tokens
    for completion in completions:
        assert len(completion.texts) == len(completion.num_tokens) == len(completion.finish_reasons) == 3
        for tokens, reason in zip(completion.num_tokens, completion.finish_reasons):
            assert reason in ("stop", "length")
            assert 1 <= tokens <= 6
            assert reason == "stop" or tokens == 6


def test_samples_differ_when_sampling_and_repeat_when_greedy(backend):
    sampled = backend.generate([CHAT], Sampling(n=4, temperature=1.0, top_p=1.0, max_new_tokens=12), progress=False)
    greedy = backend.generate([CHAT], Sampling(n=3, temperature=0, max_new_tokens=12), progress=False)

    assert len(set(sampled[0].texts)) > 1
    assert len(greedy[0].texts) == 3 and len(set(greedy[0].texts)) == 1


def test_chat_requests_use_the_template_and_raw_strings_do_not(backend, tokenizer):
    text = "What is the capital of France?"
    chat_ids, raw_ids = render_prompt_ids(tokenizer, [[{"role": "user", "content": text}], text])

    templated = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                              add_generation_prompt=True)
    assert templated.endswith("<|im_start|>assistant\n")
    assert chat_ids == tokenizer(templated, add_special_tokens=False)["input_ids"]
    assert raw_ids == tokenizer(text)["input_ids"]
    completions = backend.generate([[{"role": "user", "content": text}], text], Sampling(max_new_tokens=2),
                                   progress=False)
    assert [c.prompt_tokens for c in completions] == [len(chat_ids), len(raw_ids)]


@pytest.mark.parametrize(
    "bad, message",
    [
        (42, "request 0: expected chat messages or a string, got int"),
        ([], "request 0: expected chat messages or a string, got list"),
        ([{"role": "user"}], "request 0, message 0"),
    ],
)
def test_malformed_requests_are_refused_with_their_index(backend, bad, message):
    with pytest.raises(BackendError, match=re.escape(message)):
        backend.generate([bad], Sampling(max_new_tokens=2), progress=False)


def test_stop_string_cuts_text_and_ends_the_sample(backend):
    prompt = "The quick brown fox"
    greedy = Sampling(n=1, temperature=0, max_new_tokens=24)
    full = backend.generate([prompt], greedy, progress=False)[0]
    text = full.texts[0]
    # A short plain-ASCII stretch from the middle of what the model said makes a stop string it will hit well
    # before its last token.
    match = re.compile(r"[A-Za-z]{3}").search(text, len(text) // 4, len(text) // 2)
    if match is None:
        pytest.skip(f"the tiny model's greedy text has no plain-ASCII stretch to stop on: {text!r}")
    stop = match.group(0)

    stopped = backend.generate([prompt], Sampling(n=2, temperature=0, max_new_tokens=24, stop=(stop, "@@never@@")),
                               progress=False)[0]

    assert stopped.texts == [text[: text.index(stop)]] * 2
    assert stopped.finish_reasons == ["stop", "stop"]
    assert stopped.num_tokens[0] < full.num_tokens[0]


def test_finish_sample_counts_like_vllm(tokenizer, tiny_model_dir):
    stop_ids = stop_token_ids(tokenizer, str(tiny_model_dir))
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eos in stop_ids
    words = tokenizer("Hello world, fine day", add_special_tokens=False)["input_ids"]

    # Ended by a stop token: it counts as generated, stays out of the text; padding after it is ignored.
    assert finish_sample(tokenizer, words + [eos, eos, eos], stop_ids, ()) == (
        "Hello world, fine day", len(words) + 1, "stop")
    # Ran out of room.
    assert finish_sample(tokenizer, words, stop_ids, ()) == ("Hello world, fine day", len(words), "length")
    # A stop string: cut from the text; the count ends at the token that completed it.
    up_to_world = len(tokenizer("Hello world", add_special_tokens=False)["input_ids"])
    assert finish_sample(tokenizer, words + [eos], stop_ids, ("world", "day")) == ("Hello ", up_to_world, "stop")


def test_completion_stops_at_max_model_len_and_long_prompts_are_refused(tiny_model_dir, tokenizer):
    prompt = "One two three four five"
    prompt_len = len(tokenizer(prompt)["input_ids"])
    cfg = BackendConfig(backend="transformers", max_model_len=prompt_len + 3)
    with TransformersBackend(str(tiny_model_dir), cfg, dtype="float32") as small:
        # temperature 0 and a model that rarely emits a stop token: the context limit ends the sample.
        completion = small.generate([prompt], Sampling(temperature=0, max_new_tokens=50), progress=False)[0]
        assert completion.num_tokens[0] <= 3
        assert completion.finish_reasons[0] == "length" or completion.num_tokens[0] < 3
        with pytest.raises(BackendError, match=r"request 1: \d+ prompt tokens leave no room"):
            small.generate(["Hi", prompt + " six seven eight nine ten"], Sampling(max_new_tokens=5), progress=False)
        # What a caller checks first to set such requests aside: room for at least one new token.
        assert small.fits(["Hi", prompt, prompt + " six seven eight nine ten"]) == [True, True, False]


def test_same_seed_same_samples_and_stats_add_up(tiny_model_dir):
    cfg = BackendConfig(backend="transformers", transformers_batch_size=4, seed=7)
    sampling = Sampling(n=2, temperature=0.9, top_p=0.95, max_new_tokens=8)
    runs = []
    for _ in range(2):
        with open_backend(str(tiny_model_dir), cfg, dtype="float32") as opened:
            completions = opened.generate(REQUESTS, sampling, progress=False)
            runs.append([c.texts for c in completions])
            assert opened.stats.requests == len(REQUESTS)
            assert opened.stats.output_tokens == sum(sum(c.num_tokens) for c in completions)
            assert opened.stats.prompt_tokens == sum(c.prompt_tokens for c in completions)
    assert runs[0] == runs[1]


def test_generate_after_close_is_an_error(tiny_model_dir):
    opened = TransformersBackend(str(tiny_model_dir), BackendConfig(backend="transformers"), dtype="float32")
    opened.close()
    opened.close()  # idempotent
    with pytest.raises(BackendError, match="after close"):
        opened.generate(["Hi"], Sampling(max_new_tokens=2), progress=False)


# --- factory -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("available, expected", [(True, "vllm"), (False, "transformers")])
def test_auto_picks_vllm_only_when_it_imports(monkeypatch, available, expected):
    monkeypatch.setattr(factory, "vllm_available", lambda: available)
    assert resolve_backend_name("auto") == expected
    assert resolve_backend_name("transformers") == "transformers"


def test_explicit_vllm_without_vllm_is_an_error(monkeypatch):
    monkeypatch.setattr(factory, "vllm_available", lambda: False)
    with pytest.raises(BackendError, match="vllm was asked for but does not import"):
        resolve_backend_name("vllm")


def test_unknown_backend_is_a_clear_error_before_loading_anything(tmp_path):
    cfg = BackendConfig()
    object.__setattr__(cfg, "backend", "tgi")  # past the config's own validation, as a hand-built object may be
    with pytest.raises(BackendError, match=r"backend.backend: unknown backend 'tgi'; choose one of auto, vllm"):
        open_backend(str(tmp_path / "no-model"), cfg)


def test_vllm_available_is_false_when_not_installed(monkeypatch):
    monkeypatch.setattr(factory.importlib.util, "find_spec", lambda name: None)
    assert factory.vllm_available() is False


def test_open_backend_transformers(tiny_model_dir):
    with open_backend(str(tiny_model_dir), BackendConfig(backend="transformers"), dtype="float32") as opened:
        assert isinstance(opened, TransformersBackend)
        assert opened.name == "transformers"


@pytest.mark.parametrize("declared", [None, "GPT2Tokenizer", "PreTrainedTokenizerFast"])
def test_the_tokenizer_class_is_the_one_autotokenizer_picks(tiny_model_dir, tmp_path, declared):
    import json
    import shutil

    from transformers import AutoTokenizer

    from srlm.generation.prompts import tokenizer_class

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    if declared is not None:  # another class name, as other save_pretrained versions write it
        config_path = model / "tokenizer_config.json"
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "tokenizer_class": declared}))
    chosen = tokenizer_class(str(model))
    assert chosen is not AutoTokenizer and chosen is type(AutoTokenizer.from_pretrained(str(model)))
    loaded = load_tokenizer(str(model))
    chat = [{"role": "user", "content": "Name a colour."}]
    expected = AutoTokenizer.from_pretrained(str(model)).apply_chat_template(chat, add_generation_prompt=True)
    assert loaded.apply_chat_template(chat, add_generation_prompt=True) == expected


def test_a_tokenizer_with_remote_code_is_left_to_autotokenizer(tiny_model_dir, tmp_path):
    import json
    import shutil

    from transformers import AutoTokenizer

    from srlm.generation.prompts import tokenizer_class

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config_path = model / "tokenizer_config.json"
    config = {**json.loads(config_path.read_text()), "auto_map": {"AutoTokenizer": ["custom.Tok", None]}}
    config_path.write_text(json.dumps(config))
    assert tokenizer_class(str(model)) is AutoTokenizer  # which refuses remote code unless trusted
