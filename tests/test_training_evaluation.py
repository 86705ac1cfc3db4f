"""training/evaluate_model.py: a model over every video of a split, the AVIS results JSON, and its metrics."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from modeling_avis import AvisImageProcessor, AvisProcessor, save_model_folder
from modeling_avis.errors import AvisInputError
from modeling_avis.modeling_avis import AvisForAudioVisualInstanceSegmentation
from modeling_avis.session_avis import AvisOnlineSettings
from modeling_avis.tracks import decode_mask
from training import evaluate_model as evaluation
from training.data import load_aviseg_split, rasterize_polygons
from training.evaluation import evaluate_predictions

from .app_media import write_video
from .conftest import tiny_config
from .synthetic_aviseg import (
    EVAL_VIDEOS,
    HEIGHT,
    LENGTH,
    WIDTH,
    SoundingSquareOracle,
    SyntheticVideo,
    write_split,
)

LABELS = {0: "red", 1: "blue"}
ROOT = Path(__file__).parents[1]
# the offline mode, and online windows that share all frames but one (5 every 1) or one frame (3 every 2)
MODES = {
    "offline": None,
    "online_5_1": AvisOnlineSettings(window_size=5, stride=1),
    "online_3_2": AvisOnlineSettings(window_size=3, stride=2),
}


@pytest.fixture(scope="module")
def aviseg_root(tmp_path_factory):
    return write_split(tmp_path_factory.mktemp("aviseg"), "val", EVAL_VIDEOS)


@pytest.fixture
def accelerator():
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)


def tiny_processor(**settings) -> AvisProcessor:
    """The frames at their stored 64 pixels."""
    return AvisProcessor(AvisImageProcessor(shortest_edge=HEIGHT), **settings)


@pytest.mark.parametrize("mode", MODES)
def test_a_model_that_finds_every_sounding_object_scores_100(mode, aviseg_root, accelerator):
    oracle = SoundingSquareOracle(tiny_config(id2label=LABELS))
    metrics, results = evaluation.evaluate_model(
        oracle, tiny_processor(), aviseg_root, "val", accelerator, online=MODES[mode]
    )
    for key in ("FSLA", "FSLAn", "FSLAs", "FSLAm", "HOTA", "DetA", "AssA", "LocA", "mAP", "AR"):
        assert metrics[key] == pytest.approx(100.0), key
    # frames by number of sounding objects: 'silent' has none, 'red_only' and 'blue_only' one, 'both' two
    assert (metrics["FSLAn_all"], metrics["FSLAs_all"], metrics["FSLAm_all"]) == (LENGTH, 2 * LENGTH, LENGTH)
    # the masks are the annotations, pixel for pixel, in every frame
    videos = {video.video_id: video for video in load_aviseg_split(aviseg_root, "val")}
    assert len(results) == 4
    for entry in results:
        (instance,) = [i for i in videos[entry["video_id"]].instances if i.label == entry["category_id"] - 1]
        for polygons, rle in zip(instance.segmentations, entry["segmentations"], strict=True):
            assert (decode_mask(rle) == rasterize_polygons(polygons, HEIGHT, WIDTH)).all()


@pytest.mark.parametrize("mode", ["online_5_1", "online_3_2"])
def test_an_online_track_is_null_before_its_object_starts_sounding(mode, tmp_path, accelerator):
    # the red square of the first video sounds from its third frame on, the second video's blue square throughout
    # (HOTA averages over the classes, one without ground truth counting 0)
    late = SyntheticVideo("red_late", (4, 4), (8, 40), ("red",), sounding_from=2)
    root = write_split(tmp_path, "val", (late, EVAL_VIDEOS[2]))
    oracle = SoundingSquareOracle(tiny_config(id2label=LABELS))
    metrics, results = evaluation.evaluate_model(
        oracle, tiny_processor(), root, "val", accelerator, online=MODES[mode]
    )
    for key in ("FSLA", "HOTA", "AssA", "mAP"):
        assert metrics[key] == pytest.approx(100.0), key
    red, blue = results
    assert (red["video_id"], red["category_id"], blue["video_id"], blue["category_id"]) == (1, 1, 2, 2)
    assert [rle is None for rle in red["segmentations"]] == [True] * 2 + [False] * 4
    late_instance = load_aviseg_split(root, "val")[0].instances[0]
    for polygons, rle in zip(late_instance.segmentations[2:], red["segmentations"][2:], strict=True):
        assert (decode_mask(rle) == rasterize_polygons(polygons, HEIGHT, WIDTH)).all()


def saved_model(folder, **processor_settings):
    torch.manual_seed(0)
    model = AvisForAudioVisualInstanceSegmentation(tiny_config(id2label=LABELS))
    save_model_folder(folder, model, tiny_processor(**processor_settings))
    return folder


def test_results_json_of_a_saved_model_is_what_the_evaluator_reads(aviseg_root, tmp_path, capsys):
    argv = ["--model", str(saved_model(tmp_path / "model", score_threshold=-1.0)), "--data", str(aviseg_root)]
    argv += [
        "--split",
        "val",
        "--json",
        str(tmp_path / "results.json"),
        "--metrics-json",
        str(tmp_path / "metrics.json"),
    ]
    assert evaluation.main(argv) == 0
    AcceleratorState._reset_state(reset_partial_state=True)

    results = json.loads((tmp_path / "results.json").read_text())
    # no threshold: every (query, class) pair among the top num_detections = 8 queries x 2 classes per video
    assert len(results) == 4 * 16
    for entry in results:
        assert set(entry) == {"video_id", "score", "category_id", "segmentations"}
        assert entry["category_id"] in (1, 2) and 0 <= entry["score"] <= 1
        assert len(entry["segmentations"]) == LENGTH
        assert all(rle["size"] == [HEIGHT, WIDTH] and isinstance(rle["counts"], str) for rle in entry["segmentations"])
    assert [entry["video_id"] for entry in results] == sorted(entry["video_id"] for entry in results)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == evaluate_predictions(aviseg_root / "val.json", tmp_path / "results.json")
    assert all(0 <= metrics[key] <= 100 for key in ("FSLA", "HOTA", "mAP", "DetA", "AssA"))
    table = dict(line.split() for line in capsys.readouterr().out.splitlines() if len(line.split()) == 2)
    assert table["HOTA"] == f"{metrics['HOTA']:.2f}" and table["FSLA"] == f"{metrics['FSLA']:.2f}"


def test_online_results_json_of_a_saved_model_is_what_the_evaluator_reads(aviseg_root, tmp_path, capsys):
    model = saved_model(tmp_path / "model", score_threshold=0.05)
    argv = ["--model", str(model), "--data", str(aviseg_root), "--json", str(tmp_path / "results.json"),
            "--metrics-json", str(tmp_path / "metrics.json"), "--mode", "online", "--window", "3", "--stride", "2"]  # fmt: skip
    assert evaluation.main(argv) == 0
    AcceleratorState._reset_state(reset_partial_state=True)

    results = json.loads((tmp_path / "results.json").read_text())
    # one entry per track of each video, every frame a mask at the video's size or null where the track is not
    assert [entry["video_id"] for entry in results] == sorted(entry["video_id"] for entry in results)
    assert {entry["video_id"] for entry in results} == {1, 2, 3, 4}
    for entry in results:
        assert set(entry) == {"video_id", "score", "category_id", "segmentations"}
        assert entry["category_id"] in (1, 2) and 0.05 < entry["score"] <= 1
        assert len(entry["segmentations"]) == LENGTH
        assert all(rle is None or rle["size"] == [HEIGHT, WIDTH] for rle in entry["segmentations"])
        assert any(rle is not None for rle in entry["segmentations"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == evaluate_predictions(aviseg_root / "val.json", tmp_path / "results.json")
    table = dict(line.split() for line in capsys.readouterr().out.splitlines() if len(line.split()) == 2)
    assert table["mAP"] == f"{metrics['mAP']:.2f}"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--mode", "online", "--window", "0"], "argument --window: must be a whole number of frames from 1 to 64, not 0"),
        (["--mode", "online", "--window", "65"], "argument --window: must be a whole number of frames from 1 to 64, not 65"),
        (["--mode", "online", "--window", "3", "--stride", "4"], "--stride must be at most --window (3), not 4"),
        (["--mode", "online", "--stride", "6"], "--stride must be at most --window (5), not 6"),
        (["--mode", "online", "--stride", "-1"], "argument --stride: must be a positive whole number, not -1"),
        (["--window", "4"], "--window and --stride are the online mode's: give --mode online"),
        (["--mode", "offline", "--stride", "1"], "--window and --stride are the online mode's: give --mode online"),
        (["--mode", "live"], "argument --mode: invalid choice: 'live'"),
    ],
    ids=["window_0", "window_over_64", "stride_over_window", "stride_over_default_window", "stride_negative", "window_offline",
         "stride_offline", "mode_unknown"],
)  # fmt: skip
def test_online_settings_on_the_command_line_are_refused_in_one_line(
    arguments, message, aviseg_root, tmp_path, capsys
):
    argv = ["--model", str(tmp_path / "model"), "--data", str(aviseg_root), "--json", str(tmp_path / "out.json")]
    assert evaluation.main([*argv, *arguments]) == 2
    stderr = capsys.readouterr().err.splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("error: ") and message in stderr[0], stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "mode", [[], ["--mode", "online", "--window", "3", "--stride", "2"]], ids=["offline", "online"]
)
def test_two_processes_under_accelerate_launch_give_the_metrics_of_one(mode, aviseg_root, tmp_path):
    model = saved_model(tmp_path / "model", score_threshold=0.05)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    metrics = {}
    for processes in (1, 2):
        out = tmp_path / f"metrics_{processes}.json"
        command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
                   "training.evaluate_model", "--model", str(model), "--data", str(aviseg_root), "--split", "val",
                   "--metrics-json", str(out), "--json", str(tmp_path / f"results_{processes}.json"), *mode]  # fmt: skip
        completed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        metrics[processes] = json.loads(out.read_text())
    assert metrics[1] == metrics[2]
    one, two = (json.loads((tmp_path / f"results_{n}.json").read_text()) for n in (1, 2))
    assert [(e["video_id"], e["category_id"]) for e in one] == [(e["video_id"], e["category_id"]) for e in two]
    assert len({entry["video_id"] for entry in one}) == 4


def test_frames_are_resized_as_the_original_test_mapper_with_their_features_beside_them(aviseg_root):
    video = aviseg_root / "val" / "JPEGImages" / load_aviseg_split(aviseg_root, "val")[0].name
    assert AvisProcessor(AvisImageProcessor(shortest_edge=32))(video)["pixel_values"].shape == (1, LENGTH, 3, 32, 32)
    # the longest edge is capped: 64 -> 360 would give 360x360, capped to 100x100 (padded to 128)
    inputs = AvisProcessor(AvisImageProcessor(shortest_edge=360, longest_edge=100))(video)
    assert inputs.video_metadata[0].image_size == (100, 100) and inputs["pixel_values"].shape[-2:] == (128, 128)
    inputs = tiny_processor()(video)
    assert inputs["audio_features"].shape == (1, LENGTH, 128) and inputs["audio_features"][0, :, :64].min() == 1


def test_test_size_is_the_original_one_for_each_backbone():
    assert AvisProcessor.for_model(tiny_config()).image_processor.shortest_edge == 360
    swin = dict(model_type="swin", embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4,
                out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    assert AvisProcessor.for_model(tiny_config(backbone_config=swin)).image_processor.shortest_edge == 448


def test_muting_gives_the_audio_encoder_silence_as_a_soundless_video_gets_it(aviseg_root, tmp_path):
    video = aviseg_root / "val" / "JPEGImages" / load_aviseg_split(aviseg_root, "val")[0].name
    muted = tiny_processor()(video, audio_input="audio_log_mel", mute_audio=True)["audio_log_mel"][0]
    assert muted.shape == (LENGTH, 96, 64)
    torch.testing.assert_close(muted, torch.full_like(muted, math.log(0.01)))  # the log of the log offset
    soundless = tiny_processor()(write_video(tmp_path / "soundless.mp4", num_frames=24, fps=12, audio=False))[
        "audio_log_mel"
    ][0]
    torch.testing.assert_close(soundless, torch.full_like(soundless, math.log(0.01)))
    with pytest.raises(AvisInputError, match="muting the sound needs a model with an audio encoder"):
        tiny_processor()(video, audio_input="audio_features", mute_audio=True)
