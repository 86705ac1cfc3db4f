"""Writing outputs so that a failure leaves nothing behind and nothing of the user's is lost.

Every output is checked before any work (`check_output_file`, `check_output_folder`, `check_folder_to_write_in`,
`check_outputs_apart`): it must be a regular file or a new name, in a folder where files can be made, with a name the
file system takes, and it must not be an input of the run or another of its outputs. Each output is then written
under a temporary name beside its destination and moved into place only once complete (a move within one folder is
atomic), so a reader sees the whole file or none, and a failed or interrupted run leaves no partial file.
"""

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import httpx
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from .errors import AvisUsageError, one_line, printable

PARTIAL = ".partial"
# The longest file name (in bytes) where the file system does not say: Linux's NAME_MAX.
DEFAULT_NAME_MAX = 255
# What is at a path other than a folder, by its stat mode: an output may replace a regular file only (replacing a
# device, a FIFO or a socket would put a regular file in its place, as root even /dev/null).
KINDS = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def check_output_file(destination: str | Path) -> Path:
    """Where a file named `destination` is written (symbolic links followed), once it is known that it can be: a
    regular file or a new name, short enough for the file system, in an existing folder where files can be made."""
    target = _check_file_name(destination, Path(os.path.realpath(destination)))
    if not target.parent.is_dir():
        raise AvisUsageError(f"{printable(destination)}: the folder to write it in does not exist")
    _check_writable(destination, target.parent)
    return target


def check_output_folder(destination: str | Path) -> Path:
    """Where a new folder named `destination` is made (symbolic links followed), once it is known that it can be: a
    new name or an empty folder, short enough for the file system, in an existing folder where files can be made."""
    target = Path(os.path.realpath(destination))
    kind = _kind(target)
    if kind not in (None, "a folder"):
        raise AvisUsageError(f"{printable(destination)}: is {kind}; give the name of a new folder")
    if kind == "a folder" and any(target.iterdir()):
        raise AvisUsageError(f"{printable(destination)}: the folder already holds files; give a new or empty folder")
    if not target.parent.is_dir():
        raise AvisUsageError(f"{printable(destination)}: the folder to make it in does not exist")
    _check_name_fits(destination, target.name, target.parent)
    _check_writable(destination, target.parent)
    return target


def check_folder_to_write_in(destination: str | Path, names: Iterable[str] = ()) -> Path:
    """Where the folder `destination` is (symbolic links followed), once it is known that files called `names` (and
    others) can be written in it: an existing folder, or one that can be made with its missing parents; each name
    short enough, and none of them a folder, a device, a FIFO or a socket already there."""
    target = Path(os.path.realpath(destination))
    existing = target
    while _kind(existing) is None:
        existing = existing.parent
    kind = _kind(existing)
    if kind != "a folder":
        where = "" if existing == target else f"{printable(existing)} "
        raise AvisUsageError(f"{printable(destination)}: {where}is {kind}, not a folder")
    for part in target.relative_to(existing).parts:
        _check_name_fits(destination, part, existing)
    for name in names:
        _check_file_name(target / name, target / name)
    _check_writable(destination, existing)
    return target


def check_outputs_apart(outputs: Sequence[tuple[str, str | Path]], inputs: Iterable[str | Path]) -> None:
    """Refuses outputs that would write over an input of the run, or over one another.

    outputs: (what it is, as the user knows it: "--json", "the overlay of a.mp4" ...; its path), files or folders.
    inputs: the files and folders the run reads; an output may add a file to an input folder, not replace one in it,
        and an output folder may not hold an input.
    """
    sources = [(source, Path(os.path.realpath(source))) for source in inputs if os.path.lexists(source)]
    written = {}
    for label, output in outputs:
        target = Path(os.path.realpath(output))
        for source, resolved in sources:
            if _writes_over(target, resolved):
                raise AvisUsageError(
                    f"{printable(output)}: {label} would write over the input {printable(source)}; give another name"
                )
        if target in written:
            raise AvisUsageError(
                f"{printable(output)}: {written[target]} and {label} would both be written there; give them "
                "different names"
            )
        written[target] = label


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


