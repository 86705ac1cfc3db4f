"""`python -m modeling_avis predict VIDEO_OR_FOLDER [--model DIR|HUB_ID]`: the sounding objects of videos, from the shell.

    python -m modeling_avis predict app/examples/shapes_duet.mp4 --summary      # the shipped sounding-shapes model
    python -m modeling_avis predict concert.mp4 --model ./avism-r50 --out overlay.mp4 --json results.json --summary
    python -m modeling_avis predict clips/ --model ./avism-r50 --out overlays/ --json results.json

VIDEO_OR_FOLDER is a video file, an AVISeg frame folder (numbered .jpg or .png frames), or a folder of those: every video
in it is segmented in turn, its overlay written into the --out folder, and all of them go into one results JSON
with video ids 1, 2, ... in the order listed (the ids are also written beside it, in `<json name>.videos.json`).
A bad input is reported in one line and the command exits with status 2; in a folder, the other videos still run.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .entry_point import BAD_INPUT, OneLineArgumentParser, run_command
from .errors import AvisError, AvisInputError, AvisUsageError, one_line
from .heap import reuse_freed_memory
from .inference_avis import DEFAULT_DISK_BUDGET, AvisVideoSegmenter
from .outputs import check_output_file, write_text_atomically
from .results import track_summary, write_results_json
from .tracks import AvisVideoResult
from .video_io import is_frame_folder, probe_video
from .visualization import render_overlay

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
# The model run when none is given: $AVIS_DEFAULT_MODEL (a folder or Hub id, as a Space sets it), else the small
# AVISM trained on synthetic sounding shapes that ships with the project: in a checkout, its models/ folder; once
# installed (`pip install .`), the copy under <prefix>/share/avis/models.
DEFAULT_MODEL_VARIABLE = "AVIS_DEFAULT_MODEL"
DEFAULT_MODEL_NAME = "avis-sounding-shapes"
DEFAULT_MODEL_FOLDERS = (
    Path(__file__).resolve().parents[1] / "models" / DEFAULT_MODEL_NAME,
    Path(sys.prefix) / "share" / "avis" / "models" / DEFAULT_MODEL_NAME,
)
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m modeling_avis", description="AVIS: which objects in a video make sound."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    predict = commands.add_parser("predict", help="find, segment and track the sounding objects of videos")
    predict.add_argument("video", type=Path, help="a video file, an AVISeg frame folder, or a folder of either")
    predict.add_argument(
        "--model",
        help=f"a folder written by save_pretrained, or a Hub id (default: ${DEFAULT_MODEL_VARIABLE}, else the shipped "
        f"{DEFAULT_MODEL_NAME}, trained on synthetic shapes)",
    )
    predict.add_argument("--fps", type=_positive_float, default=1.0, help="frames sampled per second (default: 1)")
    predict.add_argument(
        "--threshold", type=_probability, help="drop instances scoring at or below it, in [0, 1) (default: model's)"
    )
    predict.add_argument("--max-instances", type=_positive_int, help="keep at most this many instances per video")
    predict.add_argument(
        "--max-seconds",
        type=_positive_float,
        metavar="SECONDS",
        help="analyse (and draw) only each video's first SECONDS, by its frames' decoded times (default: all)",
    )
    predict.add_argument("--out", type=Path, help="overlay mp4 (for a folder: the folder to write overlays into)")
    predict.add_argument("--json", type=Path, help="the AVIS results JSON of all videos")
    predict.add_argument("--summary", action="store_true", help="print each track: class, score, when it sounds")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    predict.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="float32",
        help="run the model in bfloat16 (CPU or CUDA: about 1.6x as fast on a 2-core CPU, no longer the original's "
        "numbers to 1e-4) or float16 (CUDA) (default: float32)",
    )
    predict.add_argument("--threads", type=_positive_int, help="CPU cores to use (default: torch's thread count)")
    predict.add_argument(
        "--disk-budget",
        type=_non_negative_float,
        default=DEFAULT_DISK_BUDGET / 2**30,
        metavar="GB",
        help="temporary disk for a long video's mask features; beyond it they are computed again, at the cost of "
        f"running most of the model three times for those frames (default: {DEFAULT_DISK_BUDGET / 2**30:g} GB)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line `argv` (default: sys.argv); returns the exit status."""
    return run_command(lambda: predict(build_parser().parse_args(argv)))


