"""SFT examples longer than sft.max_length are dropped and counted, never truncated: TRL keeps the first
max_length tokens, which cuts the final "Score: N" off an EFT judgment (and the end of an IFT answer)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from srlm.errors import DataError
from srlm.training.data import (
    SFT_FIT_FILE,
    fitted_sft_dataset,
    read_sft_fit,
    sequence_length,
    sft_dataset,
    sft_examples,
)
from tests.test_training_sft import small_cfg

JUDGE_PROMPT = "Review the response below with the additive 5-point rubric and conclude with \"Score: N\".\n" + (
    "The response explains the topic at length. " * 12
)
JUDGMENT = "The response is relevant, covers the question and is well organised, but it is wordy.\n\nScore: 4"


def _write(uri: str, rows: list[tuple[str, str, str, str]]) -> str:
    """(example_id, kind, user message, completion) rows as an sft_examples table."""
    from srlm.store import write_table

    table = pa.Table.from_pylist([
        {"example_id": eid, "kind": kind, "prompt_messages": [{"role": "user", "content": prompt}],
         "completion": completion, "source": "test", "score": 4.0 if kind == "eft" else None}
        for eid, kind, prompt, completion in rows
    ])
    write_table(uri, table, "sft_examples")
    return uri


@pytest.fixture
def tables(tmp_store):
    ift = _write(f"{tmp_store}/ift", [
        ("ift-short", "ift", "What is 2 plus 2?", "2 plus 2 is 4."),
        ("ift-long", "ift", "Tell me about the sea.", "The sea is vast and deep. " * 40),
    ])
    eft = _write(f"{tmp_store}/eft", [
        ("eft-long", "eft", JUDGE_PROMPT, JUDGMENT),
        ("eft-short", "eft", "Rate: 'Paris is the capital of France.' Conclude with \"Score: N\".", "Accurate.\n\nScore: 4"),
    ])
    return ift, eft


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from srlm.training.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def _max_length(tokenizer, ift, eft) -> int:
    """A max_length that leaves eft-long 3 tokens short (its prompt fits; its final Score line does not) and
    fits both short examples."""
    lengths = {e.example_id: sequence_length(tokenizer, e) for e in sft_examples([ift, eft])}
    limit = lengths["eft-long"] - 3
    assert lengths["ift-long"] > limit >= max(lengths["ift-short"], lengths["eft-short"])
    return limit


def _trl_train_dataset(tiny_model_dir, tokenizer, dataset, max_length, tmp_path):
    """The dataset as TRL's SFTTrainer prepares it (tokenized, labelled, truncated to max_length)."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(tmp_path / "trl"), max_length=max_length, completion_only_loss=True,
                     packing=False, report_to="none", use_cpu=True, dataset_num_proc=None)
    return SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=dataset, processing_class=tokenizer).train_dataset


def _targets(tokenizer, train_dataset) -> list[str]:
    return [tokenizer.decode([t for t in row["labels"] if t != -100]) for row in train_dataset]


def test_trl_truncation_cuts_the_score_line_off_an_eft_target(tiny_model_dir, tokenizer, tables, tmp_path):
    """Why rows are dropped: the undropped dataset reaches training with the EFT judgment's score cut off."""
    ift, eft = tables
    limit = _max_length(tokenizer, ift, eft)
    targets = _targets(tokenizer, _trl_train_dataset(tiny_model_dir, tokenizer, sft_dataset([ift, eft]), limit, tmp_path))
    long_eft = targets[2]
    assert long_eft.startswith("The response is relevant") and "Score: 4" not in long_eft


def test_examples_that_do_not_fit_are_dropped_and_counted(tiny_model_dir, tokenizer, tables, tmp_path, caplog):
    ift, eft = tables
    limit = _max_length(tokenizer, ift, eft)
    with caplog.at_level("WARNING", logger="srlm.training.data"):
        dataset, fit = fitted_sft_dataset([ift, eft], tokenizer, limit)
    assert [row["completion"][0]["content"] for row in dataset] == ["2 plus 2 is 4.", "Accurate.\n\nScore: 4"]
    assert (fit.kept, fit.dropped_too_long, fit.total_dropped) == ({"ift": 1, "eft": 1}, {"ift": 1, "eft": 1}, 2)
    assert fit.dropped_examples == ["ift-long", "eft-long"]
    assert f"2 of 4 examples dropped as longer than max_length {limit} (eft 1, ift 1)" in caplog.text

    # What is kept reaches training whole: the length counted here is TRL's, and every target keeps its end.
    trained = _trl_train_dataset(tiny_model_dir, tokenizer, dataset, limit, tmp_path)
    assert [len(row["input_ids"]) for row in trained] == [sequence_length(tokenizer, e) for e in
                                                          sft_examples([ift, eft]) if e.example_id.endswith("short")]
    assert _targets(tokenizer, trained)[1].startswith("Accurate.\n\nScore: 4<|im_end|>")

    fit.write(tmp_path / "job")
    assert read_sft_fit(tmp_path / "job") == json.loads((tmp_path / "job" / SFT_FIT_FILE).read_text()) == fit.to_dict()
    assert read_sft_fit(tmp_path / "no-job") is None


def test_nothing_fitting_is_a_data_error_naming_the_setting(tokenizer, tables):
    with pytest.raises(DataError, match=r"no SFT example of .* fits sft.max_length 8"):
        fitted_sft_dataset(list(tables), tokenizer, 8)


def test_the_sft_trainer_trains_only_on_examples_that_fit(tiny_model_dir, tokenizer, tables, tmp_path):
    """Through build_sft_trainer (srlm/training/sft.py), which records the counts for the registry record and
    the sft step's summary."""
    from srlm.training.sft import build_sft_trainer

    ift, eft = tables
    limit = _max_length(tokenizer, ift, eft)
    trainer, _ = build_sft_trainer(str(tiny_model_dir), [ift, eft], tmp_path / "out", small_cfg(max_length=limit))
    targets = _targets(tokenizer, trainer.train_dataset)
    assert len(targets) == 2 and all(t.endswith("<|im_end|>\n") or t.endswith("<|im_end|>") for t in targets)
    assert read_sft_fit(tmp_path / "out")["dropped_too_long"] == {"ift": 1, "eft": 1}
