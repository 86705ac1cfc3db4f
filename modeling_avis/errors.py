"""Errors worded for the person who hits them: each message is one line naming the problem."""


class AvisError(Exception):
    """Base class of every error this package raises on purpose."""


class AvisInputError(AvisError, ValueError):
    """The input media or data cannot be used (corrupt, empty, unsupported, malformed)."""


class AvisCheckpointError(AvisError, ValueError):
    """A checkpoint or model folder is not an AVISM checkpoint, or does not fit the configuration."""
