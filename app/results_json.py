"""The AVIS results format, as the original's evaluator writes and reads it.

A list with one entry per instance: `{"video_id", "score", "category_id", "segmentations"}`, where category_id is
the AVISeg dataset id (the 0-based label + 1) and segmentations holds one compressed RLE per sampled frame.
"""

import json
from pathlib import Path

from modeling_avis.tracks import AvisVideoResult


def avis_results(result: AvisVideoResult, video_id: int = 1) -> list[dict]:
    """The instances of one video in the AVIS results format."""
    return [
        {
            "video_id": video_id,
            "score": float(track.score),
            "category_id": track.label + 1,
            "segmentations": [dict(rle) for rle in track.segmentations],
        }
        for track in result.tracks
    ]


def write_avis_results(result: AvisVideoResult, path: str | Path, video_id: int = 1) -> None:
    Path(path).write_text(json.dumps(avis_results(result, video_id)))
