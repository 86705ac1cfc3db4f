"""The table-driven check of every entry point on hostile and unusual inputs, shared by the corpus's test modules.

A `Case` names an entry point and writes its inputs; `run_case` runs it in this process and asserts what every case
must end in: its results, or one `error:` line on stderr with exit status 2, within its bound, with no traceback,
no partial file, no code run from a pickle, and the user's files untouched.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState

from conversion import convert_avism, convert_vggish
from modeling_avis.__main__ import main as predict_main
from modeling_avis.outputs import PARTIAL
from training import check_dataset, evaluate_model, train
from training.evaluation.__main__ import main as evaluation_main

ENTRY_POINTS = {
    "predict": predict_main,
    "stream": predict_main,  # the same command line, its first word "stream"
    "train": train.main,
    "check_dataset": check_dataset.main,
    "evaluate_model": evaluate_model.main,
    "evaluation": evaluation_main,
    "convert_avism": convert_avism.main,
    "convert_vggish": convert_vggish.main,
}

# Seconds any case may take before it counts as hanging (the slowest, the 322 s video, takes ~15 s here).
BOUND = 120.0


@dataclass(frozen=True)
class Case:
    """entry: which command; make(folder) writes the inputs and returns its arguments (outputs go to folder/out);
    error: a part of its one-line message, or None when it succeeds; check(folder, stdout, stderr): its results."""

    entry: str
    make: Callable[[Path], list[str]]
    error: str | None = None
    check: Callable[[Path, str, str], None] | None = None
    bound: float = BOUND


def out(folder: Path) -> Path:
    (folder / "out").mkdir(exist_ok=True)
    return folder / "out"


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def run_case(case: Case, folder: Path, capsys: pytest.CaptureFixture) -> None:
    """Runs `case` with its inputs in `folder` and asserts its outcome (see the module docstring)."""
    arguments = case.make(folder)
    before = files_under(folder / "out")
    capsys.readouterr()
    start = time.monotonic()
    status = ENTRY_POINTS[case.entry](arguments)
    seconds = time.monotonic() - start
    stdout, stderr = capsys.readouterr()
    assert "Traceback" not in stdout + stderr
    assert seconds < case.bound
    assert not [path for path in folder.rglob("*") if PARTIAL in path.name]
    assert not (folder / "model" / "code_ran").exists() and not (folder / "code_ran").exists()
    if case.error is None:
        assert status == 0, stderr
        case.check(folder, stdout, stderr)
    else:
        lines = stderr.splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
        assert case.error in lines[0]
        assert files_under(folder / "out") == before  # nothing written, the user's files untouched


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each case starts from no Accelerate state (training and evaluation leave theirs behind)."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
