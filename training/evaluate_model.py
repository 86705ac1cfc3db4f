"""Run a model over every video of an AVISeg split and score it with the benchmark (FSLA, HOTA, mAP).

python -m training.evaluate_model --model DIR --data ROOT --split val [--json results.json]
accelerate launch -m training.evaluate_model ...   (the videos are split between the processes)

As the original's test: the frames of each video (`JPEGImages`, at their stored size) are resized to a shortest
edge of 360 (448 for Swin-L), longest at most 1333; the whole video goes through the model at once; the top
`config.num_detections` (clip query, class) pairs scoring above `config.score_threshold` are kept, each with a mask
per frame at the video's size. The results JSON is the AVIS format: a list of {video_id, score, category_id,
segmentations: one compressed RLE per frame, empty masks included}.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn

from modeling_avis.entry_point import OneLineArgumentParser, run_command
from modeling_avis.errors import AvisInputError
from modeling_avis.feature_extraction_avis import AvisFeatureExtractor
from modeling_avis.image_processing_avis import shortest_edge_size
from modeling_avis.loading import load_model
from modeling_avis.outputs import check_output_file, write_text_atomically
from modeling_avis.post_processing_avis import instance_mask_chunks, score_instances
from modeling_avis.tracks import encode_mask

from .augmentation import Resize
from .data import AvisegClip, AvisegVideo, audio_input_name, collate_clips, load_audio, load_aviseg_split, read_frame
from .evaluation import evaluate_predictions, format_metrics_table
from .model_inputs import model_inputs

# The original's test sizes (`INPUT.MIN_SIZE_TEST` of configs/avism/*, detectron2's `MAX_SIZE_TEST`).
TEST_SHORT_EDGE = {"resnet": 360, "swin": 448}
TEST_MAX_SIZE = 1333


def test_short_edge(model: nn.Module) -> int:
    """The shortest edge the original tests this model's backbone at."""
    return TEST_SHORT_EDGE[model.config.backbone_config.model_type]


def read_test_video(
    video: AvisegVideo,
    short_edge: int,
    audio_input: str = "audio_features",
    max_size: int = TEST_MAX_SIZE,
    mute_audio: bool = False,
) -> AvisegClip:
    """Every frame of a video resized as the original's test mapper (ResizeShortestEdge), with its audio (or, with
    `mute_audio`, the log-mel of silence: how much a model listens is how much its scores fall without the sound).
    """
    height, width = shortest_edge_size(video.height, video.width, short_edge, max_size)
    resize = Resize(video.height, video.width, height, width)
    frame_indices = list(range(len(video.frame_paths)))
    return AvisegClip(
        video_id=video.video_id,
        frame_indices=torch.tensor(frame_indices),
        frames=torch.stack([resize.image(read_frame(path)) for path in video.frame_paths]),
        audio=silent_log_mel(frame_indices, audio_input)
        if mute_audio
        else load_audio(video, frame_indices, audio_input),
        class_labels=torch.zeros(0, dtype=torch.long),
        mask_labels=torch.zeros(0, len(frame_indices), height, width, dtype=torch.bool),
    )


def silent_log_mel(frame_indices: list[int], audio_input: str) -> torch.Tensor:
    """(T, 96, 64): the VGGish log-mel examples of a silent track as long as the frames (log of the log offset)."""
    if audio_input != "audio_log_mel":
        raise AvisInputError("muting the audio needs a model with an audio encoder (its config's audio_config)")
    extractor = AvisFeatureExtractor()
    timestamps = [float(index) for index in frame_indices]
    silence = np.zeros((max(frame_indices) + 1) * extractor.sampling_rate, np.float32)
    return extractor(silence, timestamps, extractor.sampling_rate)["audio_log_mel"]


