"""The memory and time plan before launch (srlm.planning): exact parameter counts from the meta device, the formulas'
behaviour on the tiny model, `srlm plan-resources` on the shipped paper config, and the refusals of the DAG plan task
and `srlm run` before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm.cli.main import main
from srlm.config import config_from_dict, load_config
from srlm.errors import ModelError
from srlm.planning.architecture import model_architecture
from srlm.planning.resources import (
    GB,
    Budget,
    ResourcePlanError,
    layer_activation_bytes,
    plan_resources,
    refuse_unfit_plan,
)

REPO = Path(__file__).resolve().parent.parent
PAPER = str(REPO / "configs" / "paper.yaml")
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
STATE_TERMS = ("parameters", "gradients", "optimizer state (AdamW)")


def job(plan, name):
    return next(j for j in plan.jobs if j.job == name)


def term(plan_job, name) -> float:
    return next(t.bytes for t in plan_job.terms if t.name == name)


def tiny_config(tiny_model_dir, **sections):
    data = {"model": {"base": str(tiny_model_dir)}, "cluster": {"gpus": 8, "gpu_memory_gb": 80}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


# ------------------------------------------------------------------------------------------- the paper's cluster


def test_paper_config_fits_two_nodes_of_eight_80gb_gpus(capsys):
    assert main(["plan-resources", "--config", PAPER, "--gpus", "16", "--gpu-memory-gb", "80"]) == 0
    out = capsys.readouterr().out
    assert "meta-llama/Llama-2-70b-hf (built-in table): 68.98 B parameters" in out
    assert "sft: ray, 16 × gpu, fsdp + offload" in out and "Verdict: fits." in out
    assert main(["plan-resources", "--config", PAPER, "--gpus", "16", "--gpu-memory-gb", "80", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] and plan["architecture"]["parameters"] == 68_976_648_192
    jobs = {j["job"]: j for j in plan["jobs"]}
    # prompts.model (the paper's fixed Llama 2-Chat 70B for self-instruct) is an engine of its own
    assert set(jobs) == {"sft", "dpo", "generation", "generation (prompts.model)"}
    assert all(j["fits"] for j in jobs.values())
    dpo = jobs["dpo"]
    assert dpo["settings"]["reference"] == "precomputed" and dpo["settings"]["gradient_accumulation"] == 1
    assert dpo["per_device_bytes"] < dpo["device_budget_bytes"] == pytest.approx(72 * GB)
    # 8 of 16 ranks' fp32 parameters, gradients and AdamW state, + the fp32 checkpoint rank 0 gathers to save
    assert dpo["host_per_node_bytes"] == pytest.approx(16 * 68_976_648_192 / 2 + 4 * 68_976_648_192)
    assert dpo["host_per_node_bytes"] < dpo["host_budget_bytes"] == pytest.approx(0.9 * 1024 * GB)
    assert jobs["generation"]["sequences_fit"] > 1


def test_paper_config_on_one_gpu_is_refused_with_the_reason(capsys):
    assert main(["plan-resources", "--config", PAPER, "--gpus", "1", "--gpu-memory-gb", "80"]) == 1
    captured = capsys.readouterr()
    assert "Verdict: does not fit." in captured.out
    reason = captured.err.strip()
    assert len(reason.splitlines()) == 1
    assert "sft: needs 16 GPUs (num_processes), the budget has 1" in reason
    assert "generation: needs 16 GPUs (num_replicas × tensor_parallel_size), the budget has 1" in reason
    assert main(["plan-resources", "--config", PAPER, "--gpus", "1", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["fits"] is False


def test_without_offload_the_paper_dpo_does_not_fit_and_the_reason_names_estimate_and_budget():
    config = load_config(PAPER, {"dpo.fsdp_offload": False})
    with pytest.raises(ResourcePlanError) as raised:
        refuse_unfit_plan(config)
    message = str(raised.value)
    assert "sft" not in message and "\n" not in message
    assert message.startswith("the run does not fit its cluster budget: dpo: ")
    assert "GB per GPU > 72.0 GB budget (80 GB × (1 − headroom 0.1)); try fsdp_offload" in message
    small_hosts = load_config(PAPER, {"cluster.host_memory_gb": 512})
    message = str(pytest.raises(ResourcePlanError, refuse_unfit_plan, small_hosts).value)
    assert ("dpo: 827.7 GB host memory on rank 0's node (8 ranks + the gathered checkpoint) > 460.8 GB budget "
            "(512 GB × (1 − headroom 0.1))") in message  # fmt: skip


# ------------------------------------------------------------------------------------------------- architectures


def test_parameter_count_is_exact_on_the_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    arch = model_architecture(str(tiny_model_dir))
    assert arch.parameters == model.num_parameters()
    assert arch.layer_parameters == sum(p.numel() for p in model.model.layers[0].parameters())
    assert (arch.num_layers, arch.hidden_size, arch.num_kv_heads, arch.head_dim) == (2, 128, 2, 32)
    assert arch.source == str(tiny_model_dir / "config.json")


@pytest.mark.parametrize(("spec", "parameters"), [
    ("meta-llama/Llama-2-7b-hf", 6_738_415_616),
    ("meta-llama/Llama-2-13b-chat-hf", 13_015_864_320),
    ("meta-llama/Meta-Llama-3-8B-Instruct", 8_030_261_248),
    ("meta-llama/Llama-3.1-70B", 70_553_706_496),
])  # fmt: skip
def test_builtin_architectures_match_the_published_parameter_counts(spec, parameters):
    assert model_architecture(spec).parameters == parameters


def test_architecture_of_a_committed_checkpoint_reads_only_its_config(tiny_model_dir, tmp_path):
    from srlm.store import write_directory

    only_config = tmp_path / "checkpoint"
    only_config.mkdir()
    (only_config / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    uri = str(tmp_path / "store" / "M0")
    write_directory(uri, only_config)
    arch = model_architecture(uri)
    assert arch.parameters == model_architecture(str(tiny_model_dir)).parameters
    assert arch.source == f"{uri} (config.json)"


def test_unknown_architecture_is_one_line_naming_model_base(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=r"^model\.base someone/unknown-model: architecture unknown offline"):
        model_architecture("someone/unknown-model")
    with pytest.raises(ModelError, match=r"^model\.base .*: no config\.json there"):
        model_architecture(str(tmp_path))


# ------------------------------------------------------------------------------------------------------ formulas


def test_fsdp_shards_the_state_by_world_size(tiny_model_dir):
    common = {"num_processes": 4, "use_gpu": True, "batch_size": 16, "per_device_batch_size": 4}
    ddp = plan_resources(tiny_config(tiny_model_dir, sft={**common, "sharding": "ddp"}))
    fsdp = plan_resources(tiny_config(tiny_model_dir, sft={**common, "sharding": "fsdp"}))
    p = model_architecture(str(tiny_model_dir)).parameters
    assert term(job(ddp, "sft"), "parameters") == p * 4
    for name in STATE_TERMS:
        assert term(job(fsdp, "sft"), name) == pytest.approx(term(job(ddp, "sft"), name) / 4)
    assert term(job(ddp, "sft"), "optimizer state (AdamW)") == 2 * p * 4  # two fp32 moments
    bf16 = plan_resources(tiny_config(tiny_model_dir, sft={**common, "sharding": "ddp", "master_weights": "bf16"}))
    assert term(job(bf16, "sft"), "optimizer state (AdamW)") == 2 * p * 2
    # Offload moves the sharded state off the GPU and counts it per node.
    offload = plan_resources(tiny_config(tiny_model_dir, sft={**common, "sharding": "fsdp", "fsdp_offload": True}))
    sft = job(offload, "sft")
    on_host = sum(term(sft, name) for name in STATE_TERMS)
    assert job(fsdp, "sft").per_device_bytes - sft.per_device_bytes == pytest.approx(on_host)
    assert sft.host_per_node_bytes == pytest.approx(on_host * 4 + p * 4)  # 4 ranks + rank 0's gathered checkpoint


def test_precomputed_reference_log_probs_remove_the_reference_model(tiny_model_dir):
    p = model_architecture(str(tiny_model_dir)).parameters
    held = job(plan_resources(tiny_config(tiny_model_dir, dpo={"precompute_ref_log_probs": False})), "dpo")
    precomputed = job(plan_resources(tiny_config(tiny_model_dir, dpo={"precompute_ref_log_probs": None})), "dpo")
    assert term(held, "reference model") == p * 4 and term(precomputed, "reference model") == 0
    assert held.per_device_bytes - precomputed.per_device_bytes == p * 4
    assert held.timing["flops_per_step"] > precomputed.timing["flops_per_step"]  # the reference forward per step
    lora = job(plan_resources(tiny_config(tiny_model_dir, dpo={"precompute_ref_log_probs": False,
                                                               "lora": {"enabled": True}})), "dpo")  # fmt: skip
    assert term(lora, "reference model") == 0  # the base with adapters disabled


def test_gradient_checkpointing_shrinks_activations_and_dpo_counts_two_sequences(tiny_model_dir):
    plain = job(plan_resources(tiny_config(tiny_model_dir)), "sft")
    checkpointed = job(plan_resources(tiny_config(tiny_model_dir, sft={"gradient_checkpointing": True})), "sft")
    assert term(checkpointed, "activations") < term(plain, "activations")
    dpo = job(plan_resources(tiny_config(tiny_model_dir, dpo={"max_length": 2048})), "dpo")
    assert dpo.settings["tokens_per_micro_batch"] == 2 * plain.settings["tokens_per_micro_batch"]
    assert term(dpo, "activations") == pytest.approx(2 * term(plain, "activations"))


def test_lora_trains_exactly_the_adapters_peft_adds(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    plan = plan_resources(tiny_config(tiny_model_dir, sft={"lora": {"enabled": True, "r": 8}}))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))  # fmt: skip
    trainable, _ = model.get_nb_trainable_parameters()
    assert job(plan, "sft").settings["trainable_parameters"] == trainable


def test_engine_kv_cache_per_token_and_sequences_that_fit(tiny_model_dir):
    plan = plan_resources(tiny_config(tiny_model_dir, backend={"tensor_parallel_size": 2, "max_model_len": 1024,
                                                               "gpu_memory_utilization": 0.5}))  # fmt: skip
    engine = job(plan, "generation")
    # 2 (K and V) × 2 layers × ceil(2 KV heads / TP 2) × head_dim 32 × 2 bytes (bf16)
    assert engine.settings["kv_bytes_per_token"] == 2 * 2 * 1 * 32 * 2
    weights = model_architecture(str(tiny_model_dir)).parameters * 2 / 2
    assert engine.sequences_fit == int((0.5 * 80 * GB - weights) // (256 * 1024))
    assert engine.gpus == 2
    # A separate judge model gets its own engine (one is open at a time); a registered M<t> is the policy's shape.
    judged = plan_resources(tiny_config(tiny_model_dir, judge={"model": "meta-llama/Llama-2-7b-hf"},
                                        prompts={"model": "M0"}))  # fmt: skip
    assert [j.job for j in judged.jobs] == ["sft", "dpo", "generation", "generation (judge.model)"]
    assert term(job(judged, "generation (judge.model)"), "weights") == 6_738_415_616 * 2


def saved_for_backward(model, ids, within=None) -> int:
    """Bytes autograd saves for backward during a forward of `model` (only inside module `within` when given),
    parameters excluded, each storage counted once."""
    import torch

    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}
    recording = [within is None]

    def keep(tensor):
        storage = tensor.untyped_storage()
        if recording[0] and storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    if within is not None:
        within.register_forward_pre_hook(lambda *args: recording.__setitem__(0, True))
        within.register_forward_hook(lambda *args: recording.__setitem__(0, False))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(saved.values())


def test_activation_formula_matches_what_a_decoder_layer_saves_on_cpu(tiny_model_dir):
    """The per-layer activation formula against the bytes autograd really saves in one decoder layer of the tiny
    model (fp32, one 256-token sequence), and the whole model's saved tensors against the estimate."""
    import torch
    from transformers import AutoModelForCausalLM

    tokens = 256
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    ids = torch.randint(0, model.config.vocab_size, (1, tokens))
    arch = model_architecture(str(tiny_model_dir))
    in_layer = saved_for_backward(model, ids, within=model.model.layers[0])
    # The formula leaves out RoPE's cos/sin (2 × n × head_dim) and the attention log-sum-exp: a few per cent.
    assert tokens * layer_activation_bytes(arch, 4) == pytest.approx(in_layer, rel=0.05)
    whole = saved_for_backward(model, ids)
    config = tiny_config(tiny_model_dir, sft={"max_length": tokens, "per_device_batch_size": 1,
                                              "mixed_precision": "no", "use_gpu": False})  # fmt: skip
    sft = job(plan_resources(config, Budget(host_memory_gb=64)), "sft")
    assert whole < term(sft, "activations") + term(sft, "logits")


