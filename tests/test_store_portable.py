"""A store is self-contained: moved and renamed, copied to S3, or opened through another spelling of its root, it
continues a run from where it stopped without recomputing anything that was done; a copy made without its models
fails with a clear "missing" error instead of reaching into the original store.

One store per module is seeded (tiny model, transformers backend, real TRL SFT; opened by a path relative to the
working directory, the spelling that older srlm recorded as is): M0 and iteration 1's prompts and candidates, as
if the run had stopped after `generate`. Each test continues a byte-for-byte copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from srlm.cli.main import main
from srlm.steps.backends import new_backend_pool
from srlm.steps.context import StepCall
from srlm.steps.iterate import run
from srlm.steps.registry import step
from srlm.steps.sft import train_seed_model
from srlm.store import artifacts
from srlm.store.layout import RunLayout
from srlm.store.manifest import MANIFEST_NAME
from srlm.training.registry import get_checkpoint
from tests.test_iteration import check_finished_run, e2e_ctx, shimmed_transformers

RUN = "e2e"  # e2e_ctx's run name
DONE_BEFORE_STOP = ("prompts", "generate")
pytestmark = pytest.mark.slow


def committed_manifests(root: Path) -> dict[str, bytes]:
    """Every committed manifest under a local store root, by its artifact's store-relative path."""
    return {
        str(path.parent.relative_to(root)): path.read_bytes()
        for path in root.rglob(MANIFEST_NAME)
        if "_attempts" not in path.parts
    }


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, tiny_model_dir) -> tuple[Path, dict[str, bytes]]:
    """(the seeded store's root, its committed manifests): M0 trained, iteration 1 stopped after generate."""
    base = tmp_path_factory.mktemp("portable")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        ctx = e2e_ctx("seeded", tiny_model_dir, base)  # relative to the working directory
        train_seed_model(ctx)
        with new_backend_pool(ctx, shimmed_transformers) as pool:
            for name in DONE_BEFORE_STOP:
                step(name).load_runner()(ctx, StepCall(iteration=1, backends=pool))
    finally:
        os.chdir(cwd)
    root = base / "seeded"
    return root, committed_manifests(root)


def continue_run(store: str, tiny_model_dir: Path, tmp_path: Path):
    """Run the whole job on `store` (seed SFT, then iteration 1), collecting what it prints."""
    lines: list[str] = []
    ctx = e2e_ctx(store, tiny_model_dir, tmp_path)
    ctx.echo = lines.append
    return ctx, run(ctx, opener=shimmed_transformers), lines


def check_continued(ctx, result, lines: list[str], before: dict[str, bytes], manifests: dict[str, bytes]) -> None:
    """Nothing done before the stop was recomputed (same manifests, reuse lines, no retraining), and the run
    finished with M1 registered in this store."""
    assert [line for line in lines if ": recomputing " in line] == []
    assert result.seed.reused and [name for name, s in result.iterations[0].steps.items() if s.reused] == list(
        DONE_BEFORE_STOP
    )
    assert {path: manifests.get(path) for path in before} == before
    check_finished_run(ctx, result)
    assert get_checkpoint(ctx.layout, "M1").uri == ctx.layout.model("M1")


def test_a_moved_store_continues_from_another_directory(stopped, tmp_path, tiny_model_dir, monkeypatch):
    seeded, before = stopped
    shutil.copytree(seeded, tmp_path / "store")
    renamed = tmp_path / "elsewhere" / "renamed"
    renamed.parent.mkdir()
    shutil.move(tmp_path / "store", renamed)
    (tmp_path / "workdir").mkdir()
    monkeypatch.chdir(tmp_path / "workdir")
    ctx, result, lines = continue_run(str(renamed), tiny_model_dir, tmp_path)
    check_continued(ctx, result, lines, before, committed_manifests(renamed))
    assert result.iterations[0].steps["dpo"].uri == str(renamed / "runs" / RUN / "models" / "M1")

    # --store ./x after /abs/x (and back): the same store, so everything is reused and nothing trains.
    monkeypatch.chdir(renamed.parent)
    done = committed_manifests(renamed)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(ctx.config.to_dict()))
    for spelling in ("./renamed", "renamed/", str(renamed)):
        assert main(["run", "--config", str(config), "--store", spelling, "--no-progress"]) == 0, spelling
        assert committed_manifests(renamed) == done, spelling


