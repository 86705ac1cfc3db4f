"""The PyTorch deformable-attention core computes what Deformable DETR's grid_sample reference computes."""

import pytest
import torch
from transformers.models.deformable_detr.modeling_deformable_detr import (
    MultiScaleDeformableAttention as GridSampleReference,
)

from modeling_avis.deformable_attention import MultiScaleDeformableAttention

SHAPES = [(3, 5), (6, 10), (12, 20)]


def random_inputs(batch: int, generator: torch.Generator):
    heads, head_dim, points = 4, 8, 4
    shapes = torch.tensor(SHAPES)
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    num_values = int(shapes.prod(1).sum())
    value = torch.randn(batch, num_values, heads, head_dim, generator=generator, dtype=torch.float64)
    # locations from well outside the maps to well inside, so that borders and corners are crossed
    locations = torch.rand(batch, 7, heads, len(SHAPES), points, 2, generator=generator, dtype=torch.float64)
    locations = locations * 1.6 - 0.3
    weights = torch.rand(batch, 7, heads, len(SHAPES), points, generator=generator, dtype=torch.float64)
    return value, shapes, starts, locations, weights


@pytest.mark.parametrize("batch", [1, 3])
def test_core_matches_grid_sample_in_values_and_gradients(batch):
    value, shapes, starts, locations, weights = random_inputs(batch, torch.Generator().manual_seed(batch))
    inputs = [tensor.clone().requires_grad_() for tensor in (value, locations, weights)]
    references = [tensor.clone().requires_grad_() for tensor in (value, locations, weights)]
    ours = MultiScaleDeformableAttention()(inputs[0], shapes, SHAPES, starts, inputs[1], inputs[2], 64)
    expected = GridSampleReference()(references[0], shapes, SHAPES, starts, references[1], references[2], 64)
    assert (ours - expected).abs().max() < 1e-12
    cotangent = torch.randn(ours.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (ours * cotangent).sum().backward()
    (expected * cotangent).sum().backward()
    for name, mine, theirs in zip(("value", "locations", "weights"), inputs, references):
        assert (mine.grad - theirs.grad).abs().max() < 1e-9, name


def test_locations_outside_every_map_read_zeros():
    value, shapes, starts, locations, weights = random_inputs(2, torch.Generator().manual_seed(0))
    outside = torch.full_like(locations, 1.5)
    outside[..., 1] = -0.6
    output = MultiScaleDeformableAttention()(value, shapes, SHAPES, starts, outside, weights, 64)
    assert output.abs().max() == 0