def predict(args: argparse.Namespace) -> int:
    videos = _list_videos(args.video)
    folder_mode = args.video.is_dir() and not is_frame_folder(args.video)
    _check_outputs(args, folder_mode)
    reuse_freed_memory()
    segmenter = AvisVideoSegmenter.from_pretrained(
        args.model or default_model(),
        args.device,
        DTYPES[args.dtype],
        cpu_threads=args.threads,
        disk_budget=int(args.disk_budget * 2**30),
    )
    if folder_mode and args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    results, failures = {}, 0
    for video_id, video in enumerate(videos, start=1):
        prefix = f"[{video_id}] " if folder_mode else ""
        try:
            result = _segment(segmenter, video, args)
            if args.out is not None and video.is_file():
                overlay = args.out / f"{video.stem}_avis.mp4" if folder_mode else args.out
                _render(video, result, overlay, args.max_seconds)
        except AvisError as error:
            if not folder_mode:
                raise
            failures += 1
            print(f"{prefix}error: {one_line(error)}", file=sys.stderr)
            continue
        results[video_id] = result
        count = len(result.tracks)
        print(f"{prefix}{video.name}: {count} sounding instance{'s' * (count != 1)} in {result.num_frames} frames")
        for note in result.notes:
            print(f"{prefix}note: {note}", file=sys.stderr)
        if args.summary:
            _print_summary(result)
    if args.json is not None:
        write_results_json(results, args.json)
        if folder_mode:
            index = [{"video_id": video_id, "video": videos[video_id - 1].name} for video_id in results]
            write_text_atomically(args.json.with_name(f"{args.json.stem}.videos.json"), json.dumps(index, indent=1))
    return BAD_INPUT if failures else 0


def _check_outputs(args: argparse.Namespace, folder_mode: bool) -> None:
    """Every output path checked before any inference, so that a bad one fails at once."""
    if args.out is not None and not folder_mode and is_frame_folder(args.video):
        raise AvisUsageError(f"{args.video}: a frame folder has no video to draw an overlay on; leave out --out")
    if args.json is not None:
        check_output_file(args.json)
    if args.out is not None and not folder_mode:
        check_output_file(args.out)
    if args.out is not None and folder_mode and args.out.exists() and not args.out.is_dir():
        raise AvisUsageError(f"{args.out}: is a file; for a folder of videos, --out names the folder of overlays")


def default_model() -> str:
    """The model to run when none is named (see DEFAULT_MODEL_FOLDERS)."""
    if os.environ.get(DEFAULT_MODEL_VARIABLE):
        return os.environ[DEFAULT_MODEL_VARIABLE]
    for folder in DEFAULT_MODEL_FOLDERS:
        if (folder / "config.json").is_file():
            return str(folder)
    raise AvisUsageError(
        f"no default model is installed here: give --model (a folder or Hub id) or set ${DEFAULT_MODEL_VARIABLE}"
    )


def _segment(segmenter: AvisVideoSegmenter, video: Path, args: argparse.Namespace) -> AvisVideoResult:
    with tqdm(total=100, desc=video.name, unit="%", leave=False, file=sys.stderr, disable=None) as bar:

        def progress(fraction: float, stage: str) -> None:
            bar.set_postfix_str(stage, refresh=False)
            bar.update(round(100 * fraction) - bar.n)

        return segmenter(
            video, args.fps, args.threshold, args.max_instances, progress=progress, max_duration=args.max_seconds
        )


def _render(video: Path, result: AvisVideoResult, destination: Path, until: float | None) -> None:
    with tqdm(total=100, desc=f"{video.name} overlay", unit="%", leave=False, file=sys.stderr, disable=None) as bar:
        render_overlay(
            probe_video(video),
            result,
            destination,
            lambda fraction, _: bar.update(round(100 * fraction) - bar.n),
            until=until,
        )


def _print_summary(result: AvisVideoResult) -> None:
    for track in track_summary(result):
        when = (
            "never present"
            if track["first_second"] is None
            else f"{track['first_second']:.1f}-{track['last_second']:.1f} s, {len(track['frames'])} frames"
        )
        print(f"  [{track['id']}] {track['class']:<14} score {track['score']:.3f}  {when}")


def _list_videos(path: Path) -> list[Path]:
    if not path.exists():
        raise AvisInputError(f"{path}: no such file or folder")
    if path.is_file() or is_frame_folder(path):
        return [path]
    videos = sorted(
        entry
        for entry in path.iterdir()
        if (entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES) or (entry.is_dir() and is_frame_folder(entry))
    )
    if not videos:
        raise AvisInputError(f"{path}: the folder holds no videos ({', '.join(VIDEO_SUFFIXES)}) and no frame folders")
    return videos


def _number(text: str, accepted, requirement: str) -> float:
    """`text` as a float where `accepted(value)`, else an argparse error saying it `requirement`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not accepted(value):
        raise argparse.ArgumentTypeError(f"{requirement}, not {text}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, lambda value: value > 0, "must be positive")


def _probability(text: str) -> float:
    return _number(text, lambda value: 0 <= value < 1, "must be at least 0 and below 1 (scores are probabilities)")


def _non_negative_float(text: str) -> float:
    return _number(text, lambda value: value >= 0, "must be 0 or more")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return int(text)


if __name__ == "__main__":
    sys.exit(main())
