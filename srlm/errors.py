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


class ModelError(SrlmError):
    """A model cannot be found, prepared, or loaded."""


class BackendError(SrlmError):
    """A generation backend cannot start or fails."""
