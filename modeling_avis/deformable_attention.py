"""Multi-scale deformable attention (Deformable DETR), the attention of AVISM's pixel decoder.

`MultiScaleDeformableAttention` is the sampling core: a stateless layer with the same forward signature as
transformers' Deformable DETR layer, so `kernelize` / `from_pretrained(..., use_kernels=True)` can swap in the
Hub's CUDA kernel (`kernels-community/deformable-detr`) by its name. Its PyTorch forward serves the CPU.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers.integrations import use_kernel_forward_from_hub


@use_kernel_forward_from_hub("MultiScaleDeformableAttention")
class MultiScaleDeformableAttention(nn.Module):
    def forward(
        self,
        value: torch.Tensor,
        value_spatial_shapes: torch.Tensor,
        value_spatial_shapes_list: list[tuple[int, int]],
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        im2col_step: int,
    ) -> torch.Tensor:
        # value: (N, S, heads, d); sampling_locations: (N, Lq, heads, levels, points, 2) as (x, y) in [0, 1];
        # attention_weights: (N, Lq, heads, levels, points). Returns (N, Lq, heads * d). (`im2col_step` is the CUDA
        # kernel's batching knob; the signature is the kernel's.)
        # A bilinear sample is a weighted sum of the four pixels around the location, and the attention a weighted
        # sum of the samples: one embedding_bag sums, for each frame, head and query, the levels x points x 4
        # (pixel, weight) pairs straight from the values, without materialising a single sample.
        batch, num_values, heads, head_dim = value.shape
        num_queries = sampling_locations.shape[1]
        table = value.transpose(1, 2).reshape(-1, head_dim)  # row (n * heads + h) * S + s
        shapes = value_spatial_shapes.to(sampling_locations.dtype)
        height, width = shapes[:, 0, None], shapes[:, 1, None]  # (levels, 1), against (..., levels, points)
        # pixel coordinates with pixel centres on integers, as grid_sample with align_corners=False
        x = sampling_locations[..., 0] * width - 0.5  # (N, Lq, heads, levels, points)
        y = sampling_locations[..., 1] * height - 0.5
        left, top = x.floor(), y.floor()
        device = value.device
        rows = (torch.arange(batch, device=device)[:, None] * heads + torch.arange(heads, device=device)) * num_values
        level_rows = rows[:, None, :, None, None] + level_start_index[:, None]  # (N, 1, heads, levels, 1)
        indices, weights = [], []
        for corner_x, corner_y in ((left, top), (left + 1, top), (left, top + 1), (left + 1, top + 1)):
            # samples outside the map read zeros (grid_sample's padding_mode="zeros")
            inside = (corner_x >= 0) & (corner_x < width) & (corner_y >= 0) & (corner_y < height)
            bilinear = (1 - (x - corner_x).abs()) * (1 - (y - corner_y).abs())
            pixel = corner_y.clamp(min=0).minimum(height - 1) * width + corner_x.clamp(min=0).minimum(width - 1)
            indices.append(level_rows + pixel.to(torch.int64))
            weights.append(attention_weights * bilinear * inside)
        # (N, Lq, heads, levels, points, 4) -> one bag of levels * points * 4 per (n, head, query)
        indices = torch.stack(indices, -1).transpose(1, 2).reshape(batch * heads * num_queries, -1)
        weights = torch.stack(weights, -1).transpose(1, 2).reshape(batch * heads * num_queries, -1)
        output = F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")  # (N*heads*Lq, d)
        return output.view(batch, heads, num_queries, head_dim).transpose(1, 2).reshape(batch, num_queries, -1)


class AvisMultiscaleDeformableAttention(nn.Module):
    """Each query attends to `n_points` learned sampling locations around its reference point on every level."""

    def __init__(self, embed_dim: int, num_heads: int, n_levels: int, n_points: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.n_levels = n_levels
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * n_levels * n_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.attn = MultiScaleDeformableAttention()

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        spatial_shapes_list: list[tuple[int, int]],
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        # hidden_states, position_embeddings: (N, S, C); reference_points: (1 or N, S, levels, 2) as (x, y) in [0, 1]
        batch, num_tokens, embed_dim = hidden_states.shape
        queries = hidden_states + position_embeddings
        value = self.value_proj(hidden_states).view(batch, num_tokens, self.num_heads, embed_dim // self.num_heads)
        offsets = self.sampling_offsets(queries).view(
            batch, num_tokens, self.num_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(queries).view(batch, num_tokens, self.num_heads, -1).softmax(-1)
        weights = weights.view(batch, num_tokens, self.num_heads, self.n_levels, self.n_points)
        # offsets are in pixels of each level: normalise by that level's (width, height)
        level_size = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(offsets.dtype)
        sampling_locations = reference_points[:, :, None, :, None, :] + offsets / level_size[None, None, None, :, None]
        output = self.attn(
            value,
            spatial_shapes,
            spatial_shapes_list,
            level_start_index,
            sampling_locations,
            weights,
            im2col_step=64,
        )
        return self.output_proj(output)
