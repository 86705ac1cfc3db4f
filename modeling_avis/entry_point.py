"""What every command-line entry point shares: one-line usage errors, the checks of its numbers and devices, and
bad input as one line with exit status 2.

parser = OneLineArgumentParser(prog="python -m training.train", ...)
parser.add_argument("--batch-size", type=positive_int, default=2)

def main(argv=None) -> int:
    return run_command(lambda: train(parser.parse_args(argv)))
"""

import argparse
import math
import os
import sys
from collections.abc import Callable

import torch

from .config_ranges import IMAGE_PROCESSOR_RANGES
from .errors import AvisError, AvisUsageError, one_line, printable
from .loading import HUB_ID
from .session_avis import AvisOnlineSettings

BAD_INPUT = 2
INTERRUPTED = 130
# The CPUs this process may run on: more threads or data workers than these only take turns on them.
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# numpy's seeds (Accelerate's set_seed seeds numpy too).
MAX_SEED = 2**32 - 1
# The longest image edge, in pixels, that training or evaluation may resize to: the processor's own bound (3x the
# published recipes' largest, 1333; a 5-frame clip of 4096 x 4096 frames already takes ~1 GB as floats).
MAX_IMAGE_SIZE = int(IMAGE_PROCESSOR_RANGES["shortest_edge"].high)
# The most clips a process may take in one step, or steps it may accumulate: far beyond what any GPU holds at AVISM's
# sizes (the recipe's 2 and 1).
MAX_CLIPS = 1024
# The most temporary disk a run may be given, in GB: 1 PB, more than a machine has.
MAX_DISK_GB = 2**20
# The longest window of the online mode (--window): it holds a window's frames (their mask features: 15.7 MB a frame
# at 360p).
MAX_WINDOW = 64


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error: ...` line with exit status 2, as every other bad input's (the usage
    stays behind --help)."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"error: {printable(message)} (see {self.prog} --help)\n")


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
        return fail(error_message(error))
    except OSError as error:
        if error.filename and error.strerror:
            return fail(f"{printable(error.filename)}: {error.strerror}")
        return fail(one_line(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return status or 0


def error_message(error: AvisError) -> str:
    """The error's message. Raised in a DataLoader worker, it comes back with the worker's traceback as its message
    ("Caught ... in DataLoader worker process 0. Original Traceback ..."), whose last line is the error's own."""
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def fail(message: str) -> int:
    """Prints `error: <message>` on stderr, on one line whatever the names in it hold; returns the bad-input status."""
    print(f"error: {printable(message.strip()) or 'bad input'}", file=sys.stderr)
    return BAD_INPUT


# --- argparse types: each turns a command-line word into a value, or into one line saying what it must be ----------


def positive_int(text: str) -> int:
    return _whole_number(text, 1, None, "must be a positive whole number")


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0, None, "must be a whole number, 0 or more")


def whole_number_up_to(maximum: int, unit: str) -> Callable[[str], int]:
    """The type of a positive whole number of `unit` up to `maximum`."""

    def whole_number(text: str) -> int:
        return _whole_number(text, 1, maximum, f"must be a whole number of {unit} from 1 to {maximum}")

    return whole_number


image_size = whole_number_up_to(MAX_IMAGE_SIZE, "pixels")
window_frames = whole_number_up_to(MAX_WINDOW, "frames")


def cpu_threads(text: str) -> int:
    return _whole_number(text, 1, CPUS, f"must be a whole number from 1 to {CPUS} (the CPUs this process may use)")


def online_settings(window: int, stride: int) -> AvisOnlineSettings:
    """The online mode's windows from the flags --window and --stride: a stride past the window is refused."""
    if stride > window:
        raise AvisUsageError(f"--stride must be at most --window ({window}), not {stride}")
    return AvisOnlineSettings(window_size=window, stride=stride)


def data_workers(text: str) -> int:
    return _whole_number(text, 0, CPUS, f"must be a whole number from 0 to {CPUS} (the CPUs this process may use)")


def seed(text: str) -> int:
    return _whole_number(text, 0, MAX_SEED, f"must be a whole number from 0 to {MAX_SEED}")


def positive_float(text: str) -> float:
    return _number(text, lambda value: value > 0, "must be positive")


def disk_gigabytes(text: str) -> float:
    return _number(text, lambda value: 0 <= value <= MAX_DISK_GB, f"must be a number of GB from 0 to {MAX_DISK_GB}")


def non_negative_float(text: str) -> float:
    return _number(text, lambda value: value >= 0, "must be 0 or more")


def fraction(text: str) -> float:
    return _number(text, lambda value: 0 <= value <= 1, "must be from 0 to 1")


def score_threshold(text: str) -> float:
    return _number(text, lambda value: 0 <= value < 1, "must be at least 0 and below 1 (scores are probabilities)")


def decay_factor(text: str) -> float:
    return _number(text, lambda value: 0 < value <= 1, "must be above 0 and at most 1")


def device(text: str) -> str:
    """A device this machine has: cpu, cuda[:index] where CUDA is, mps where Metal is."""
    available = {"cpu": "cpu:0", **{f"cuda:{index}": f"cuda:{index}" for index in range(torch.cuda.device_count())}}
    if torch.backends.mps.is_available():
        available["mps"] = "mps:0"
    listed = ", ".join(available)
    try:
        chosen = torch.device(text)
    except (RuntimeError, ValueError):
        chosen = None
    if chosen is not None and chosen.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available here (devices: {listed})")
    if chosen is None or f"{chosen.type}:{chosen.index or 0}" not in available.values():
        raise argparse.ArgumentTypeError(f"{text}: no such device here (devices: {listed})")
    return text


def hub_repository(text: str) -> str:
    """A Hub repository id, owner/name."""
    if not HUB_ID.match(text):
        raise argparse.ArgumentTypeError(f"{text}: not a Hub repository id (owner/name)")
    return text


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE as (KEY, VALUE), KEY not empty."""
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, not {text}")
    return key, value


def _whole_number(text: str, minimum: int, maximum: int | None, requirement: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(f"{requirement}, not {text}")
    return value


def _number(text: str, accepted: Callable[[float], bool], requirement: str) -> float:
    """`text` as a finite float where `accepted(value)`, else an argparse error saying it `requirement`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not (math.isfinite(value) and accepted(value)):
        raise argparse.ArgumentTypeError(f"{requirement}, not {text}")
    return value


__all__ = [
    "BAD_INPUT",
    "CPUS",
    "MAX_CLIPS",
    "MAX_DISK_GB",
    "MAX_IMAGE_SIZE",
    "OneLineArgumentParser",
    "cpu_threads",
    "data_workers",
    "decay_factor",
    "disk_gigabytes",
    "device",
    "error_message",
    "fail",
    "fraction",
    "hub_repository",
    "image_size",
    "key_value",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "run_command",
    "score_threshold",
    "seed",
    "whole_number_up_to",
]