# ------------------------------------------------------------------------------------------- refusal before launch


def unfit_yaml(tmp_path, tiny_model_dir) -> Path:
    path = tmp_path / "unfit.yaml"
    path.write_text(
        f"store:\n  uri: {tmp_path / 'store'}\nmodel:\n  base: {tiny_model_dir}\n"
        "dpo:\n  num_processes: 4\n  use_gpu: true\n  batch_size: 16\ncluster:\n  gpus: 2\n  gpu_memory_gb: 80\n"
    )
    return path


def test_dag_plan_task_refuses_a_run_that_cannot_fit(tmp_path, tiny_model_dir):
    from airflow.sdk.exceptions import AirflowFailException

    from srlm_airflow.dag_defaults import build_plan
    from srlm_airflow.params import plan_from_params

    params = {"config_path": str(unfit_yaml(tmp_path, tiny_model_dir))}
    with pytest.raises(ResourcePlanError, match=r"^the run does not fit its cluster budget: dpo: needs 4 GPUs "
                                                r"\(num_processes\), the budget has 2$"):  # fmt: skip
        plan_from_params(params, iteration=1, model=None)
    with pytest.raises(AirflowFailException, match="dpo: needs 4 GPUs"):
        build_plan(params, iteration=1, model=None)


def test_dag_plan_task_accepts_the_paper_config_and_refuses_it_on_one_gpu(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from srlm_airflow.dag_defaults import build_plan

    assert build_plan({"config_path": PAPER}, iteration=1, model=None)["config"]["cluster"]["gpus"] == 16
    one_gpu = tmp_path / "paper-1gpu.yaml"
    one_gpu.write_text(Path(PAPER).read_text().replace("  gpus: 16\n", "  gpus: 1\n"))
    with pytest.raises(AirflowFailException, match=r"sft: needs 16 GPUs \(num_processes\), the budget has 1"):
        build_plan({"config_path": str(one_gpu)}, iteration=1, model=None)


def test_without_a_budget_nothing_is_checked_or_looked_up(monkeypatch):
    import srlm.planning.architecture
    from srlm.orchestration.plan import plan_run

    def looked_up(*args, **kwargs):
        raise AssertionError("no budget, no model lookup")

    monkeypatch.setattr(srlm.planning.architecture, "model_architecture", looked_up)
    assert plan_run(QUICKSTART, iteration=1, model=None).config["cluster"]["gpus"] is None
    assert refuse_unfit_plan(load_config(QUICKSTART)) is None


def test_srlm_run_refuses_before_any_step_starts(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import srlm.steps.iterate

    started = []
    monkeypatch.setattr(srlm.steps.iterate, "run", lambda *args, **kwargs: started.append(args))
    assert main(["run", "--config", str(unfit_yaml(tmp_path, tiny_model_dir)), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("srlm: error: the run does not fit its cluster budget: dpo: needs 4 GPUs") and not started
    assert not (tmp_path / "store" / "runs").exists()
