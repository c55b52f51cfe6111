"""The step subcommands: flags map onto config, defaults come from the run layout, errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from srlm.cli.main import build_parser, main
from srlm.config import SRLMConfig, load_config
from srlm.store import RunLayout, artifacts
from srlm.store.uri import join_uri

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", ["sft", "prompts", "generate", "judge", "pairs", "dpo", "iterate", "run"])
def test_every_step_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--set" in out and "--store" in out and "--force" in out


def test_shortcuts_and_set_become_config_overrides(tmp_path):
    from srlm.cli.steps import _context

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"judge": {"num_samples": 5}, "run": {"name": "from-file"}}))
    args = build_parser().parse_args(
        ["judge", "--config", str(config), "--store", str(tmp_path / "s"), "--set", "judge.num_samples=2",
         "--set", "pairs.min_margin=0.5", "--backend", "transformers", "--no-progress"]
    )
    ctx = _context(args)
    assert ctx.config.judge.num_samples == 2 and ctx.config.pairs.min_margin == 0.5
    assert ctx.config.backend.backend == "transformers" and ctx.config.run.name == "from-file"
    assert ctx.layout == RunLayout(str(tmp_path / "s"), "from-file")


@pytest.mark.parametrize("command", ["run", "judge"])
def test_set_of_a_key_with_a_shortcut_applies_when_the_shortcut_is_not_given(command, tmp_path):
    """`--set run.name=…` (store.uri, backend.backend) used to be dropped whenever --run (--store, --backend) was
    not given: the absent shortcut overwrote it with None. A shortcut that is given still wins."""
    from srlm.cli.steps import _context

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"run": {"name": "from-file"}}))
    sets = ["--set", "run.name=from-set", "--set", f"store.uri={tmp_path / 'set-store'}", "--set", "backend.backend=vllm"]
    ctx = _context(build_parser().parse_args([command, "--config", str(config), *sets]))
    assert (ctx.config.run.name, ctx.config.backend.backend) == ("from-set", "vllm")
    assert ctx.layout == RunLayout(str(tmp_path / "set-store"), "from-set")
    ctx = _context(build_parser().parse_args([command, "--config", str(config), *sets, "--run", "from-flag"]))
    assert ctx.config.run.name == "from-flag"


def test_pairs_command_reads_and_writes_layout_paths(tmp_path, capsys):
    store = str(tmp_path / "store")
    layout = RunLayout(store, "cli")
    candidates = [
        {"prompt_id": "p", "candidate_id": f"p-c{i}", "candidate_index": i, "prompt": "Q", "response": f"r{i}"}
        for i in range(2)
    ]
    judgments = [
        {"prompt_id": "p", "candidate_id": f"p-c{i}", "sample_index": 0, "judgment": f"Score: {i + 3}",
         "score": float(i + 3), "parse_ok": True}
        for i in range(2)
    ]
    artifacts.write_table(layout.candidates(2), candidates, "candidates")
    artifacts.write_table(layout.judgments(2), judgments, "judgments")
    # one judgment per candidate: with the default judge.num_samples 3 neither would have enough to compete
    assert main(["pairs", "--store", store, "--run", "cli", "-t", "2", "--set", "judge.num_samples=1"]) == 0
    out = capsys.readouterr().out
    assert "── pairs · iteration 2" in out and out.strip().endswith(layout.pairs(2))
    (row,) = artifacts.read_table(layout.pairs(2)).to_pylist()
    assert (row["chosen"], row["rejected"]) == ("r1", "r0")
    stored = json.loads(artifacts.read_text(join_uri(layout.summary(2, "pairs"), "summary.json")))
    assert stored["metrics"]["rows"] == 1


def test_explicit_input_and_output_uris(tmp_path, capsys):
    store = str(tmp_path / "store")
    cands, judg, out = (str(tmp_path / name) for name in ("c", "j", "out"))
    artifacts.write_table(
        cands, [{"prompt_id": "p", "candidate_id": "p-c0", "candidate_index": 0, "prompt": "Q", "response": "r"}],
        "candidates",
    )
    artifacts.write_table(judg, [], "judgments")
    assert main(["pairs", "--store", store, "-t", "1", "--candidates", cands, "--judgments", judg, "--out", out]) == 0
    assert artifacts.is_committed(out) and artifacts.read_table(out).num_rows == 0


def test_a_missing_model_is_one_clear_line(tmp_path, capsys):
    assert main(["generate", "--store", str(tmp_path / "store"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "M0 is not registered" in err[0] and "srlm sft" in err[0]


def test_bad_override_is_one_clear_line(tmp_path, capsys):
    assert main(["pairs", "--store", str(tmp_path), "--set", "pairs.nope=1"]) == 1
    assert "unknown key 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["quickstart", "paper"])
def test_shipped_configs_load(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert isinstance(config, SRLMConfig)


def test_quickstart_config_is_a_scaled_down_paper_run():
    quick = load_config(REPO / "configs" / "quickstart.yaml")
    paper = load_config(REPO / "configs" / "paper.yaml")
    assert quick.run.iterations == 1 and quick.model.base == "smollm2-135m"
    assert (quick.generate.num_candidates, quick.judge.num_samples) == (4, 3)
    assert quick.prompts.num_prompts < paper.prompts.num_prompts
    assert (paper.generate.num_candidates, paper.judge.num_samples, paper.dpo.beta) == (4, 3, 0.1)
    # The defaults are the paper's values; paper.yaml adds only how the job is laid out on its cluster.
    layout = {"backend", "num_processes", "use_gpu", "per_device_batch_size", "sharding", "fsdp_offload",
              "mixed_precision", "gradient_checkpointing"}
    paper_dpo, default_dpo = ({k: v for k, v in c.to_dict()["dpo"].items() if k not in layout}
                              for c in (paper, SRLMConfig()))  # fmt: skip
    assert paper_dpo == default_dpo
