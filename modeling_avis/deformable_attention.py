"""Multi-scale deformable attention (Deformable DETR), the attention of AVISM's pixel decoder.

`MultiScaleDeformableAttention` is the sampling core: a stateless layer with the same forward signature as
transformers' Deformable DETR layer, so `kernelize` / `from_pretrained(..., use_kernels=True)` can swap in the
Hub's CUDA kernel (`kernels-community/deformable-detr`) by its name. Its PyTorch forward serves the CPU.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers.integrations import use_kernel_forward_from_hub

from .fused_layers import AvisLinear


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
        # sum of the samples: per level, one embedding_bag sums, for each frame, query and head, the points x 4
        # (pixel, weight) pairs straight from the values, without materialising a single sample.
        batch, _, heads, head_dim = value.shape
        num_queries, num_points = sampling_locations.shape[1], sampling_locations.shape[4]
        # pixel positions and bilinear weights in float32 whatever the autocast dtype: bf16 resolves half a pixel at 80
        precision = torch.promote_types(sampling_locations.dtype, torch.float32)
        sampling_locations, attention_weights = sampling_locations.to(precision), attention_weights.to(precision)
        table, level_starts = self.zero_bordered_table(value, value_spatial_shapes_list)
        # table row of (frame n, bordered pixel p, head h): (n * R + p) * heads + h, R bordered pixels per frame
        pixels_per_frame = table.shape[0] // (batch * heads)
        # int32 rows where they fit: half the bytes of the index arithmetic's int64, a fifth less time for the core
        index_dtype = torch.int32 if table.shape[0] < 2**31 else torch.int64
        frame_head_rows = (
            torch.arange(batch, device=value.device)[:, None] * pixels_per_frame * heads
            + torch.arange(heads, device=value.device)
        )[:, None, :, None].to(index_dtype)  # (N, 1, heads, 1)
        output = None
        for level, (height, width) in enumerate(value_spatial_shapes_list):
            # pixel coordinates with pixel centres on integers, as grid_sample with align_corners=False; a location
            # past the zero border moves onto it: all four of its pixels read zeros either way
            x = (sampling_locations[:, :, :, level, :, 0] * width - 0.5).clamp_(-1, width)  # (N, Lq, heads, points)
            y = (sampling_locations[:, :, :, level, :, 1] * height - 0.5).clamp_(-1, height)
            left, top = x.floor(), y.floor()
            right_weight, bottom_weight = x - left, y - top
            left_weight = 1 - right_weight
            weights = attention_weights[:, :, :, level]
            bottom = weights * bottom_weight
            top_row = weights - bottom
            bordered_width = width + 2
            top_left = ((top + 1) * bordered_width + left + 1 + level_starts[level]).to(index_dtype) * heads
            top_left = top_left + frame_head_rows
            below = bordered_width * heads
            # corners stacked before the points, not after them: four runs of points to copy, not single elements
            pixels = torch.stack((top_left, top_left + heads, top_left + below, top_left + below + heads), -2)
            pair_weights = torch.stack(
                (top_row * left_weight, top_row * right_weight, bottom * left_weight, bottom * right_weight), -2
            )
            # one bag of 4 x points (pixel, weight) pairs per (frame, query, head), in the order of the output
            sampled = F.embedding_bag(
                pixels.view(-1, num_points * 4),
                table,
                per_sample_weights=pair_weights.view(-1, num_points * 4).to(table.dtype),  # autocast: bf16 values
                mode="sum",
            )
            output = sampled if output is None else output.add_(sampled)
        return output.view(batch, num_queries, heads * head_dim)

    @staticmethod
    def zero_bordered_table(value: torch.Tensor, shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, list[int]]:
        """The values with a border of zeros around each level's map as rows (N * R * heads, d), R bordered pixels
        per frame, and the first bordered pixel of each level.

        The border is grid_sample's padding_mode="zeros": a corner outside the map reads a zero, so no sample needs
        masking. A zero row past the last border keeps inside the table the weight-0 corners of locations on a border.
        """
        batch, _, heads, head_dim = value.shape
        levels = value.split([height * width for height, width in shapes], dim=1)
        bordered = [
            F.pad(level.view(batch, height, width, heads, head_dim), (0, 0, 0, 0, 1, 1, 1, 1)).flatten(1, 2)
            for level, (height, width) in zip(levels, shapes)
        ]
        bordered.append(value.new_zeros(batch, max(width for _, width in shapes) + 3, heads, head_dim))
        starts = [0]
        for height, width in shapes[:-1]:
            starts.append(starts[-1] + (height + 2) * (width + 2))
        return torch.cat(bordered, dim=1).reshape(-1, head_dim), starts


class AvisMultiscaleDeformableAttention(nn.Module):
    """Each query attends to `n_points` learned sampling locations around its reference point on every level."""

    def __init__(self, embed_dim: int, num_heads: int, n_levels: int, n_points: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.n_levels = n_levels
        self.n_points = n_points
        self.sampling_offsets = AvisLinear(embed_dim, num_heads * n_levels * n_points * 2)
        self.attention_weights = AvisLinear(embed_dim, num_heads * n_levels * n_points)
        self.value_proj = AvisLinear(embed_dim, embed_dim)
        self.output_proj = AvisLinear(embed_dim, embed_dim)
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
        heads, levels, points = self.num_heads, self.n_levels, self.n_points
        queries = hidden_states + position_embeddings
        value = self.value_proj(hidden_states).view(batch, num_tokens, heads, embed_dim // heads)
        # Broadcasting against the short trailing (levels, points, 2) dimensions is slow on the CPU, so the level
        # sizes and reference points are laid out once along the offsets' rows of heads * levels * points * 2.
        # Offsets are in pixels of each level: normalised by that level's (width, height).
        level_size = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(queries.dtype)  # (levels, 2)
        level_size = level_size[None, :, None].expand(heads, levels, points, 2).reshape(-1)
        anchors = reference_points[:, :, None, :, None].expand(-1, -1, heads, levels, points, 2)
        sampling_locations = self.sampling_offsets(queries) / level_size + anchors.reshape(
            -1, num_tokens, level_size.numel()
        )
        sampling_locations = sampling_locations.view(batch, num_tokens, heads, levels, points, 2)
        # each (frame, token, head) row's softmax, taken down the columns of the transpose: as fast as a softmax
        # over a long dimension, where one over the short rows themselves is not
        logits = self.attention_weights(queries).view(-1, levels * points)
        weights = logits.T.softmax(0).T.reshape(batch, num_tokens, heads, levels, points)
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
