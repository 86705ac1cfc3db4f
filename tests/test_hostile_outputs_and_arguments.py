"""Every entry point on outputs that would destroy or lose files, and on arguments that argparse takes but that
cannot work: each is refused in one line with exit status 2 before any model is loaded, nothing of the user's is
touched, and a valid output still gets written (a name at the file system's limit, a name with a newline).

The user's files (videos, frames, datasets, models) sit under `<tmp>/out`, where `run_case` checks that nothing
changed. Most predict cases name a model that is not there: an output refused with its own message proves that it
was checked before the model was looked for.
"""

import json
import os
import shutil
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from modeling_avis import AvisImageProcessor, AvisModel, AvisProcessor, save_model_folder
from modeling_avis.__main__ import main as predict_main
from modeling_avis.entry_point import CPUS
from modeling_avis.outputs import atomic_file
from training.build_default_model import DEFAULT_MODEL

from .conftest import tiny_config
from .entry_cases import Case, fresh_accelerate_state, out, run_case  # noqa: F401 (the fixture applies here)
from .fixture_data import ORIGINAL
from .synthetic_aviseg import EVAL_VIDEOS, TRAIN_VIDEOS, write_split
from .synthetic_media import write_video, write_wav

EXAMPLES = Path(__file__).parents[1] / "app" / "examples"
TWENTY_DIGITS = "9" * 20


# --- makers of the user's files ----------------------------------------------------------------------------------


def clip(folder: Path, name: str = "clip.mp4") -> Path:
    """A 2-second 64x48 video with sound, among the user's files."""
    return write_video(out(folder) / name, num_frames=8, fps=4, size=(64, 48), audio_seconds=2.0)


def videos(*names: str) -> Callable[[Path], Path]:
    """A folder of the user's videos."""

    def make(folder: Path) -> Path:
        (out(folder) / "videos").mkdir()
        for name in names:
            clip(folder, f"videos/{name}")
        return out(folder) / "videos"

    return make


def frame_folder(folder: Path) -> Path:
    """An AVISeg split's frame folder `split/JPEGImages/v/` with its sound in `split/WAVAudios/v.wav`."""
    frames = out(folder) / "split" / "JPEGImages" / "v"
    frames.mkdir(parents=True)
    for index in range(3):
        Image.fromarray(np.full((48, 64, 3), 40 * index, np.uint8)).save(frames / f"{index:05d}.jpg")
    (frames.parents[1] / "WAVAudios").mkdir()
    write_wav(frames.parents[1] / "WAVAudios" / "v.wav", 3.0)
    return frames


def fifo(name: str) -> Callable[[Path], None]:
    return lambda folder: os.mkfifo(out(folder) / name)


