"""The exceptions numrnn raises for problems a user can fix.

Every message says what happened and what to do; the CLI prints it as one `error:` line.
"""


class NumrnnError(Exception):
    """Base class: a problem with the user's input, files or settings (not a bug)."""


class DataError(NumrnnError):
    """A corpus or input text that cannot be used (missing, empty, binary, not UTF-8, ...)."""


class ConfigError(NumrnnError):
    """An option or configuration value out of range or contradicting another."""


class CheckpointError(NumrnnError):
    """A checkpoint file that is missing, corrupt, foreign or from a newer format."""


class DeviceError(NumrnnError):
    """A compute device that was asked for but cannot be used."""


class TrainingDiverged(NumrnnError):
    """The loss or the gradient became NaN or infinite; the last good checkpoint is kept."""