def test_a_store_copied_to_s3_continues_there(stopped, s3_store, tmp_path, tiny_model_dir, monkeypatch):
    import pyarrow.fs as pafs

    from srlm.store.filesystems import filesystem_for

    monkeypatch.setenv("SRLM_CACHE_DIR", str(tmp_path / "srlm-cache"))
    seeded, before = stopped
    s3, prefix = filesystem_for(s3_store)
    pafs.copy_files(str(seeded), prefix, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    ctx, result, lines = continue_run(s3_store, tiny_model_dir, tmp_path)
    assert ctx.layout.model("M1").startswith("s3://")
    back = tmp_path / "back"  # and back again, to compare the manifests byte for byte
    pafs.copy_files(prefix, str(back), source_filesystem=s3, destination_filesystem=pafs.LocalFileSystem())
    check_continued(ctx, result, lines, before, committed_manifests(back))


@pytest.mark.parametrize("registered_as", ["store-relative", "absolute, as older srlm recorded it"])
def test_a_copy_without_its_models_fails_naming_m0_and_never_reads_the_original(
    stopped, tmp_path, tiny_model_dir, monkeypatch, capsys, registered_as
):
    import srlm.store.artifacts as artifacts_module
    import srlm.store.filesystems as filesystems

    seeded, _ = stopped
    original, copy = tmp_path / "original", tmp_path / "copy"
    shutil.copytree(seeded, original)
    shutil.copytree(seeded, copy, ignore=lambda folder, names: ["models"] if folder.endswith(f"runs/{RUN}") else [])
    layout = RunLayout(str(copy), RUN)
    if registered_as != "store-relative":
        entry = Path(layout.registry_entry("M0"))
        table = artifacts.read_table(str(entry), "checkpoints")
        row = {**table.to_pylist()[0], "uri": str(original / "runs" / RUN / "models" / "M0")}
        artifacts.write_table(str(entry), [row], "checkpoints", force=True)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(e2e_ctx(str(copy), tiny_model_dir, tmp_path).config.to_dict()))
    manifests = committed_manifests(copy)

    touched: list[str] = []
    real = filesystems.filesystem_for

    def spy(uri: str):
        touched.append(uri)
        return real(uri)

    monkeypatch.setattr(filesystems, "filesystem_for", spy)
    monkeypatch.setattr(artifacts_module, "filesystem_for", spy)
    monkeypatch.chdir(tmp_path)  # beside the original, which a path relative to it would find
    capsys.readouterr()
    for command in (["run"], ["iterate", "-t", "1"], ["generate", "-t", "1"]):
        assert main([*command, "--config", str(config), "--store", "copy", "--no-progress"]) == 1, command
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error == (
            f"srlm: error: checkpoint M0: missing: registered in run {RUN!r} at runs/{RUN}/models/M0, but "
            f"{copy}/runs/{RUN}/models/M0 is not committed (was the store copied or moved without its models?)"
        ), command
    assert touched and not [uri for uri in touched if str(original) in uri]
    assert committed_manifests(copy) == manifests  # nothing committed, nothing retrained


def test_the_registry_of_the_seeded_store_holds_store_relative_locations(stopped):
    seeded, _ = stopped
    layout = RunLayout(str(seeded), RUN)
    (row,) = artifacts.read_table(layout.registry_entry("M0"), "checkpoints").to_pylist()
    assert row["uri"] == f"runs/{RUN}/models/M0" and row["data_uri"] == f"runs/{RUN}/seed/ift,runs/{RUN}/seed/eft"
    summary = json.loads(artifacts.read_text(f"{layout.summary(1, 'generate')}/summary.json"))
    assert summary["output_uri"] == f"runs/{RUN}/iterations/001/candidates"
