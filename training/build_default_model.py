"""Build the repository's default model from nothing: data, training, evaluation, model folder, app examples.

    python -m training.build_default_model [--work-dir /tmp/avis-sounding-shapes]

1. writes the sounding-shapes dataset (`training.sounding_shapes`, seed 0: 400 train / 40 val / 60 test videos);
2. trains `DEFAULT_MODEL_CONFIG` from scratch with `training.train` on the CPU (one thread: a second one makes the
   steps of this small model slower, not faster);
3. picks the score threshold on the val split (the best mean of FSLA, HOTA and mAP), then scores the test split
   with the sound and with the sound muted (the log-mel of silence), which shows how much the model listens;
4. writes the model folder (`models/avis-sounding-shapes`: safetensors, config, processor, code for
   `trust_remote_code`, a model card with the numbers) and the app's examples (`app/examples/shapes_*.mp4`, each
   with its ground truth).

Every step prints what it did; the metrics end up in the model card and in `metrics.json` beside the weights.
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from modeling_avis import AvisConfig, AvisProcessor, save_model_folder
from modeling_avis.__main__ import DEFAULT_MODEL_FOLDERS
from modeling_avis.loading import load_model, load_processor
from modeling_avis.outputs import atomic_folder

from . import train
from .evaluate_model import evaluate_model
from .sounding_shapes import CLASSES, HEIGHT, WIDTH, generate, write_example_video

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "modeling_avis"
DEFAULT_MODEL = DEFAULT_MODEL_FOLDERS[0]
SEED = 0
SPLIT_SIZES = {"train": 400, "val": 40, "test": 60}
# Frames are 96 x 128; the model sees them at that size in training and at test.
SHORT_EDGE = 96
# (clip query, class) pairs considered per video: 10 clip queries x 4 classes hold 40.
NUM_DETECTIONS = 20
# 4 clips of 5 frames a step; the learning rate falls tenfold for the last steps.
TRAIN_STEPS, LR_DECAY_STEP = 10000, 8500
# Written into the training run: how long it took (evaluations on val included).
TIMING_FILE = "build_timing.json"
# The headline metrics, in the paper's order.
HEADLINE = ("FSLA", "HOTA", "mAP")

# A ResNet of 4 small stages and every AVISM module at width 64: 1.7 M parameters, 7 MB of float32 weights.
DEFAULT_MODEL_CONFIG = {
    "backbone_config": {
        "model_type": "resnet",
        "embedding_size": 32,
        "hidden_sizes": [64, 128, 256, 512],
        "depths": [1, 1, 2, 1],
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
    # VGGish's layout at a quarter of its width, trained with the rest (there are no VGGish weights offline).
    "audio_config": {
        "conv_channels": [16, 32, 64, 64],
        "pool_after": [0, 1, 2, 3],
        "fc_sizes": [128, 128],
        "initializer_range": None,
    },
    "freeze_audio_encoder": False,
    "feature_size": 64,
    "mask_feature_size": 64,
    "hidden_dim": 64,
    "num_attention_heads": 4,
    "dim_feedforward": 256,
    "encoder_layers": 2,
    "encoder_feedforward_dim": 256,
    "decoder_layers": 3,
    "num_frame_queries": 10,
    "num_clip_queries": 10,
    "clip_hidden_dim": 64,
    "clip_num_attention_heads": 4,
    "clip_dim_feedforward": 256,
    "clip_encoder_layers": 2,
    "clip_window_size": 6,
    "clip_decoder_layers": 2,
    "train_num_points": 2048,
    "id2label": {str(index): shape.name for index, shape in enumerate(CLASSES)},
}


def training_arguments(config_path: Path, data: Path, output: Path) -> list[str]:
    """`training.train`'s command line: the original recipe at this scale (frames kept whole: no crop)."""
    return [
        "--config", str(config_path), "--data", str(data), "--output-dir", str(output), "--cpu",
        "--batch-size", "4", "--learning-rate", "4e-4", "--max-train-steps", str(TRAIN_STEPS),
        "--lr-steps", str(LR_DECAY_STEP), "--min-sizes", str(SHORT_EDGE), "--max-size", str(WIDTH),
        "--crop-probability", "0", "--num-workers", "0", "--report-to", "none", "--seed", str(SEED),
        "--checkpointing-steps", "1000", "--logging-steps", "100",
        "--eval-split", "val", "--eval-steps", "1000", "--eval-short-edge", str(SHORT_EDGE),
    ]  # fmt: skip


def headline(metrics: dict[str, float]) -> str:
    return "  ".join(f"{key} {metrics[key]:5.1f}" for key in HEADLINE)


def choose_threshold(model, processor: AvisProcessor, data: Path, accelerator: Accelerator) -> tuple[float, dict]:
    """The score threshold with the best mean of FSLA, HOTA and mAP on val, and every threshold's metrics."""
    processor.score_threshold = 0.0
    _, results = evaluate_model(model, processor, data, "val", accelerator)
    scores = train.metrics_by_threshold(results, data / "val.json")
    for threshold, metrics in scores.items():
        print(f"val, threshold {threshold}: {headline(metrics)}")
    best = max(scores, key=lambda threshold: train.best_score(scores[threshold], "mean"))
    return best, scores


