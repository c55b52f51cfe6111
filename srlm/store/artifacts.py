"""Atomic, manifest-committed artifacts on a local filesystem or S3.

CONTRACT (implemented by the store owner; every other module codes against these signatures):

An artifact is a "directory" URI. Writers put data files under <uri>/_attempts/<attempt_id>/… and then commit by
writing <uri>/_SUCCESS (one atomic object PUT on S3; write-temp-then-os.replace locally). The manifest lists the
files (paths relative to <uri>), row counts, byte sizes, sha256 checksums, the schema name + version, and the
producer (config dict + srlm code version + git sha if known). Readers only ever read what a manifest lists, so a
crashed writer leaves nothing that reads as committed; a rerun writes a fresh attempt and cleans stale ones.

    is_committed(uri) -> bool
    read_manifest(uri) -> Manifest                      # raises UncommittedArtifactError
    write_table(uri, table, schema_name, *, producer=None, force=False, rows_per_file=None) -> Manifest
        # Casts/validates table to schemas.schema(schema_name) (clear StoreError naming the column on mismatch).
        # If already committed and not force: no-op, returns the existing manifest.
    read_table(uri, schema_name=None, columns=None) -> pa.Table   # refuses uncommitted; checks schema name/version
    write_directory(uri, local_dir, *, kind="checkpoint", producer=None, force=False) -> Manifest
    fetch_directory(uri, dest=None) -> pathlib.Path     # local store: the committed attempt dir itself (no copy);
                                                        # S3: download into dest or a cache dir keyed by manifest sha
    commit_shards(uri, shard_uris, schema_name, *, producer=None) -> Manifest
        # For resumable steps: each shard is its own committed artifact (e.g. <uri>/shards/00003); the parent
        # manifest lists the shards' files. Readers of <uri> see the union.
    shard_uri(uri, index) -> str
    write_text(uri, text) / read_text(uri) -> str       # small atomic single objects (summaries, reports)
    list_committed(prefix_uri) -> list[str]              # immediate children of prefix that are committed artifacts
    delete_artifact(uri)                                 # for --force reruns

S3 settings come from StoreConfig or the environment (AWS_ENDPOINT_URL[_S3], AWS_REGION, AWS_ACCESS_KEY_ID, …);
credentials are never printed or logged.
"""
