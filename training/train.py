"""Train or fine-tune AVISM with Accelerate: on a few tens of your own videos, or on AVISeg with the original recipe.

    python -m training.train --data clips/train.json --model MODEL --labels a,b,c --output-dir OUT  # your videos
    python -m training.train --data ROOT --output-dir OUT --model CONVERTED_DIR                     # AVISeg
    python -m training.train --data ROOT --output-dir OUT --preset r50_imagenet \\
        --backbone-weights RESNET_DIR                                                  # from a backbone
    accelerate launch -m training.train ...                       # any number of GPUs and nodes
    python -m training.train ... --resume-from-checkpoint latest  # continue exactly where the last checkpoint was

--data is an annotations file (YouTube-VIS JSON whose videos name video files with their sound, or frame files; see
`training.data`) or an AVISeg root. --labels sets the classes to learn: the class heads of a model that knows
others are resized (its rows kept for the classes it knows, by name; new ones for the others), every other weight
kept.

The defaults are a recipe for small data on one machine: frames at the model's test size, no crop, 60 passes over
the training videos, the learning rate down tenfold for the last third, a fine-tuned model's backbone and pixel
decoder kept as they are (--freeze), and with --eval-split an evaluation every fifth of the run whose best model is
kept in OUT/best. The optimizer is the original's: AdamW (lr 1e-4, weight
decay 0.05; backbone lr x0.1; no decay for norms, embeddings and Swin's position tables), the whole model's gradient
clipped to L2 norm 0.01, linear warm-up then step decay (x0.1), clips of 5 frames within 20 frames of a random
one, 2 clips per step. The original's AVISeg recipe adds `--freeze --min-sizes 288 320 352 384 416 448 480
512 --max-size 768 --crop-probability 0.5 --max-train-steps 48000 --lr-steps 32000` (every weight trains).
"""

import argparse
import contextlib
import json
import math
import re
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import LoggerType, gather_object, set_seed
from safetensors.torch import load_file
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from modeling_avis.config_ranges import NUM_LABELS, whole
from modeling_avis.configuration_avis import PRESETS, AvisConfig
from modeling_avis.entry_point import (
    CPUS,
    MAX_CLIPS,
    OneLineArgumentParser,
    cpu_threads,
    data_workers,
    decay_factor,
    fraction,
    hub_repository,
    image_size,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
    seed,
    whole_number_up_to,
)
from modeling_avis.errors import AvisCheckpointError, AvisDatasetError, AvisUsageError, one_line, printable
from modeling_avis.input_files import MAX_CONFIG_BYTES, InvalidInputFile, read_json
from modeling_avis.loading import (
    LOADING_ERRORS,
    check_pickled_weights,
    load_config_file,
    load_model,
    load_processor,
    processor_for_model,
)
from modeling_avis.modeling_avis import AvisForAudioVisualInstanceSegmentation
from modeling_avis.outputs import (
    atomic_folder,
    check_folder_to_write_in,
    check_outputs_apart,
    push_folder_to_hub,
    write_text_atomically,
)
from modeling_avis.pipeline_avis import save_model_folder
from modeling_avis.processing_avis import AvisProcessor
from modeling_avis.runtime import configure_runtime

from .augmentation import ClipAugmentation
from .data import AvisegClipDataset, annotations_path, audio_input_name, collate_clips, is_annotations_file
from .evaluate_model import evaluate_model
from .evaluation import evaluate_predictions, format_metrics_table
from .model_inputs import model_inputs
from .optimization import parameter_groups, warmup_multistep_factor
from .sampling import EpochOrderSampler, SeededDataset

