"""Errors srlm raises on purpose. The CLI prints these as one line (no traceback unless --debug)."""


class SrlmError(Exception):
    """Base class: a problem the user can act on, described in one line."""


class ConfigError(SrlmError):
    """A config file, key, or value is wrong."""


class DataError(SrlmError):
    """Input data is malformed; the message names file, line and field."""


class StoreError(SrlmError):
    """The artifact store cannot read or write what was asked."""


class UncommittedArtifactError(StoreError):
    """An artifact has no committed _SUCCESS manifest (missing, in progress, or crashed mid-write)."""


class DamagedArtifactError(StoreError):
    """A committed artifact's file is missing, truncated, or does not match its manifest's sha256."""


class ConcurrentWriteError(StoreError):
    """Another writer committed the same artifact, from a different producer, while this one was writing it."""


class ModelError(SrlmError):
    """A model cannot be found, prepared, or loaded."""


class BackendError(SrlmError):
    """A generation backend cannot start or fails."""


class JudgeHealthError(DataError):
    """The iteration's judgments fail the judge-health gate (srlm.judging.health). A DataError, so an orchestrated
    task fails permanently: a retry judges nothing anew and would fail the same way."""
