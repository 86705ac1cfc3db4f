"""The JSON and .npy files a user gives (configs, annotations, results, audio features), read within bounds.

Python's own readers trust their input: `json.load` recurses once per level of nesting and turns a 5,000-digit
number into a ValueError of its own, and `np.load` allocates whatever size a header declares, terabytes included.
Every file of the project's inputs is read here, and what cannot be read is an `InvalidInputFile` whose message is
the reason in a few words; the caller names the file, in the error type of its own entry point.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

# Larger JSON inputs are refused unread: parsed, one is 5-10 times its size in memory (AVISeg's train.json: 35 MB).
MAX_JSON_BYTES = 2**30
# A config (config.json, processor_config.json) is a few kB; a thousand class names are 30 kB.
MAX_CONFIG_BYTES = 2**24
# Array kinds an .npy input may hold: booleans and numbers (never objects, which np.load would unpickle).
NUMERIC_KINDS = "biuf"


class InvalidInputFile(ValueError):
    """A JSON or .npy file that cannot be read; the message is the reason, without the file's name."""


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> object:
    """The parsed content of a JSON file of at most `max_bytes`. Nesting is bounded by Python's recursion limit
    (about 1000 levels; the project's files have fewer than 10). OSError (a missing file, a folder) as open gives it."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidInputFile(f"{size / 2**20:.0f} MB, more than the {max_bytes / 2**20:.0f} MB allowed")
    with path.open("rb") as handle:
        content = handle.read(max_bytes + 1)
    try:
        return json.loads(content)
    except json.JSONDecodeError as error:
        raise InvalidInputFile(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    except UnicodeDecodeError:
        raise InvalidInputFile("not a text file (not UTF-8)") from None
    except RecursionError:
        raise InvalidInputFile("nested too deeply to read") from None
    except ValueError:  # the only other: an integer beyond Python's conversion limit
        raise InvalidInputFile(f"holds a number of more than {sys.get_int_max_str_digits()} digits") from None


def read_npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the numeric array of an .npy file, once its header is found to describe exactly the bytes
    the file holds: a header may declare any size, and np.load allocates it before finding the data missing."""
    path = Path(path)
    with path.open("rb") as handle:
        try:
            version = npy_format.read_magic(handle)
            read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in read_header:
                raise InvalidInputFile(f"an .npy file of format {version[0]}.{version[1]}, not 1.0 or 2.0")
            shape, _, dtype = read_header[version](handle)
        except InvalidInputFile:
            raise
        except (ValueError, EOFError, SyntaxError, TypeError) as error:  # what a malformed header raises
            raise InvalidInputFile(f"not an .npy array ({str(error).strip().splitlines()[0]})") from None
        if dtype.kind not in NUMERIC_KINDS:
            raise InvalidInputFile(f"an .npy array of {dtype}, not of numbers")
        declared = math.prod(shape) * dtype.itemsize
        held = path.stat().st_size - handle.tell()
    if declared != held:
        raise InvalidInputFile(f"its header declares {declared} bytes of {shape} {dtype}, the file holds {held}")
    return shape, dtype


def read_npy(path: str | Path) -> np.ndarray:
    """The numeric array of an .npy file whose header is sound (`read_npy_header`)."""
    read_npy_header(path)
    return np.load(path, allow_pickle=False)


__all__ = ["MAX_CONFIG_BYTES", "MAX_JSON_BYTES", "InvalidInputFile", "read_json", "read_npy", "read_npy_header"]