# Written last into a checkpoint folder: the step and data position, and the marker of a complete checkpoint.
PROGRESS_FILE = "training_progress.json"
# The step and data position of a progress file: counts, from 0.
PROGRESS_COUNTER = whole(0, 2**62)
# Backbone weights a checkpoint of a classification or plain model need not have: D2 Swin's per-stage output norms
# are new layers in the original too.
NEW_BACKBONE_KEYS = ("hidden_states_norms.",)
# The most frames a training clip may have: the recipe's 5, and room to spare (each frame of a clip goes through the
# whole model with its gradients).
MAX_CLIP_FRAMES = 64
TRACKERS = ("none", *(tracker.value for tracker in LoggerType))
# The small-data recipe's length: passes over the training videos (one clip of each a pass). On 40 videos teaching
# a fifth class, 60 passes scored FSLA 35.5 on held-out videos where 30 scored 23.8 (README: "The small-data recipe").
EPOCHS = 60
# Where the learning rate falls tenfold, as a fraction of the steps: the original's 32000 of 48000.
DECAY_AT = 2 / 3
# Evaluations and checkpoints of a run by default: one every fifth of it.
EVALUATIONS = 5
# The score thresholds an evaluation tries: the processor keeps instances scoring above the best on the evaluation
# split (as the default model's threshold was chosen, `training.build_default_model`).
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# What picks the best evaluated model and threshold: a headline metric, or their mean.
BEST_METRICS = ("mean", "FSLA", "HOTA", "mAP")
# The most classes --labels may name (AvisConfig's bound) and the longest file of names it reads.
MAX_LABELS_BYTES = 2**20
# The parts of AVISM (`model.model`'s modules) that --freeze may keep as they are.
PARTS = ("backbone", "pixel_decoder", "audio_encoder", "frame_decoder", "clip_module")
# What fine-tuning a saved model keeps as it is by default: its visual features, which tens of videos do not improve.
# On the star example, training every weight scored FSLA 37.4 on the test videos, these frozen 44.9 (README: "The
# small-data recipe").
FROZEN_WHEN_FINE_TUNING = ("backbone", "pixel_decoder")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    model = parser.add_argument_group("model").add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="fine-tune this model folder (save_pretrained of AVISM, e.g. a converted one)")
    model.add_argument("--config", help="train from scratch with this AvisConfig JSON")
    model.add_argument("--preset", choices=sorted(PRESETS), help="train from scratch with a published configuration")
    parser.add_argument(
        "--backbone-weights",
        help="with --config/--preset: a transformers ResNet or Swin folder (save_pretrained of any of their models), "
        "or a .safetensors file whose keys are model.backbone's",
    )
    parser.add_argument(
        "--labels",
        help="the classes to learn, in order: names separated by commas, or a file of one name a line (default: "
        "the model's)",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        required=True,
        help="an annotations file (its videos: video files with sound, or frame files), or an AVISeg root "
        "(<root>/<split>.json, <root>/<split>/JPEGImages, ...)",
    )
    data.add_argument("--train-split", default="train", help="the split of an AVISeg root to train on")
    data.add_argument(
        "--num-frames",
        type=whole_number_up_to(MAX_CLIP_FRAMES, "frames"),
        default=5,
        help="frames per training clip (INPUT.SAMPLING_FRAME_NUM)",
    )
    data.add_argument("--frame-range", type=non_negative_int, default=20, help="INPUT.SAMPLING_FRAME_RANGE")
    recipe = ClipAugmentation()
    data.add_argument(
        "--min-sizes",
        type=image_size,
        nargs="+",
        help="shortest edges to resize to, one drawn per clip (default: the model's test size; INPUT.MIN_SIZE_TRAIN)",
    )
    data.add_argument(
        "--max-size", type=image_size, help="the longest edge (default: the model's test limit; INPUT.MAX_SIZE_TRAIN)"
    )
    data.add_argument("--crop-probability", type=fraction, default=0.0, help="the original's: 0.5")
    data.add_argument("--flip-probability", type=fraction, default=recipe.flip_probability)
    data.add_argument("--num-workers", type=data_workers, default=min(4, CPUS), help="at most the CPUs it may use")

    solver = parser.add_argument_group("optimizer and schedule (SOLVER.*)")
    solver.add_argument(
        "--batch-size",
        type=whole_number_up_to(MAX_CLIPS, "clips"),
        default=2,
        help="clips per process and step (recipe: 2 in all)",
    )
    solver.add_argument("--gradient-accumulation-steps", type=whole_number_up_to(MAX_CLIPS, "steps"), default=1)
    solver.add_argument("--learning-rate", type=positive_float, default=1e-4)
    solver.add_argument("--weight-decay", type=non_negative_float, default=0.05)
    solver.add_argument("--backbone-multiplier", type=non_negative_float, default=0.1, help="0 freezes the backbone")
    solver.add_argument(
        "--freeze",
        nargs="*",
        choices=PARTS,
        help=f"parts of the model whose weights stay as they are (default: {' '.join(FROZEN_WHEN_FINE_TUNING)} with "
        "--model, none from scratch); --freeze alone trains every weight",
    )
    solver.add_argument(
        "--clip-grad-norm", type=positive_float, default=0.01, help="L2 norm of the whole model's gradient"
    )
    solver.add_argument(
        "--max-train-steps",
        type=positive_int,
        help=f"optimizer steps (SOLVER.MAX_ITER; default: {EPOCHS} passes over the training videos)",
    )
    solver.add_argument(
        "--lr-steps",
        type=non_negative_int,
        nargs="*",
        help=f"decay milestones (SOLVER.STEPS; default: {DECAY_AT:.0%}% of the steps)",  # %% is argparse's %
    )
    solver.add_argument("--lr-gamma", type=decay_factor, default=0.1, help="in (0, 1]")
    solver.add_argument("--warmup-iters", type=non_negative_int, default=10)
    solver.add_argument(
        "--warmup-factor", type=fraction, default=1.0, help="in [0, 1]; the recipe's 1.0 makes warm-up a no-op"
    )
    solver.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="default: accelerate's config")
    solver.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")
    solver.add_argument("--threads", type=cpu_threads, help="torch's CPU threads (default: every CPU)")
    solver.add_argument("--seed", type=seed, default=0)

    run = parser.add_argument_group("checkpoints, logs and evaluation")
    run.add_argument("--output-dir", required=True)
    run.add_argument(
        "--checkpointing-steps",
        type=non_negative_int,
        help=f"0: no checkpoints (default: {EVALUATIONS} in a run)",
    )
    run.add_argument("--resume-from-checkpoint", help="a checkpoint folder, or 'latest' in --output-dir")
    run.add_argument(
        "--max-steps-this-run", type=positive_int, help="stop after this many steps without saving (as if preempted)"
    )
    run.add_argument("--logging-steps", type=positive_int, default=20)
    run.add_argument(
        "--report-to",
        choices=TRACKERS,
        default="all",
        help="Accelerate trackers: 'all' installed ones, 'none', a name",
    )
    run.add_argument(
        "--eval-split",
        help="evaluate on this split of an AVISeg root, or on this annotations file, every --eval-steps and at the "
        "end; the best evaluated model is kept in OUTPUT_DIR/best",
    )
    run.add_argument(
        "--eval-steps", type=non_negative_int, help=f"0: only at the end (default: {EVALUATIONS} in a run)"
    )
    run.add_argument("--best-metric", choices=BEST_METRICS, default="mean", help="mean: of FSLA, HOTA and mAP")
    run.add_argument("--eval-short-edge", type=image_size, help="test size (default: the original's for the backbone)")
    run.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        type=hub_repository,
        help="at the end, upload the model (the best evaluated one, with --eval-split) to this Hub repository",
    )
    args = parser.parse_args(argv)
    if args.backbone_weights and args.model:
        parser.error("--backbone-weights starts a new model; a --model folder already has its backbone")
    if args.eval_split and not args.eval_split.endswith(".json") and is_annotations_file(args.data):
        parser.error("--data is an annotations file: give --eval-split an annotations file too")
    if args.freeze is None:
        args.freeze = list(FROZEN_WHEN_FINE_TUNING) if args.model else []
    return args


