"""Run a model over every video of an AVISeg split and score it with the benchmark (FSLA, HOTA, mAP).

python -m training.evaluate_model --model DIR --data ROOT --split val [--json results.json]
python -m training.evaluate_model --model DIR --data clips/test.json      (an annotations file: its video files)
python -m training.evaluate_model ... --mode online [--window 5 --stride 1]   (the online mode, as a live stream)
accelerate launch -m training.evaluate_model ...   (the videos are shared out between the processes)

Each video goes the way of every other: its frame folder (`<root>/<split>/JPEGImages/<video>/`, 1 frame per
second, its sound beside it in FEATAudios or WAVAudios), or its video file sampled at the times of its annotated
frames (`--data` an annotations file: see `training.data`), through the model's processor and `AvisVideoSegmenter`,
as the app and the command line run it. The processor sets the test size (for the published models the original's:
a shortest edge of 360 for ResNet-50, 448 for Swin-L, longest at most 1333), the top-k and the score threshold; the
results JSON is the AVIS format, one compressed RLE per frame at the video's size.

The two modes differ only in how a video becomes its tracks: offline, the segmenter's two passes (the clip queries
attend to every frame); online, its stream (`AvisVideoSegmenter.stream`: causal windows of `--window` frames every
`--stride` frames, linked into tracks) put together by an `AvisStreamRecorder`, as a listener to the stream would
record it; a track is null in the frames it is not in.
"""

import argparse
import json
import sys
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import gather_object

from modeling_avis.entry_point import (
    OneLineArgumentParser,
    image_size,
    online_settings,
    positive_int,
    run_command,
    score_threshold,
    window_frames,
)
from modeling_avis.inference_avis import AvisVideoSegmenter
from modeling_avis.loading import load_model, load_processor
from modeling_avis.modeling_avis import AvisPreTrainedModel
from modeling_avis.outputs import check_output_file, check_outputs_apart, write_text_atomically
from modeling_avis.processing_avis import AvisProcessor
from modeling_avis.results import results_json_entries
from modeling_avis.runtime import configure_runtime
from modeling_avis.session_avis import MODES, AvisOnlineSettings
from modeling_avis.tracks import AvisStreamRecorder, AvisVideoResult

from .data import AvisegVideo, annotations_path, load_aviseg_split, to_dataset_categories
from .evaluation import evaluate_predictions, format_metrics_table


def predict_split(
    model: AvisPreTrainedModel,
    processor: AvisProcessor,
    videos: list[AvisegVideo],
    accelerator: Accelerator,
    mute_audio: bool = False,
    online: AvisOnlineSettings | None = None,
) -> list[dict]:
    """The AVIS results of every video, in the order of `videos`; each process predicts its share, all get all.
    online: the online mode's windows and linking (None: the offline mode)."""
    was_training = model.training
    segmenter = AvisVideoSegmenter(getattr(model, "model", model), processor)
    with accelerator.split_between_processes(videos) as shard:
        results = [
            entry
            for video in shard
            for entry in results_json_entries(video_result(segmenter, video, mute_audio, online), video.video_id)
        ]
    model.train(was_training)
    return gather_object(results)


def video_result(
    segmenter: AvisVideoSegmenter, video: AvisegVideo, mute_audio: bool, online: AvisOnlineSettings | None
) -> AvisVideoResult:
    """One video's tracks, at its annotated frames: the offline mode's two passes, or (`online` given) the online
    mode's stream of updates, recorded as they come."""
    if online is None:
        return segmenter(video.source, mute_audio=mute_audio, **video.sampling)
    # the masks come at the video's size (the evaluator checks it against the annotations', as offline)
    recorder = AvisStreamRecorder(video.height, video.width)
    for update in segmenter.stream(video.source, online=online, mute_audio=mute_audio, **video.sampling):
        recorder.add(update)
    return recorder.result(fps=video.sampling.get("fps"))


