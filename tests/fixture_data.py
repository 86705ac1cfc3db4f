"""Where the tests' reference data are: the project's `../shared` beside the checkout when it is there (every case),
else the compact copy in `tests/fixtures/` (the smallest io file of each original model, its checkpoint, every
metric case, the two real clips), so that a clone on its own passes its tests, parity included.

The compact copy holds the same bytes as `../shared`, xz-compressed where that pays (the .xz files); it is unpacked
once into the temporary folder. `python -m tests.fixture_data` rewrites it from `../shared` (after the shared
fixtures change); `tests/test_fixture_data.py` checks that it still matches them.
"""

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED = REPOSITORY.parent / "shared"
COMPACT = Path(__file__).resolve().parent / "fixtures"
# The io case each original model keeps in the compact copy: every captured stage, window padding included.
COMPACT_IO = {"r50_tiny": "io_seed0", "swin_tiny": "io_seed0"}
# Files the compact copy stores as they are; every other one is xz-compressed.
PLAIN = ("manifest.json", "config.yaml", "README.md", "index.json")


def unpacked_compact_copy() -> Path:
    """tests/fixtures with its .xz files decompressed, in a temporary folder named after its content."""
    files = sorted(path for path in COMPACT.rglob("*") if path.is_file() and path.name != "README.md")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(COMPACT)}:{path.stat().st_size}".encode())
    target = Path(tempfile.gettempdir()) / f"avis_fixtures_{digest.hexdigest()[:16]}"
    if not (target / ".complete").is_file():
        partial = target.with_name(f"{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        for path in files:
            relative = path.relative_to(COMPACT)
            destination = partial / (relative.with_suffix("") if path.suffix == ".xz" else relative)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes())
        (partial / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def copy_of_the_checkout(destination: Path) -> Path:
    """The files git tracks here, copied to `destination` (links kept as links): what a fresh clone holds."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True, check=True)
    for name in tracked.stdout.splitlines():
        source, target = REPOSITORY / name, destination / name
        if not os.path.lexists(source):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination


def write_compact_copy() -> None:
    """Rewrites tests/fixtures from ../shared/fixtures (the media are links to app/examples, which holds them)."""
    shared = SHARED / "fixtures"
    for folder in ("original", "eval"):
        shutil.rmtree(COMPACT / folder, ignore_errors=True)
    wanted = [path for path in (shared / "eval").rglob("*") if path.is_file()]
    wanted += [path for path in (shared / "original" / "keys").iterdir()]
    for model, io in COMPACT_IO.items():
        manifest = json.loads((shared / "original" / model / "manifest.json").read_text())
        manifest["io"] = {io: manifest["io"][io]}
        (COMPACT / "original" / model).mkdir(parents=True)
        (COMPACT / "original" / model / "manifest.json").write_text(json.dumps(manifest, indent=1))
        names = ("config.yaml", "model_final.pth", manifest["io"][io]["file"])
        wanted += [shared / "original" / model / name for name in names]
    for path in wanted:
        destination = COMPACT / path.relative_to(shared)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.name in PLAIN:
            shutil.copyfile(path, destination)
        else:
            destination.with_name(f"{destination.name}.xz").write_bytes(lzma.compress(path.read_bytes(), preset=9))


if (SHARED / "fixtures").is_dir():
    FIXTURES, MEDIA = SHARED / "fixtures", SHARED / "media"
else:
    FIXTURES, MEDIA = unpacked_compact_copy(), COMPACT / "media"
ORIGINAL = FIXTURES / "original"
EVAL_FIXTURES = FIXTURES / "eval"

if __name__ == "__main__":
    write_compact_copy()
