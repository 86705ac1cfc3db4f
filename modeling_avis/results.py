"""From tracks to files: the AVIS results JSON, per-object PNG masks in a zip, and a per-track summary.

The results JSON is the benchmark's prediction format (`avism/data/avis_eval.py::instances_to_coco_json_video` of the
original): a list with one entry per predicted track, `{video_id, score, category_id, segmentations}`, category ids
1-based, one compressed RLE per frame and never null (an empty mask is encoded too, as the original writes it).
"""

import io
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

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


def mask_png_name(track: AvisTrack, frame_index: int) -> str:
    """Where a track's mask in one sampled frame lies in the masks zip: a folder per object, a file per frame."""
    label = re.sub(r"[^\w-]+", "_", track.label_name) or "object"  # a class name is no path
    return f"{track.track_id:02d}_{label}/frame_{frame_index:05d}.png"


def write_mask_zip(result: AvisVideoResult, path: str | Path) -> None:
    """Writes every track's mask in every sampled frame as a PNG (8-bit grey: 255 inside, 0 outside, at the
    video's size) in a zip (`mask_png_name`), with `timestamps.json`: the seconds of each sampled frame. A mask
    is decoded from the RLE the results JSON holds, so the two agree pixel for pixel."""
    with atomic_file(path) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("timestamps.json", json.dumps([float(t) for t in result.timestamps]))
        for track in result.tracks:
            for index in range(result.num_frames):
                png = io.BytesIO()
                Image.fromarray(track.mask(index).astype(np.uint8) * 255).save(png, format="PNG", compress_level=1)
                archive.writestr(mask_png_name(track, index), png.getvalue())


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
    "mask_png_name",
    "results_json_entries",
    "track_summary",
    "write_mask_zip",
    "write_results_json",
    "write_track_summary",
]
