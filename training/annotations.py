"""The rules of AVISeg / YouTube-VIS annotations, one set for training and evaluation alike.

Both readers of annotations, training's (`training.data`) and the evaluator's (`training.evaluation.inputs`), read
here what a video entry names (its frame files, or a video file and the times of its annotated frames:
`read_video_source`) and what a frame's segmentation is (`normalize_segmentation`); each says in its own error type
and words where a problem is.

A frame's segmentation is null or [] where the object is absent; else polygons ([[x0, y0, x1, y1, ...], ...]), or
an RLE {size, counts} (counts: COCO's run lengths, or its compressed string), bare or in a list. Polygons with
fewer than 3 points are dropped, as the original's training does (the original's evaluator read some as boxes, and
crashed on a bare RLE or compressed counts).

Geometry is checked before pycocotools sees it: it rasterises polygons in C without looking at them, and a
coordinate of NaN, Infinity or 1e9 (all valid JSON to Python) crashes the process, and one far outside its frame
takes seconds per polygon.
"""

import math
import numbers
from dataclasses import dataclass

import pycocotools.mask as mask_utils

from modeling_avis.config_ranges import real, shown, whole
from modeling_avis.tracks import check_rle

# The frame sides an annotated video may have (8K is 7680 x 4320): masks are decoded at that size.
FRAME_SIDE = whole(1, 8192)
# How far a polygon may reach outside its frame, in frame sizes: annotations lie in their frame, and rasterising a
# polygon takes time in proportion to its extent.
COORDINATE_MARGIN = 4
# AVISeg's frame files are one a second: frame k shows second k, the second its sound is heard in.
AVISEG_FPS = 1.0
# The rates annotated frames may be given at (the processor's fps range).
ANNOTATION_FPS = real(0.001, 1000)

# A frame's segmentation once read: polygons, one compressed RLE, or None where absent.
Segmentation = list[list[float]] | dict | None


@dataclass(frozen=True)
class VideoSource:
    """Where a video entry's annotated frames are: its frame files (`file_names`, one a second as AVISeg's), or one
    video file with its sound (`video`, relative to the annotations file) and the seconds of the annotated frames
    (`times`, from "fps" and "length", or "timestamps")."""

    file_names: tuple[str, ...] | None
    video: str | None
    times: tuple[float, ...]

    @property
    def name(self) -> str:
        """The folder of its frames, or its video file: how messages and the evaluator's ordering name it."""
        return self.file_names[0].split("/")[0] if self.file_names else self.video


def read_video_source(entry: dict) -> VideoSource:
    """The frames a video entry names: `file_names` (frame files), or `video` (a file with its sound) and the times
    of its annotated frames, `fps` (from 0 s) or `timestamps` (seconds, increasing); `length`, their number, always
    (YouTube-VIS's). ValueError naming the field otherwise."""
    if ("file_names" in entry) == ("video" in entry):
        raise ValueError("give either 'file_names' (frame files) or 'video' (a video file with its sound)")
    if "length" not in entry:
        raise ValueError("has no 'length'")
    length = entry["length"]
    if not (_is_count(length) and length > 0):
        raise ValueError(f"'length' must be a positive number of frames, not {shown(length)}")
    if "file_names" in entry:
        names = entry["file_names"]
        if not (isinstance(names, list) and names and all(isinstance(name, str) and name for name in names)):
            raise ValueError(f"'file_names' must be a non-empty list of frame file names, not {shown(names)}")
        if len(names) != length:
            raise ValueError(f"has {len(names)} frames, not its length {length}")
        return VideoSource(tuple(names), None, tuple(index / AVISEG_FPS for index in range(length)))
    video = entry["video"]
    if not (isinstance(video, str) and video.strip()):
        raise ValueError(f"'video' must be the path of a video file, not {shown(video)}")
    if ("fps" in entry) == ("timestamps" in entry):
        raise ValueError("give the times of its annotated frames: either 'fps' (from 0 s) or 'timestamps'")
    if "fps" in entry:
        if not ANNOTATION_FPS.admits(entry["fps"]):
            raise ValueError(f"'fps' is {shown(entry['fps'])}, allowed {ANNOTATION_FPS} frames per second")
        return VideoSource(None, video, tuple(index / entry["fps"] for index in range(length)))
    times = entry["timestamps"]
    if not (isinstance(times, list) and all(_is_second(time) for time in times)):
        raise ValueError(f"'timestamps' must be a list of seconds from 0, not {shown(times)}")
    if any(later <= earlier for earlier, later in zip(times, times[1:])):
        raise ValueError("'timestamps' must increase")
    if len(times) != length:
        raise ValueError(f"has {len(times)} timestamps, not its length {length}")
    return VideoSource(None, video, tuple(float(time) for time in times))