def character_device(name: str) -> Callable[[Path], None]:
    """A twin of /dev/null among the user's files (as root; otherwise a link to /dev/null, which only root could
    replace)."""

    def make(folder: Path) -> None:
        try:
            os.mknod(out(folder) / name, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            os.symlink("/dev/null", out(folder) / name)

    return make


def unix_socket(name: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(out(folder) / name))
        server.close()  # the socket file stays

    return make


def link(name: str, target: str) -> Callable[[Path], None]:
    return lambda folder: os.symlink(out(folder) / target, out(folder) / name)


def hard_link(name: str, target: str) -> Callable[[Path], None]:
    return lambda folder: os.link(out(folder) / target, out(folder) / name)


def model_copy(folder: Path) -> Path:
    shutil.copytree(DEFAULT_MODEL, out(folder) / "model")
    return out(folder) / "model"


# --- the command line's predict ----------------------------------------------------------------------------------


def predicting(
    *options: str,
    video: Callable[[Path], Path] = clip,
    prepare: Callable[[Path], None] = lambda folder: None,
    model: Callable[[Path], Path] = lambda folder: folder / "nowhere",
) -> Callable[[Path], list[str]]:
    """predict on `video` with `options` ("{out}" is the folder of the user's files), after `prepare`."""

    def make(folder: Path) -> list[str]:
        source = video(folder)
        prepare(folder)
        filled = [option.format(out=out(folder)) for option in options]
        return ["predict", str(source), "--model", str(model(folder)), *filled]

    return make


def written_with_long_names(folder: Path, stdout: str, stderr: str) -> None:
    """A results JSON and an overlay whose names are at the file system's limit (255 bytes), both whole."""
    assert isinstance(json.loads((out(folder) / f"{'r' * 250}.json").read_text()), list)
    with av.open(str(out(folder) / f"{'o' * 251}.mp4")) as overlay:
        assert len(list(overlay.decode(video=0))) == 8
    assert stdout.startswith("clip.mp4: ") and " in 2 frames" in stdout


def newline_name_is_escaped(folder: Path, stdout: str, stderr: str) -> None:
    first = stdout.splitlines()[0]
    assert first.startswith("two\\nlines.mp4: ") and first.endswith(" in 2 frames")
    assert isinstance(json.loads((out(folder) / "results.json").read_text()), list)


def broken(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (out(folder) / name).write_bytes(b"\x00\x01not a video" * 100)
        return out(folder) / name

    return make


PREDICT_OUTPUT_CASES = {
    "json_is_a_fifo": Case(
        "predict", predicting("--json", "{out}/pipe", prepare=fifo("pipe")), "pipe: is a FIFO, not a file"
    ),
    "out_is_a_fifo": Case(
        "predict", predicting("--out", "{out}/pipe.mp4", prepare=fifo("pipe.mp4")), "pipe.mp4: is a FIFO, not a file"
    ),
    "json_is_a_character_device": Case(
        "predict",
        predicting("--json", "{out}/null", prepare=character_device("null")),
        "null: is a character device, not a file",
    ),
    "out_is_dev_null": Case(
        "predict", predicting("--out", "/dev/null"), "/dev/null: is a character device, not a file"
    ),
    "json_is_a_socket": Case(
        "predict", predicting("--json", "{out}/s", prepare=unix_socket("s")), "s: is a socket, not a file"
    ),
    "json_is_a_link_to_a_fifo": Case(
        "predict",
        predicting("--json", "{out}/link.json", prepare=lambda f: (fifo("pipe")(f), link("link.json", "pipe")(f))),
        "link.json: is a FIFO, not a file",
    ),
    "json_is_a_link_to_a_folder": Case(
        "predict",
        predicting("--json", "{out}/link.json", prepare=lambda f: ((out(f) / "d").mkdir(), link("link.json", "d")(f))),
        "link.json: is a folder; give the name of the file to write",
    ),
    "json_in_proc": Case(
        "predict", predicting("--json", "/proc/results.json"), "/proc/results.json: no file can be made in /proc ("
    ),
    "json_in_sys": Case(
        "predict", predicting("--json", "/sys/results.json"), "/sys/results.json: no file can be made in /sys ("
    ),
    "json_under_a_file": Case(
        "predict",
        predicting("--json", "{out}/clip.mp4/results.json"),
        "clip.mp4/results.json: the folder to write it in does not exist",
    ),
    "json_name_over_the_limit": Case(
        "predict",
        predicting("--json", "{out}/" + "r" * 251 + ".json"),
        ": the name is 256 bytes long; the file system takes at most 255",
    ),
    "out_name_over_the_limit": Case(
        "predict",
        predicting("--out", "{out}/" + "o" * 296 + ".mp4"),
        ": the name is 300 bytes long; the file system takes at most 255",
    ),
    "json_name_over_the_limit_in_bytes": Case(  # 133 characters, 261 bytes
        "predict", predicting("--json", "{out}/" + "é" * 128 + ".json"), ": the name is 261 bytes long"
    ),
    "out_is_the_input_video": Case(
        "predict",
        predicting("--out", "{out}/clip.mp4"),
        "clip.mp4: --out would write over the input",
    ),
    "json_is_the_input_video": Case(
        "predict", predicting("--json", "{out}/clip.mp4"), "clip.mp4: --json would write over the input"
    ),
    "out_is_a_link_to_the_input": Case(
        "predict",
        predicting("--out", "{out}/link.mp4", prepare=link("link.mp4", "clip.mp4")),
        "link.mp4: --out would write over the input",
    ),
    "out_is_a_hard_link_to_the_input": Case(
        "predict",
        predicting("--out", "{out}/twin.mp4", prepare=hard_link("twin.mp4", "clip.mp4")),
        "twin.mp4: --out would write over the input",
    ),
    "json_is_the_input_by_another_path": Case(
        "predict",
        predicting("--json", "{out}/../out/./clip.mp4"),
        "out/../out/clip.mp4: --json would write over the input",
    ),
    "out_and_json_are_one_file": Case(
        "predict",
        predicting("--out", "{out}/both.mp4", "--json", "{out}/both.mp4"),
        "both.mp4: --json and --out would both be written there; give them different names",
    ),
    "json_is_a_file_of_the_model": Case(
        "predict",
        predicting("--json", "{out}/model/config.json", model=model_copy),
        "model/config.json: --json would write over the input",
    ),
    "json_is_a_frame_of_the_input": Case(
        "predict",
        predicting("--json", "{out}/split/JPEGImages/v/00001.jpg", video=frame_folder),
        "00001.jpg: --json would write over the input",
    ),
    "json_is_the_sound_of_a_frame_folder": Case(
        "predict",
        predicting("--json", "{out}/split/WAVAudios/v.wav", video=frame_folder),
        "v.wav: --json would write over the input",
    ),
    "json_with_a_newline_in_a_missing_folder": Case(
        "predict",
        predicting("--json", "{out}/no\nsuch/results.json"),
        "no\\nsuch/results.json: the folder to write it in does not exist",
    ),
}

FOLDER_OUTPUT_CASES = {
    "folder_json_is_one_of_the_videos": Case(
        "predict",
        predicting("--json", "{out}/videos/b.mp4", video=videos("a.mp4", "b.mp4")),
        "b.mp4: --json would write over the input",
    ),
    "folder_overlay_is_the_json": Case(
        "predict",
        predicting(
            "--out",
            "{out}/overlays",
            "--json",
            "{out}/overlays/a_avis.mp4",
            video=videos("a.mp4"),
            prepare=lambda f: (out(f) / "overlays").mkdir(),
        ),
        "a_avis.mp4: --json and the overlay of a.mp4 would both be written there",
    ),
    "folder_overlay_is_an_input_video": Case(
        "predict",
        predicting("--out", "{out}/videos", video=videos("a.mp4", "a_avis.mp4")),
        "a_avis.mp4: the overlay of a.mp4 would write over the input",
    ),
    "folder_two_videos_one_overlay": Case(
        "predict",
        predicting("--out", "{out}/overlays", video=videos("a.mkv", "a.mp4")),
        "a_avis.mp4: the overlay of a.mkv and the overlay of a.mp4 would both be written there",
    ),
    "folder_index_is_a_fifo": Case(
        "predict",
        predicting("--json", "{out}/results.json", video=videos("a.mp4"), prepare=fifo("results.videos.json")),
        "results.videos.json: is a FIFO, not a file",
    ),
    "folder_index_name_over_the_limit": Case(  # results: 250 bytes, its index: 257
        "predict",
        predicting("--json", "{out}/" + "r" * 245 + ".json", video=videos("a.mp4")),
        ".videos.json: the name is 257 bytes long",
    ),
    "folder_out_is_a_fifo": Case(
        "predict",
        predicting("--out", "{out}/pipe", video=videos("a.mp4"), prepare=fifo("pipe")),
        "pipe: is a FIFO, not a folder",
    ),
    "folder_out_under_a_file": Case(
        "predict",
        predicting("--out", "{out}/videos/a.mp4/overlays", video=videos("a.mp4")),
        "a.mp4 is a file, not a folder",
    ),
    "folder_overlay_is_a_fifo": Case(
        "predict",
        predicting(
            "--out",
            "{out}/overlays",
            video=videos("a.mp4"),
            prepare=lambda f: ((out(f) / "overlays").mkdir(), fifo("overlays/a_avis.mp4")(f)),
        ),
        "a_avis.mp4: is a FIFO, not a file",
    ),
    "folder_overlay_name_over_the_limit": Case(  # the video's name: 254 bytes, its overlay's: 259
        "predict",
        predicting("--out", "{out}/overlays", video=videos("v" * 250 + ".mp4")),
        "_avis.mp4: the name is 259 bytes long",
    ),
    "folder_out_in_proc": Case(
        "predict",
        predicting("--out", "/proc/overlays", video=videos("a.mp4")),
        "/proc/overlays: no file can be made in /proc (",
    ),
}

WRITTEN_CASES = {
    "names_at_the_limit_are_written": Case(
        "predict",
        predicting(
            "--json",
            "{out}/" + "r" * 250 + ".json",
            "--out",
            "{out}/" + "o" * 251 + ".mp4",
            model=lambda f: DEFAULT_MODEL,
        ),
        check=written_with_long_names,
    ),
    "a_video_named_with_a_newline": Case(
        "predict",
        predicting(
            "--json", "{out}/results.json", video=lambda f: clip(f, "two\nlines.mp4"), model=lambda f: DEFAULT_MODEL
        ),
        check=newline_name_is_escaped,
    ),
    "a_broken_video_named_with_a_newline": Case(
        "predict",
        predicting(video=broken("bad\nname.mp4"), model=lambda f: DEFAULT_MODEL),
        "error: bad\\nname.mp4: not a video FFmpeg can read",
    ),
    "a_broken_video_named_with_a_terminal_code": Case(
        "predict",
        predicting(video=broken("evil\x1b[2J.mp4"), model=lambda f: DEFAULT_MODEL),
        "error: evil\\x1b[2J.mp4: not a video FFmpeg can read",
    ),
}


# --- predict's arguments ------------------------------------------------------------------------------------------

PREDICT_ARGUMENT_CASES = {
    "device_cuda_99": Case("predict", predicting("--device", "cuda:99"), "error: argument --device: cuda:99: "),
    "device_bogus": Case(
        "predict", predicting("--device", "bogus"), "argument --device: bogus: no such device here (devices: cpu"
    ),
    "device_meta": Case(
        "predict", predicting("--device", "meta"), "argument --device: meta: no such device here (devices: cpu"
    ),
    "disk_budget_inf": Case(
        "predict",
        predicting("--disk-budget", "inf"),
        "argument --disk-budget: must be a number of GB from 0 to 1048576, not inf",
    ),
    "disk_budget_nan": Case(
        "predict",
        predicting("--disk-budget", "nan"),
        "argument --disk-budget: must be a number of GB from 0 to 1048576, not nan",
    ),
    "threads_of_twenty_digits": Case(
        "predict",
        predicting("--threads", TWENTY_DIGITS),
        f"argument --threads: must be a whole number from 1 to {CPUS} (the CPUs this process may use), not 9999",
    ),
    "threads_zero": Case("predict", predicting("--threads", "0"), f"must be a whole number from 1 to {CPUS}"),
    "disk_budget_of_1e300_gb": Case(
        "predict", predicting("--disk-budget", "1e300"), "argument --disk-budget: must be a number of GB from 0 to"
    ),
    "fps_inf": Case("predict", predicting("--fps", "inf"), "argument --fps: must be positive, not inf"),
    "threshold_nan": Case("predict", predicting("--threshold", "nan"), "argument --threshold: must be at least 0"),
    "no_command": Case("predict", lambda folder: [], "error: the following arguments are required: command (see "),
}
if not torch.cuda.is_available():
    PREDICT_ARGUMENT_CASES["device_cuda_without_cuda"] = Case(
        "predict", predicting("--device", "cuda"), "argument --device: cuda: CUDA is not available here (devices: cpu)"
    )


def evaluating(*extra: str) -> Callable[[Path], list[str]]:
    """training.evaluate_model of a tiny saved model on a tiny synthetic val split, both among the user's files."""

    def make(folder: Path) -> list[str]:
        root = out(folder) / "aviseg"
        write_split(root, "val", EVAL_VIDEOS)
        torch.manual_seed(0)
        model = AvisModel(tiny_config(id2label={0: "red", 1: "blue"}))
        save_model_folder(out(folder) / "model", model, AvisProcessor(AvisImageProcessor(shortest_edge=64)))
        return ["--model", str(out(folder) / "model"), "--data", str(root), "--split", "val",
                *(option.format(out=out(folder)) for option in extra)]  # fmt: skip

    return make


def scoring(*extra: str) -> Callable[[Path], list[str]]:
    """python -m training.evaluation of the solo example's ground truth against itself, copied among the user's files."""

    def make(folder: Path) -> list[str]:
        shutil.copy(EXAMPLES / "shapes_solo.json", out(folder) / "gt.json")
        (out(folder) / "pred.json").write_text("[]")
        return [str(out(folder) / "gt.json"), str(out(folder) / "pred.json"),
                *(option.format(out=out(folder)) for option in extra)]  # fmt: skip

    return make


# --- training -----------------------------------------------------------------------------------------------------


def training(*extra: str, prepare: Callable[[Path], None] = lambda root: None) -> Callable[[Path], list[str]]:
    """training.train on a tiny synthetic split with a tiny config, 1 step ("{out}" as in `predicting`)."""

    def make(folder: Path) -> list[str]:
        root = out(folder) / "aviseg"
        write_split(root, "train", TRAIN_VIDEOS)
        tiny_config(id2label={0: "red", 1: "blue"}).to_json_file(out(folder) / "config.json")
        prepare(root)
        return [
            "--config", str(out(folder) / "config.json"), "--data", str(root), "--output-dir", str(out(folder) / "run"),
            "--num-frames", "2", "--min-sizes", "64", "--max-size", "64", "--num-workers", "0",
            "--max-train-steps", "1", "--checkpointing-steps", "0", "--report-to", "none",
            *(option.format(out=out(folder)) for option in extra),
        ]  # fmt: skip

    return make


def corrupt_frames(root: Path) -> None:
    """Every frame of every video unreadable: the first step fails (the frames are there, so no check finds it)."""
    for frame in (root / "train" / "JPEGImages").rglob("*.png"):
        frame.write_bytes(b"not a png")


def arguments(entry: str, option: str, value: str, message: str) -> Case:
    makers = {"train": training, "evaluate_model": evaluating}
    return Case(entry, makers[entry](option, value), f"error: argument {option}: {message}")


TRAIN_CASES = {
    "num_frames_0": arguments("train", "--num-frames", "0", "must be a whole number of frames from 1 to 64, not 0"),
    "num_frames_of_twenty_digits": arguments(
        "train", "--num-frames", TWENTY_DIGITS, f"must be a whole number of frames from 1 to 64, not {TWENTY_DIGITS}"
    ),
    "batch_size_0": arguments("train", "--batch-size", "0", "must be a whole number of clips from 1 to 1024, not 0"),
    "batch_size_of_twenty_digits": arguments(
        "train", "--batch-size", TWENTY_DIGITS, "must be a whole number of clips from 1 to 1024, not 9999"
    ),
    "gradient_accumulation_steps_of_twenty_digits": arguments(
        "train", "--gradient-accumulation-steps", TWENTY_DIGITS, "must be a whole number of steps from 1 to 1024"
    ),
    "gradient_accumulation_steps_0": arguments(
        "train", "--gradient-accumulation-steps", "0", "must be a whole number of steps"
    ),
    "logging_steps_0": arguments("train", "--logging-steps", "0", "must be a positive whole number, not 0"),
    "learning_rate_nan": arguments("train", "--learning-rate", "nan", "must be positive, not nan"),
    "learning_rate_inf": arguments("train", "--learning-rate", "inf", "must be positive, not inf"),
    "learning_rate_negative": arguments("train", "--learning-rate", "-0.0001", "must be positive, not -0.0001"),
    "num_workers_negative": arguments("train", "--num-workers", "-1", f"must be a whole number from 0 to {CPUS}"),
    "min_sizes_20000": arguments("train", "--min-sizes", "20000", "must be a whole number of pixels from 1 to 4096"),
    "max_size_0": arguments("train", "--max-size", "0", "must be a whole number of pixels from 1 to 4096, not 0"),
    "max_train_steps_negative": arguments("train", "--max-train-steps", "-5", "must be a positive whole number"),
    "frame_range_negative": arguments("train", "--frame-range", "-1", "must be a whole number, 0 or more, not -1"),
    "crop_probability_above_1": arguments("train", "--crop-probability", "1.5", "must be from 0 to 1, not 1.5"),
    "flip_probability_nan": arguments("train", "--flip-probability", "nan", "must be from 0 to 1, not nan"),
    "lr_gamma_0": arguments("train", "--lr-gamma", "0", "must be above 0 and at most 1, not 0"),
    "warmup_iters_negative": arguments("train", "--warmup-iters", "-1", "must be a whole number, 0 or more"),
    "warmup_factor_2": arguments("train", "--warmup-factor", "2", "must be from 0 to 1, not 2"),
    "checkpointing_steps_negative": arguments(
        "train", "--checkpointing-steps", "-1", "must be a whole number, 0 or more, not -1"
    ),
    "eval_steps_negative": arguments("train", "--eval-steps", "-3", "must be a whole number, 0 or more, not -3"),
    "eval_short_edge_0": arguments("train", "--eval-short-edge", "0", "must be a whole number of pixels from 1"),
    "clip_grad_norm_0": arguments("train", "--clip-grad-norm", "0", "must be positive, not 0"),
    "weight_decay_inf": arguments("train", "--weight-decay", "inf", "must be 0 or more, not inf"),
    "seed_of_twenty_digits": arguments(
        "train", "--seed", TWENTY_DIGITS, "must be a whole number from 0 to 4294967295"
    ),
    "report_to_a_tracker_that_is_not": arguments("train", "--report-to", "bogus", "invalid choice: 'bogus'"),
    "eval_split_that_is_not": Case(
        "train", training("--eval-split", "nope"), "nope.json: no such AVISeg annotations file"
    ),
    "first_step_fails_and_leaves_nothing": Case(
        "train", training(prepare=corrupt_frames), "error: cannot read the frame "
    ),
    "output_dir_is_a_file": Case(
        "train", training("--output-dir", "{out}/config.json"), "config.json: is a file, not a folder"
    ),
    "output_dir_is_a_character_device": Case(
        "train", training("--output-dir", "/dev/null"), "/dev/null: is a character device, not a folder"
    ),
    "output_dir_in_proc": Case(
        "train", training("--output-dir", "/proc/run/a"), "/proc/run/a: no file can be made in /proc ("
    ),
    "output_dir_is_the_data": Case(
        "train", training("--output-dir", "{out}/aviseg"), "aviseg: --output-dir would write over the input"
    ),
    "output_dir_holds_the_data_and_config": Case(
        "train", training("--output-dir", "{out}"), "out: --output-dir would write over the input"
    ),
}


# --- evaluation, scoring and conversion ----------------------------------------------------------------------------


def converting(output: str, prepare: Callable[[Path], None] = lambda folder: None):
    def make(folder: Path) -> list[str]:
        prepare(folder)
        checkpoint = ORIGINAL / "r50_tiny" / "model_final.pth"
        config = ORIGINAL / "r50_tiny" / "config.yaml"
        return [str(checkpoint), output.format(out=out(folder)), "--config", str(config)]

    return make


def converted(name: str) -> Callable[[Path, str, str], None]:
    def check(folder: Path, stdout: str, stderr: str) -> None:
        names = {path.name for path in (out(folder) / name).iterdir()}
        assert {"README.md", "config.json", "model.safetensors"} <= names and stdout.startswith("saved ")

    return check


OTHER_CASES = {
    "evaluate_json_and_metrics_json_are_one_file": Case(
        "evaluate_model",
        evaluating("--json", "{out}/both.json", "--metrics-json", "{out}/both.json"),
        "both.json: --json and --metrics-json would both be written there",
    ),
    "evaluate_json_is_the_split": Case(
        "evaluate_model", evaluating("--json", "{out}/aviseg/val.json"), "val.json: --json would write over the input"
    ),
    "evaluate_metrics_json_is_a_file_of_the_model": Case(
        "evaluate_model",
        evaluating("--metrics-json", "{out}/model/config.json"),
        "config.json: --metrics-json would write over the input",
    ),
    "evaluate_json_is_a_frame": Case(
        "evaluate_model",
        evaluating("--json", "{out}/aviseg/val/JPEGImages/both/00000.png"),
        "00000.png: --json would write over the input",
    ),
    "evaluate_metrics_json_is_a_fifo": Case(
        "evaluate_model",
        lambda folder: (fifo("pipe")(folder), evaluating("--metrics-json", "{out}/pipe")(folder))[1],
        "pipe: is a FIFO, not a file",
    ),
    "evaluate_short_edge_0": arguments("evaluate_model", "--short-edge", "0", "must be a whole number of pixels"),
    "evaluate_threshold_1": arguments("evaluate_model", "--threshold", "1", "must be at least 0 and below 1"),
    "score_json_is_the_ground_truth": Case(
        "evaluation", scoring("--json", "{out}/gt.json"), "gt.json: --json would write over the input"
    ),
    "score_json_is_the_predictions": Case(
        "evaluation", scoring("--json", "{out}/pred.json"), "pred.json: --json would write over the input"
    ),
    "score_json_is_dev_null": Case(
        "evaluation", scoring("--json", "/dev/null"), "/dev/null: is a character device, not a file"
    ),
    "convert_into_dev_null": Case(
        "convert_avism", converting("/dev/null"), "/dev/null: is a character device; give the name of a new folder"
    ),
    "convert_into_proc": Case(
        "convert_avism", converting("/proc/converted"), "/proc/converted: no file can be made in /proc ("
    ),
    "convert_into_a_name_over_the_limit": Case(
        "convert_avism", converting("{out}/" + "c" * 300), ": the name is 300 bytes long"
    ),
    "convert_into_a_fifo": Case(
        "convert_avism", converting("{out}/pipe", fifo("pipe")), "pipe: is a FIFO; give the name of a new folder"
    ),
    "convert_vggish_into_a_socket": Case(
        "convert_vggish",
        lambda folder: (unix_socket("s")(folder), [str(folder / "vggish.pth"), str(out(folder) / "s")])[1],
        "s: is a socket; give the name of a new folder",
    ),
    "convert_into_a_name_at_the_limit": Case(
        "convert_avism", converting("{out}/" + "c" * 255), check=converted("c" * 255)
    ),
}

CASES = {
    **PREDICT_OUTPUT_CASES,
    **FOLDER_OUTPUT_CASES,
    **WRITTEN_CASES,
    **PREDICT_ARGUMENT_CASES,
    **TRAIN_CASES,
    **OTHER_CASES,
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_every_hostile_output_or_argument_ends_in_one_line_with_status_2(name, tmp_path, capsys):
    run_case(CASES[name], tmp_path, capsys)


def test_every_name_the_file_system_takes_is_written_through_its_partial_name(tmp_path):
    for name in ("r" * 255, "é" * 127, "a." + "s" * 253, "overlay.mp4"):
        with atomic_file(tmp_path / name) as partial:
            assert (
                len(os.fsencode(partial.name)) <= 255 and partial.name.startswith(".") and ".partial" in partial.name
            )
            assert name != "overlay.mp4" or partial.suffix == ".mp4"  # writers pick the format by it
            partial.write_text(name)
        assert (tmp_path / name).read_text() == name
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ("r" * 255, "é" * 127, "a." + "s" * 253, "overlay.mp4")
    )


def test_a_folder_of_videos_names_its_newline_video_on_one_line(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "bad\nname.mp4").write_bytes(b"\x00\x01not a video" * 100)
    clip(tmp_path, "good.mp4").rename(videos / "good.mp4")
    status = predict_main(["predict", str(videos), "--model", str(DEFAULT_MODEL), "--json", str(tmp_path / "r.json")])
    stdout, stderr = capsys.readouterr()
    assert status == 2
    [line] = stderr.splitlines()
    assert line.startswith("[1] error: bad\\nname.mp4: not a video FFmpeg can read")
    assert stdout.splitlines()[0].startswith("[2] good.mp4: ")
    assert json.loads((tmp_path / "r.videos.json").read_text()) == [{"video_id": 2, "video": "good.mp4"}]
