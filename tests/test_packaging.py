"""`pip install .` gives a package that runs from anywhere: its dependencies declared with the project's pins, its
command line on the shipped default model, and a default model folder that loads with trust_remote_code where the
package is not installed."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .fixture_data import REPOSITORY, copy_of_the_checkout

DUET = REPOSITORY / "app" / "examples" / "shapes_duet.mp4"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment (seeing this machine's packages, not the project) with `pip install .` of a
    copy of the checkout, built without downloading anything."""
    root = tmp_path_factory.mktemp("packaging")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    source = copy_of_the_checkout(root / "source")
    completed = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", str(source)],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return venv


def run(command: list, folder: Path) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["HF_MODULES_CACHE"] = str(folder / "hf_modules")
    completed = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_the_package_declares_the_projects_pins(installed, tmp_path):
    script = "import importlib.metadata as m; print('\\n'.join(m.requires('avis')))"
    declared = run([installed / "bin" / "python", "-c", script], tmp_path).split()
    pinned = [line for line in (REPOSITORY / "requirements.txt").read_text().split() if "==" in line]
    assert declared == pinned and "torch==2.13.0" in declared


def test_the_installed_command_line_finds_the_shipped_model_and_loads_saved_folders(installed, tmp_path):
    out = run([installed / "bin" / "avis", "predict", str(DUET), "--summary"], tmp_path)
    assert out.splitlines()[0] == "shapes_duet.mp4: 2 sounding instances in 9 frames"
    assert sorted(line.split()[1] for line in out.splitlines()[1:]) == ["diamond", "square"]
    script = f"""
        import modeling_avis
        from modeling_avis import AvisModel, AvisProcessor, AvisVideoSegmenter, save_model_folder
        from modeling_avis.__main__ import default_model
        assert modeling_avis.__file__.startswith({str(installed)!r}), modeling_avis.__file__
        assert default_model().startswith({str(installed / "share" / "avis")!r}), default_model()
        save_model_folder("saved", AvisModel.from_pretrained(default_model()), AvisProcessor.from_pretrained(default_model()))
        result = AvisVideoSegmenter.from_pretrained("saved", device="cpu")({str(DUET)!r})
        print(sorted(track.label_name for track in result.tracks))
    """
    assert (
        run([installed / "bin" / "python", "-c", textwrap.dedent(script)], tmp_path).strip() == "['diamond', 'square']"
    )


def test_the_installed_default_model_loads_with_trust_remote_code_without_the_package(installed, tmp_path):
    folder = installed / "share" / "avis" / "models" / "avis-sounding-shapes"
    assert not (folder / "modeling_avis.py").is_symlink()  # installed as the library's files
    script = f"""
        import sys
        from transformers import AutoModel, pipeline
        assert type(AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)).__name__ == "AvisModel"
        result = pipeline(model={str(folder)!r}, trust_remote_code=True, device="cpu")({str(DUET)!r})
        assert "modeling_avis" not in sys.modules
        print(sorted(track.label_name for track in result.tracks))
    """
    # this machine's own Python: the project is not installed there, and the working directory is outside it
    assert run([sys.executable, "-c", textwrap.dedent(script)], tmp_path).strip() == "['diamond', 'square']"
