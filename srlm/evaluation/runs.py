"""Finding a run and its evaluation artifacts from what a user types (`--run URI` or `--store S --run NAME`)."""

from __future__ import annotations

from srlm.errors import ConfigError, StoreError
from srlm.store import artifacts
from srlm.store.layout import RunLayout
from srlm.store.uri import join_uri

# Head-to-head / AlpacaEval annotations of a checkpoint are kept as eval "suite" annotations, one version per
# comparison: <run>/eval/<checkpoint>/annotations/<name>.
ANNOTATIONS_SUITE = "annotations"


def layout_for(run: str, store: str | None = None) -> RunLayout:
    """A RunLayout from a run URI (<store>/runs/<name>) or from a run name plus the store root."""
    run = run.rstrip("/")
    if "/" in run or "://" in run:
        parent, _, name = run.rpartition("/")
        root, _, runs = parent.rpartition("/")
        if runs != "runs" or not name or not root:
            raise ConfigError(f"--run {run}: expected a run URI of the form <store>/runs/<name> (or a run name with --store)")
        return RunLayout(root=root, run=name)
    if not store:
        raise ConfigError(f"--run {run}: a run name needs the store root (--store or store.uri in the config)")
    return RunLayout(root=store, run=run)


def run_exists(layout: RunLayout) -> bool:
    """Whether the run holds anything the pipeline commits: a registered checkpoint, seed data, an iteration's
    data or an evaluation result (a report alone does not make a run)."""
    from srlm.evaluation.results import child_names

    return bool(
        artifacts.list_committed(layout.registry)
        or any(artifacts.is_committed(uri) for uri in (layout.seed_ift, layout.seed_eft, layout.eval_groups))
        or iterations_of(layout)
        or child_names(join_uri(layout.run_uri, "eval"))
    )


def require_run(layout: RunLayout) -> RunLayout:
    """The layout, if its run exists; otherwise StoreError (a typo in --run must not report on, or record into, an
    empty place as if it were a run)."""
    if not run_exists(layout):
        raise StoreError(
            f"{layout.run_uri}: no such run (nothing committed there: no checkpoint, seed data, iteration or "
            "evaluation); check --run and --store"
        )
    return layout


def require_checkpoint(layout: RunLayout, checkpoint_id: str) -> None:
    """StoreError unless `checkpoint_id` is registered in the run (results are recorded under a real checkpoint)."""
    from srlm.training.registry import check_checkpoint_id

    check_checkpoint_id(checkpoint_id)
    if artifacts.is_committed(layout.registry_entry(checkpoint_id)):
        return
    require_run(layout)
    registered = [uri.rstrip("/").rsplit("/", 1)[-1] for uri in artifacts.list_committed(layout.registry)]
    raise StoreError(
        f"{layout.run_uri}: checkpoint {checkpoint_id} is not registered in this run "
        f"(registered: {', '.join(registered) or 'none'})"
    )


def iterations_of(layout: RunLayout) -> list[int]:
    """Iterations 1, 2, … that have any committed artifact, up to the first that has none."""
    found = []
    t = 1
    while any(
        artifacts.is_committed(uri)
        for uri in (layout.prompts(t), layout.candidates(t), layout.judgments(t), layout.pairs(t))
    ):
        found.append(t)
        t += 1
    return found


def annotations_uri(layout: RunLayout, checkpoint_id: str, name: str) -> str:
    return layout.eval_result(checkpoint_id, ANNOTATIONS_SUITE, name)


def annotation_artifacts(layout: RunLayout) -> list[tuple[str, str, str]]:
    """(checkpoint_id, name, uri) of every committed annotations table in the run."""
    from srlm.evaluation.results import child_names

    out = []
    eval_root = join_uri(layout.run_uri, "eval")
    for checkpoint in child_names(eval_root):
        for uri in artifacts.list_committed(layout.eval_result(checkpoint, ANNOTATIONS_SUITE, "")):
            out.append((checkpoint, uri.rstrip("/").rsplit("/", 1)[-1], uri))
    return out