def read_labels(labels: str) -> list[str]:
    """The class names of --labels: a file of one name a line, or names separated by commas."""
    path = Path(labels)
    if path.is_file():
        try:
            text = path.read_bytes()[: MAX_LABELS_BYTES + 1].decode()
        except UnicodeDecodeError:
            raise AvisUsageError(f"{printable(labels)}: --labels names a file that is not text") from None
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        names = [name.strip() for name in labels.split(",")]
    if not names or not all(names) or len(set(names)) != len(names):
        raise AvisUsageError(f"--labels {printable(labels)}: name each class once, none empty")
    if not NUM_LABELS.admits(len(names)):
        raise AvisUsageError(f"--labels names {len(names)} classes, allowed {NUM_LABELS}")
    return names


def load_backbone_weights(model: AvisForAudioVisualInstanceSegmentation, path: str | Path) -> None:
    """Load `model.model.backbone` from a transformers ResNet/Swin folder or from a backbone .safetensors file.

    A folder goes through transformers' `from_pretrained` (plain, backbone or classification models; legacy key
    names are converted); every backbone weight must be found there except D2 Swin's new per-stage norms. A
    .safetensors file must hold exactly the backbone's state dict (keys optionally prefixed `model.backbone.`).
    """
    backbone = model.model.backbone
    path = Path(path)
    try:
        _load_backbone_weights(backbone, path)
    except AvisCheckpointError:
        raise
    except LOADING_ERRORS as error:
        raise AvisCheckpointError(
            f"{printable(path)}: the backbone weights could not be read ({one_line(error)})"
        ) from None


def _load_backbone_weights(backbone, path: Path) -> None:
    if path.is_dir():
        check_pickled_weights(path, str(path))
        loaded, info = type(backbone).from_pretrained(
            path, config=backbone.config, output_loading_info=True, ignore_mismatched_sizes=True
        )
        missing = [key for key in info["missing_keys"] if not key.startswith(NEW_BACKBONE_KEYS)]
        if missing or info["mismatched_keys"]:
            raise AvisCheckpointError(
                f"{printable(path)} does not fit the {backbone.config.model_type} backbone: "
                f"missing {missing[:3]}, mismatched {list(info['mismatched_keys'])[:3]}"
            )
        backbone.load_state_dict(loaded.state_dict())
    elif path.suffix == ".safetensors":
        state = {key.removeprefix("model.backbone."): value for key, value in load_file(path).items()}
        expected = backbone.state_dict()
        if state.keys() != expected.keys() or any(state[k].shape != v.shape for k, v in expected.items()):
            raise AvisCheckpointError(
                f"{printable(path)} does not hold the weights of model.backbone (keys or shapes differ)"
            )
        backbone.load_state_dict(state)
    else:
        raise AvisCheckpointError(f"{printable(path)} is neither a model folder nor a .safetensors file")