def write_text_atomically(destination: str | Path, text: str) -> None:
    """Writes `text` to `destination` as a whole or not at all."""
    with atomic_file(destination) as temporary:
        temporary.write_text(text)


def _check_file_name(destination: str | Path, target: Path) -> Path:
    """`target` (where `destination` leads), once it is known to be a regular file or nothing yet, and a name that
    fits its folder's file system."""
    kind = _kind(target)
    if kind == "a folder":
        raise AvisUsageError(f"{printable(destination)}: is a folder; give the name of the file to write")
    if kind not in (None, "a file"):
        raise AvisUsageError(f"{printable(destination)}: is {kind}, not a file; give the name of a file to write")
    _check_name_fits(destination, target.name, target.parent)
    return target


def _check_name_fits(destination: str | Path, name: str, folder: Path) -> None:
    limit = _name_limit(folder)
    if len(os.fsencode(name)) > limit:
        raise AvisUsageError(
            f"{printable(destination)}: the name is {len(os.fsencode(name))} bytes long; the file system takes at "
            f"most {limit}"
        )


def _check_writable(destination: str | Path, folder: Path) -> None:
    """Makes and removes a file in `folder`: the one test that holds for root (who passes permission bits) and for
    /proc or /sys (which refuse new files whatever their bits say)."""
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".", suffix=PARTIAL, dir=folder)
    except OSError as error:
        raise AvisUsageError(
            f"{printable(destination)}: no file can be made in {printable(folder)} ({error.strerror})"
        ) from None
    os.close(descriptor)
    os.unlink(probe)


def _kind(path: Path) -> str | None:
    """What is at `path` (symbolic links followed): "a folder", "a file", "a FIFO" ...; None when nothing is."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):  # nothing can be there
            return None
        raise AvisUsageError(f"{printable(path)}: cannot be looked at ({error.strerror})") from None  # a loop, ...
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((kind for test, kind in KINDS if test(mode)), "a special file")


def _name_limit(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return DEFAULT_NAME_MAX


def _writes_over(output: Path, source: Path) -> bool:
    """Whether writing `output` (a file, or a folder of files) can replace any of the input `source` (a file, or a
    folder standing for its files); both resolved."""
    if source.is_relative_to(output):  # the input itself, or in the folder written
        return True
    if not output.exists():
        return False
    return output.is_relative_to(source) if source.is_dir() else os.path.samefile(output, source)


def _partial_name(destination: Path) -> Path:
    """A hidden name beside `destination` that no other run picks, cut to the file system's limit (the stem first)
    so that every name that fits has one; the suffix stays last, for writers that read it (one too long to keep is
    no format's)."""
    tag = f".{uuid.uuid4().hex[:12]}{PARTIAL}"
    limit = _name_limit(destination.parent)
    stem, suffix = destination.stem, destination.suffix
    while stem and len(os.fsencode(f".{stem}{tag}{suffix}")) > limit:
        stem = stem[:-1]
    if len(os.fsencode(f".{stem}{tag}{suffix}")) > limit:
        suffix = ""
    return destination.parent / f".{stem}{tag}{suffix}"


def push_folder_to_hub(folder: str | Path, repo_id: str) -> None:
    """Uploads a model folder as it is on disk (code, processor and model card included) to the Hub repository
    `repo_id` (made if need be); a failed upload is an AvisUsageError in one line."""
    try:
        HfApi().create_repo(repo_id, exist_ok=True)
        HfApi().upload_folder(repo_id=repo_id, folder_path=str(folder))
    except (OSError, HfHubHTTPError, httpx.HTTPError) as error:
        raise AvisUsageError(f"{repo_id}: the upload to the Hub failed ({one_line(error)})") from None


__all__ = [
    "push_folder_to_hub",
    "atomic_file",
    "atomic_folder",
    "check_folder_to_write_in",
    "check_output_file",
    "check_output_folder",
    "check_outputs_apart",
    "write_text_atomically",
]
