"""`python -m modeling_avis predict VIDEO_OR_FOLDER [--model DIR|HUB_ID]`: the sounding objects of videos, from the shell
(`python -m modeling_avis stream SOURCE`: of a stream, as it comes; see `streaming`).

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

from .entry_point import (
    BAD_INPUT,
    OneLineArgumentParser,
    cpu_threads,
    device,
    disk_gigabytes,
    error_message,
    key_value,
    positive_float,
    positive_int,
    run_command,
    score_threshold,
    whole_number_up_to,
)
from .errors import AvisError, AvisInputError, AvisUsageError, printable
from .inference_avis import DEFAULT_DISK_BUDGET, AvisVideoSegmenter
from .outputs import check_folder_to_write_in, check_output_file, check_outputs_apart, write_text_atomically
from .results import track_summary, write_results_json
from .runtime import configure_runtime
from .session_avis import AvisOnlineSettings
from .streaming import MAX_WINDOW, stream
from .tracks import AvisVideoResult
from .video_io import AvisegVideoFiles, is_frame_folder, probe_video
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
    _add_model_arguments(predict)
    predict.add_argument(
        "--max-seconds",
        type=positive_float,
        metavar="SECONDS",
        help="analyse (and draw) only each video's first SECONDS, by its frames' decoded times (default: all)",
    )
    predict.add_argument("--out", type=Path, help="overlay mp4 (for a folder: the folder to write overlays into)")
    predict.add_argument("--json", type=Path, help="the AVIS results JSON of all videos")
    predict.add_argument("--summary", action="store_true", help="print each track: class, score, when it sounds")
    _add_runtime_arguments(predict)
    predict.add_argument(
        "--disk-budget",
        type=disk_gigabytes,
        default=DEFAULT_DISK_BUDGET / 2**30,
        metavar="GB",
        help="temporary disk for a long video's mask features; beyond it they are computed again, at the cost of "
        f"running most of the model three times for those frames (default: {DEFAULT_DISK_BUDGET / 2**30:g} GB)",
    )
    stream = commands.add_parser(
        "stream",
        help="find the sounding objects of a stream as its frames and sound arrive: a JSON line per window",
        description="Prints one JSON line per answered window on stdout (see the README's 'Live: avis stream').",
    )
    stream.add_argument(
        "source", help="a video file, - for a pipe (MPEG-TS or Matroska on stdin), or a URL or device FFmpeg opens"
    )
    _add_model_arguments(stream)
    online = AvisOnlineSettings()
    stream.add_argument(
        "--window",
        type=whole_number_up_to(MAX_WINDOW, "frames"),
        default=online.window_size,
        help=f"sampled frames each window's clip queries see (default: {online.window_size})",
    )
    stream.add_argument(
        "--stride",
        type=positive_int,
        default=online.stride,
        help=f"sampled frames between windows, at most --window: each line gives that many (default: {online.stride})",
    )
    stream.add_argument(
        "--max-seconds",
        type=positive_float,
        metavar="SECONDS",
        help="stop after the source's first SECONDS, by its frames' decoded times (default: at its end)",
    )
    stream.add_argument(
        "--format", help="the demuxer of a pipe, URL or device: v4l2, lavfi, mpegts ... (default: guessed)"
    )
    stream.add_argument(
        "--option",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="a demuxer option of a pipe, URL or device, repeated for more: video_size=640x480, "
        "analyzeduration=500000 ...",
    )
    stream.add_argument("--mute-audio", action="store_true", help="give every frame silence instead of the sound")
    stream.add_argument(
        "--realtime",
        action="store_true",
        help="pace the source by its timestamps, as if live: each frame goes to the model no earlier than its time "
        "after the start (and the second of sound after it); latencies count from then",
    )
    stream.add_argument(
        "--out",
        type=Path,
        help="the overlay as MPEG-TS (.ts, a new file), written as the stream goes: it plays while it grows",
    )
    stream.add_argument(
        "--json",
        type=Path,
        help="the AVIS results JSON of the whole stream, written at its end (every mask is kept until then, as RLE in "
        "a temporary file)",
    )
    _add_runtime_arguments(stream)
    return parser


def _add_model_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--model",
        help=f"a folder written by save_pretrained, or a Hub id (default: ${DEFAULT_MODEL_VARIABLE}, else the shipped "
        f"{DEFAULT_MODEL_NAME}, trained on synthetic shapes)",
    )
    command.add_argument("--fps", type=positive_float, default=1.0, help="frames sampled per second (default: 1)")
    command.add_argument(
        "--threshold", type=score_threshold, help="drop instances scoring at or below it, in [0, 1) (default: model's)"
    )
    command.add_argument("--max-instances", type=positive_int, help="keep at most this many instances per video")


def _add_runtime_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--device", type=device, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    command.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="float32",
        help="run the model in bfloat16 (CPU or CUDA: about 1.6x as fast on a 2-core CPU, no longer the original's "
        "numbers to 1e-4) or float16 (CUDA) (default: float32)",
    )
    command.add_argument(
        "--threads", type=cpu_threads, help="CPU cores to use, at most those it may run on (default: torch's count)"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the command line `argv` (default: sys.argv); returns the exit status."""
    return run_command(lambda: _run(build_parser().parse_args(argv)))


