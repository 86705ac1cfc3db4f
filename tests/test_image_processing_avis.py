import numpy as np
import pytest
import torch
from PIL import Image

from modeling_avis.errors import AvisInputError
from modeling_avis.image_processing_avis import AvisImageProcessor, resize_frames

# (source size, shortest edge, detectron2's output size): ResizeShortestEdge.get_output_shape rounds with int(x + 0.5).
SIZES = [
    ((720, 1280), 360, (360, 640)),
    ((360, 540), 360, (360, 540)),
    ((481, 853), 360, (360, 638)),
    ((1080, 1920), 448, (448, 796)),
    ((240, 320), 360, (360, 480)),
    ((2000, 300), 360, (1333, 200)),  # the long side is capped at 1333
]


@pytest.mark.parametrize(("source", "shortest_edge", "expected"), SIZES, ids=[f"{h}x{w}" for (h, w), _, _ in SIZES])
def test_output_size_rounds_like_detectron2(source, shortest_edge, expected):
    assert AvisImageProcessor(shortest_edge=shortest_edge).output_size(*source) == expected


@pytest.mark.parametrize(("source", "shortest_edge", "expected"), SIZES, ids=[f"{h}x{w}" for (h, w), _, _ in SIZES])
def test_resize_matches_pil_bilinear_within_one_grey_level(source, shortest_edge, expected):
    frame = np.random.default_rng(0).integers(0, 256, (*source, 3), dtype=np.uint8)
    reference = np.asarray(Image.fromarray(frame).resize(expected[::-1], Image.BILINEAR))
    size = AvisImageProcessor(shortest_edge=shortest_edge).output_size(*source)
    ours = resize_frames(torch.from_numpy(frame).permute(2, 0, 1)[None].contiguous(), size)[0].permute(1, 2, 0).numpy()
    difference = np.abs(ours.astype(int) - reference)
    # Measured on noise: 0 everywhere at integer scale factors; max 1 on 0.3% (481x853) and 0.1% (2000x300) of values.
    assert difference.max() <= 1 and (difference > 0).mean() < 0.005


def test_frames_are_normalised_then_zero_padded_to_32():
    frame = np.zeros((45, 80, 3), dtype=np.uint8)
    frame[..., 0] = 200
    inputs = AvisImageProcessor(shortest_edge=36).preprocess([frame, frame])
    assert torch.equal(AvisImageProcessor(shortest_edge=36)([frame, frame])["pixel_values"], inputs["pixel_values"])
    pixels = inputs["pixel_values"]
    # 45x80 -> 36x64, padded to 64x64.
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    assert inputs["image_size"] == [36, 64] and inputs["original_size"] == [45, 80]
    expected = torch.tensor([(200 - 123.675) / 58.395, (0 - 116.28) / 57.12, (0 - 103.53) / 57.375])
    torch.testing.assert_close(pixels[0, :, 10, 10], expected)
    assert pixels[:, :, 36:, :].abs().max() == 0


def test_frames_of_different_sizes_are_refused():
    frames = [np.zeros((40, 60, 3), np.uint8), np.zeros((40, 64, 3), np.uint8)]
    with pytest.raises(
        AvisInputError, match=r"every frame of a video must have one size: \(40, 64\) after \(40, 60\)"
    ):
        AvisImageProcessor()(frames)


def test_a_frame_that_is_not_uint8_rgb_is_refused():
    with pytest.raises(AvisInputError, match=r"a frame must be an \(H, W, 3\) uint8 RGB array, got \(40, 60\)"):
        AvisImageProcessor()([np.zeros((40, 60), np.uint8)])
