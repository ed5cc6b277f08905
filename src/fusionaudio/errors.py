"""The project's error types (no imports: every layer may raise them).

The exit-code rule that goes with them is in :mod:`fusionaudio.commands`: bad input exits 2, a run that
started and failed exits 1.
"""


class InputError(ValueError):
    """Bad input a user handed us (a record, a data file, a flag value): names the file/record and the problem."""


class UsageError(InputError):
    """A command line or request that cannot work as given (a bad flag value, an empty argument)."""


class CheckpointError(ValueError):
    """A checkpoint, config or tokenizer that does not match the model: names the file and the problem."""


class RunError(RuntimeError):
    """A run that started and failed (some inputs failed, a non-finite loss): exit status 1."""
