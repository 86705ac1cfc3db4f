"""What every command-line entry point shares: one-line usage errors, and bad input as one line with exit status 2.

parser = OneLineArgumentParser(prog="python -m training.train", ...)

def main(argv=None) -> int:
    return run_command(lambda: train(parser.parse_args(argv)))
"""

import argparse
import sys
from collections.abc import Callable

from .errors import AvisError, one_line

BAD_INPUT = 2
INTERRUPTED = 130


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line with exit status 2 (the usage stays behind --help)."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def run_command(command: Callable[[], int | None]) -> int:
    """Runs `command` and returns its exit status (None counts as 0).

    An AvisError (any input a user can give that cannot be used) and an OSError (a file that cannot be read or
    written, a full disk) become `error: <one line>` on stderr and status 2; Ctrl-C becomes status 130.
    """
    try:
        status = command()
    except SystemExit as exit:  # --help, or a one-line usage error
        return exit.code if isinstance(exit.code, int) else BAD_INPUT
    except AvisError as error:
        return fail(_own_message(error))
    except OSError as error:
        return fail(f"{error.filename}: {error.strerror}" if error.filename and error.strerror else one_line(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return status or 0


def _own_message(error: AvisError) -> str:
    """The error's one line. Raised in a DataLoader worker, it comes back with the worker's traceback as its message
    ("Caught ... in DataLoader worker process 0. Original Traceback ..."), whose last line is the error's own."""
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return one_line(text)


def fail(message: str) -> int:
    """Prints `error: <message's first line>` on stderr; returns the bad-input status."""
    print(f"error: {message.strip().splitlines()[0] if message.strip() else 'bad input'}", file=sys.stderr)
    return BAD_INPUT


__all__ = ["BAD_INPUT", "OneLineArgumentParser", "fail", "run_command"]
