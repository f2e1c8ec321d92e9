"""The errors of reading and fitting checkpoints, in a module of their own so that both the file reader and the
diffusers key map can raise them without importing each other."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model that the config describes."""


class UntrustedCheckpointError(CheckpointError):
    """The file holds Python objects beyond tensors and containers; reading it means running its pickle."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""
