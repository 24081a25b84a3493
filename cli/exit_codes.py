"""The exit codes of every numrnn command (also listed in the README)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # bad input, files or settings: one `error:` line on stderr
    USAGE = 2  # an unknown or out-of-range option (click's usage error)
    GRADCHECK_MISMATCH = 3  # `numrnn gradcheck` found a gradient above the tolerance
    INTERRUPTED = 130  # Ctrl-C
