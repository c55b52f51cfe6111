"""The run's seed tables (shipped or configured, optionally subsampled) and the self-instruct seed prompts."""

from __future__ import annotations

from collections import Counter

import pytest

from srlm.config import load_config
from srlm.errors import ConfigError, DataError
from srlm.steps.context import StepContext
from srlm.steps.seeds import prompts_from_table, seed_prompt_texts, seed_tables
from srlm.store import artifacts


def make_ctx(store: str, **overrides) -> StepContext:
    return StepContext.from_config(
        load_config(None, {"store.uri": store, "run.name": "seeds", **overrides}), echo=lambda _: None, progress=False
    )


def test_shipped_seed_data_is_written_into_the_run_and_subsampled(tmp_store):
    from srlm.data.seed_data import shipped_ift_table

    ctx = make_ctx(tmp_store, **{"seed_data.max_ift_examples": 20, "seed_data.max_eft_examples": 24})
    ift, eft = seed_tables(ctx)
    assert (ift, eft) == (ctx.layout.seed_ift, ctx.layout.seed_eft)
    ift_rows = artifacts.read_table(ift).to_pylist()
    eft_rows = artifacts.read_table(eft).to_pylist()
    assert len(ift_rows) == 20 and {r["kind"] for r in ift_rows} == {"ift"}
    shipped_ids = shipped_ift_table().column("example_id").to_pylist()
    assert [r["example_id"] for r in ift_rows] == [i for i in shipped_ids if i in {r["example_id"] for r in ift_rows}]
    assert len(eft_rows) == 24 and Counter(r["score"] for r in eft_rows) == dict.fromkeys((0.0, 1.0, 2.0, 3.0, 4.0, 5.0), 4)

    before = artifacts.read_manifest(eft).sha256
    assert seed_tables(ctx) == (ift, eft) and artifacts.read_manifest(eft).sha256 == before  # reused
    bigger = make_ctx(tmp_store, **{"seed_data.max_ift_examples": 20, "seed_data.max_eft_examples": 30})
    seed_tables(bigger)
    assert artifacts.read_table(eft).num_rows == 30  # a changed limit rewrites the run's copy


def test_configured_tables_are_copied_with_their_own_kind_only(tmp_store):
    source = f"{tmp_store}/imported"
    rows = [
        {"example_id": f"e{i}", "kind": "ift" if i % 2 else "eft", "prompt_messages": [{"role": "user", "content": f"q{i}"}],
         "completion": "a", "score": None if i % 2 else 3.0}
        for i in range(6)
    ]
    artifacts.write_table(source, rows, "sft_examples")
    ctx = make_ctx(tmp_store, **{"seed_data.ift_uri": source, "seed_data.eft_uri": source})
    ift, eft = seed_tables(ctx)
    assert artifacts.read_table(ift).column("example_id").to_pylist() == ["e1", "e3", "e5"]
    assert artifacts.read_table(eft).column("example_id").to_pylist() == ["e0", "e2", "e4"]


def test_bad_limits_and_empty_sources_are_clear(tmp_store):
    with pytest.raises(ConfigError, match="max_eft_examples"):
        seed_tables(make_ctx(tmp_store, **{"seed_data.max_eft_examples": 0}))
    only_ift = f"{tmp_store}/only-ift"
    artifacts.write_table(
        only_ift,
        [{"example_id": "a", "kind": "ift", "prompt_messages": [{"role": "user", "content": "q"}], "completion": "c"}],
        "sft_examples",
    )
    with pytest.raises(DataError, match="no rows of kind 'eft'"):
        seed_tables(make_ctx(tmp_store, **{"seed_data.eft_uri": only_ift}))


def test_seed_prompts_default_to_all_shipped_ift_prompts(tmp_store):
    from srlm.data.seed_data import seed_prompts

    ctx = make_ctx(tmp_store, **{"seed_data.max_ift_examples": 5})
    assert seed_prompt_texts(ctx) == seed_prompts()


def test_seed_prompts_from_tables_prefer_single_turn_ift(tmp_store):
    uri = f"{tmp_store}/mixed"
    artifacts.write_table(
        uri,
        [
            {"example_id": "1", "kind": "ift", "completion": "c",
             "prompt_messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "Single?"}]},
            {"example_id": "2", "kind": "ift", "completion": "c",
             "prompt_messages": [{"role": "user", "content": "First"}, {"role": "assistant", "content": "x"},
                                 {"role": "user", "content": "And shorter?"}]},
            {"example_id": "3", "kind": "eft", "completion": "Score: 1",
             "prompt_messages": [{"role": "user", "content": "rubric"}]},
        ],
        "sft_examples",
    )
    assert prompts_from_table(uri) == ["Single?"]
    prompts_uri = f"{tmp_store}/prompts"
    artifacts.write_table(prompts_uri, [{"prompt_id": "a", "prompt": "P?", "source": "import"}], "prompts")
    assert seed_prompt_texts(make_ctx(tmp_store), prompts_uri) == ["P?"]
    artifacts.write_table(f"{tmp_store}/pairs", [], "pairs")
    with pytest.raises(DataError, match="not 'pairs'"):
        prompts_from_table(f"{tmp_store}/pairs")
