"""The training augmentation of AVISM, on tensors: random resize, moving crop and horizontal flip of a clip.

As in the original (`avism/data/augmentation.py`, `build_augmentation` with `configs/avism/*/avism_*.yaml`), the
random choices are drawn once per clip, in this order:
1. with probability `crop_probability`: resize the shortest edge to one of `crop_min_sizes` (longest edge at most
   `crop_max_size`), then crop a window whose height and width are drawn from `crop_size_range` (capped by the
   frame). The window moves: its corner goes in a straight line between two random positions, each frame at a
   random point of that line, in a random direction;
2. resize the shortest edge to one of `min_sizes`, the longest edge at most `max_size`;
3. with probability `flip_probability`: flip horizontally.

Frames are resized with antialiased bilinear interpolation (what PIL's bilinear resize does in detectron2), bitmasks
with nearest-exact (PIL's nearest). Polygons are transformed as coordinates and rasterised at the output size, like
detectron2 does: sharper than resampling a rasterised mask when the frame shrinks.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from modeling_avis.image_processing_avis import resize_frames, shortest_edge_size


@dataclass(frozen=True)
class Resize:
    """Resize a (in_height, in_width) frame to (height, width)."""

    in_height: int
    in_width: int
    height: int
    width: int

    def image(self, frame: Tensor) -> Tensor:
        # the processor's resize; on channels-last uint8 torch takes its fast path, with the same values
        resized = resize_frames(frame[None].contiguous(memory_format=torch.channels_last), (self.height, self.width))
        return resized[0].contiguous()

    def masks(self, masks: Tensor) -> Tensor:
        if masks.shape[0] == 0:
            return masks.new_zeros(0, self.height, self.width)
        resized = F.interpolate(masks[None].float(), size=(self.height, self.width), mode="nearest-exact")
        return resized[0] > 0.5

    def points(self, xy: np.ndarray) -> np.ndarray:
        return xy * np.array([self.width / self.in_width, self.height / self.in_height])


@dataclass(frozen=True)
class Crop:
    """Keep the (height, width) window whose top-left pixel is (top, left)."""

    top: int
    left: int
    height: int
    width: int

    def image(self, frame: Tensor) -> Tensor:
        return frame[:, self.top : self.top + self.height, self.left : self.left + self.width]

    def masks(self, masks: Tensor) -> Tensor:
        return self.image(masks)

    def points(self, xy: np.ndarray) -> np.ndarray:
        return xy - np.array([self.left, self.top])


@dataclass(frozen=True)
class HorizontalFlip:
    """Mirror a frame of the given width left to right."""

    width: int

    def image(self, frame: Tensor) -> Tensor:
        return frame.flip(-1)

    def masks(self, masks: Tensor) -> Tensor:
        return masks.flip(-1)

    def points(self, xy: np.ndarray) -> np.ndarray:
        return np.stack([self.width - xy[:, 0], xy[:, 1]], axis=1)


@dataclass(frozen=True)
class FrameTransform:
    """The geometric transforms of one frame, applied in order, and the size they produce."""

    steps: tuple[Resize | Crop | HorizontalFlip, ...]
    height: int
    width: int

    def image(self, frame: Tensor) -> Tensor:
        """(3, H, W) uint8 -> (3, height, width) uint8."""
        for step in self.steps:
            frame = step.image(frame)
        return frame

    def masks(self, masks: Tensor) -> Tensor:
        """(N, H, W) bool -> (N, height, width) bool."""
        for step in self.steps:
            masks = step.masks(masks)
        return masks

    def polygon(self, polygon: list[float]) -> list[float]:
        """A flat [x0, y0, x1, y1, ...] polygon in input pixels -> the same in output pixels."""
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        for step in self.steps:
            xy = step.points(xy)
        return xy.reshape(-1).tolist()


def _choice(values: tuple[int, ...], generator: torch.Generator | None) -> int:
    return values[int(torch.randint(len(values), (1,), generator=generator))]


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform in [low, high)."""
    return int(torch.randint(low, high, (1,), generator=generator))


def _chance(probability: float, generator: torch.Generator | None) -> bool:
    return bool(torch.rand((), generator=generator) < probability)


@dataclass(frozen=True)
class ClipAugmentation:
    """Random geometric augmentation of a clip; the defaults are the published models' training recipe."""

    min_sizes: tuple[int, ...] = (288, 320, 352, 384, 416, 448, 480, 512)
    max_size: int = 768
    crop_probability: float = 0.5
    crop_min_sizes: tuple[int, ...] = (400, 500, 600)
    crop_max_size: int = 1333
    crop_size_range: tuple[int, int] = (384, 600)
    flip_probability: float = 0.5

    def sample(
        self, num_frames: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> list[FrameTransform]:
        """Draws the transforms of a clip of `num_frames` frames of (height, width): one per frame."""
        steps = [[] for _ in range(num_frames)]
        if _chance(self.crop_probability, generator):
            resized = shortest_edge_size(height, width, _choice(self.crop_min_sizes, generator), self.crop_max_size)
            for frame_steps in steps:
                frame_steps.append(Resize(height, width, *resized))
            crops = self._moving_crop(num_frames, *resized, generator)
            for frame_steps, crop in zip(steps, crops, strict=True):
                frame_steps.append(crop)
            height, width = crops[0].height, crops[0].width
        resized = shortest_edge_size(height, width, _choice(self.min_sizes, generator), self.max_size)
        for frame_steps in steps:
            frame_steps.append(Resize(height, width, *resized))
        height, width = resized
        if _chance(self.flip_probability, generator):
            for frame_steps in steps:
                frame_steps.append(HorizontalFlip(width))
        return [FrameTransform(tuple(frame_steps), height, width) for frame_steps in steps]

    def _moving_crop(self, num_frames: int, height: int, width: int, generator: torch.Generator | None) -> list[Crop]:
        """One crop size per clip; the window's corner moves from one random position towards another."""
        low, high = self.crop_size_range
        crop_height = _randint(min(height, low), min(height, high) + 1, generator)
        crop_width = _randint(min(width, low), min(width, high) + 1, generator)
        top_start = _randint(0, height - crop_height + 1, generator)
        left_start = _randint(0, width - crop_width + 1, generator)
        top_end = _randint(top_start, height - crop_height + 1, generator)
        left_end = _randint(left_start, width - crop_width + 1, generator)
        # The original weighs the start by sorted uniform draws, so the first frame sits nearest the end position;
        # half of the clips then run backwards.
        progress = torch.rand(num_frames, generator=generator, dtype=torch.float64).sort().values
        tops = (top_start * progress + top_end * (1 - progress)).round().long().tolist()
        lefts = (left_start * progress + left_end * (1 - progress)).round().long().tolist()
        if _chance(0.5, generator):
            tops, lefts = tops[::-1], lefts[::-1]
        return [Crop(top, left, crop_height, crop_width) for top, left in zip(tops, lefts, strict=True)]


__all__ = ["ClipAugmentation", "Crop", "FrameTransform", "HorizontalFlip", "Resize"]
