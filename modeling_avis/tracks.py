"""Tracked sounding objects: what the model's post-processing hands to renderers, writers and metrics.

Masks are kept as compressed COCO RLE, one per sampled frame, so a long video's tracks stay small; `mask(t)`
decodes one frame when a renderer needs it.
"""

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils


def encode_mask(mask: np.ndarray) -> dict:
    """A (H, W) bool mask as compressed COCO RLE `{"size": [H, W], "counts": str}`."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    """The (H, W) bool mask of a compressed COCO RLE."""
    return mask_utils.decode(_as_bytes(rle)).astype(bool)


@dataclass
class AvisTrack:
    """One sounding object through the video.

    track_id: 1-based, in order of descending score.
    label / label_name: 0-based AVISeg class id and its name.
    score: the clip-level score (class probability x mask score).
    segmentations: one compressed RLE per sampled frame, at the video's original size (empty masks included).
    """

    track_id: int
    label: int
    label_name: str
    score: float
    segmentations: list[dict]

    def mask(self, frame_index: int) -> np.ndarray:
        return decode_mask(self.segmentations[frame_index])

    def areas(self) -> np.ndarray:
        """Pixels of the mask in each sampled frame, (T,) int64."""
        return np.asarray(mask_utils.area([_as_bytes(s) for s in self.segmentations]), dtype=np.int64)


@dataclass
class AvisVideoResult:
    """Everything predicted for one video.

    timestamps: (T,) seconds of each sampled frame in the source video.
    height / width: the source video's frame size, which every mask has.
    has_audio: False when the video had no audio track and silence was used instead.
    fps: the source video's frame rate (for renderers that hold masks between sampled frames).
    """

    tracks: list[AvisTrack]
    timestamps: np.ndarray
    height: int
    width: int
    has_audio: bool = True
    fps: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.timestamps)


def _as_bytes(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


__all__ = ["AvisTrack", "AvisVideoResult", "decode_mask", "encode_mask"]
