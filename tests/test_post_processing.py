"""The post-processing steps: mask scores as the original computes them, masks drawn in bounded pieces."""

import pytest
import torch
from torch.nn import functional as F

import modeling_avis.post_processing_avis as post_processing
from modeling_avis.post_processing_avis import AvisVideoInstances, instance_mask_chunks, mask_scores

PADDED, IMAGE = (32, 48), (30, 45)


def video(num_instances=7, frames=6):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(num_instances, 16, generator=generator)
    features = torch.randn(frames, 16, PADDED[0] // 4, PADDED[1] // 4, generator=generator)
    return embeddings, features


def original_logits(embeddings, features, size=None):
    """Every instance's upsampled, cropped (and resized) logits at once, (N, T, h, w), as the original's inference."""
    logits = F.interpolate(torch.einsum("nc,tchw->nthw", embeddings, features), size=PADDED, mode="bilinear")
    logits = logits[:, :, : IMAGE[0], : IMAGE[1]]
    return logits if size is None else F.interpolate(logits, size=size, mode="bilinear")


def same_masks(masks, expected, logits):
    """The same masks, but for pixels whose logit is within float rounding of 0 (our upsampling rounds as
    F.interpolate does, to the last bit or so)."""
    assert masks.shape == expected.shape and masks.sum() > 100
    assert (logits[masks != expected].abs() < 1e-5).all()


@pytest.mark.parametrize("size", [(24, 40), (1, 7), (5, 1), (1, 1), (17, 3)])
def test_upsampling_4x_is_f_interpolates_bilinear_upsampling(size):
    logits = torch.randn(3, 2, *size, generator=torch.Generator().manual_seed(1)) * 10
    expected = F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
    upsampled = post_processing.upsample_4x(logits)
    assert upsampled.shape == expected.shape
    assert (upsampled - expected).abs().max() < 1e-5


@pytest.mark.parametrize("image", [IMAGE, (32, 48), (1, 1), (29, 3)], ids=["cropped", "whole", "1x1", "29x3"])
def test_positive_regions_hold_every_positive_upsampled_logit(monkeypatch, image):
    generator = torch.Generator().manual_seed(2)
    # masks of a few blobs, as objects: most of each frame is negative; one mask is empty
    logits = torch.randn(4, 6, PADDED[0] // 4, PADDED[1] // 4, generator=generator) - 2.0
    logits[:, 0] = -1.0
    monkeypatch.setattr(post_processing, "REGION_PIXELS", 4 * image[0] * image[1])  # groups of 4 masks
    full = post_processing.upsample_4x(logits)[..., : image[0], : image[1]]
    covered = torch.zeros_like(full, dtype=torch.bool)
    upsampled_pixels = 0
    for frame, masks, top, left, regions in post_processing.positive_regions(logits, image):
        assert 0 not in masks.tolist() and len(masks) <= 4
        truth = full[frame, masks, top : top + regions.shape[1], left : left + regions.shape[2]]
        assert regions.shape == truth.shape
        positive = (truth > 0) | (regions > 0)
        assert torch.equal(regions[positive], truth[positive])
        covered[frame, masks, top : top + regions.shape[1], left : left + regions.shape[2]] = True
        upsampled_pixels += regions.numel()
    assert (full[~covered] <= 0).all() and (full > 0).sum() >= (0 if image == (1, 1) else 20)
    if image == IMAGE:
        assert upsampled_pixels < 0.8 * full[:, 1:].numel()  # the boxes leave out some of the frames


def test_mask_scores_are_the_mean_probability_inside_each_mask():
    embeddings, features = video()
    probabilities = original_logits(embeddings, features).sigmoid()
    inside = probabilities > 0.5
    expected = (probabilities * inside).sum((1, 2, 3)) / (inside.sum((1, 2, 3)) + 1e-6)
    torch.testing.assert_close(mask_scores(embeddings, features, IMAGE, chunk_size=4), expected)


@pytest.mark.parametrize("target", [IMAGE, (61, 90)], ids=["input-size", "resized"])
def test_masks_drawn_within_a_pixel_budget_are_the_masks_drawn_at_once(monkeypatch, target):
    embeddings, features = video()
    instances = AvisVideoInstances(*(torch.zeros(7),) * 4, mask_embeddings=embeddings)
    logits = original_logits(embeddings, features, None if target == IMAGE else target)
    expected = logits > 0
    monkeypatch.setattr(post_processing, "DRAW_PIXELS", 3 * max(PADDED[0] * PADDED[1], target[0] * target[1]))
    chunks = list(instance_mask_chunks(instances, features, IMAGE, target, chunk_size=5))
    assert [chunk.shape[1] for chunk in chunks] == [1] * 6  # 7 instances of a frame exceed 3 masks' pixels
    same_masks(torch.cat(chunks, dim=1), expected, logits)
    monkeypatch.setattr(post_processing, "DRAW_PIXELS", 1 << 30)
    chunks = list(instance_mask_chunks(instances, features, IMAGE, target, chunk_size=5))
    assert [chunk.shape[1] for chunk in chunks] == [5, 1]
    same_masks(torch.cat(chunks, dim=1), expected, logits)