def normalize_segmentation(segmentation: object, height: int, width: int) -> Segmentation:
    """A frame's segmentation (see the module docstring) as polygons, one compressed RLE, or None where absent,
    once its geometry is checked; ValueError otherwise."""
    if segmentation is None or segmentation == []:
        return None
    if isinstance(segmentation, dict):
        segmentation = [segmentation]
    if not isinstance(segmentation, list):
        raise ValueError(
            "expected a list of polygons or of RLEs, an RLE, or null where the object is absent, "
            f"not {shown(segmentation)}"
        )
    if isinstance(segmentation[0], dict):
        return mask_utils.merge([_compressed_rle(rle, height, width) for rle in segmentation])
    polygons = [check_polygon(polygon, height, width) for polygon in segmentation]
    return [polygon for polygon in polygons if is_area_polygon(polygon)] or None


def segmentation_rle(segmentation: Segmentation, height: int, width: int) -> dict | None:
    """A read segmentation as one compressed RLE: polygons merged as the original evaluator merges them."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    return segmentation


def _compressed_rle(rle: object, height: int, width: int) -> dict:
    """An RLE of the annotations (run lengths, or compressed counts) as pycocotools' compressed RLE, once checked to
    cover the video's frame exactly (ValueError otherwise)."""
    if not isinstance(rle, dict):
        raise ValueError(f"an RLE must be an object {{size, counts}}, not {shown(rle)}")
    if rle.get("size") != [height, width]:
        raise ValueError(f"an RLE mask of size {shown(rle.get('size'))} does not fit its {height}x{width} video")
    counts = rle.get("counts")
    if isinstance(counts, list):
        check_run_lengths(counts, height, width)
        return mask_utils.frPyObjects(rle, height, width)
    if not isinstance(counts, str):
        raise ValueError(f"RLE counts must be run lengths or a compressed string, not {shown(counts)}")
    check_rle({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": counts.encode("latin-1")}


def check_frame_size(height: object, width: object) -> None:
    """ValueError unless a video's height and width are whole numbers of pixels within FRAME_SIDE."""
    for name, side in (("height", height), ("width", width)):
        if not FRAME_SIDE.admits(side):
            raise ValueError(f"its {name} is {shown(side)}, allowed {FRAME_SIDE} pixels")


def check_polygon(polygon: object, height: int, width: int) -> list[float]:
    """A polygon [x0, y0, x1, y1, ...] of a height x width frame as floats, once each coordinate is found to be a
    number within COORDINATE_MARGIN frame sizes of the frame (so neither NaN nor infinite); ValueError naming the
    first that is not."""
    if not isinstance(polygon, list):
        raise ValueError(f"a polygon must be a list of numbers [x, y, x, y, ...], not {shown(polygon)}")
    for index, value in enumerate(polygon):
        limit = COORDINATE_MARGIN * (height if index % 2 else width)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not -limit <= value <= limit:
            axis = "y" if index % 2 else "x"
            raise ValueError(
                f"polygon coordinate {index} ({axis}) is {shown(value)}, not a number within -{limit}..{limit} "
                f"({COORDINATE_MARGIN} frame sizes of the {width}x{height} frame)"
            )
    return [float(value) for value in polygon]


def is_area_polygon(polygon: list[float]) -> bool:
    """Whether a polygon has x, y pairs and at least 3 points: what pycocotools reads as a polygon (a first polygon
    of 4 numbers it reads as a box), and what the original's training keeps (it drops the others)."""
    return len(polygon) % 2 == 0 and len(polygon) >= 6


def check_run_lengths(counts: object, height: int, width: int) -> None:
    """ValueError unless `counts` is a list of run lengths (COCO's uncompressed RLE) covering a height x width
    frame exactly."""
    if not (isinstance(counts, list) and all(_is_count(run) for run in counts)):
        raise ValueError("ground-truth RLE counts must be a list of run lengths")
    if sum(counts) != height * width:
        raise ValueError(f"RLE run lengths add up to {sum(counts)} pixels, not {height}x{width}")


def _is_count(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def _is_second(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


__all__ = [
    "ANNOTATION_FPS",
    "AVISEG_FPS",
    "COORDINATE_MARGIN",
    "FRAME_SIDE",
    "Segmentation",
    "VideoSource",
    "check_frame_size",
    "check_polygon",
    "check_run_lengths",
    "is_area_polygon",
    "normalize_segmentation",
    "read_video_source",
    "segmentation_rle",
]
