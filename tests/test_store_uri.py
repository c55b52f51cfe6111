"""URI helpers and the code version recorded in manifests."""

from __future__ import annotations

import os

import pytest

from srlm import __version__
from srlm.errors import StoreError
from srlm.store.uri import (
    basename,
    canonical_store_uri,
    check_uri,
    is_local,
    is_s3,
    join_uri,
    local_path,
    relative_to,
    split_s3,
)
from srlm.version import code_version, git_sha


def test_join_keeps_scheme_and_strips_slashes():
    assert join_uri("s3://b/p/", "/x/", "y") == "s3://b/p/x/y"
    assert join_uri("file:///tmp/s", "a") == "file:///tmp/s/a"
    assert join_uri("/", "a") == "/a"
    assert join_uri("file:///", "a") == "file:///a"
    assert join_uri("rel", "", "a") == "rel/a"


def test_classify_and_split():
    assert is_s3("s3://b/k") and not is_local("s3://b/k")
    assert is_local("/tmp/x") and is_local("file:///tmp/x") and is_local("relative/dir")
    assert split_s3("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_s3("s3://bucket") == ("bucket", "")
    assert local_path("file:///tmp/x") == "/tmp/x"
    assert local_path("rel") == os.path.join(os.getcwd(), "rel")
    assert relative_to("s3://b/x/shards/00001", "s3://b/x/") == "shards/00001"
    assert basename("s3://b/x/y/") == "y"
    with pytest.raises(StoreError, match="is not inside"):
        relative_to("s3://b/xy", "s3://b/x")


def test_a_store_root_has_one_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "x")
    assert {canonical_store_uri(u) for u in ("x", "./x", "x/", "./y/../x//", absolute, absolute + "/")} == {absolute}
    assert canonical_store_uri("file://./x/") == "file://" + absolute
    assert canonical_store_uri("s3://b/store/") == canonical_store_uri("s3://b/store") == "s3://b/store"
    assert canonical_store_uri("s3://b/") == "s3://b"
    with pytest.raises(StoreError, match="unsupported URI scheme"):
        canonical_store_uri("hdfs://nn/x")


def test_layout_relative_and_resolve(tmp_path, monkeypatch):
    from srlm.store.layout import RunLayout

    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    layout = RunLayout("link", "r")
    assert layout.root == str(tmp_path / "link")  # the spelling the store was opened by, symlinks kept
    for spelling in ("link/runs/r/x", f"{tmp_path}/real/runs/r/x", f"file://{tmp_path}/link/runs/r/x/"):
        assert layout.relative(spelling) == "runs/r/x"
    assert layout.relative(layout.root) == "" and layout.resolve("runs/r/x") == f"{layout.root}/runs/r/x"
    assert layout.resolve(f"{tmp_path}/real/runs/r/x") == f"{layout.root}/runs/r/x"
    assert layout.portable("/elsewhere/t/") == "/elsewhere/t" and layout.portable("link/runs/r/x") == "runs/r/x"
    with pytest.raises(StoreError, match="is outside the store"):
        layout.resolve(str(tmp_path / "other" / "runs"))
    with pytest.raises(StoreError, match="must stay inside the store"):
        layout.resolve("runs/../../other")
    s3 = RunLayout("s3://b/store/", "r")
    assert s3.relative("s3://b/store/runs/r/x/") == "runs/r/x" and s3.resolve("runs/r/x") == "s3://b/store/runs/r/x"
    with pytest.raises(StoreError, match="is outside the store"):
        s3.relative("s3://b/store2/runs")


def test_check_uri_rejects_what_the_store_cannot_address():
    assert check_uri("s3://b/k") == "s3://b/k"
    with pytest.raises(StoreError, match="no bucket"):
        check_uri("s3:///key")
    with pytest.raises(StoreError, match="unsupported URI scheme 'hdfs'"):
        check_uri("hdfs://nn/x")
    with pytest.raises(StoreError, match="non-empty"):
        check_uri("")


def test_code_version_includes_explicit_git_sha(monkeypatch):
    monkeypatch.setenv("SRLM_GIT_SHA", "abc123")
    git_sha.cache_clear()
    try:
        assert code_version() == f"{__version__}+gabc123"
    finally:
        git_sha.cache_clear()


def test_code_version_from_checkout_or_plain_version(monkeypatch):
    monkeypatch.delenv("SRLM_GIT_SHA", raising=False)
    git_sha.cache_clear()
    try:
        version = code_version()
        sha = git_sha()
    finally:
        git_sha.cache_clear()
    if sha is None:  # an installed copy or a source tarball
        assert version == __version__
    else:
        assert version.startswith(f"{__version__}+g") and len(sha.split("-")[0]) == 40