def build_model(args: argparse.Namespace) -> tuple[AvisForAudioVisualInstanceSegmentation, AvisProcessor]:
    """The model to train and its processor: a saved AVISM with its own, or a new one (random head, the given
    backbone weights) with the processor the original used for its backbone. `--eval-short-edge` sets its test
    size."""
    if args.model:
        model = load_model(args.model)
        processor = load_processor(args.model, model.config)
    else:
        config = load_config_file(args.config) if args.config else AvisConfig.from_preset(args.preset)
        processor = processor_for_model(args.config or args.preset, config)
        model = AvisForAudioVisualInstanceSegmentation(config)
        if args.backbone_weights:
            load_backbone_weights(model, args.backbone_weights)
    if args.eval_short_edge:
        processor.image_processor.shortest_edge = args.eval_short_edge
    return model, processor


def freeze(model: AvisForAudioVisualInstanceSegmentation, parts: list[str]) -> None:
    """Keeps the weights of these parts of the model (PARTS) as they are: the optimizer leaves them out."""
    for part in parts:
        module = getattr(model.model, part)
        if module is None:
            raise AvisUsageError(f"--freeze {part}: this model has no {part.replace('_', ' ')}")
        module.requires_grad_(False)


def class_names(config: AvisConfig) -> list[str]:
    return [config.id2label[index] for index in range(len(config.id2label))]


