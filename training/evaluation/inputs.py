"""Reading and checking the two inputs of the benchmark: AVISeg ground truth and predicted tracks.

Ground truth is YouTube-VIS style JSON (`categories`, `videos`, `annotations`); predictions are the AVIS results
format, a list of `{video_id, score, category_id, segmentations}` with one compressed RLE (or null) per frame.
Everything is checked up front, so a bad file fails with one line naming the file and the entry instead of a
traceback from deep inside the metrics.
"""

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from pycocotools import mask as mask_utils

from modeling_avis.errors import AvisEvaluationError
from modeling_avis.input_files import InvalidInputFile, read_json
from modeling_avis.tracks import check_rle

from ..annotations import FRAME_SIDE, normalize_segmentation, read_video_source, segmentation_rle


@dataclass(frozen=True)
class Video:
    """One ground-truth video.

    name: the folder of its first frame file; the original evaluator orders videos by it, and that order decides
    ties in TrackMAP (see `track_metrics`).
    """

    video_id: int
    name: str
    num_frames: int
    height: int
    width: int


@dataclass(frozen=True)
class GroundTruthTrack:
    """One annotated object.

    masks: per frame, the frame's polygons merged to one compressed RLE, None where the object is absent.
    areas: the JSON `areas` field (TrackMAP's area ranges use it, not the masks).
    """

    annotation_id: int
    video_id: int
    category_id: int
    iscrowd: int
    masks: list[dict | None]
    areas: list[float | None]


@dataclass(frozen=True)
class PredictedTrack:
    """One predicted track; masks: per frame, a compressed RLE `{size, counts: str}` or None."""

    video_id: int
    category_id: int
    score: float
    masks: list[dict | None]


@dataclass(frozen=True)
class GroundTruth:
    """categories: id -> name, in file order; every one of them is averaged over by HOTA, even if never used."""

    source: str
    categories: dict[int, str]
    videos: dict[int, Video]
    tracks: list[GroundTruthTrack]


def load_ground_truth(gt: str | Path | dict) -> GroundTruth:
    """Reads and checks an AVISeg ground-truth JSON (a path, or the already parsed dict)."""
    source, data = _read_json(gt, "gt")
    if not isinstance(data, dict):
        raise AvisEvaluationError(f"{source}: expected a JSON object with categories, videos and annotations")
    for key in ("categories", "videos", "annotations"):
        if not isinstance(data.get(key), list):
            raise AvisEvaluationError(f"{source}: '{key}' must be a list")
    categories = _read_categories(data["categories"], source)
    videos = _read_videos(data["videos"], source)
    tracks = [
        _read_ground_truth_track(entry, f"{source} annotations[{i}]", categories, videos, source)
        for i, entry in enumerate(data["annotations"])
    ]
    seen = set()
    for i, track in enumerate(tracks):
        if track.annotation_id in seen:
            raise AvisEvaluationError(f"{source} annotations[{i}]: id {track.annotation_id} is used twice")
        seen.add(track.annotation_id)
    return GroundTruth(source, categories, videos, tracks)


def load_predictions(predictions: str | Path | list, ground_truth: GroundTruth) -> list[PredictedTrack]:
    """Reads and checks predicted tracks (a path, or the already parsed list) against their ground truth."""
    source, data = _read_json(predictions, "predictions")
    if not isinstance(data, list):
        raise AvisEvaluationError(f"{source}: expected a list of predicted tracks, got {_kind(data)}")
    return [_read_predicted_track(entry, f"{source} entry {i}", ground_truth) for i, entry in enumerate(data)]


def _read_json(value: str | Path | dict | list, in_memory_name: str) -> tuple[str, object]:
    """(name to use in messages, parsed JSON)."""
    if not isinstance(value, str | Path):
        return in_memory_name, value
    path = Path(value)
    try:
        return path.name, read_json(path)
    except FileNotFoundError:
        raise AvisEvaluationError(f"{path}: no such file") from None
    except InvalidInputFile as error:
        raise AvisEvaluationError(f"{path.name}: {error}") from None


def _read_categories(entries: list, source: str) -> dict[int, str]:
    categories = {}
    for i, entry in enumerate(entries):
        where = f"{source} categories[{i}]"
        category_id = _field(entry, "id", _is_int, "an integer", where)
        name = _field(entry, "name", lambda v: isinstance(v, str), "a string", where)
        if category_id in categories or name in categories.values():
            raise AvisEvaluationError(f"{where}: category id {category_id} or name '{name}' is listed twice")
        categories[int(category_id)] = name
    return categories


def _read_videos(entries: list, source: str) -> dict[int, Video]:
    videos = {}
    names = set()
    for i, entry in enumerate(entries):
        where = f"{source} videos[{i}]"
        video_id = _field(entry, "id", _is_int, "an integer", where)
        height = _field(entry, "height", FRAME_SIDE.admits, f"an integer in {FRAME_SIDE}", where)
        width = _field(entry, "width", FRAME_SIDE.admits, f"an integer in {FRAME_SIDE}", where)
        try:
            frames = read_video_source(entry)
        except ValueError as error:
            raise AvisEvaluationError(f"{where}: {error}") from None
        name = frames.name
        if video_id in videos:
            raise AvisEvaluationError(f"{where}: video id {video_id} is used twice")
        if name in names:
            raise AvisEvaluationError(f"{where}: another video's frames are also in '{name}'")
        names.add(name)
        videos[video_id] = Video(int(video_id), name, len(frames.times), int(height), int(width))
    return videos


