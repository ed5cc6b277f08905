"""Error types shared by the loaders (kept here so that no loader imports another's package)."""


class CheckpointError(ValueError):
    """A checkpoint, config or tokenizer that does not match the model: names the file and the problem."""