@torch.no_grad()
def predict_video(
    model: nn.Module, video: AvisegVideo, short_edge: int, accelerator: Accelerator, mute_audio: bool = False
) -> list[dict]:
    """The AVIS results of one video: one entry per kept instance, masks at the video's stored size.

    category_id is the label + 1: AVISeg's category ids 1..26 are the model's labels 0..25 (`config.id2label`).
    """
    config = model.config
    clip = read_test_video(video, short_edge, audio_input_name(config), mute_audio=mute_audio)
    batch = collate_clips([clip], config.size_divisibility)
    inputs = {key: value.to(accelerator.device) for key, value in model_inputs(batch, config).items()}
    with accelerator.autocast():
        outputs = model(**inputs)
    # post-processing in float32, as the original's (its masks and scores are computed outside autocast's ops)
    mask_features = outputs.mask_features[0].float()
    sizes = {
        "padded_size": tuple(inputs["pixel_values"].shape[-2:]),
        "image_size": tuple(clip.frames.shape[-2:]),
        "chunk_size": config.mask_chunk_size,
    }
    instances = score_instances(
        outputs.class_logits[0].float(),
        outputs.mask_embeddings[0].float(),
        mask_features,
        num_detections=config.num_detections,
        score_threshold=config.score_threshold,
        **sizes,
    )
    segmentations = [[] for _ in range(len(instances.scores))]
    for masks in instance_mask_chunks(instances, mask_features, target_size=(video.height, video.width), **sizes):
        for instance_masks, track in zip(masks.cpu().numpy(), segmentations, strict=True):
            track.extend(encode_mask(mask) for mask in instance_masks)
    return [
        {"video_id": video.video_id, "score": score, "category_id": label + 1, "segmentations": track}
        for score, label, track in zip(
            instances.scores.tolist(), instances.labels.tolist(), segmentations, strict=True
        )
    ]


def predict_split(
    model: nn.Module,
    videos: list[AvisegVideo],
    accelerator: Accelerator,
    short_edge: int | None = None,
    mute_audio: bool = False,
) -> list[dict]:
    """The AVIS results of every video, in the order of `videos`; each process predicts its share, all get all."""
    short_edge = short_edge or test_short_edge(model)
    was_training = model.training
    model.eval()
    with accelerator.split_between_processes(videos) as shard:
        results = [
            entry for video in shard for entry in predict_video(model, video, short_edge, accelerator, mute_audio)
        ]
    model.train(was_training)
    return gather_object(results)


def evaluate_model(
    model: nn.Module,
    data_root: str | Path,
    split: str,
    accelerator: Accelerator,
    short_edge: int | None = None,
    mute_audio: bool = False,
) -> tuple[dict[str, float] | None, list[dict]]:
    """(metrics, results) of a model on `<data_root>/<split>`; metrics on the main process only (None elsewhere).

    model: an AVISM (an `AvisModel` or `AvisForAudioVisualInstanceSegmentation`, unwrapped) on the accelerator's
    device. short_edge: the test size, by default the original's for the model's backbone. mute_audio: replace every
    video's sound with silence.
    """
    videos = load_aviseg_split(data_root, split)
    results = predict_split(model, videos, accelerator, short_edge, mute_audio)
    metrics = None
    if accelerator.is_main_process:
        metrics = evaluate_predictions(Path(data_root) / f"{split}.json", results)
    return metrics, results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="python -m training.evaluate_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder (save_pretrained of AVISM)")
    parser.add_argument("--data", required=True, help="the AVISeg root: <root>/<split>.json, <root>/<split>/...")
    parser.add_argument("--split", default="val", help="the split to evaluate (default: val)")
    parser.add_argument("--json", metavar="RESULTS.json", help="write the AVIS results JSON here")
    parser.add_argument("--metrics-json", metavar="METRICS.json", help="write the metrics here")
    parser.add_argument(
        "--short-edge", type=int, help="test size (default: the original's, 360 for ResNet-50, 448 for Swin-L)"
    )
    parser.add_argument(
        "--mute-audio", action="store_true", help="replace the sound with silence (models with an audio encoder)"
    )
    parser.add_argument(
        "--mixed-precision",
        choices=("no", "fp16", "bf16"),
        help="autocast the model (the original tested under fp16 autocast on GPU); default: accelerate's config",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: evaluate_from_command_line(parse_args(argv)))


def evaluate_from_command_line(args: argparse.Namespace) -> None:
    for output in (args.json, args.metrics_json):
        if output:
            check_output_file(output)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    model = load_model(args.model, device=accelerator.device)
    metrics, results = evaluate_model(model, args.data, args.split, accelerator, args.short_edge, args.mute_audio)
    if accelerator.is_main_process:
        print(format_metrics_table(metrics))
        if args.json:
            write_text_atomically(args.json, json.dumps(results))
        if args.metrics_json:
            write_text_atomically(args.metrics_json, json.dumps(metrics, indent=1))


if __name__ == "__main__":
    sys.exit(main())