def resolve_steps(args: argparse.Namespace, steps_per_epoch: int) -> None:
    """Sets the recipe's defaults that follow from the data's size (see the module docstring)."""
    if args.max_train_steps is None:
        args.max_train_steps = EPOCHS * steps_per_epoch
    if args.lr_steps is None:
        args.lr_steps = [round(DECAY_AT * args.max_train_steps)]
    every = max(1, args.max_train_steps // EVALUATIONS)
    args.checkpointing_steps = every if args.checkpointing_steps is None else args.checkpointing_steps
    args.eval_steps = every if args.eval_steps is None else args.eval_steps


def latest_checkpoint(output_dir: Path) -> Path:
    """The complete checkpoint of the highest step under `output_dir/checkpoints`."""
    complete = sorted((output_dir / "checkpoints").glob(f"step_*/{PROGRESS_FILE}"))
    if not complete:
        raise AvisCheckpointError(f"no complete checkpoint under {printable(output_dir / 'checkpoints')}")
    return complete[-1].parent


def save_checkpoint(accelerator: Accelerator, output_dir: Path, progress: dict) -> Path:
    """Model, optimizer, scheduler, gradient scaler and every process's RNG states, then the progress JSON."""
    folder = output_dir / "checkpoints" / f"step_{progress['step']:08d}"
    accelerator.save_state(folder)
    if accelerator.is_main_process:
        write_text_atomically(folder / PROGRESS_FILE, json.dumps(progress, indent=1))
    accelerator.wait_for_everyone()
    return folder


def checkpoint_to_resume(name: str | None, output_dir: Path) -> Path | None:
    """The checkpoint folder `--resume-from-checkpoint` names ('latest': the last complete one in `output_dir`),
    its progress file checked."""
    if name is None:
        return None
    folder = latest_checkpoint(output_dir) if name == "latest" else Path(name)
    read_progress(folder)
    return folder


def read_progress(folder: Path) -> dict:
    """The progress file of a complete checkpoint, found to hold the step, the data position and the layout."""
    path = folder / PROGRESS_FILE
    if not path.is_file():
        raise AvisCheckpointError(
            f"{printable(folder)}: not a complete training checkpoint (it has no {PROGRESS_FILE})"
        )
    try:
        progress = read_json(path, MAX_CONFIG_BYTES)
    except InvalidInputFile as error:
        raise AvisCheckpointError(f"{printable(path)}: {error}") from None
    counters = ("step", "epoch", "batches_in_epoch")
    if not (
        isinstance(progress, dict)
        and all(PROGRESS_COUNTER.admits(progress.get(key)) for key in counters)
        and isinstance(progress.get("layout"), dict)
    ):
        raise AvisCheckpointError(
            f"{printable(path)}: not a training checkpoint's progress ({', '.join(counters)} counted from 0, and a layout)"
        )
    return progress


def load_checkpoint(accelerator: Accelerator, folder: Path, layout: dict) -> dict:
    """Restore a checkpoint saved by `save_checkpoint`; its data position must mean the same in this run."""
    progress = read_progress(folder)
    if progress["layout"] != layout:
        raise AvisCheckpointError(
            f"{printable(folder)} was saved with {progress['layout']}; resume with the same processes and batch sizes"
        )
    accelerator.load_state(folder)
    return progress


# The weighted loss terms, summed over decoder layers: frame-level (class, mask, dice), clip-level, similarity.
LOSS_GROUPS = ("loss", "loss_ce", "loss_mask", "loss_dice", "loss_avism_ce", "loss_avism_mask", "loss_avism_dice",
               "loss_clip_sim")  # fmt: skip


def loss_terms(loss: torch.Tensor, loss_dict: dict[str, torch.Tensor]) -> torch.Tensor:
    """(len(LOSS_GROUPS),) detached: the total, then each term summed over its decoder layers (`loss_ce_0`, ...)."""
    terms = torch.zeros(len(LOSS_GROUPS), device=loss.device)
    terms[0] = loss.detach()
    for key, value in loss_dict.items():
        terms[LOSS_GROUPS.index(re.sub(r"_\d+$", "", key))] += value.detach().float()
    return terms


def format_record(record: dict, max_steps: int) -> str:
    losses = " ".join(f"{key.removeprefix('loss_')} {record[key]:.4f}" for key in LOSS_GROUPS[1:])
    return (
        f"step {record['step']}/{max_steps} | loss {record['loss']:.4f} | {losses} | lr {record['lr']:.3g} | "
        f"grad_norm {record['grad_norm']:.4g} | {record['seconds']:.2f} s"
    )


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def plan(args: argparse.Namespace, model, train_dataset: AvisegClipDataset, eval_dataset, start: list[str]) -> str:
    """What the run will do, in a few lines: data, classes, steps and clips, evaluation, where the results go."""
    videos = train_dataset.videos
    frames = sum(video.num_frames for video in videos)
    names = class_names(model.config)
    known = [name for name in names if name in start]
    new = [name for name in names if name not in start]
    epochs = args.max_train_steps * args.batch_size * args.gradient_accumulation_steps / len(videos)
    lines = [
        f"plan: {args.model or args.config or args.preset} on {printable(annotations_path(args.data, args.train_split))}: "
        f"{len(videos)} annotated videos, {frames} annotated frames",
        f"  classes: {', '.join(known) or 'none'} (known)"
        + (f", {', '.join(new)} (new: rows of the class heads that start untrained)" if new else ""),
        f"  {args.max_train_steps} steps of {args.batch_size * args.gradient_accumulation_steps} clips of "
        f"{args.num_frames} frames ({epochs:.0f} passes over the videos), shortest edge "
        f"{'/'.join(map(str, args.min_sizes))}, learning rate {args.learning_rate:g}"
        + (f" (x{args.lr_gamma:g} from step {', '.join(map(str, args.lr_steps))})" if args.lr_steps else ""),
        f"  frozen: {', '.join(args.freeze) or 'nothing'} (--freeze)",
    ]
    if eval_dataset is not None:
        every = f"every {args.eval_steps} steps and " if args.eval_steps else ""
        lines.append(
            f"  evaluation on {printable(annotations_path(args.data, args.eval_split))} "
            f"({len(eval_dataset)} annotated videos) {every}at the end; the best by {args.best_metric} kept in "
            f"{printable(Path(args.output_dir) / 'best')}"
        )
    lines.append(f"  model written to {printable(args.output_dir)}; the time it takes is measured on the first steps")
    return "\n".join(lines)


def metrics_by_threshold(results: list[dict], ground_truth: Path) -> dict[float, dict]:
    """The metrics of the results scoring above each of THRESHOLDS."""
    return {
        threshold: evaluate_predictions(ground_truth, [entry for entry in results if entry["score"] > threshold])
        for threshold in THRESHOLDS
    }


def best_score(metrics: dict, best_metric: str) -> float:
    if best_metric == "mean":
        return sum(metrics[key] for key in ("FSLA", "HOTA", "mAP")) / 3
    return metrics[best_metric]


def evaluate(
    accelerator: Accelerator,
    model,
    processor: AvisProcessor,
    eval_dataset: SeededDataset,
    args: argparse.Namespace,
    step: int,
    best: dict,
) -> None:
    """Benchmark metrics and the validation loss on the evaluation split, at the score threshold that is best there
    (`--best-metric`), which the processor keeps: printed, logged, and written with the results under eval/; a
    better model than `best`'s is written to OUTPUT_DIR/best."""
    model = accelerator.unwrap_model(model)
    loss = validation_loss(accelerator, model, processor, eval_dataset)
    processor.score_threshold = 0.0
    _, results = evaluate_model(model, processor, args.data, args.eval_split, accelerator)
    if accelerator.is_main_process:
        by_threshold = metrics_by_threshold(results, annotations_path(args.data, args.eval_split))
        threshold = max(THRESHOLDS, key=lambda t: best_score(by_threshold[t], args.best_metric))
        processor.score_threshold = threshold
        results = [entry for entry in results if entry["score"] > threshold]
        metrics = {"loss": loss, "threshold": threshold, **by_threshold[threshold]}
        folder = Path(args.output_dir) / "eval" / f"step_{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomically(folder / "results.json", json.dumps(results))
        write_text_atomically(folder / "metrics.json", json.dumps(metrics, indent=1))
        accelerator.print(f"evaluation on {args.eval_split} at step {step}:\n{format_metrics_table(metrics)}")
        accelerator.log({f"eval/{key}": value for key, value in metrics.items()}, step=step)
        score = best_score(metrics, args.best_metric)
        if not best or score > best["score"]:  # NaN (no frame of a kind) never counts as better
            best.update(step=step, score=score)
            folder = Path(args.output_dir) / "best"
            shutil.rmtree(folder, ignore_errors=True)
            with atomic_folder(folder) as written:  # never half a model, should the run stop here
                write_model(written, model, processor, args, {"step": step, **metrics})
            accelerator.print(
                f"best so far ({args.best_metric} {score:.2f}): written to {Path(args.output_dir) / 'best'}"
            )
    accelerator.wait_for_everyone()


def write_model(folder: Path, model, processor: AvisProcessor, args: argparse.Namespace, metrics: dict | None) -> None:
    """The model folder (`save_model_folder`) with a model card saying how it was trained, and its metrics."""
    save_model_folder(folder, model, processor)
    names = class_names(model.config)
    card = [
        f"# AVISM fine-tuned on {printable(annotations_path(args.data, args.train_split).name)}",
        "",
        f"An AVISM for audio-visual instance segmentation of {len(names)} classes ({', '.join(names)}), trained by "
        f"`python -m training.train` from {args.model or args.config or args.preset} for {args.max_train_steps} steps.",
    ]
    if metrics is not None:
        card += [
            "",
            f"Evaluated on {args.eval_split} at step {metrics['step']}:",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        card += [f"| {key} | {metrics[key]:.2f} |" for key in ("FSLA", "HOTA", "mAP")]
        write_text_atomically(folder / "metrics.json", json.dumps(metrics, indent=1))
    write_text_atomically(folder / "README.md", "\n".join(card) + "\n")


def validation_loss(
    accelerator: Accelerator,
    model: AvisForAudioVisualInstanceSegmentation,
    processor: AvisProcessor,
    dataset: SeededDataset,
) -> float:
    """The mean loss, in eval mode, over one clip of each annotated video of the evaluation split (`dataset`): the
    same clips (drawn from the seed) at every evaluation, and torch's generators left as they were (the loss samples
    points), so that evaluating changes nothing of the training run."""
    was_training = model.training
    model.eval()
    losses = []
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with (
        accelerator.split_between_processes(list(range(len(dataset)))) as shard,
        torch.random.fork_rng(devices=devices),
        torch.no_grad(),
        accelerator.autocast(),
    ):
        for index in shard:
            batch = collate_clips([dataset[(0, index)]], processor.image_processor)
            inputs = {key: value.to(accelerator.device) for key, value in model_inputs(batch, model.config).items()}
            labels = {
                key: [value.to(accelerator.device) for value in batch[key]] for key in ("mask_labels", "class_labels")
            }
            losses.append(model(**inputs, **labels).loss.item())
    model.train(was_training)
    losses = gather_object(losses)
    return sum(losses) / max(len(losses), 1)


# After this many steps of a run, the time it will take is said (the first step is slower: allocations, warm-up).
ESTIMATE_AFTER = 5


class RunClock:
    """The time a run has taken and will take: steps (the first left out of the rate) and evaluations."""

    def __init__(self, args: argparse.Namespace, step: int):
        self.args, self.step = args, step
        self.start = time.perf_counter()
        self.step_seconds: list[float] = []
        self.evaluation_seconds: list[float] = []

    def stepped(self, seconds: float) -> None:
        self.step += 1
        self.step_seconds.append(seconds)

    @contextlib.contextmanager
    def evaluating(self):
        start = time.perf_counter()
        yield
        self.evaluation_seconds.append(time.perf_counter() - start)

    def per_step(self) -> float:
        timed = self.step_seconds[1:] or self.step_seconds
        return sum(timed) / len(timed)

    def left(self) -> str:
        steps = self.args.max_train_steps - self.step
        seconds = steps * self.per_step()
        if self.args.eval_split:
            evaluations = 1 + (steps - 1) // self.args.eval_steps if self.args.eval_steps and steps else 1
            each = sum(self.evaluation_seconds) / len(self.evaluation_seconds) if self.evaluation_seconds else None
            if each is not None:
                seconds += evaluations * each
            elif evaluations:
                return f"{duration(seconds)} to go, and {evaluations} evaluations"
        return f"{duration(seconds)} to go"

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def read_best(output_dir: Path, best_metric: str) -> dict:
    """The best evaluated model's step and score so far, as a resumed run finds them in OUTPUT_DIR/best ({} when
    there is none)."""
    path = output_dir / "best" / "metrics.json"
    if not path.is_file():
        return {}
    try:
        metrics = read_json(path, MAX_CONFIG_BYTES)
        return {"step": metrics["step"], "score": best_score(metrics, best_metric)}
    except InvalidInputFile as error:
        raise AvisCheckpointError(f"{printable(path)}: {error}") from None
    except (TypeError, KeyError):
        raise AvisCheckpointError(f"{printable(path)}: not the metrics of an evaluated model") from None


def check_output_dir(args: argparse.Namespace) -> None:
    """Before anything is loaded: --output-dir is a folder (or can be made) where files can be written, and it holds
    none of the run's inputs (the data's annotations and frames, the model folder or config, the backbone weights)."""
    check_folder_to_write_in(args.output_dir)
    splits = [args.train_split, *([args.eval_split] if args.eval_split else [])]
    annotations = [annotations_path(args.data, split) for split in splits]
    inputs = [path for annotation in annotations for path in (annotation, annotation.with_suffix(""))]
    inputs += [*(Path(args.model).glob("*") if args.model else []), args.config, args.backbone_weights]
    check_outputs_apart([("--output-dir", args.output_dir)], [path for path in inputs if path])


def start_record(accelerator: Accelerator, output_dir: Path, args: argparse.Namespace) -> None:
    """Makes the output folder with the run's arguments in it, and starts Accelerate's trackers there: once the first
    step has worked, so that a run that cannot start (bad data, a model that does not fit) leaves nothing behind. A
    run that fails later keeps its record and its checkpoints, which a resume needs."""
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(output_dir / "training_args.json", json.dumps(vars(args), indent=1))
    hyperparameters = {key: value for key, value in vars(args).items() if isinstance(value, int | float | str)}
    accelerator.init_trackers("avis", config=hyperparameters)


def main(argv: list[str] | None = None) -> int:
    """The command line: trains, and returns the exit status (a bad dataset, model or checkpoint: one line, 2)."""

    def run() -> None:
        args = parse_args(argv)
        configure_runtime(args.threads)
        run_training(args)

    return run_command(run)


def train(argv: list[str] | None = None) -> list[dict]:
    """Runs the training; returns the log of every optimizer step of this run (step, loss terms, lr, ...)."""
    return run_training(parse_args(argv))


def run_training(args: argparse.Namespace) -> list[dict]:
    output_dir = Path(args.output_dir)
    check_output_dir(args)
    resume = checkpoint_to_resume(args.resume_from_checkpoint, output_dir)  # checked before anything is written
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=output_dir,
    )
    set_seed(args.seed, device_specific=True)

    # model (first: the data needs its processor and its classes)
    model, processor = build_model(args)
    start_classes = class_names(model.config)
    if args.labels:
        model.set_labels(dict(enumerate(read_labels(args.labels))))
    freeze(model, args.freeze)
    config = model.config
    labels = class_names(config)

    # data: the order and every clip's random draws follow from the seed (training/sampling.py); frames and sound
    # read through the model's processor
    args.min_sizes = args.min_sizes or [processor.image_processor.shortest_edge]
    args.max_size = args.max_size or processor.image_processor.longest_edge
    augmentation = ClipAugmentation(
        min_sizes=tuple(args.min_sizes),
        max_size=args.max_size,
        crop_probability=args.crop_probability,
        flip_probability=args.flip_probability,
    )
    audio_input = audio_input_name(config)
    train_dataset = AvisegClipDataset(
        args.data, args.train_split, args.num_frames, args.frame_range, augmentation, audio_input, labels, processor
    )
    if not len(train_dataset):
        raise AvisDatasetError(
            f"{printable(annotations_path(args.data, args.train_split))} has no annotated video to train on"
        )
    eval_dataset = None
    if args.eval_split:  # read now, not once the training is done
        eval_dataset = SeededDataset(
            AvisegClipDataset(
                args.data, args.eval_split, args.num_frames, args.frame_range, None, audio_input, labels, processor
            ),
            args.seed,
        )
    train_dataloader = DataLoader(
        SeededDataset(train_dataset, args.seed),
        batch_size=args.batch_size,
        sampler=EpochOrderSampler(len(train_dataset), args.seed),
        collate_fn=partial(collate_clips, image_processor=processor.image_processor),
        num_workers=args.num_workers,
        # its own generator: creating an iterator must not draw from torch's global one (resumes would diverge)
        generator=torch.Generator().manual_seed(args.seed),
    )
    batches_per_process = math.ceil(math.ceil(len(train_dataset) / args.batch_size) / accelerator.num_processes)
    resolve_steps(args, math.ceil(batches_per_process / args.gradient_accumulation_steps))
    accelerator.print(plan(args, model, train_dataset, eval_dataset, start_classes))

    # optimizer and schedule
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.learning_rate, args.weight_decay, args.backbone_multiplier),
        lr=args.learning_rate,
    )
    lr_scheduler = LambdaLR(
        optimizer,
        partial(
            warmup_multistep_factor,
            warmup_iters=args.warmup_iters,
            warmup_factor=args.warmup_factor,
            milestones=tuple(args.lr_steps),
            gamma=args.lr_gamma,
        ),
    )
    model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    # stepped once per optimizer step by the loop (the recipe counts iterations), saved with the checkpoints
    accelerator.register_for_checkpointing(lr_scheduler)

    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)

    # checkpoint to resume from
    layout = {
        "num_processes": accelerator.num_processes,
        "batch_size": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }
    progress = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "layout": layout}
    if resume is not None:
        progress = load_checkpoint(accelerator, resume, layout)
        accelerator.print(f"resumed from {resume} at step {progress['step']}")

    # loop
    history = []
    step, steps_this_run = progress["step"], 0
    stop = step >= args.max_train_steps
    resume_epoch, resume_batches = progress["epoch"], progress["batches_in_epoch"]
    best = read_best(output_dir, args.best_metric) if resume is not None else {}
    clock = RunClock(args, step)
    model.train()
    tick = time.perf_counter()
    for epoch in range(resume_epoch, num_epochs):
        if stop:
            break
        train_dataloader.set_epoch(epoch)
        skipped = resume_batches if epoch == resume_epoch else 0
        batches = accelerator.skip_first_batches(train_dataloader, skipped) if skipped else train_dataloader
        loss_sums, micro_batches = None, 0
        for batch_index, batch in enumerate(batches, start=skipped + 1):
            with accelerator.accumulate(model):
                outputs = model(
                    **model_inputs(batch, config), mask_labels=batch["mask_labels"], class_labels=batch["class_labels"]
                )
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.clip_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            terms = loss_terms(outputs.loss, outputs.loss_dict)
            loss_sums = terms if loss_sums is None else loss_sums + terms
            micro_batches += 1
            if not accelerator.sync_gradients:
                continue

            lr = max(lr_scheduler.get_last_lr())  # the head's; the backbone's is x backbone_multiplier
            lr_scheduler.step()
            step += 1
            steps_this_run += 1
            if steps_this_run == 1:
                start_record(accelerator, output_dir, args)
            means = accelerator.reduce(loss_sums / micro_batches, reduction="mean").tolist()
            loss_sums, micro_batches = None, 0
            now = time.perf_counter()
            record = {"step": step, "epoch": epoch, **dict(zip(LOSS_GROUPS, means, strict=True))}
            record.update(lr=lr, grad_norm=float(grad_norm), seconds=now - tick)
            tick = now
            history.append(record)
            clock.stepped(record["seconds"])
            if step % args.logging_steps == 0 or step == 1:
                accelerator.print(f"{format_record(record, args.max_train_steps)} | {clock.left()}")
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            elif steps_this_run == ESTIMATE_AFTER:
                accelerator.print(f"estimated: {clock.left()} ({clock.per_step():.2f} s a step so far)")

            at_end = batch_index == len(train_dataloader)
            progress = {
                "step": step,
                "epoch": epoch + 1 if at_end else epoch,
                "batches_in_epoch": 0 if at_end else batch_index,
                "layout": layout,
            }
            finished = step >= args.max_train_steps
            if args.checkpointing_steps and (step % args.checkpointing_steps == 0 or finished):
                save_checkpoint(accelerator, output_dir, progress)
            if args.eval_split and args.eval_steps and step % args.eval_steps == 0 and not finished:
                with clock.evaluating():
                    evaluate(accelerator, model, processor, eval_dataset, args, step, best)
                tick = time.perf_counter()
            if finished or steps_this_run == args.max_steps_this_run:
                stop = True
                break
    if step >= args.max_train_steps:
        if not steps_this_run:  # resumed from the last step
            start_record(accelerator, output_dir, args)
        # evaluate and save the trained model (and the best evaluated one), then upload it
        if args.eval_split:
            evaluate(accelerator, model, processor, eval_dataset, args, step, best)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_model(output_dir, accelerator.unwrap_model(model), processor, args, None)
            accelerator.print(f"wrote {output_dir} (step {step}) in {duration(clock.elapsed())}")
            if args.push_to_hub:
                uploaded = output_dir / "best" if best else output_dir
                push_folder_to_hub(uploaded, args.push_to_hub)
                accelerator.print(f"uploaded {uploaded} to the Hub as {args.push_to_hub}")
    # Not accelerator.end_training(): it destroys the process group while the DDP model still holds it, and freeing
    # the model then can deadlock gloo's destructor (torch 2.13, seen with 2 CPU processes).
    for tracker in accelerator.trackers:
        tracker.finish()
    return history


if __name__ == "__main__":
    sys.exit(main())