def _read_ground_truth_track(
    entry: object, where: str, categories: dict[int, str], videos: dict[int, Video], source: str
) -> GroundTruthTrack:
    annotation_id = _field(entry, "id", _is_int, "an integer", where)
    video = _known_video(entry, where, videos, source)
    category_id = _known_category(entry, where, categories, source)
    iscrowd = _field(entry, "iscrowd", _is_int, "0 or 1", where) if "iscrowd" in entry else 0
    for key, size in (("height", video.height), ("width", video.width)):
        if key in entry and _field(entry, key, _is_int, "an integer", where) != size:
            raise AvisEvaluationError(f"{where}: {key} {entry[key]} differs from video {video.video_id}'s {size}")
    segmentations = _per_frame_list(entry, "segmentations", video, where)
    masks = [_ground_truth_mask(seg, video, f"{where} frame {t}") for t, seg in enumerate(segmentations)]
    if "areas" not in entry:  # the masks' own (YouTube-VIS files carry them, a file of one's own need not)
        areas = [None if mask is None else float(mask_utils.area(mask)) for mask in masks]
        return GroundTruthTrack(int(annotation_id), video.video_id, category_id, int(iscrowd), masks, areas)
    areas = _per_frame_list(entry, "areas", video, where)
    for t, area in enumerate(areas):
        if area is not None and not (_is_number(area) and 0 <= area <= video.height * video.width):
            raise AvisEvaluationError(
                f"{where} frame {t}: area must be a number of pixels (0..{video.height * video.width}) or null"
            )
    return GroundTruthTrack(int(annotation_id), video.video_id, category_id, int(iscrowd), masks, list(areas))


def _ground_truth_mask(segmentation: object, video: Video, where: str) -> dict | None:
    """A frame's segmentation read by the annotations' rules (`normalize_segmentation`, training's too), merged to
    one compressed RLE as the original evaluator merges it."""
    try:
        normalized = normalize_segmentation(segmentation, video.height, video.width)
        return segmentation_rle(normalized, video.height, video.width)
    except ValueError as error:
        raise AvisEvaluationError(f"{where}: {error}") from None


def _read_predicted_track(entry: object, where: str, ground_truth: GroundTruth) -> PredictedTrack:
    video = _known_video(entry, where, ground_truth.videos, ground_truth.source)
    category_id = _known_category(entry, where, ground_truth.categories, ground_truth.source)
    score = _field(entry, "score", lambda v: _is_number(v) and math.isfinite(v), "a finite number", where)
    segmentations = _per_frame_list(entry, "segmentations", video, where)
    for t, rle in enumerate(segmentations):
        if rle is None:
            continue
        if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str)):
            raise AvisEvaluationError(
                f"{where} frame {t}: expected a compressed RLE {{size, counts: str}} or null, got {_kind(rle)}"
            )
        if not _has_size(rle, video):
            raise AvisEvaluationError(
                f"{where} frame {t}: mask size {rle.get('size')} is not video {video.video_id}'s "
                f"{video.height}x{video.width}"
            )
        try:
            check_rle(rle, video.height, video.width)
        except ValueError as error:
            raise AvisEvaluationError(f"{where} frame {t}: {error}") from None
    return PredictedTrack(video.video_id, category_id, float(score), list(segmentations))


def _known_video(entry: object, where: str, videos: dict[int, Video], source: str) -> Video:
    video_id = _field(entry, "video_id", _is_int, "an integer", where)
    if video_id not in videos:
        raise AvisEvaluationError(f"{where}: video_id {video_id} is not in {source}")
    return videos[video_id]


def _known_category(entry: object, where: str, categories: dict[int, str], source: str) -> int:
    category_id = _field(entry, "category_id", _is_int, "an integer", where)
    if category_id not in categories:
        raise AvisEvaluationError(
            f"{where}: category_id {category_id} is not a category of {source} "
            f"(ids {min(categories, default=None)}..{max(categories, default=None)})"
        )
    return int(category_id)


def _per_frame_list(entry: dict, key: str, video: Video, where: str) -> list:
    value = _field(entry, key, lambda v: isinstance(v, list), "a list with one entry per frame", where)
    if len(value) != video.num_frames:
        raise AvisEvaluationError(
            f"{where}: {len(value)} {key} for video {video.video_id}, which has {video.num_frames} frames"
        )
    return value


def _has_size(rle: dict, video: Video) -> bool:
    size = rle.get("size")
    return isinstance(size, list | tuple) and list(size) == [video.height, video.width]


def _field(entry: object, key: str, is_valid, expected: str, where: str):
    if not isinstance(entry, dict):
        raise AvisEvaluationError(f"{where}: expected a JSON object, got {_kind(entry)}")
    if key not in entry:
        raise AvisEvaluationError(f"{where}: missing '{key}'")
    if not is_valid(entry[key]):
        raise AvisEvaluationError(f"{where}: '{key}' must be {expected}, got {_kind(entry[key])}")
    return entry[key]


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _kind(value: object) -> str:
    """How a JSON value reads in a message: 'a dict', 'a list', 'null', or the value itself, shortened."""
    if isinstance(value, dict):
        return "a dict"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return repr(value)[:40]
