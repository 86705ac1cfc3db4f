"""Writing outputs so that a failure leaves nothing behind: each output is written under a temporary name beside
its destination and moved into place only once complete (a move within one folder is atomic), so a reader sees
the whole file or none, and a failed or interrupted run leaves no partial file."""

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import AvisUsageError

PARTIAL = ".partial"


def check_output_file(destination: str | Path) -> Path:
    """`destination` as a Path, once it is known that a file can be written there (checked before any work)."""
    destination = Path(destination)
    if destination.is_dir():
        raise AvisUsageError(f"{destination}: is a folder; give the name of the file to write")
    if not destination.resolve().parent.is_dir():
        raise AvisUsageError(f"{destination}: the folder to write it in does not exist")
    return destination


def check_output_folder(destination: str | Path) -> Path:
    """`destination` as a Path, once it is known that a new folder can be made there (checked before any work)."""
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise AvisUsageError(f"{destination}: is a file; give the name of a new folder")
    if destination.is_dir() and any(destination.iterdir()):
        raise AvisUsageError(f"{destination}: the folder already holds files; give a new or empty folder")
    if not destination.resolve().parent.is_dir():
        raise AvisUsageError(f"{destination}: the folder to make it in does not exist")
    return destination


@contextlib.contextmanager
def atomic_file(destination: str | Path) -> Iterator[Path]:
    """A temporary path beside `destination` to write the file to; moved onto `destination` when the block ends
    without error, deleted when it raises (the exception goes on)."""
    destination = check_output_file(destination)
    temporary = _partial_name(destination)
    try:
        yield temporary
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(destination: str | Path) -> Iterator[Path]:
    """A temporary folder beside `destination` to write into; renamed to `destination` (new or empty) when the
    block ends without error, deleted when it raises."""
    destination = check_output_folder(destination)
    temporary = _partial_name(destination)
    temporary.mkdir()
    try:
        yield temporary
        if destination.is_dir():
            destination.rmdir()  # empty, as checked
        os.replace(temporary, destination)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _partial_name(destination: Path) -> Path:
    """A hidden name beside `destination` that no other run picks; the suffix stays last, for writers that read it."""
    return destination.resolve().parent / f".{destination.stem}.{uuid.uuid4().hex[:12]}{PARTIAL}{destination.suffix}"


def write_text_atomically(destination: str | Path, text: str) -> None:
    """Writes `text` to `destination` as a whole or not at all."""
    with atomic_file(destination) as temporary:
        temporary.write_text(text)


__all__ = ["atomic_file", "atomic_folder", "check_output_file", "check_output_folder", "write_text_atomically"]
