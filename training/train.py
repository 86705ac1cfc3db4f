"""Train or fine-tune AVISM on AVISeg with Accelerate, with the original's recipe (configs/avism/*.yaml).

    python -m training.train --data ROOT --output-dir OUT --model CONVERTED_DIR            # fine-tune
    python -m training.train --data ROOT --output-dir OUT --preset r50_imagenet \\
        --backbone-weights RESNET_DIR                                                      # from a backbone
    accelerate launch -m training.train ...                       # any number of GPUs and nodes
    python -m training.train ... --resume-from-checkpoint latest  # continue exactly where the last checkpoint was

The recipe: AdamW (lr 1e-4, weight decay 0.05; backbone lr x0.1; no decay for norms, embeddings and Swin's
position tables), the whole model's gradient clipped to L2 norm 0.01, linear warm-up then step decay (x0.1), clips
of 5 frames within 20 frames of a random one, random resize / moving crop / flip, 2 clips per step.
"""

import argparse
import json
import math
import re
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

from modeling_avis.config_ranges import whole
from modeling_avis.configuration_avis import PRESETS, AvisConfig
from modeling_avis.entry_point import (
    CPUS,
    MAX_CLIPS,
    OneLineArgumentParser,
    data_workers,
    decay_factor,
    fraction,
    image_size,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
    seed,
    whole_number_up_to,
)
from modeling_avis.errors import AvisCheckpointError, AvisDatasetError, one_line, printable
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
from modeling_avis.outputs import check_folder_to_write_in, check_outputs_apart, write_text_atomically
from modeling_avis.pipeline_avis import save_model_folder
from modeling_avis.processing_avis import AvisProcessor
from modeling_avis.runtime import configure_runtime

