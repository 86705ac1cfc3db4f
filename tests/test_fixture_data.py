"""The compact copy of the reference fixtures (tests/fixtures) is the shared fixtures' bytes, and a clone with no
../shared beside it passes its parity tests on it."""

import json
import lzma
import os
import subprocess
import sys

import pytest

from .fixture_data import COMPACT, COMPACT_IO, SHARED, copy_of_the_checkout

needs_shared = pytest.mark.skipif(not (SHARED / "fixtures").is_dir(), reason="../shared is not beside this checkout")


@needs_shared
def test_the_compact_copy_holds_the_shared_fixtures_bytes():
    shared = SHARED / "fixtures"
    compared = 0
    for path in sorted(COMPACT.rglob("*")):
        relative = path.relative_to(COMPACT)
        if not path.is_file() or relative.parts[0] == "media" or path.name == "README.md" and len(relative.parts) == 1:
            continue
        original = shared / (relative.with_suffix("") if path.suffix == ".xz" else relative)
        if path.name == "manifest.json":  # the io cases kept, as the shared manifest lists them
            kept, full = json.loads(path.read_text()), json.loads(original.read_text())
            assert kept["io"] == {COMPACT_IO[path.parent.name]: full["io"][COMPACT_IO[path.parent.name]]}
            assert {key: value for key, value in kept.items() if key != "io"} == {
                key: value for key, value in full.items() if key != "io"
            }
        else:
            data = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
            assert data == original.read_bytes(), relative
        compared += 1
    assert compared >= 10
    for clip in (COMPACT / "media").iterdir():
        assert clip.read_bytes() == (SHARED / "media" / clip.name).read_bytes()


@needs_shared
def test_a_clone_without_shared_beside_it_passes_its_parity_and_metric_tests(tmp_path):
    clone = copy_of_the_checkout(tmp_path / "avis")
    tests = ["tests/test_modeling_parity.py", "tests/test_backbone_parity.py", "tests/test_metrics.py"]
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=clone, env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:]
    summary = completed.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and int(summary.split()[0]) >= 20, summary
