"""From the model's detections to tracks, and from tracks to files: the AVIS results JSON and a per-track summary.

The results JSON is the benchmark's prediction format (`avism/data/avis_eval.py::instances_to_coco_json_video` of the
original): a list with one entry per predicted track, `{video_id, score, category_id, segmentations}`, category ids
1-based, one compressed RLE per frame and never null (an empty mask is encoded too, as the original writes it).
"""

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from .outputs import write_text_atomically
from .tracks import AvisTrack, AvisVideoResult, encode_mask


def build_video_result(
    scores: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    timestamps: list[float] | np.ndarray,
    height: int,
    width: int,
    id2label: Mapping[int, str],
    has_audio: bool = True,
    fps: float | None = None,
    notes: Iterable[str] = (),
) -> AvisVideoResult:
    """One video's detections as tracks, in descending score order with track ids 1, 2, ...

    scores (N,), labels (N,) 0-based; masks (N, T, height, width) bool, or an iterable of frame chunks
    (N, t, height, width) whose t add up to T = len(timestamps), so the full-resolution masks of a long video never
    need to exist at once.
    """
    scores = np.asarray(_to_numpy(scores), dtype=np.float64).reshape(-1)
    labels = np.asarray(_to_numpy(labels), dtype=np.int64).reshape(-1)
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    order = np.argsort(-scores, kind="stable")
    segmentations = [[] for _ in order]
    for chunk in [masks] if isinstance(masks, (torch.Tensor, np.ndarray)) else masks:
        chunk = _to_numpy(chunk).astype(bool, copy=False)
        if chunk.ndim != 4 or chunk.shape[0] != len(scores) or chunk.shape[2:] != (height, width):
            raise ValueError(
                f"masks must be (N={len(scores)}, frames, {height}, {width}), got a chunk of {tuple(chunk.shape)}"
            )
        for rank, index in enumerate(order):
            segmentations[rank].extend(encode_mask(frame) for frame in chunk[index])
    num_frames = len(timestamps)
    if any(len(track) != num_frames for track in segmentations):
        raise ValueError(f"masks cover {len(segmentations[0])} frames, but the video has {num_frames} timestamps")
    tracks = [
        AvisTrack(
            track_id=rank + 1,
            label=int(labels[index]),
            label_name=id2label[int(labels[index])],
            score=float(scores[index]),
            segmentations=segmentations[rank],
        )
        for rank, index in enumerate(order)
    ]
    return AvisVideoResult(
        tracks=tracks,
        timestamps=np.asarray(timestamps, dtype=np.float64),
        height=height,
        width=width,
        has_audio=has_audio,
        fps=fps,
        notes=list(notes),
    )


def results_json_entries(result: AvisVideoResult, video_id: int) -> list[dict]:
    """The video's tracks as AVIS prediction entries (category_id = label + 1)."""
    return [
        {
            "video_id": video_id,
            "score": track.score,
            "category_id": track.label + 1,
            "segmentations": track.segmentations,
        }
        for track in result.tracks
    ]


def write_results_json(results: Mapping[int, AvisVideoResult], path: str | Path) -> None:
    """Writes the AVIS results JSON of several videos, keyed by their dataset `video_id`, in the mapping's order."""
    entries = [entry for video_id, result in results.items() for entry in results_json_entries(result, video_id)]
    write_text_atomically(path, json.dumps(entries))


def track_summary(result: AvisVideoResult) -> list[dict]:
    """One plain record per track: id, class, score, the first and last second it is present, the frames it is in.

    A track is present in a frame when its mask there is not empty; `first_second`/`last_second` are None for a
    track that is never present.
    """
    summary = []
    for track in result.tracks:
        present = np.flatnonzero(track.areas() > 0)
        seconds = [float(result.timestamps[i]) for i in present]
        summary.append(
            {
                "id": track.track_id,
                "class": track.label_name,
                "score": track.score,
                "first_second": seconds[0] if seconds else None,
                "last_second": seconds[-1] if seconds else None,
                "frames": [int(i) for i in present],
            }
        )
    return summary


def write_track_summary(result: AvisVideoResult, path: str | Path) -> None:
    """Writes `track_summary` as JSON, with the video's size, frame times and audio facts alongside."""
    document = {
        "height": result.height,
        "width": result.width,
        "fps": result.fps,
        "has_audio": result.has_audio,
        "notes": result.notes,
        "timestamps": [float(t) for t in result.timestamps],
        "tracks": track_summary(result),
    }
    write_text_atomically(path, json.dumps(document, indent=1))


def _to_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


__all__ = [
    "build_video_result",
    "results_json_entries",
    "track_summary",
    "write_results_json",
    "write_track_summary",
]
