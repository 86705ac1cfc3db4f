"""training/evaluate_model.py: a model over every video of a split, the AVIS results JSON, and its metrics."""

import json
import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from modeling_avis.errors import AvisInputError
from modeling_avis.modeling_avis import AvisForAudioVisualInstanceSegmentation
from modeling_avis.tracks import decode_mask
from training import evaluate_model as evaluation
from training.data import load_aviseg_split, rasterize_polygons
from training.evaluation import evaluate_predictions

from .conftest import tiny_config
from .synthetic_aviseg import EVAL_VIDEOS, HEIGHT, LENGTH, WIDTH, SoundingSquareOracle, write_split

LABELS = {0: "red", 1: "blue"}


@pytest.fixture(scope="module")
def aviseg_root(tmp_path_factory):
    return write_split(tmp_path_factory.mktemp("aviseg"), "val", EVAL_VIDEOS)


@pytest.fixture
def accelerator():
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)


def test_a_model_that_finds_every_sounding_object_scores_100(aviseg_root, accelerator):
    oracle = SoundingSquareOracle(tiny_config(id2label=LABELS))
    metrics, results = evaluation.evaluate_model(oracle, aviseg_root, "val", accelerator, short_edge=HEIGHT)
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


def test_results_json_of_a_saved_model_is_what_the_evaluator_reads(aviseg_root, tmp_path, capsys):
    torch.manual_seed(0)
    model = AvisForAudioVisualInstanceSegmentation(tiny_config(id2label=LABELS, score_threshold=-1.0))
    model.save_pretrained(tmp_path / "model")
    argv = ["--model", str(tmp_path / "model"), "--data", str(aviseg_root), "--split", "val", "--short-edge", "64"]
    argv += ["--json", str(tmp_path / "results.json"), "--metrics-json", str(tmp_path / "metrics.json")]
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


def test_frames_are_resized_as_the_original_test_mapper(aviseg_root):
    video = load_aviseg_split(aviseg_root, "val")[0]
    assert evaluation.read_test_video(video, short_edge=32).frames.shape == (LENGTH, 3, 32, 32)
    # the longest edge is capped: 64 -> 360 would give 360x360, capped to 100x100
    assert evaluation.read_test_video(video, short_edge=360, max_size=100).frames.shape[-2:] == (100, 100)
    clip = evaluation.read_test_video(video, short_edge=64)
    assert clip.audio.shape == (LENGTH, 128) and clip.audio[:, :64].min() == 1  # red sounds


def test_test_size_is_the_original_one_for_each_backbone():
    assert evaluation.test_short_edge(AvisForAudioVisualInstanceSegmentation(tiny_config())) == 360
    swin = dict(model_type="swin", embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4,
                out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    assert evaluation.test_short_edge(AvisForAudioVisualInstanceSegmentation(tiny_config(backbone_config=swin))) == 448


def test_muting_gives_the_audio_encoder_the_log_mel_of_silence(aviseg_root):
    video = load_aviseg_split(aviseg_root, "val")[0]
    clip = evaluation.read_test_video(video, short_edge=32, audio_input="audio_log_mel", mute_audio=True)
    assert clip.audio.shape == (LENGTH, 96, 64)
    torch.testing.assert_close(clip.audio, torch.full_like(clip.audio, math.log(0.01)))  # log of the log offset
    with pytest.raises(AvisInputError, match="muting the audio needs a model with an audio encoder"):
        evaluation.read_test_video(video, short_edge=32, audio_input="audio_features", mute_audio=True)
