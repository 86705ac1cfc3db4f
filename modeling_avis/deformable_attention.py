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
        # value: (N, S, heads, d); sampling_locations: (N, Lq, heads, levels, points, 2) in [0, 1];
        # attention_weights: (N, Lq, heads, levels, points). Returns (N, Lq, heads * d).
        batch, _, heads, head_dim = value.shape
        num_queries = sampling_locations.shape[1]
        per_level_values = value.split([height * width for height, width in value_spatial_shapes_list], dim=1)
        # grid_sample's grid spans [-1, 1] over the map, with align_corners=False as the CUDA kernel.
        sampling_grids = 2 * sampling_locations - 1
        # (N, Lq, heads, levels, points) -> (N*heads, Lq, levels, points)
        weights = attention_weights.transpose(1, 2).flatten(0, 1)
        output = None
        # one level at a time, weighting the samples as soon as they exist: the temporaries stay one level large
        for level, (height, width) in enumerate(value_spatial_shapes_list):
            # (N, H*W, heads, d) -> (N*heads, d, H, W)
            level_value = per_level_values[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)
            # (N, Lq, heads, points, 2) -> (N*heads, Lq, points, 2)
            level_grid = sampling_grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
            sampled = F.grid_sample(
                level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            # (N*heads, d, Lq, points) x (N*heads, Lq, points) -> (N*heads, Lq, d)
            contribution = torch.einsum("bdqp,bqp->bqd", sampled, weights[:, :, level])
            output = contribution if output is None else output + contribution
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
