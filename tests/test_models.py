"""Tiny test model, model cache directories, model resolution and the `srlm model` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm.errors import ModelError, StoreError
from srlm.models import cache as model_cache
from srlm.models.known import KNOWN_MODELS, known_model
from srlm.models.resolve import resolve_model

# ------------------------------------------------------------------------------------------------ tiny model


def test_tiny_model_has_smollm2_architecture_and_tokenizer(tiny_model_dir):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.model_type == "llama" and config.architectures == ["LlamaForCausalLM"]
    assert config.tie_word_embeddings is True
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention
    assert config.head_dim == 32  # the smallest head size vLLM's CPU attention supports
    assert config.max_position_embeddings >= 2048
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.eos_token == "<|im_end|>" and config.eos_token_id == tokenizer.eos_token_id
    messages = [{"role": "user", "content": "Hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert model_cache.is_complete(tiny_model_dir)


def test_tiny_model_generates_and_ties_embeddings(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4 or tokenizer.eos_token_id in out[0].tolist()


def test_build_tiny_model_reuses_same_seed_and_rebuilds_other_seed(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from srlm.models.tiny import build_tiny_model

    target = tmp_path / "tiny"
    build_tiny_model(target, seed=0)
    weights = target / "model.safetensors"
    first_mtime = weights.stat().st_mtime_ns
    build_tiny_model(target, seed=0)
    assert weights.stat().st_mtime_ns == first_mtime  # complete and same seed: not rebuilt

    same = load_file(tiny_model_dir / "model.safetensors")
    assert all((same[k] == v).all() for k, v in load_file(weights).items())  # seed 0 is deterministic
    build_tiny_model(target, seed=1)
    assert model_cache.read_marker(target)["seed"] == 1
    other = load_file(weights)
    assert not (other["model.embed_tokens.weight"] == same["model.embed_tokens.weight"]).all()


# ------------------------------------------------------------------------------------------------ cache dirs


def test_building_dir_is_atomic_and_skips_complete(tmp_path):
    target = tmp_path / "m"
    with pytest.raises(RuntimeError):
        with model_cache.building_dir(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("crash mid-build")
    assert not target.exists()
    assert not list(tmp_path.glob(".m.tmp-*"))  # the temp dir is cleaned up

    with model_cache.building_dir(target, info={"alias": "x"}) as tmp:
        (tmp / "config.json").write_text("{}")
    assert model_cache.is_complete(target) and model_cache.read_marker(target)["alias"] == "x"
    with model_cache.building_dir(target) as tmp:
        assert tmp is None  # already complete
    with model_cache.building_dir(target, force=True) as tmp:
        (tmp / "other.json").write_text("{}")
    assert (target / "other.json").exists() and not (target / "config.json").exists()


def test_building_dir_refuses_foreign_nonempty_dir(tmp_path):
    target = tmp_path / "home"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not a directory srlm prepared"):
        with model_cache.building_dir(target):
            pass
    assert (target / "precious.txt").read_text() == "keep me"


def test_models_dir_honours_env_only_for_default(monkeypatch, tmp_path):
    monkeypatch.setenv("SRLM_CACHE_DIR", str(tmp_path / "c"))
    assert model_cache.models_dir() == tmp_path / "c" / "models"
    assert model_cache.models_dir(model_cache.DEFAULT_MODELS_DIR) == tmp_path / "c" / "models"
    assert model_cache.models_dir(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("SRLM_CACHE_DIR")
    assert model_cache.models_dir() == Path("~/.cache/srlm/models").expanduser()


def test_known_model_alias():
    assert known_model("smollm2-135m").gguf_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(ModelError, match="unknown model alias 'nope'.*smollm2-135m"):
        known_model("nope")


# ------------------------------------------------------------------------------------------------ resolve_model


def test_resolve_local_hf_dir(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir.resolve())
    assert resolve_model(f"file://{tiny_model_dir}") == str(tiny_model_dir.resolve())


def test_resolve_alias_prepares_into_cache_dir(monkeypatch, tmp_path):
    import srlm.models.prepare as prepare

    calls = []

    def fake_prepare(alias, out_dir=None, *, cache_dir=None, force=False):
        calls.append((alias, out_dir, cache_dir))
        return tmp_path / alias

    monkeypatch.setattr(prepare, "prepare_model", fake_prepare)
    assert resolve_model("smollm2-135m", cache_dir=str(tmp_path)) == str(tmp_path / "smollm2-135m")
    assert calls == [("smollm2-135m", None, str(tmp_path))]
    assert set(KNOWN_MODELS) == {"smollm2-135m"}


def test_resolve_committed_local_checkpoint_in_place(tiny_model_dir, tmp_store):
    from srlm.store import join_uri, write_directory

    uri = join_uri(tmp_store, "runs", "r", "models", "M0")
    write_directory(uri, tiny_model_dir)
    path = Path(resolve_model(uri))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert str(path).startswith(str(Path(tmp_store).resolve()))  # used in place, not copied


def test_resolve_s3_checkpoint_fetches_into_model_cache(tiny_model_dir, s3_store, tmp_path):
    from srlm.store import join_uri, write_directory

    uri = join_uri(s3_store, "runs", "r", "models", "M1")
    write_directory(uri, tiny_model_dir)
    path = Path(resolve_model(uri, cache_dir=tmp_path / "models"))
    assert path.is_relative_to(tmp_path / "models" / "fetched")
    assert (path / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert resolve_model(uri, cache_dir=tmp_path / "models") == str(path)  # cached by manifest checksum


def test_resolve_uncommitted_s3_uri_is_a_model_error(s3_store):
    with pytest.raises(ModelError, match="not a committed checkpoint"):
        resolve_model(f"{s3_store}/runs/r/models/M9")


def test_resolve_rejects_local_paths_that_are_not_models(tmp_path, tmp_store):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match="not a model directory"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="no such model directory"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="no such model directory"):
        resolve_model("./relative/missing")
    with pytest.raises(ModelError, match="empty"):
        resolve_model("  ")


def test_resolve_committed_table_is_not_a_model(tmp_store):
    import pyarrow as pa

    from srlm.store import write_table

    uri = f"{tmp_store}/prompts"
    write_table(uri, pa.table({"prompt_id": ["p"], "prompt": ["x"], "source": ["seed"]}), "prompts")
    with pytest.raises(StoreError, match="not a directory"):
        resolve_model(uri)


def test_resolve_passes_hub_ids_through():
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("gpt2") == "gpt2"


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_model_tiny_and_resolve(tmp_path, tiny_model_dir, capsys):
    from srlm.cli.main import main

    out = tmp_path / "cli-tiny"
    assert main(["model", "tiny", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert main(["model", "resolve", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    assert main(["model", "resolve", str(tmp_path)]) == 1
    assert "not a model directory" in capsys.readouterr().err


def test_prepare_refuses_a_directory_prepared_for_another_alias(tmp_path):
    from srlm.models.prepare import prepare_model

    target = tmp_path / "prepared"
    with model_cache.building_dir(target, info={"alias": "some-other-model"}) as tmp:
        (tmp / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="holds the prepared model 'some-other-model'"):
        prepare_model("smollm2-135m", target)
