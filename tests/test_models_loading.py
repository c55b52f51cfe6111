"""Model loading never runs a model's own code, reads safetensors only unless pickle weights are opted in (with a
warning), and a truncated or corrupt model file is one line naming it (srlm.models.loading)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from srlm.errors import ModelError
from srlm.models.loading import PICKLE_WEIGHTS_ENV, check_model_files


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def _load_for_training(path: Path):
    from srlm.training.modeling import load_for_training

    return load_for_training(str(path), dropout=0.1)


def _transformers_backend(path: Path):
    from srlm.config import BackendConfig
    from srlm.generation.transformers_backend import TransformersBackend

    return TransformersBackend(str(path), BackendConfig(backend="transformers"), dtype="float32")


def _one_line_naming(exc: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("load", [_load_for_training, _transformers_backend], ids=["training", "generation"])
@pytest.mark.parametrize("cut", [100, "header"], ids=["tail-cut", "header-cut"])
def test_a_truncated_safetensors_file_is_one_line_naming_it(model_copy, load, cut):
    weights = model_copy / "model.safetensors"
    os.truncate(weights, 5 if cut == "header" else weights.stat().st_size - cut)
    with pytest.raises(ModelError) as exc:
        load(model_copy)
    _one_line_naming(exc, weights, "not a valid safetensors file", "truncated or corrupt")


def test_a_corrupt_safetensors_header_is_one_line_naming_it(model_copy):
    weights = model_copy / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(8)
        handle.write(b"\x00\xff{garbage")
    with pytest.raises(ModelError) as exc:
        check_model_files(model_copy)
    _one_line_naming(exc, weights, "truncated or corrupt")


@pytest.mark.parametrize("damage", ["truncate", "empty", "array"])
@pytest.mark.parametrize("load", [_load_for_training, _transformers_backend], ids=["training", "generation"])
def test_a_damaged_config_json_is_one_line_naming_it(model_copy, load, damage):
    config = model_copy / "config.json"
    if damage == "truncate":
        os.truncate(config, 20)
    elif damage == "empty":
        config.write_text("")
    else:
        config.write_text("[1, 2]")
    with pytest.raises(ModelError) as exc:
        load(model_copy)
    _one_line_naming(exc, config, "truncated or corrupt")


def test_a_damaged_tokenizer_json_is_one_line_naming_it(model_copy):
    from srlm.training.modeling import load_tokenizer

    tokenizer = model_copy / "tokenizer.json"
    os.truncate(tokenizer, tokenizer.stat().st_size // 2)
    with pytest.raises(ModelError) as exc:
        load_tokenizer(str(model_copy))
    _one_line_naming(exc, tokenizer, "not valid JSON", "line")


def test_a_model_whose_config_asks_for_its_own_code_is_refused_without_running_it(model_copy, tmp_path):
    marker = tmp_path / "remote-code-ran"
    (model_copy / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig\nclass EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
    )
    config = json.loads((model_copy / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    config["model_type"] = "evil"
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as exc:
        _load_for_training(model_copy)
    assert "config.json" in str(exc.value) and "\n" not in str(exc.value)
    assert not marker.exists()


def _pickle_only(model_copy: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    state = load_file(str(model_copy / "model.safetensors"))
    torch.save(state, model_copy / "pytorch_model.bin")
    (model_copy / "model.safetensors").unlink()
    return model_copy


def test_pickle_weights_are_refused_unless_opted_in(model_copy, monkeypatch, caplog):
    model = _pickle_only(model_copy)
    monkeypatch.delenv(PICKLE_WEIGHTS_ENV, raising=False)
    with pytest.raises(ModelError) as exc:
        _transformers_backend(model)
    _one_line_naming(exc, model, "pytorch_model.bin", "safetensors only", PICKLE_WEIGHTS_ENV)

    monkeypatch.setenv(PICKLE_WEIGHTS_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="srlm.models.loading"):
        backend = _transformers_backend(model)
    try:
        assert any("pickle weights are allowed" in record.getMessage() for record in caplog.records)
    finally:
        backend.close()


def test_loaders_ask_for_safetensors_and_no_remote_code(monkeypatch):
    from srlm.models.loading import pretrained_kwargs, vllm_kwargs

    monkeypatch.delenv(PICKLE_WEIGHTS_ENV, raising=False)
    assert pretrained_kwargs("m") == {"trust_remote_code": False, "use_safetensors": True}
    assert vllm_kwargs("m") == {"trust_remote_code": False, "load_format": "safetensors"}
    monkeypatch.setenv(PICKLE_WEIGHTS_ENV, "1")
    assert pretrained_kwargs("m") == {"trust_remote_code": False}
    assert vllm_kwargs("m")["trust_remote_code"] is False


def test_an_intact_model_passes_the_checks(model_copy):
    check_model_files(model_copy)


def test_no_loader_in_srlm_turns_remote_code_on():
    sources = Path(__file__).resolve().parents[1] / "srlm"
    offenders = [str(p) for p in sources.rglob("*.py") if "trust_remote_code=True" in p.read_text()]
    assert offenders == []
