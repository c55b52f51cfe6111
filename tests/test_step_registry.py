"""The step registry is the single list of steps: the orchestrated task, step specs, `srlm iterate` and the CLI
all read it, and importing it stays cheap enough for DAG files at parse time."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import timedelta

import pytest

from srlm.config import SRLMConfig
from srlm.errors import ConfigError
from srlm.orchestration import spec as spec_module, task
from srlm.steps import iterate as iterate_module, registry
from srlm.steps.reuse import step_settings
from srlm.store import RunLayout


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_consumer_lists_exactly_the_registry_steps():
    from srlm.cli.main import build_parser

    names = tuple(step.name for step in registry.STEPS)
    assert names == registry.STEP_NAMES == ("sft", "prompts", "generate", "judge", "meta_judge", "pairs",
                                            "judge_health", "dpo", "engines", "evaluate", "checkpoints")
    assert tuple(task.RUNNERS) == spec_module.STEPS == names
    assert spec_module.ITERATION_STEPS == iterate_module.ITERATION_STEPS == registry.ITERATION_STEPS
    assert registry.ITERATION_STEPS == ("prompts", "generate", "judge", "meta_judge", "pairs", "judge_health", "dpo")
    commands = subcommands(build_parser())
    assert {s.name for s in registry.STEPS if s.cli is not None} <= set(commands)
    (from_step,) = [a for a in commands["iterate"]._actions if a.dest == "from_step"]
    assert tuple(from_step.choices) == registry.ITERATION_STEPS


def test_the_orchestrated_training_step_is_called_dpo_only():
    StepSpec = spec_module.StepSpec
    assert StepSpec(step="dpo", config={}, iteration=1).step == "dpo"
    with pytest.raises(ConfigError, match="unknown step 'train'"):
        StepSpec(step="train", config={}, iteration=1)


def test_each_step_resolves_its_runner_output_and_config_keys():
    layout = RunLayout("/store", "r")
    config = SRLMConfig()
    for step in registry.STEPS:
        assert callable(step.load_runner()), step.name
        assert step.output_uri(layout, 2).startswith(layout.run_uri), step.name
        settings = step_settings(config, step.name)
        assert all(not key.startswith(tuple(step.operational_keys)) for key in settings), step.name
        for key in step.operational_keys:
            assert key.startswith(step.config_keys), (step.name, key)
    assert registry.step("generate").output_uri(layout, 2) == layout.candidates(2)
    assert registry.step("dpo").output_uri(layout, 2) == layout.model("M2")
    assert registry.step("checkpoints").output_uri(layout, 0) == layout.registry


def test_fingerprinted_settings_are_the_steps_own_results_not_operations():
    config = SRLMConfig()
    dpo = step_settings(config, "dpo")
    assert dpo["dpo.beta"] == 0.1 and dpo["dpo.learning_rate"] == 1e-6 and "dpo.lora.r" in dpo
    assert not {"dpo.num_processes", "dpo.per_device_batch_size", "dpo.backend", "dpo.sharding"} & set(dpo)
    # checkpoint selection picks M_t among the save_steps checkpoints, so for dpo it decides the result; not for sft
    assert "dpo.save_steps" in dpo and "sft.save_steps" not in step_settings(config, "sft")
    # the pairs step also reads two selection rules kept in other sections (and judge.num_samples, their default)
    selection = {
        "judge.min_parsed_samples", "judge.num_samples", "generate.drop_truncated", "run.method",
        "meta_rewarding.length_control_rho",
    }
    assert set(step_settings(config, "pairs")) == {f"pairs.{k}" for k in config.to_dict()["pairs"]} | selection
    generate = step_settings(config, "generate")
    assert generate["generate.temperature"] == 0.7 and "generate.shard_size" not in generate
    assert "backend.seed" in generate and "backend.backend" not in generate
    assert step_settings(config, "seed_data") is None  # not a registered step


def test_timeouts_live_in_the_registry():
    assert registry.TIMEOUTS["dpo"] == registry.TIMEOUTS["sft"] == timedelta(hours=24)
    assert registry.TIMEOUTS["judge"] == timedelta(hours=12) and registry.TIMEOUTS["pairs"] == timedelta(minutes=30)
    assert set(registry.TIMEOUTS) == set(registry.STEP_NAMES)


def test_importing_the_registry_loads_no_heavy_module():
    code = (
        "import sys, srlm.steps.registry, srlm.orchestration.spec; "
        "heavy = {'torch', 'pyarrow', 'transformers', 'airflow', 'srlm.store', 'srlm.config'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
