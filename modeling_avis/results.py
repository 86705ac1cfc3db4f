"""From tracks to files: the AVIS results JSON and a per-track summary.

The results JSON is the benchmark's prediction format (`avism/data/avis_eval.py::instances_to_coco_json_video` of the
original): a list with one entry per predicted track, `{video_id, score, category_id, segmentations}`, category ids
1-based, one compressed RLE per frame and never null (an empty mask is encoded too, as the original writes it).
"""

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .outputs import atomic_file, write_text_atomically
from .tracks import AvisTrack, AvisVideoResult


def results_json_entries(result: AvisVideoResult, video_id: int) -> list[dict]:
    """The video's tracks as AVIS prediction entries (category_id = label + 1), their RLEs in lists."""
    return [{**_entry_fields(track, video_id), "segmentations": list(track.segmentations)} for track in result.tracks]


def write_results_json(results: Mapping[int, AvisVideoResult], path: str | Path) -> None:
    """Writes the AVIS results JSON of several videos, keyed by their dataset `video_id`, in the mapping's order.

    It is streamed to the file one RLE at a time (the text json.dumps would give), so that writing it holds no more
    in memory than one mask, however long the videos and however many their tracks.
    """
    with atomic_file(path) as temporary, open(temporary, "w") as file:
        file.write("[")
        separator = ""
        for video_id, result in results.items():
            for track in result.tracks:
                fields = json.dumps(_entry_fields(track, video_id))[:-1]  # without its closing brace
                file.write(f'{separator}{fields}, "segmentations": [')
                for index, rle in enumerate(track.segmentations):
                    file.write((", " if index else "") + json.dumps(rle))
                file.write("]}")
                separator = ", "
        file.write("]")


def _entry_fields(track: AvisTrack, video_id: int) -> dict:
    return {"video_id": video_id, "score": track.score, "category_id": track.label + 1}


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


__all__ = [
    "results_json_entries",
    "track_summary",
    "write_results_json",
    "write_track_summary",
]
