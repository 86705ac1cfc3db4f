"""A tiny AVISeg-format dataset written to disk: videos of a red and a blue square, where the audio tells which of
them sound. Only sounding squares are annotated (red: category 1, label 0; blue: category 2, label 1), as in AVISeg.

Squares sit on a 4-pixel grid and move 4 pixels per frame, so a mask on the model's stride-4 grid is exact.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeling_avis.image_processing_avis import IMAGENET_MEAN, IMAGENET_STD
from modeling_avis.modeling_avis import AvisClipOutput, AvisFrameEncoding, AvisModel, AvisSessionOutput

HEIGHT, WIDTH, LENGTH, SIDE = 64, 64, 6, 16
COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}
CATEGORIES = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
CATEGORY_OF = {"red": 1, "blue": 2}
# audio feature dims that are 1 when the square sounds
AUDIO_DIMS = {"red": slice(0, 64), "blue": slice(64, 128)}


@dataclass(frozen=True)
class SyntheticVideo:
    name: str
    red_start: tuple[int, int]  # (top, left) in frame 0
    blue_start: tuple[int, int]
    sounding: tuple[str, ...]
    sounding_from: int = 0  # the first frame they sound in (and are annotated in)

    def box(self, colour: str, frame: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right): red moves right, blue moves down, 4 pixels per frame."""
        top, left = self.red_start if colour == "red" else self.blue_start
        if colour == "red":
            left += 4 * frame
        else:
            top += 4 * frame
        return top, left, top + SIDE, left + SIDE


TRAIN_VIDEOS = (
    SyntheticVideo("both", (4, 4), (8, 40), ("red", "blue")),
    SyntheticVideo("red_only", (40, 8), (4, 28), ("red",)),
    SyntheticVideo("blue_only", (8, 20), (4, 4), ("blue",)),
    SyntheticVideo("red_again", (24, 0), (0, 44), ("red",)),
)
EVAL_VIDEOS = TRAIN_VIDEOS[:3] + (SyntheticVideo("silent", (4, 4), (4, 44), ()),)


def write_split(root: Path, split: str, videos: tuple[SyntheticVideo, ...]) -> Path:
    """Writes `<root>/<split>.json`, `<root>/<split>/JPEGImages/<video>/*.jpg` and `FEATAudios/<video>.npy`."""
    frames_dir, audio_dir = root / split / "JPEGImages", root / split / "FEATAudios"
    audio_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    for video_id, video in enumerate(videos, start=1):
        (frames_dir / video.name).mkdir(parents=True)
        for frame in range(LENGTH):
            pixels = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
            for colour, rgb in COLOURS.items():
                top, left, bottom, right = video.box(colour, frame)
                pixels[top:bottom, left:right] = rgb
            Image.fromarray(pixels).save(frames_dir / video.name / f"{frame:05d}.png")
        audio = np.zeros((LENGTH, 128), dtype=np.float32)
        for colour in video.sounding:
            audio[video.sounding_from :, AUDIO_DIMS[colour]] = 1.0
        np.save(audio_dir / f"{video.name}.npy", audio)
        for colour in video.sounding:
            boxes = [video.box(colour, frame) if frame >= video.sounding_from else None for frame in range(LENGTH)]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": CATEGORY_OF[colour],
                    "iscrowd": 0,
                    "height": HEIGHT,
                    "width": WIDTH,
                    "segmentations": [_polygons(box) if box else None for box in boxes],
                    "areas": [float(SIDE * SIDE) if box else None for box in boxes],
                }
            )
    dataset = {
        "categories": CATEGORIES,
        "videos": [
            {
                "id": video_id,
                "file_names": [f"{video.name}/{frame:05d}.png" for frame in range(LENGTH)],
                "height": HEIGHT,
                "width": WIDTH,
                "length": LENGTH,
            }
            for video_id, video in enumerate(videos, start=1)
        ],
        "annotations": annotations,
    }
    (root / f"{split}.json").write_text(json.dumps(dataset))
    return root


def _polygons(box: tuple[int, int, int, int]) -> list[list[int]]:
    top, left, bottom, right = box
    return [[left, top, right, top, right, bottom, left, bottom]]


class SoundingSquareOracle(torch.nn.Module):
    """A stand-in for AvisModel that is always right on this dataset: query 0 segments the red square and query 1
    the blue one (found by colour in the frames), each classified as its label when the audio says it sounds and as
    no-object otherwise. Its masks are exact on the stride-4 grid, so post-processing gives the ground truth.

    It has what the segmenter runs: `encode_frames` and `clip_module` (the offline mode's two passes), and the
    model's own session forward (the online mode's `model(**inputs, inference_session=...)`), so evaluation takes
    the path every model takes, offline and online. A window's classes follow the sound of its
    newest frame: online, a square is found from the frame it starts sounding in."""

    audio_encoder = None
    forward_in_session = AvisModel.forward_in_session

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.clip_module = _OracleClipModule(config)
        self.device_anchor = torch.nn.Parameter(torch.zeros(()))  # where the segmenter finds the model's device

    def encode_frames(self, pixel_values: torch.Tensor, audio_features: torch.Tensor) -> AvisFrameEncoding:
        # pixel_values (N, 3, H, W) normalised with the processor's ImageNet statistics; the padding reads as the mean
        rgb = pixel_values * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        red = (rgb[:, 0] > 150) & (rgb[:, 2] < 100)
        blue = (rgb[:, 2] > 150) & (rgb[:, 0] < 100)
        mask_features = torch.zeros(len(rgb), self.config.mask_feature_size, *rgb.shape[-2:])[..., 1::4, 1::4]
        # +16 inside, -10 outside: after the 4x bilinear upsampling a square's corner pixels (weight 0.39 inside)
        # stay positive and the pixels along its edges outside (weight 0.375 inside) stay negative
        mask_features[:, 0] = red[..., 1::4, 1::4].float() * 26 - 10
        mask_features[:, 1] = blue[..., 1::4, 1::4].float() * 26 - 10
        frame_queries = torch.zeros(1, len(rgb), self.config.num_frame_queries, self.config.hidden_dim)
        return AvisFrameEncoding(frame_queries=frame_queries, mask_features=mask_features)

    def forward(self, inference_session, end_of_video: bool = False, **inputs) -> AvisSessionOutput:
        return self.forward_in_session(inference_session, end_of_video=end_of_video, **inputs)


class _OracleClipModule(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, frame_queries: torch.Tensor, audio_features: torch.Tensor) -> AvisClipOutput:
        # audio_features (B, T, 128): which squares sound in the newest frame, in the dims AUDIO_DIMS gives them
        batch, queries, num_labels = audio_features.shape[0], self.config.num_clip_queries, self.config.num_labels
        mask_embeddings = torch.zeros(batch, queries, self.config.mask_feature_size)
        mask_embeddings[:, 0, 0] = mask_embeddings[:, 1, 1] = 1.0
        class_logits = torch.zeros(batch, queries, num_labels + 1)
        class_logits[:, :, -1] = 10.0  # no object
        for query, colour in enumerate(("red", "blue")):
            sounds = audio_features[:, -1, AUDIO_DIMS[colour]].mean(-1) > 0.5
            class_logits[sounds, query, query] = 20.0
        # (decoder layers, frame-decoder layers, B, ...): the last of each
        return AvisClipOutput(class_logits=class_logits[None, None], mask_embeddings=mask_embeddings[None, None])
