"""The frames part of the AVIS processor: a video's sampled RGB frames to the model's padded, normalised
`pixel_values`.

It reproduces the original's test-time path: detectron2's `ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST,
"choice")` in the dataset mapper, then `(x - pixel_mean) / pixel_std` and `ImageList.from_tensors(images, 32)` in the
model, which zero-pads bottom and right after normalising.

It is an image processor for the frames of one video, as VideoMAE's is, rather than a transformers video
processor: those (`BaseVideoProcessor`, `AutoVideoProcessor`, and a processor's `video_processor` attribute) need
torchvision, which this project cannot install beside its torch.
"""

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .config_ranges import IMAGE_PROCESSOR_RANGES, check_ranges
from .errors import AvisInputError

# ImageNet statistics on the 0-255 scale, RGB: the published checkpoints were trained with them.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def shortest_edge_size(height: int, width: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """The size with the short side `shortest_edge` and the aspect ratio kept, scaled down to fit `longest_edge`,
    rounded as detectron2's `ResizeShortestEdge.get_output_shape` (training and test resize alike)."""
    scale = shortest_edge / min(height, width)
    if height < width:
        new_height, new_width = float(shortest_edge), scale * width
    else:
        new_height, new_width = scale * height, float(shortest_edge)
    if max(new_height, new_width) > longest_edge:
        shrink = longest_edge / max(new_height, new_width)
        new_height, new_width = new_height * shrink, new_width * shrink
    # a side rounded to 0 (a frame thousands of times wider than high) is kept at 1 pixel: there is no 0-pixel frame
    return max(int(new_height + 0.5), 1), max(int(new_width + 0.5), 1)


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB -> (N, 3, h, w) uint8: the frame resize of training and test alike.

    detectron2 resizes uint8 frames with PIL's bilinear filter, which widens its support when shrinking
    (antialiasing). torch's antialiased bilinear on uint8 implements the same filter with the same fixed-point
    arithmetic: it equals PIL exactly at integer scale factors, and elsewhere differs by 1 grey level on a few pixels
    in a thousand (tests/test_image_processing_avis.py measures it).
    """
    return F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)


class AvisImageProcessor(BaseImageProcessor):
    r"""
    Resizes, normalises and pads the sampled frames of one video.

    shortest_edge (`int`): the frames' short side after resizing (`INPUT.MIN_SIZE_TEST`: 360 for the R50 models,
        448 for Swin-L).
    longest_edge (`int`): cap on the long side after resizing (`INPUT.MAX_SIZE_TEST`, detectron2's default 1333).
    image_mean, image_std (`list[float]`): RGB normalisation on the 0-255 scale (`MODEL.PIXEL_MEAN/STD`).
    size_divisibility (`int`): frames are zero-padded bottom/right to a multiple of it (`SIZE_DIVISIBILITY`).

    Each setting has a range (`config_ranges.IMAGE_PROCESSOR_RANGES`); a value outside it is a ValueError.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        shortest_edge: int = 360,
        longest_edge: int = 1333,
        image_mean: list[float] | tuple[float, ...] = IMAGENET_MEAN,
        image_std: list[float] | tuple[float, ...] = IMAGENET_STD,
        size_divisibility: int = 32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.shortest_edge = shortest_edge
        self.longest_edge = longest_edge
        self.image_mean = image_mean
        self.image_std = image_std
        self.size_divisibility = size_divisibility
        check_ranges(self, IMAGE_PROCESSOR_RANGES)
        self.image_mean, self.image_std = list(image_mean), list(image_std)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The resized (height, width) of a (height, width) frame."""
        return shortest_edge_size(height, width, self.shortest_edge, self.longest_edge)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The padded (height, width) the model sees for a resized (height, width) frame."""
        divisor = self.size_divisibility
        return -(-height // divisor) * divisor, -(-width // divisor) * divisor

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., 3, h, w) uint8 RGB -> float32 `(x - image_mean) / image_std`."""
        mean = torch.tensor(self.image_mean, device=frames.device).view(3, 1, 1)
        std = torch.tensor(self.image_std, device=frames.device).view(3, 1, 1)
        return (frames.float() - mean) / std

    def pad(self, pixel_values: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(..., h, w) zero-padded at the bottom and right to `size` (default: `padded_size` of its own), as the
        original pads after normalising (the padding is 0, not the normalised value of a black pixel)."""
        height, width = pixel_values.shape[-2:]
        padded_height, padded_width = size or self.padded_size(height, width)
        return F.pad(pixel_values, (0, padded_width - width, 0, padded_height - height))

    def preprocess(
        self, images: Iterable[np.ndarray | torch.Tensor], return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """The frames of one video, each (H, W, 3) uint8 RGB, all of one size: resized one by one as they come,
        normalised and padded.

        Returns `pixel_values` (T, 3, Hp, Wp) float32, `image_size` (h, w) before padding and `original_size` (H, W).
        """
        resized, original_size = [], None
        for frame in images:
            frame = torch.as_tensor(frame)
            if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                raise AvisInputError(
                    f"a frame must be an (H, W, 3) uint8 RGB array, got {tuple(frame.shape)} {frame.dtype}"
                )
            size = tuple(frame.shape[:2])
            if original_size is not None and size != original_size:
                raise AvisInputError(f"every frame of a video must have one size: {size} after {original_size}")
            original_size = size
            resized.append(resize_frames(frame.permute(2, 0, 1)[None].contiguous(), self.output_size(*size))[0])
        if not resized:
            raise AvisInputError("no frames to process")
        frames = torch.stack(resized)  # (T, 3, h, w) uint8
        data = {
            "pixel_values": self.pad(self.normalize(frames)),
            "image_size": list(frames.shape[-2:]),
            "original_size": list(original_size),
        }
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["image_size", "original_size"])


__all__ = ["AvisImageProcessor", "IMAGENET_MEAN", "IMAGENET_STD", "resize_frames", "shortest_edge_size"]
