"""The video part of the AVIS processor: sampled RGB frames to the model's padded, normalised `pixel_values`.

It reproduces the original's test-time path: detectron2's `ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST,
"choice")` in the dataset mapper, then `(x - pixel_mean) / pixel_std` and `ImageList.from_tensors(images, 32)` in the
model, which zero-pads bottom and right after normalising.
"""

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .configuration_avis import IMAGENET_MEAN, IMAGENET_STD
from .errors import AvisInputError


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


class AvisImageProcessor(BaseImageProcessor):
    r"""
    Resizes, normalises and pads the sampled frames of one video.

    shortest_edge (`int`): the frames' short side after resizing (`INPUT.MIN_SIZE_TEST`: 360 for the R50 models,
        448 for Swin-L).
    longest_edge (`int`): cap on the long side after resizing (`INPUT.MAX_SIZE_TEST`, detectron2's default 1333).
    image_mean, image_std (`list[float]`): RGB normalisation on the 0-255 scale (`AvisConfig.pixel_mean/std`).
    size_divisibility (`int`): frames are zero-padded bottom/right to a multiple of it (`AvisConfig.size_divisibility`).
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
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.size_divisibility = size_divisibility

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The resized (height, width) of a (height, width) frame."""
        return shortest_edge_size(height, width, self.shortest_edge, self.longest_edge)

    def resize(self, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (3, h, w) uint8.

        detectron2 resizes uint8 frames with PIL's bilinear filter, which widens its support when shrinking
        (antialiasing). torch's antialiased bilinear on uint8 implements the same filter with the same fixed-point
        arithmetic: it equals PIL exactly at integer scale factors, and elsewhere differs by 1 grey level on a few
        pixels in a thousand (tests/test_image_processing_avis.py measures it).
        """
        frame = torch.as_tensor(frame)
        if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise AvisInputError(
                f"a frame must be an (H, W, 3) uint8 RGB array, got {tuple(frame.shape)} {frame.dtype}"
            )
        size = self.output_size(frame.shape[0], frame.shape[1])
        pixels = frame.permute(2, 0, 1).unsqueeze(0).contiguous()
        return F.interpolate(pixels, size=size, mode="bilinear", antialias=True, align_corners=False)[0]

    def __call__(self, frames: Iterable[np.ndarray | torch.Tensor], return_tensors: str | None = "pt") -> BatchFeature:
        """Frames of one video, each (H, W, 3) uint8 RGB, all of one size; resized one by one as they come.

        Returns `pixel_values` (T, 3, Hp, Wp) float32, `image_size` (h, w) before padding and `original_size` (H, W).
        """
        resized, original_size = [], None
        for frame in frames:
            size = tuple(frame.shape[:2])
            if original_size is not None and size != original_size:
                raise AvisInputError(f"every frame of a video must have one size: {size} after {original_size}")
            original_size = size
            resized.append(self.resize(frame))
        if not resized:
            raise AvisInputError("no frames to process")
        pixels = torch.stack(resized).float()  # (T, 3, h, w)
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        pixels = (pixels - mean) / std
        height, width = pixels.shape[-2:]
        pad_bottom = -height % self.size_divisibility
        pad_right = -width % self.size_divisibility
        pixels = F.pad(pixels, (0, pad_right, 0, pad_bottom))
        data = {"pixel_values": pixels, "image_size": [height, width], "original_size": list(original_size)}
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["image_size", "original_size"])


__all__ = ["AvisImageProcessor", "shortest_edge_size"]
