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


def test_mask_scores_are_the_mean_probability_inside_each_mask():
    embeddings, features = video()
    probabilities = original_logits(embeddings, features).sigmoid()
    inside = probabilities > 0.5
    expected = (probabilities * inside).sum((1, 2, 3)) / (inside.sum((1, 2, 3)) + 1e-6)
    torch.testing.assert_close(mask_scores(embeddings, features, PADDED, IMAGE, chunk_size=4), expected)


@pytest.mark.parametrize("target", [IMAGE, (61, 90)], ids=["input-size", "resized"])
def test_masks_drawn_within_a_pixel_budget_are_the_masks_drawn_at_once(monkeypatch, target):
    embeddings, features = video()
    instances = AvisVideoInstances(*(torch.zeros(7),) * 4, mask_embeddings=embeddings)
    expected = original_logits(embeddings, features, None if target == IMAGE else target) > 0
    monkeypatch.setattr(post_processing, "DRAW_PIXELS", 3 * max(PADDED[0] * PADDED[1], target[0] * target[1]))
    chunks = list(instance_mask_chunks(instances, features, PADDED, IMAGE, target, chunk_size=5))
    assert [chunk.shape[1] for chunk in chunks] == [1] * 6  # 7 instances of a frame exceed 3 masks' pixels
    assert torch.equal(torch.cat(chunks, dim=1), expected)
    monkeypatch.setattr(post_processing, "DRAW_PIXELS", 1 << 30)
    chunks = list(instance_mask_chunks(instances, features, PADDED, IMAGE, target, chunk_size=5))
    assert [chunk.shape[1] for chunk in chunks] == [5, 1] and torch.equal(torch.cat(chunks, dim=1), expected)
