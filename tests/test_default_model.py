"""The shipped default model (models/avis-sounding-shapes): small, loadable offline, and it listens.

The held-out test split is regenerated from its seed and scored with the benchmark's evaluator, with the sound and
with the sound muted; the numbers must be the model card's.
"""

import json

import pytest
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from app.layout import EXAMPLE_FOLDER
from modeling_avis.inference_avis import AvisVideoSegmenter
from modeling_avis.loading import load_model, load_processor
from modeling_avis.results import results_json_entries
from training.build_default_model import DEFAULT_MODEL, SEED, SHORT_EDGE, SPLIT_SIZES
from training.evaluate_model import evaluate_model
from training.evaluation import evaluate_predictions
from training.sounding_shapes import generate

MAX_FOLDER_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def card_metrics():
    return json.loads((DEFAULT_MODEL / "metrics.json").read_text())


@pytest.fixture(scope="module")
def test_metrics(tmp_path_factory):
    """(with sound, muted) metrics of the shipped model on the regenerated test split."""
    root = tmp_path_factory.mktemp("sounding_shapes")
    generate(root, SEED, {"test": SPLIT_SIZES["test"]})
    model = load_model(DEFAULT_MODEL).eval()
    processor = load_processor(DEFAULT_MODEL, model.config)
    accelerator = Accelerator(cpu=True)
    try:
        with_sound, _ = evaluate_model(model, processor, root, "test", accelerator)
        muted, _ = evaluate_model(model, processor, root, "test", accelerator, mute_audio=True)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return with_sound, muted


def test_the_folder_is_small_and_complete():
    files = {path.name: path.stat().st_size for path in DEFAULT_MODEL.iterdir()}
    assert sum(files.values()) <= MAX_FOLDER_BYTES
    assert {"config.json", "model.safetensors", "processor_config.json", "README.md", "metrics.json"} <= set(files)
    # the code for trust_remote_code: links into the library, never a stale copy
    code = [path for path in DEFAULT_MODEL.iterdir() if path.suffix == ".py"]
    assert {"modeling_avis.py", "processing_avis.py", "pipeline_avis.py"} <= {path.name for path in code}
    assert all(
        path.is_symlink() and path.resolve().parent == DEFAULT_MODEL.parents[1] / "modeling_avis" for path in code
    )
    segmenter = AvisVideoSegmenter.from_pretrained(DEFAULT_MODEL, device="cpu")
    assert segmenter.processor.image_processor.shortest_edge == SHORT_EDGE
    assert list(segmenter.model.config.id2label.values()) == ["circle", "square", "triangle", "diamond"]


def test_test_split_scores_reach_the_targets_and_fall_without_the_sound(test_metrics, card_metrics):
    with_sound, muted = test_metrics
    # The targets (a perfect model scores FSLA 90.5 here).
    assert with_sound["HOTA"] >= 60 and with_sound["mAP"] >= 50 and with_sound["FSLA"] >= 60
    assert with_sound["FSLA"] - muted["FSLA"] >= 20
    # the model card's numbers are these (same seed, same weights; float summation order aside)
    for key in ("FSLA", "HOTA", "mAP"):
        assert with_sound[key] == pytest.approx(card_metrics["test"][key], abs=0.5), key
        assert muted[key] == pytest.approx(card_metrics["test_muted"][key], abs=0.5), key


@pytest.mark.parametrize("name", ["duet", "solo", "silent"])
def test_app_examples_are_segmented_from_the_mp4_as_from_the_frames_and_answered_right(name):
    """The example videos (H.264 + AAC, 3x the size) go through decoding, log-mel, the model and RLE, and the model
    gets each right (its card says so)."""
    example = EXAMPLE_FOLDER / f"shapes_{name}.mp4"
    ground_truth = json.loads(example.with_suffix(".json").read_text())
    result = AvisVideoSegmenter.from_pretrained(DEFAULT_MODEL, device="cpu")(example)
    sounding = {ground_truth["categories"][a["category_id"] - 1]["name"] for a in ground_truth["annotations"]}
    assert {track.label_name for track in result.tracks} == sounding
    # HOTA and mAP average over the four classes, so one video's are no measure; FSLA scores each frame (its
    # sounding objects found and segmented, or none where none sounds), LocA is the IoU of the matches.
    metrics = evaluate_predictions(ground_truth, results_json_entries(result, video_id=1))
    assert metrics["FSLA"] >= 80
    if sounding:
        assert metrics["LocA"] >= 85