from .augmentation import ClipAugmentation
from .data import AvisegClipDataset, audio_input_name, collate_clips
from .evaluate_model import evaluate_model
from .evaluation import format_metrics_table
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

    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, help="AVISeg root: <root>/<split>.json, <root>/<split>/JPEGImages, ...")
    data.add_argument("--train-split", default="train")
    data.add_argument(
        "--num-frames",
        type=whole_number_up_to(MAX_CLIP_FRAMES, "frames"),
        default=5,
        help="frames per training clip (INPUT.SAMPLING_FRAME_NUM)",
    )
    data.add_argument("--frame-range", type=non_negative_int, default=20, help="INPUT.SAMPLING_FRAME_RANGE")
    recipe = ClipAugmentation()
    data.add_argument(
        "--min-sizes", type=image_size, nargs="+", default=list(recipe.min_sizes), help="INPUT.MIN_SIZE_TRAIN"
    )
    data.add_argument("--max-size", type=image_size, default=recipe.max_size, help="INPUT.MAX_SIZE_TRAIN")
    data.add_argument(
        "--crop-probability", type=fraction, default=recipe.crop_probability, help="0 turns the crop off"
    )
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
        "--clip-grad-norm", type=positive_float, default=0.01, help="L2 norm of the whole model's gradient"
    )
    solver.add_argument(
        "--max-train-steps", type=positive_int, default=48000, help="optimizer steps (SOLVER.MAX_ITER)"
    )
    solver.add_argument(
        "--lr-steps", type=non_negative_int, nargs="*", default=[32000], help="decay milestones (SOLVER.STEPS)"
    )
    solver.add_argument("--lr-gamma", type=decay_factor, default=0.1, help="in (0, 1]")
    solver.add_argument("--warmup-iters", type=non_negative_int, default=10)
    solver.add_argument(
        "--warmup-factor", type=fraction, default=1.0, help="in [0, 1]; the recipe's 1.0 makes warm-up a no-op"
    )
    solver.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="default: accelerate's config")
    solver.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")
    solver.add_argument("--seed", type=seed, default=0)

    run = parser.add_argument_group("checkpoints, logs and evaluation")
    run.add_argument("--output-dir", required=True)
    run.add_argument("--checkpointing-steps", type=non_negative_int, default=5000, help="0: no checkpoints")
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
    run.add_argument("--eval-split", help="evaluate on this split every --eval-steps and at the end")
    run.add_argument("--eval-steps", type=non_negative_int, default=0, help="0: only at the end")
    run.add_argument("--eval-short-edge", type=image_size, help="test size (default: the original's for the backbone)")
    args = parser.parse_args(argv)
    if args.backbone_weights and args.model:
        parser.error("--backbone-weights starts a new model; a --model folder already has its backbone")
    return args


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
    backbone weights) with the processor the original used for its backbone. `--eval-short-edge` sets its test size."""
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


def evaluate(
    accelerator: Accelerator,
    model,
    processor: AvisProcessor,
    eval_dataset: SeededDataset,
    args: argparse.Namespace,
    step: int,
) -> None:
    """Benchmark metrics and the validation loss on the evaluation split: printed, logged, and written with the
    results under eval/."""
    model = accelerator.unwrap_model(model)
    loss = validation_loss(accelerator, model, processor, eval_dataset)
    metrics, results = evaluate_model(model, processor, args.data, args.eval_split, accelerator)
    if accelerator.is_main_process:
        metrics = {"loss": loss, **metrics}
        folder = Path(args.output_dir) / "eval" / f"step_{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomically(folder / "results.json", json.dumps(results))
        write_text_atomically(folder / "metrics.json", json.dumps(metrics, indent=1))
        accelerator.print(f"evaluation on {args.eval_split} at step {step}:\n{format_metrics_table(metrics)}")
        accelerator.log({f"eval/{key}": value for key, value in metrics.items()}, step=step)
    accelerator.wait_for_everyone()


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


def check_output_dir(args: argparse.Namespace) -> None:
    """Before anything is loaded: --output-dir is a folder (or can be made) where files can be written, and it holds
    none of the run's inputs (the data's splits, the model folder or config, the backbone weights)."""
    check_folder_to_write_in(args.output_dir)
    data = Path(args.data)
    splits = [args.train_split, *([args.eval_split] if args.eval_split else [])]
    inputs = [path for split in splits for path in (data / f"{split}.json", data / split)]
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
        configure_runtime()
        train(argv)

    return run_command(run)


def train(argv: list[str] | None = None) -> list[dict]:
    """Runs the training; returns the log of every optimizer step of this run (step, loss terms, lr, ...)."""
    args = parse_args(argv)
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

    # model (first: the data needs its processor)
    model, processor = build_model(args)
    config = model.config

    # data: the order and every clip's random draws follow from the seed (training/sampling.py)
    augmentation = ClipAugmentation(
        min_sizes=tuple(args.min_sizes),
        max_size=args.max_size,
        crop_probability=args.crop_probability,
        flip_probability=args.flip_probability,
    )
    train_dataset = AvisegClipDataset(
        args.data, args.train_split, args.num_frames, args.frame_range, augmentation, audio_input_name(config)
    )
    if not len(train_dataset):
        raise AvisDatasetError(f"{printable(args.data)}: {args.train_split}.json has no annotated video to train on")
    eval_dataset = None
    if args.eval_split:  # read now, not once the training is done
        eval_dataset = SeededDataset(
            AvisegClipDataset(
                args.data, args.eval_split, args.num_frames, args.frame_range, audio_input=audio_input_name(config)
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
            if step % args.logging_steps == 0 or step == 1:
                accelerator.print(format_record(record, args.max_train_steps))
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)

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
                evaluate(accelerator, model, processor, eval_dataset, args, step)
            if finished or steps_this_run == args.max_steps_this_run:
                stop = True
                break
    if step >= args.max_train_steps:
        if not steps_this_run:  # resumed from the last step
            start_record(accelerator, output_dir, args)
        # evaluate and save the trained model
        if args.eval_split:
            evaluate(accelerator, model, processor, eval_dataset, args, step)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_model_folder(output_dir, accelerator.unwrap_model(model), processor)
    # Not accelerator.end_training(): it destroys the process group while the DDP model still holds it, and freeing
    # the model then can deadlock gloo's destructor (torch 2.13, seen with 2 CPU processes).
    for tracker in accelerator.trackers:
        tracker.finish()
    return history


if __name__ == "__main__":
    sys.exit(main())