def _run(args: argparse.Namespace) -> int:
    if args.command == "stream":
        return stream(args, args.model or default_model(), DTYPES[args.dtype])
    return predict(args)


def predict(args: argparse.Namespace) -> int:
    videos = _list_videos(args.video)
    folder_mode = args.video.is_dir() and not is_frame_folder(args.video)
    model = args.model or default_model()
    _check_outputs(args, videos, folder_mode, model)
    configure_runtime(args.threads)
    segmenter = AvisVideoSegmenter.from_pretrained(
        model,
        args.device,
        DTYPES[args.dtype],
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
                overlay = overlay_path(args.out, video) if folder_mode else args.out
                _render(video, result, overlay, args.max_seconds)
        except AvisError as error:
            if not folder_mode:
                raise
            failures += 1
            print(f"{prefix}error: {printable(error_message(error))}", file=sys.stderr)
            continue
        results[video_id] = result
        count, name = len(result.tracks), printable(video.name)
        print(f"{prefix}{name}: {count} sounding instance{'s' * (count != 1)} in {result.num_frames} frames")
        for note in result.notes:
            print(f"{prefix}note: {note}", file=sys.stderr)
        if args.summary:
            _print_summary(result)
    if args.json is not None:
        write_results_json(results, args.json)
        if folder_mode:
            index = [{"video_id": video_id, "video": videos[video_id - 1].name} for video_id in results]
            write_text_atomically(video_index_path(args.json), json.dumps(index, indent=1))
    return BAD_INPUT if failures else 0


def _check_outputs(args: argparse.Namespace, videos: list[Path], folder_mode: bool, model: str) -> None:
    """Every output checked before the model is loaded: each can be written, none writes over an input (a video,
    a frame, its sound, a file of the model folder) or another output."""
    if args.out is not None and not folder_mode and is_frame_folder(args.video):
        raise AvisUsageError(
            f"{printable(args.video)}: a frame folder has no video to draw an overlay on; leave out --out"
        )
    files = [("--json", args.json)] if args.json is not None else []
    if args.json is not None and folder_mode:
        files.append(("the video index of --json", video_index_path(args.json)))
    if args.out is not None and not folder_mode:
        files.append(("--out", args.out))
    for _, path in files:
        check_output_file(path)
    overlays = []
    if args.out is not None and folder_mode:
        overlays = [(f"the overlay of {printable(v.name)}", overlay_path(args.out, v)) for v in videos if v.is_file()]
        check_folder_to_write_in(args.out, [overlay.name for _, overlay in overlays])
    inputs = [*videos, *Path(model).glob("*")]
    for frames in filter(Path.is_dir, videos):
        sound = AvisegVideoFiles.of_frame_folder(frames)
        inputs += [sound.features, sound.wav]
    check_outputs_apart(files + overlays, inputs)


def overlay_path(folder: Path, video: Path) -> Path:
    """Where predict on a folder of videos draws `video`'s overlay."""
    return folder / f"{video.stem}_avis.mp4"


def video_index_path(results: Path) -> Path:
    """The video ids of a folder's results JSON, beside it."""
    return results.with_name(f"{results.stem}.videos.json")


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
    with tqdm(total=100, desc=printable(video.name), unit="%", leave=False, file=sys.stderr, disable=None) as bar:

        def progress(fraction: float, stage: str) -> None:
            bar.set_postfix_str(stage, refresh=False)
            bar.update(round(100 * fraction) - bar.n)

        return segmenter(
            video, args.fps, args.threshold, args.max_instances, progress=progress, max_duration=args.max_seconds
        )


def _render(video: Path, result: AvisVideoResult, destination: Path, until: float | None) -> None:
    with tqdm(
        total=100, desc=f"{printable(video.name)} overlay", unit="%", leave=False, file=sys.stderr, disable=None
    ) as bar:
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
        raise AvisInputError(f"{printable(path)}: no such file or folder")
    if path.is_file() or is_frame_folder(path):
        return [path]
    videos = sorted(
        entry
        for entry in path.iterdir()
        if (entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES) or (entry.is_dir() and is_frame_folder(entry))
    )
    if not videos:
        raise AvisInputError(
            f"{printable(path)}: the folder holds no videos ({', '.join(VIDEO_SUFFIXES)}) and no frame folders"
        )
    return videos


if __name__ == "__main__":
    sys.exit(main())
