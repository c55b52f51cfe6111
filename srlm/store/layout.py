"""Where each artifact of a run lives in the store. Every step derives its URIs from here and nowhere else.

What the store records about its own artifacts (the registry's checkpoint locations, summaries) is a path relative
to the store root ('runs/x/models/M0'), turned into a URI against the root in use when read: `relative` and
`resolve` are the one place that does both, so a store can be moved, renamed, copied to S3 and back, or opened
from any working directory.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from srlm.errors import StoreError
from srlm.store.uri import canonical_store_uri, is_local, is_s3, join_uri, local_path, relative_to


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run. Iteration t (1-based) uses M_{t-1} to build its data and trains M_t; M0 is the seed SFT.

    `root` is canonicalised when the layout is made (srlm.store.uri.canonical_store_uri): './x' and '/abs/x' are
    one store, and every URI below derives from that one spelling.
    """

    root: str
    run: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", canonical_store_uri(self.root))

    # the store's own references: store-relative paths <-> URIs
    def relative(self, uri: str) -> str:
        """The path of `uri` relative to the store root ('' for the root itself); StoreError when `uri` is not in
        this store. Local paths are compared with symlinks resolved, so any spelling of a path inside the store
        (relative to the working directory, through a symlink, file://) is recognised."""
        if is_local(self.root) and is_local(uri):
            root, target = os.path.realpath(local_path(self.root)), os.path.realpath(local_path(uri))
            inside = os.path.relpath(target, root)
            if inside != os.pardir and not inside.startswith(os.pardir + os.sep):
                return "" if inside == os.curdir else inside.replace(os.sep, "/")
        elif is_s3(self.root) and is_s3(uri):
            canonical = canonical_store_uri(uri)
            if canonical == self.root:
                return ""
            try:
                return relative_to(canonical, self.root)
            except StoreError:
                pass
        raise StoreError(f"{uri} is outside the store {self.root}")

    def resolve(self, path: str) -> str:
        """The URI of a store-relative `path` in this store. A URI or an absolute path (what older srlm recorded)
        must name something inside this store (see `relative`); it is never followed into another one."""
        if not is_store_relative(path):
            return join_uri(self.root, self.relative(path))
        normal = posixpath.normpath(path)
        if normal == posixpath.pardir or normal.startswith(posixpath.pardir + "/"):
            raise StoreError(f"{path}: a store-relative path must stay inside the store {self.root}")
        return join_uri(self.root, "" if normal == posixpath.curdir else normal)

    def portable(self, uri: str) -> str:
        """How the store records a reference to `uri`: store-relative when it is in this store, else (an input from
        elsewhere) its canonical spelling, so a path relative to this process's working directory is not kept."""
        try:
            return self.relative(uri)
        except StoreError:
            pass
        try:
            return canonical_store_uri(uri)
        except StoreError:  # not a store URI at all (an alias): its name is all there is
            return uri

    @property
    def run_uri(self) -> str:
        return join_uri(self.root, "runs", self.run)

    # seed data imported or shipped for this run
    @property
    def seed_ift(self) -> str:
        return join_uri(self.run_uri, "seed", "ift")

    @property
    def seed_eft(self) -> str:
        return join_uri(self.run_uri, "seed", "eft")

    @property
    def eval_groups(self) -> str:
        return join_uri(self.run_uri, "seed", "eval_groups")

    # models and their registry
    def model(self, checkpoint_id: str) -> str:
        return join_uri(self.run_uri, "models", checkpoint_id)

    @property
    def registry(self) -> str:
        return join_uri(self.run_uri, "registry")

    def registry_entry(self, checkpoint_id: str) -> str:
        return join_uri(self.registry, checkpoint_id)

    # one iteration's data
    def iteration(self, t: int) -> str:
        return join_uri(self.run_uri, "iterations", f"{t:03d}")

    def prompts(self, t: int) -> str:
        return join_uri(self.iteration(t), "prompts")

    def candidates(self, t: int) -> str:
        return join_uri(self.iteration(t), "candidates")

    def judgments(self, t: int) -> str:
        return join_uri(self.iteration(t), "judgments")

    def pairs(self, t: int) -> str:
        return join_uri(self.iteration(t), "pairs")

    @staticmethod
    def reference_log_probs(pairs_uri: str) -> str:
        """The DPO reference model's log-probs of a pairs table's rows (srlm.training.reference), stored inside the
        pairs artifact (as shards are), so they go wherever the pairs go and exist for any pairs URI."""
        return join_uri(pairs_uri, "reference_log_probs")

    def summary(self, t: int, step: str) -> str:
        """A step's summary (JSON + text) beside the artifacts; iteration 0 holds the seed SFT's."""
        return join_uri(self.iteration(t), "summaries", step)

    # evaluation
    def eval_result(self, checkpoint_id: str, suite: str, version: str) -> str:
        return join_uri(self.run_uri, "eval", checkpoint_id, suite, version)

    @property
    def report(self) -> str:
        return join_uri(self.run_uri, "report")


def is_store_relative(path: str) -> bool:
    """Whether `path` is a store-relative path ('runs/x/models/M0') rather than a URI or an absolute path."""
    return "://" not in path and not posixpath.isabs(path) and not os.path.isabs(path) and not path.startswith("~")
