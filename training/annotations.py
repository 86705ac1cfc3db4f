"""The geometry of AVISeg annotations, checked before pycocotools sees it.

pycocotools rasterises polygons in C without looking at them: a coordinate of NaN, Infinity or 1e9 (all valid JSON
to Python) crashes the process, and one far outside its frame takes seconds per polygon. Both readers of
annotations, training's (`training.data`) and the evaluator's (`training.evaluation.inputs`), check each video's
size and each frame's polygons and run lengths here first; each says in its own error type where the problem is.
"""

import numbers

from modeling_avis.config_ranges import shown, whole

# The frame sides an annotated video may have (8K is 7680 x 4320): masks are decoded at that size.
FRAME_SIDE = whole(1, 8192)
# How far a polygon may reach outside its frame, in frame sizes: annotations lie in their frame, and rasterising a
# polygon takes time in proportion to its extent.
COORDINATE_MARGIN = 4


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


__all__ = [
    "COORDINATE_MARGIN",
    "FRAME_SIDE",
    "check_frame_size",
    "check_polygon",
    "check_run_lengths",
    "is_area_polygon",
]