def model_card(
    test: dict, muted: dict, threshold: float, train_seconds: float, steps: int, num_parameters: int
) -> str:
    rows = "\n".join(
        f"| {key} | {test[key]:.1f} | {muted[key]:.1f} |" for key in (*HEADLINE, "FSLAn", "FSLAs", "FSLAm", "AP50")
    )
    sounds = "\n".join(f"- {shape.name}: {shape.sound}" for shape in CLASSES)
    return f"""---
license: mit
library_name: transformers
pipeline_tag: video-classification
tags: [audio-visual-instance-segmentation, avism, synthetic]
---

# AVISM on sounding shapes (the repository's default model)

A small AVISM trained on synthetic sounding shapes: it knows circles, squares, triangles and diamonds, not real
scenes.

**What it is.** A small AVISM ({num_parameters / 1e6:.2f} M parameters: a 4-stage ResNet, every module at
width 64, a quarter-width VGGish trained with the rest) trained from scratch on the CPU, in
{train_seconds / 60:.0f} minutes ({steps} steps of 4 clips of 5 frames), on *sounding shapes*: synthetic 96 x 128
videos at 1 frame per second where coloured shapes move over a textured background and each class has its own
sound:

{sounds}

Only the shapes whose sound is playing are annotated; the others are silent distractors that look exactly like the
sounding shapes of other videos. So the model has to listen to know which shapes to segment.

**What it is not.** It knows four shapes and four synthetic sounds, nothing else: on real videos (people,
instruments, animals) it finds nothing, or nonsense. It is here so that the app and the command line work on a
fresh machine without a download, and to show, on data where the answer is known, that the pipeline (decoding,
log-mel, the model, tracking, rendering) is right. For real videos, use a converted AVISM checkpoint
(`conversion/convert_avism.py`).

## Results

The benchmark's evaluator on the held-out test split (60 videos, seed {SEED}), frames at {SHORT_EDGE} pixels, score
threshold {threshold} (chosen on the val split). Muted: the same videos with the sound replaced by silence.

| metric | with sound | sound muted |
|---|---|---|
{rows}

A perfect model scores FSLA 90.5 here, not 100: a frame that is silent inside a video with a sounding shape counts
as a miss for any prediction that covers it with an empty mask (FSLA's null-frame rule).

## Reproduce

    python -m training.build_default_model

regenerates the data, retrains, re-evaluates and rewrites this folder and the app's examples (`app/examples/shapes_*`).
"""


def write_examples(folder: Path) -> list[Path]:
    """Three test videos for the app, each one the model answers right (FSLA 80 or more against its ground truth):
    two sources and a silent shape; one source and a silent one; only silent shapes."""
    examples = {"shapes_duet": 37, "shapes_solo": 11, "shapes_silent": 4}
    paths = []
    for name, video_index in examples.items():
        path = folder / f"{name}.mp4"
        write_example_video(path, SEED, "test", video_index)
        paths.append(path)
    return paths


def ship(model, processor: AvisProcessor, output: Path, card: str, summary: dict) -> None:
    """Writes the model folder (see `save_model_folder`), its model card and metrics. In the repository's own
    folder, its code files are links into `modeling_avis/`: loadable with trust_remote_code like any saved folder,
    and never a stale copy of the library."""
    shutil.rmtree(output, ignore_errors=True)
    with atomic_folder(output) as folder:
        save_model_folder(folder, model, processor)
        (folder / "README.md").write_text(card)
        (folder / "metrics.json").write_text(json.dumps(summary, indent=1))
        if output.resolve() == DEFAULT_MODEL.resolve():
            for code in folder.glob("*.py"):
                code.unlink()
                code.symlink_to(os.path.relpath(LIBRARY / code.name, output.resolve()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/avis-sounding-shapes"))
    parser.add_argument("--output", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--examples", type=Path, default=ROOT / "app" / "examples")
    parser.add_argument(
        "--skip-training", action="store_true", help="evaluate and ship the finished run already in --work-dir"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data, run = args.work_dir / "data", args.work_dir / "run"
    if not args.skip_training:
        print(f"writing the sounding-shapes dataset to {data}")
        generate(data, SEED, SPLIT_SIZES)
        config_path = args.work_dir / "config.json"
        AvisConfig(**DEFAULT_MODEL_CONFIG).to_json_file(config_path)
        shutil.rmtree(run, ignore_errors=True)
        start = time.perf_counter()
        train.train(training_arguments(config_path, data, run))
        (run / TIMING_FILE).write_text(json.dumps({"seconds": time.perf_counter() - start, "steps": TRAIN_STEPS}))
    timing = json.loads((run / TIMING_FILE).read_text())

    model = load_model(run).eval()
    processor = load_processor(run, model.config)  # frames at SHORT_EDGE, as evaluated in training
    processor.num_detections = NUM_DETECTIONS
    accelerator = Accelerator(cpu=True)
    threshold, _ = choose_threshold(model, processor, data, accelerator)
    processor.score_threshold = threshold
    test, _ = evaluate_model(model, processor, data, "test", accelerator)
    muted, _ = evaluate_model(model, processor, data, "test", accelerator, mute_audio=True)
    print(f"test, threshold {threshold}, with sound: {headline(test)}")
    print(f"test, threshold {threshold}, muted:      {headline(muted)}")
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    card = model_card(test, muted, threshold, timing["seconds"], timing["steps"], num_parameters)
    summary = {"threshold": threshold, "train_seconds": timing["seconds"], "test": test, "test_muted": muted}
    ship(model, processor, args.output, card, summary)
    for path in write_examples(args.examples):
        print(f"wrote {path} and its ground truth")
    print(f"wrote {args.output} ({HEIGHT} x {WIDTH} frames, threshold {threshold})")


if __name__ == "__main__":
    main()
