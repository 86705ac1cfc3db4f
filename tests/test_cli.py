"""`python -m modeling_avis predict`: a tiny random AVISM on the real clips, its outputs, and its one-line errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_avis import AVISEG_LABELS
from modeling_avis.__main__ import main
from modeling_avis.tracks import decode_mask
from training.evaluation.inputs import load_ground_truth, load_predictions

from .app_media import stream_summary
from .fixture_data import MEDIA

ROOT = Path(__file__).parents[1]
CLIP = MEDIA / "dogs_640x360.mp4"


def ground_truth(videos: dict[int, tuple[str, int, int, int]]) -> dict:
    """A ground truth without annotations for videos {id: (name, frames, height, width)}: enough to check files."""
    return {
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(AVISEG_LABELS)],
        "videos": [
            {
                "id": video_id,
                "file_names": [f"{name}/{k:05d}.jpg" for k in range(frames)],
                "length": frames,
                "height": h,
                "width": w,
            }
            for video_id, (name, frames, h, w) in videos.items()
        ],
        "annotations": [],
    }


def test_predict_writes_an_h264_aac_overlay_and_a_results_json_the_evaluator_reads(
    tiny_model_folder, tmp_path, capsys
):
    overlay, results = tmp_path / "overlay.mp4", tmp_path / "results.json"
    argv = ["predict", str(CLIP), "--model", str(tiny_model_folder), "--out", str(overlay), "--json", str(results)]
    assert main([*argv, "--max-instances", "2", "--summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dogs_640x360.mp4: 2 sounding instances in 5 frames"
    assert [line.split()[0] for line in lines[1:]] == ["[1]", "[2]"]
    summary = stream_summary(overlay)
    assert summary["video"]["codec"] == "h264" and summary["video"]["size"] == (640, 360)
    assert summary["video"]["frames"] == 120 and summary["audio"]["codec"] == "aac"
    tracks = load_predictions(results, load_ground_truth(ground_truth({1: ("dogs", 5, 360, 640)})))
    assert len(tracks) == 2 and all(len(track.masks) == 5 for track in tracks)
    entries = json.loads(results.read_text())
    assert decode_mask(entries[0]["segmentations"][0]).shape == (360, 640)


def test_predict_on_a_folder_segments_every_video_and_reports_the_bad_one(tiny_model_folder, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in sorted(MEDIA.glob("*.mp4")):
        shutil.copy(clip, videos / clip.name)
    (videos / "broken.mp4").write_bytes(b"\x00\x01not a video" * 100)
    (videos / "notes.txt").write_text("not a video, not listed")
    overlays, results = tmp_path / "overlays", tmp_path / "results.json"
    argv = ["predict", str(videos), "--model", str(tiny_model_folder), "--out", str(overlays), "--json", str(results)]
    assert main([*argv, "--max-instances", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "[2] clarinet_guitar_540x360.mp4: 1 sounding instance in 5 frames",
        "[3] dogs_640x360.mp4: 1 sounding instance in 5 frames",
    ]
    assert captured.err.strip().startswith("[1] error: broken.mp4: not a video FFmpeg can read")
    assert sorted(path.name for path in overlays.iterdir()) == [
        "clarinet_guitar_540x360_avis.mp4",
        "dogs_640x360_avis.mp4",
    ]
    index = json.loads((tmp_path / "results.videos.json").read_text())
    assert index == [
        {"video_id": 2, "video": "clarinet_guitar_540x360.mp4"},
        {"video_id": 3, "video": "dogs_640x360.mp4"},
    ]
    gt = ground_truth({2: ("clarinet", 5, 360, 540), 3: ("dogs", 5, 360, 640)})
    assert sorted(track.video_id for track in load_predictions(results, load_ground_truth(gt))) == [2, 3]


BAD_INPUTS = {
    "no-command": ([], "the following arguments are required: command"),
    "missing-video": (["predict", "nowhere.mp4", "--model", "{model}"], "nowhere.mp4: no such file or folder"),
    "not-an-avism-folder": (["predict", str(CLIP), "--model", "{tmp}/bert"], "a 'bert' model, not an AVISM one"),
    "model-folder-without-config": (["predict", str(CLIP), "--model", "{tmp}"], "no config.json there"),
    "negative-fps": (["predict", str(CLIP), "--fps", "-1"], "argument --fps: must be positive, not -1"),
    "fractional-max-instances": (["predict", str(CLIP), "--max-instances", "1.5"], "must be a positive whole number"),
    "corrupt-video": (
        ["predict", "{tmp}/broken.mp4", "--model", "{model}"],
        "broken.mp4: not a video FFmpeg can read",
    ),
    "empty-folder": (["predict", "{tmp}/empty", "--model", "{model}"], "the folder holds no videos"),
    "overlay-of-frame-folder": (
        ["predict", "{tmp}/frames", "--model", "{model}", "--out", "{tmp}/o.mp4"],
        "a frame folder has no video to draw an overlay on",
    ),
    "unwritable-json": (
        ["predict", str(CLIP), "--model", "{model}", "--json", "{tmp}/missing/folder/results.json"],
        "missing/folder/results.json: the folder to write it in does not exist",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_on_stderr_and_exit_status_2(tiny_model_folder, tmp_path, capsys, case):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01not a video" * 100)
    (tmp_path / "empty").mkdir()
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "00000.jpg").write_bytes(b"")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    argv, message = BAD_INPUTS[case]
    argv = [arg.format(model=tiny_model_folder, tmp=tmp_path) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_python_dash_m_reports_a_bad_video_without_a_traceback(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01not a video" * 100)
    completed = subprocess.run(
        [sys.executable, "-m", "modeling_avis", "predict", str(tmp_path / "broken.mp4"), "--model", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no config.json there; give a folder written by save_pretrained"
    ]