def evaluate_model(
    model: AvisPreTrainedModel,
    processor: AvisProcessor,
    data_root: str | Path,
    split: str,
    accelerator: Accelerator,
    mute_audio: bool = False,
    online: AvisOnlineSettings | None = None,
) -> tuple[dict[str, float] | None, list[dict]]:
    """(metrics, results) of a model on a split (`<data_root>/<split>.json`, or `data_root` an annotations file);
    metrics on the main process only (None elsewhere).

    model: an AVISM (`AvisModel` or `AvisForAudioVisualInstanceSegmentation`, unwrapped) on the accelerator's
    device; processor: its processor (test size, threshold); mute_audio: give every video silence; online: run the
    online mode with these settings (None: the offline mode).
    """
    videos = load_aviseg_split(data_root, split)
    ground_truth = annotations_path(data_root, split)
    results = predict_split(model, processor, videos, accelerator, mute_audio, online)
    results = to_dataset_categories(results, getattr(model, "config", None), ground_truth)
    metrics = None
    if accelerator.is_main_process:
        metrics = evaluate_predictions(ground_truth, results)
    return metrics, results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="python -m training.evaluate_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder (save_pretrained of AVISM)")
    parser.add_argument(
        "--data", required=True, help="an annotations file (its video files beside it), or an AVISeg root"
    )
    parser.add_argument("--split", default="val", help="the split of an AVISeg root to evaluate (default: val)")
    parser.add_argument("--json", metavar="RESULTS.json", help="write the AVIS results JSON here")
    parser.add_argument("--metrics-json", metavar="METRICS.json", help="write the metrics here")
    parser.add_argument(
        "--short-edge",
        type=image_size,
        help="test size (default: the model's processor's)",
    )
    parser.add_argument(
        "--threshold", type=score_threshold, help="score threshold, in [0, 1) (default: the model's processor's)"
    )
    parser.add_argument("--mute-audio", action="store_true", help="give every video silence instead of its sound")
    parser.add_argument(
        "--mixed-precision",
        choices=("no", "fp16", "bf16"),
        help="autocast the model (the original tested under fp16 autocast on GPU); default: accelerate's config",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="offline",
        help="offline: the clip queries attend to every frame (AVISM as published); online: causal windows, as a live "
        "stream is segmented (default: offline)",
    )
    parser.add_argument(
        "--window",
        type=window_frames,
        help=f"online mode: frames per window (default: {AvisOnlineSettings.window_size})",
    )
    parser.add_argument(
        "--stride",
        type=positive_int,
        help=f"online mode: frames between two windows, from 1 to the window (default: {AvisOnlineSettings.stride})",
    )
    args = parser.parse_args(argv)
    args.online = None
    if args.mode == "online":
        args.online = online_settings(
            AvisOnlineSettings.window_size if args.window is None else args.window,
            AvisOnlineSettings.stride if args.stride is None else args.stride,
        )
    elif args.window is not None or args.stride is not None:
        parser.error("--window and --stride are the online mode's: give --mode online")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: evaluate_from_command_line(parse_args(argv)))


def evaluate_from_command_line(args: argparse.Namespace) -> None:
    outputs = [
        (option, path) for option, path in (("--json", args.json), ("--metrics-json", args.metrics_json)) if path
    ]
    for _, path in outputs:
        check_output_file(path)
    annotations = annotations_path(args.data, args.split)
    check_outputs_apart(outputs, [annotations, annotations.with_suffix(""), *Path(args.model).glob("*")])
    configure_runtime()
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    model = load_model(args.model, device=accelerator.device)
    processor = load_processor(args.model, model.config)
    if args.short_edge:
        processor.image_processor.shortest_edge = args.short_edge
    if args.threshold is not None:
        processor.score_threshold = args.threshold
    with accelerator.autocast():
        metrics, results = evaluate_model(
            model, processor, args.data, args.split, accelerator, args.mute_audio, args.online
        )
    if accelerator.is_main_process:
        print(format_metrics_table(metrics))
        if args.json:
            write_text_atomically(args.json, json.dumps(results))
        if args.metrics_json:
            write_text_atomically(args.metrics_json, json.dumps(metrics, indent=1))


if __name__ == "__main__":
    sys.exit(main())
