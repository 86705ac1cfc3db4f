"""Errors worded for the person who hits them: each message is one line naming the problem and the file.

One type per kind of failure, so that every entry point (the CLI, the app, training, evaluation, conversion) can
catch them once (`entry_point.run_command`) and print that line with exit status 2. Anything else that escapes is a
programming error and may trace.
"""


class AvisError(Exception):
    """Base class of every error this package raises on purpose."""


class AvisInputError(AvisError, ValueError):
    """Media the user gave cannot be used: a corrupt, empty, truncated or unsupported video, image or audio file."""


class AvisCheckpointError(AvisError, ValueError):
    """A model folder, Hub id or checkpoint is missing, corrupt, or not an AVISM one that fits its configuration."""


class AvisDatasetError(AvisError, ValueError):
    """An AVISeg-layout dataset is missing or malformed: its annotations JSON, a frame, an audio file."""


class AvisEvaluationError(AvisError, ValueError):
    """A ground-truth or results file that the evaluator cannot score."""


class AvisUsageError(AvisError, ValueError):
    """Arguments that cannot work: a value out of range, an output path that cannot be written."""


def printable(text: object) -> str:
    """`text` (a path, a name, a message) with every unprintable character escaped as in a Python string literal (a
    newline as \\n): a file name can neither break a one-line message nor send the terminal control codes."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in str(text))


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = [
    "AvisCheckpointError",
    "AvisDatasetError",
    "AvisError",
    "AvisEvaluationError",
    "AvisInputError",
    "AvisUsageError",
    "one_line",
    "printable",
]
