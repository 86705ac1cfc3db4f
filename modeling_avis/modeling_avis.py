"""AVISM: audio-visual instance segmentation (AVIS, CVPR 2025).

Per frame, a backbone and a multi-scale deformable-attention pixel decoder give mask features; a frame-level
decoder, whose queries first absorb the frame's audio, turns them into frame queries. Over the whole video, a
clip-level module encodes the frame queries in temporal windows, fuses them with the audio track, and decodes
clip queries: each one is a candidate sounding instance with a class and one mask embedding for all frames.
"""

import copy
import math
from dataclasses import dataclass

import httpx
import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import ModelOutput, logging

from .backbone_avis import build_backbone
from .configuration_avis import FEATURE_GROUPS, AvisConfig
from .deformable_attention import AvisMultiscaleDeformableAttention
from .fused_layers import AvisConv2d, AvisLinear, cast_parameters, compute_dtype, linear, runs_fused
from .loss_avis import AvisLoss
from .modeling_vggish import AvisVggishModel

logger = logging.get_logger(__name__)

# What fetching a Hub kernel raises when it cannot be had: ValueError (offline, no variant for this device or torch,
# kernels missing), OSError (files), httpx.HTTPError (the Hub unreachable).
KERNEL_LOADING_ERRORS = (ValueError, OSError, httpx.HTTPError)

# What a saved folder's code offers transformers' auto classes: any of them loads it with trust_remote_code.
AUTO_MAP = {
    "AutoConfig": "configuration_avis.AvisConfig",
    "AutoModel": "modeling_avis.AvisModel",
    "AutoModelForInstanceSegmentation": "modeling_avis.AvisForAudioVisualInstanceSegmentation",
}
# The task, and the pipeline a saved folder's config names for it (its code is saved beside the model's), through
# which `pipeline(model=folder, trust_remote_code=True)` runs the folder without this package.
TASK = "audio-visual-instance-segmentation"
CUSTOM_PIPELINES = {
    TASK: {"impl": "pipeline_avis.AvisVideoSegmentationPipeline", "pt": ("AutoModel",), "tf": (), "type": "multimodal"}
}


@dataclass
class AvisFrameDecoderOutput(ModelOutput):
    """
    frame_queries (`(layers, N, fQ, C)`): normalised queries of the last `layers` decoder layers.
    class_logits (`list` of `(N, fQ, K+1)`): predictions of every head (learnable queries, then each layer).
    mask_logits (`list` of `(N, fQ, h, w)`): the matching stride-4 mask logits.
    """

    frame_queries: torch.Tensor | None = None
    class_logits: list[torch.Tensor] | None = None
    mask_logits: list[torch.Tensor] | None = None


@dataclass
class AvisClipOutput(ModelOutput):
    """
    class_logits (`(D, L, B, cQ, K+1)`): clip-level class logits of each decoder layer D (only the last one at
        inference) for the frame queries of each of L frame-decoder layers.
    mask_embeddings (`(D, L, B, cQ, mask_dim)`): the matching mask embeddings.
    clip_query_embeddings (`(D, L, B, cQ, C)`): clip queries projected for the similarity loss.
    frame_query_embeddings (`(L, B, T, fQ, C)`): audio-fused frame queries projected for the similarity loss.
    encoded_frame_queries (`(L, B, T, fQ, C)`): frame queries after the temporal window encoder (with
        `output_hidden_states`).
    audio_visual_features (`(L, B, T, fQ, C)`): audio tokens after the audio-visual fusion encoder (with
        `output_hidden_states`).
    """

    class_logits: torch.Tensor | None = None
    mask_embeddings: torch.Tensor | None = None
    clip_query_embeddings: torch.Tensor | None = None
    frame_query_embeddings: torch.Tensor | None = None
    encoded_frame_queries: torch.Tensor | None = None
    audio_visual_features: torch.Tensor | None = None


@dataclass
class AvisModelOutput(ModelOutput):
    """
    class_logits (`(B, cQ, K+1)`): clip-level class logits (last clip-decoder layer, last frame-decoder layer).
    mask_embeddings (`(B, cQ, mask_dim)`): clip-level mask embeddings; a mask is their product with
        `mask_features`.
    mask_features (`(B, T, mask_dim, h, w)`): clip-level mask features at stride 4 of the padded frames.
    frame_queries (`(B, T, fQ, C)`): frame queries of the last frame-decoder layer.
    frame_decoder_output (`AvisFrameDecoderOutput`): every frame-level prediction (training).
    clip_output (`AvisClipOutput`): every clip-level prediction (training).
    """

    class_logits: torch.Tensor | None = None
    mask_embeddings: torch.Tensor | None = None
    mask_features: torch.Tensor | None = None
    frame_queries: torch.Tensor | None = None
    frame_decoder_output: AvisFrameDecoderOutput | None = None
    clip_output: AvisClipOutput | None = None


@dataclass
class AvisSessionOutput(ModelOutput):
    """
    What the model answers for the frames an inference session has (see `session_avis`): one output per window the
    new frames complete (none while a window waits for its frames; in the offline mode one, at the end, over the
    whole video).

    windows (`list` of `AvisWindow`): the frames of each window, and those it finalises.
    outputs (`list` of `AvisModelOutput`): each window's clip-level predictions (batch of one), with the mask
        features of its frames.
    """

    windows: list | None = None
    outputs: list[AvisModelOutput] | None = None


@dataclass
class AvisInstanceSegmentationOutput(AvisModelOutput):
    """AvisModelOutput plus `loss` (the weighted sum) and `loss_dict` (every weighted term) when labels are given."""

    loss: torch.Tensor | None = None
    loss_dict: dict[str, torch.Tensor] | None = None


def sine_position_embedding(height: int, width: int, num_feats: int, device, dtype=torch.float32) -> torch.Tensor:
    """The normalised 2D sine embedding of DETR, (2 * num_feats, H, W): y features first, then x."""
    scale, eps, temperature = 2 * math.pi, 1e-6, 10000
    y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device)[:, None].expand(height, width)
    x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device)[None, :].expand(height, width)
    y_embed = y_embed / (height + eps) * scale
    x_embed = x_embed / (width + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def interleave(angles: torch.Tensor) -> torch.Tensor:
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)

    pos = torch.cat((interleave(y_embed[..., None] / dim_t), interleave(x_embed[..., None] / dim_t)), dim=-1)
    return pos.permute(2, 0, 1).to(dtype)


class AvisAttention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameters, run by `scaled_dot_product_attention`.

    Inputs are batch-first with any number of leading batch dimensions: (..., L, C).
    `attention_mask` is boolean (True = may attend) or additive float, broadcastable to (..., heads, Lq, S).
    """

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = AvisLinear(embed_dim, embed_dim)

    def forward(self, query, key, value, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.in_proj_weight, self.in_proj_bias
        if runs_fused(query):
            weight, bias = cast_parameters(self, compute_dtype(query), weight, bias)
        (w_q, w_k, w_v), (b_q, b_k, b_v) = weight.chunk(3), bias.chunk(3)
        query, key, value = linear(query, w_q, b_q), linear(key, w_k, b_k), linear(value, w_v, b_v)

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # (..., heads, L, d)

        query, key, value = split_heads(query), split_heads(key), split_heads(value)
        leading = query.shape[:-3]
        # torch's fused CPU attention, which never holds the (Lq, S) weights of a head, takes (N, heads, L, d) only
        query, key, value = (x.reshape(-1, *x.shape[-3:]) for x in (query, key, value))
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool and query.device.type == "cpu":
                # as an additive mask: torch's CPU attention then runs 15-20 % faster (100 queries, 3840 keys)
                allowed = attention_mask
                attention_mask = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device)
                attention_mask.masked_fill_(~allowed, float("-inf"))
            mask_shape = (1,) * max(3 - attention_mask.dim(), 0) + tuple(attention_mask.shape[-3:])
            attention_mask = attention_mask.expand(*leading, *mask_shape).reshape(-1, *mask_shape)
        output = F.scaled_dot_product_attention(query, key, value, attention_mask).unflatten(0, leading)
        return self.out_proj(output.transpose(-3, -2).flatten(-2))


class AvisSelfAttentionLayer(nn.Module):
    """Post-norm self-attention with a residual; positions are added to queries and keys, not values."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.self_attn = AvisAttention(embed_dim, num_heads)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None) -> torch.Tensor:
        query = hidden_states if position_embeddings is None else hidden_states + position_embeddings
        return self.norm(hidden_states + self.self_attn(query, query, hidden_states, attention_mask))


class AvisCrossAttentionLayer(nn.Module):
    """Post-norm cross-attention with a residual; positions are added to queries and keys, not values.

    memory_keys: the memory with its position embeddings added (default: the memory itself). The decoders make them
    once for all their layers that attend to one memory: a long video's are 61 MB at T=600.
    """

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.multihead_attn = AvisAttention(embed_dim, num_heads)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(
        self, hidden_states, memory, query_position=None, memory_keys=None, attention_mask=None
    ) -> torch.Tensor:
        query = hidden_states if query_position is None else hidden_states + query_position
        key = memory if memory_keys is None else memory_keys
        return self.norm(hidden_states + self.multihead_attn(query, key, memory, attention_mask))


class AvisFeedForwardLayer(nn.Module):
    def __init__(self, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.linear1 = AvisLinear(embed_dim, hidden_dim, activation="relu")
        self.linear2 = AvisLinear(hidden_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear2(self.linear1(hidden_states), residual=hidden_states))


class AvisMLP(nn.Module):
    """Linear layers with ReLU between them (not after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            AvisLinear(a, b, activation="relu" if index < num_layers - 1 else None)
            for index, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class AvisConvNorm(nn.Sequential):
    """A convolution followed by GroupNorm(FEATURE_GROUPS) (and optionally ReLU), as the pixel decoder's D2 `Conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool, relu: bool = False):
        layers = [
            AvisConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias),
            nn.GroupNorm(FEATURE_GROUPS, out_channels),
        ]
        super().__init__(*layers, *([nn.ReLU()] if relu else []))


class AvisDeformableEncoderLayer(nn.Module):
    def __init__(self, config: AvisConfig):
        super().__init__()
        dim = config.feature_size
        self.self_attn = AvisMultiscaleDeformableAttention(
            dim, config.num_attention_heads, config.num_feature_levels, config.encoder_n_points
        )
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = AvisFeedForwardLayer(dim, config.encoder_feedforward_dim)

    def forward(self, hidden_states, position_embeddings, reference_points, spatial_shapes, shapes_list, starts):
        attended = self.self_attn(
            hidden_states, position_embeddings, reference_points, spatial_shapes, shapes_list, starts
        )
        return self.ffn(self.norm1(hidden_states + attended))


@dataclass
class AvisPixelDecoderOutput(ModelOutput):
    """
    fpn_features (`(N, C, h, w)`): the stride-4 FPN output the mask features come from (the clip module
        projects it with its own 1x1 convolution).
    multi_scale_features (`list` of `(N, C, H_l, W_l)`): strides 32, 16, 8, the frame decoder's memory.
    level_mask_features (`list` of `(N, mask_dim, H_l, W_l)`): the mask features resized to each of those levels,
        for the frame decoder's attention masks.
    mask_features (`(N, mask_dim, h, w)`): stride-4 mask features of the frame-level decoder (on request).
    encoder_hidden_states (`tuple` of `(N, S, C)`): each deformable encoder layer's output (on request).
    """

    fpn_features: torch.Tensor | None = None
    multi_scale_features: list[torch.Tensor] | None = None
    level_mask_features: list[torch.Tensor] | None = None
    mask_features: torch.Tensor | None = None
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None


class AvisPixelDecoder(nn.Module):
    """Deformable-attention encoder over res3..res5, then an FPN step onto res2 for the stride-4 mask features."""

    def __init__(self, config: AvisConfig, feature_channels: list[int]):
        super().__init__()
        dim = config.feature_size
        levels = config.num_feature_levels
        # from the lowest resolution (res5) to the highest the encoder sees (res3)
        self.input_projections = nn.ModuleList(
            AvisConvNorm(channels, dim, 1, bias=True) for channels in feature_channels[::-1][:levels]
        )
        self.level_embed = nn.Parameter(torch.empty(levels, dim))
        self.encoder_layers = nn.ModuleList(AvisDeformableEncoderLayer(config) for _ in range(config.encoder_layers))
        # one FPN step per halving between the encoder's finest stride (8) and the common stride (4)
        num_fpn_levels = len(feature_channels) - levels
        self.lateral_convs = nn.ModuleList(
            AvisConvNorm(channels, dim, 1, bias=False) for channels in feature_channels[:num_fpn_levels][::-1]
        )
        self.output_convs = nn.ModuleList(
            AvisConvNorm(dim, dim, 3, bias=False, relu=True) for _ in range(num_fpn_levels)
        )
        self.mask_projection = AvisConv2d(dim, config.mask_feature_size, kernel_size=1)
        self.num_levels = levels

    def forward(
        self, features: list[torch.Tensor], output_mask_features: bool = True, output_hidden_states: bool = False
    ) -> AvisPixelDecoderOutput:
        # features: backbone maps from stride 4 to stride 32, (N, C_i, H_i, W_i)
        encoder_inputs = features[::-1][: self.num_levels]
        shapes_list = [tuple(f.shape[-2:]) for f in encoder_inputs]
        device = features[0].device
        hidden_states = torch.cat(
            [proj(f).flatten(2).transpose(1, 2) for proj, f in zip(self.input_projections, encoder_inputs)], 1
        )  # (N, S, C)
        position_embeddings = torch.cat(
            [
                sine_position_embedding(h, w, hidden_states.shape[-1] // 2, device).flatten(1).T + self.level_embed[i]
                for i, (h, w) in enumerate(shapes_list)
            ]
        )[None]  # (1, S, C)
        spatial_shapes = torch.tensor(shapes_list, dtype=torch.long, device=device)
        starts = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        # every token's reference point is its own pixel centre, the same on every level (no padding masks)
        reference_points = torch.cat(
            [
                torch.stack(
                    torch.meshgrid(
                        (torch.arange(w, device=device) + 0.5) / w,
                        (torch.arange(h, device=device) + 0.5) / h,
                        indexing="xy",
                    ),
                    -1,
                ).flatten(0, 1)
                for h, w in shapes_list
            ]
        )[None, :, None].expand(1, -1, self.num_levels, 2)  # (1, S, levels, 2)

        all_hidden_states = ()
        for layer in self.encoder_layers:
            hidden_states = layer(
                hidden_states, position_embeddings, reference_points, spatial_shapes, shapes_list, starts
            )
            all_hidden_states += (hidden_states,)

        # (N, h * w, C) -> (N, C, h, w) channels-last views, laid out so that resizing keeps them channels-last
        maps = [
            level.unflatten(1, (h, w)).permute(0, 3, 1, 2)
            for level, (h, w) in zip(hidden_states.split([h * w for h, w in shapes_list], dim=1), shapes_list)
        ]
        for lateral, output_conv, feature in zip(
            self.lateral_convs, self.output_convs, features[: len(self.lateral_convs)][::-1]
        ):
            lateral_map = lateral(feature)
            upsampled = F.interpolate(maps[-1], size=lateral_map.shape[-2:], mode="bilinear", align_corners=False)
            maps.append(output_conv(lateral_map + upsampled))

        # Bilinear resizing and the 1x1 projection are both linear (the resizing weights sum to one, so the bias
        # passes through): projecting the resized FPN output equals resizing the stride-4 mask features, at a
        # fraction of the cost.
        level_mask_features = [
            self.mask_projection(F.interpolate(maps[-1], size=level.shape[-2:], mode="bilinear", align_corners=False))
            for level in maps[: self.num_levels]
        ]
        return AvisPixelDecoderOutput(
            fpn_features=maps[-1],
            multi_scale_features=maps[: self.num_levels],
            level_mask_features=level_mask_features,
            mask_features=self.mask_projection(maps[-1]) if output_mask_features else None,
            encoder_hidden_states=all_hidden_states if output_hidden_states else None,
        )


class AvisFrameDecoder(nn.Module):
    """The frame-level masked-attention decoder (Mask2Former's) whose queries first listen to the frame's audio.

    Audio fusion: one audio token per frame, positioned by each query's embedding, attends to every feature level
    without positional encoding; the three results are concatenated, projected and added to the queries.
    """

    def __init__(self, config: AvisConfig):
        super().__init__()
        dim, heads = config.hidden_dim, config.num_attention_heads
        self.num_heads = heads
        self.num_levels = config.num_feature_levels
        self.num_output_layers = config.num_frame_query_layers
        self.audio_projection = AvisLinear(config.audio_feature_size, dim)
        self.audio_attention_layers = nn.ModuleList(
            AvisCrossAttentionLayer(dim, heads) for _ in range(self.num_levels)
        )
        self.audio_fusion = AvisLinear(dim * self.num_levels, dim)
        self.cross_attention_layers = nn.ModuleList(
            AvisCrossAttentionLayer(dim, heads) for _ in range(config.decoder_layers)
        )
        self.self_attention_layers = nn.ModuleList(
            AvisSelfAttentionLayer(dim, heads) for _ in range(config.decoder_layers)
        )
        self.ffn_layers = nn.ModuleList(
            AvisFeedForwardLayer(dim, config.dim_feedforward) for _ in range(config.decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_features = nn.Embedding(config.num_frame_queries, dim)
        self.query_position_embeddings = nn.Embedding(config.num_frame_queries, dim)
        self.level_embed = nn.Embedding(self.num_levels, dim)
        if config.feature_size != dim or config.enforce_input_projection:
            self.input_projections = nn.ModuleList(
                AvisConv2d(config.feature_size, dim, kernel_size=1) for _ in range(self.num_levels)
            )
        else:
            self.input_projections = nn.ModuleList(nn.Identity() for _ in range(self.num_levels))
        self.class_predictor = AvisLinear(dim, config.num_labels + 1)
        self.mask_embedder = AvisMLP(dim, dim, config.mask_feature_size, 3)

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        level_mask_features: list[torch.Tensor],
        audio_features: torch.Tensor,
        mask_features: torch.Tensor | None = None,
    ) -> AvisFrameDecoderOutput:
        # multi_scale_features: strides 32, 16, 8, (N, C, H_l, W_l); level_mask_features: the mask features at
        # those sizes, (N, mask_dim, H_l, W_l); audio_features: (N, audio_dim), one per frame;
        # mask_features: (N, mask_dim, h, w) at stride 4, given for the auxiliary outputs: every layer's stride-4 mask
        # logits, and the frame queries of the last `num_frame_query_layers` layers (else only the last's)
        batch = audio_features.shape[0]
        memories, memory_keys = [], []
        for level, feature in enumerate(multi_scale_features):
            height, width = feature.shape[-2:]
            position = sine_position_embedding(
                height, width, self.decoder_norm.normalized_shape[0] // 2, feature.device
            )
            projected = self.input_projections[level](feature).flatten(2).transpose(1, 2)
            memories.append(projected + self.level_embed.weight[level])  # (N, HW, C)
            memory_keys.append(memories[-1] + position.flatten(1).T[None])  # (N, HW, C)

        query_positions = self.query_position_embeddings.weight[None].expand(batch, -1, -1)  # (N, fQ, C)
        queries = self.query_features.weight[None].expand(batch, -1, -1)

        audio = self.audio_projection(audio_features)[:, None]  # (N, 1, C)
        fused = [
            layer(audio, memory, query_position=query_positions)
            for layer, memory in zip(self.audio_attention_layers, memories)
        ]  # each (N, fQ, C)
        queries = queries + self.audio_fusion(torch.cat(fused, dim=-1))

        normed, logits, embeddings = self.predict(queries)
        class_logits, mask_logits, frame_queries = [logits], [self.masks(embeddings, mask_features)], []
        for index, (cross, self_attn, ffn) in enumerate(
            zip(self.cross_attention_layers, self.self_attention_layers, self.ffn_layers)
        ):
            level = index % self.num_levels
            attention_mask = self.attention_mask(embeddings, level_mask_features[level])
            queries = cross(
                queries, memories[level], query_positions, memory_keys[level], attention_mask=attention_mask
            )
            queries = self_attn(queries, query_positions)
            queries = ffn(queries)
            normed, logits, embeddings = self.predict(queries)
            frame_queries.append(normed)
            class_logits.append(logits)
            mask_logits.append(self.masks(embeddings, mask_features))

        num_outputs = 1 if mask_features is None else self.num_output_layers
        return AvisFrameDecoderOutput(
            frame_queries=torch.stack(frame_queries[-num_outputs:]),
            class_logits=class_logits,
            mask_logits=mask_logits if mask_features is not None else None,
        )

    def predict(self, queries: torch.Tensor):
        """Normalised queries (N, fQ, C), their class logits (N, fQ, K+1) and mask embeddings (N, fQ, mask_dim)."""
        normed = self.decoder_norm(queries)
        return normed, self.class_predictor(normed), self.mask_embedder(normed)

    @staticmethod
    def masks(mask_embeddings: torch.Tensor, mask_features: torch.Tensor | None) -> torch.Tensor | None:
        """Mask logits (N, fQ, h, w) at stride 4, when the stride-4 mask features are given."""
        if mask_features is None:
            return None
        return torch.einsum("nqc,nchw->nqhw", mask_embeddings, mask_features)

    @staticmethod
    def attention_mask(mask_embeddings: torch.Tensor, level_mask_features: torch.Tensor) -> torch.Tensor:
        """(N, 1, fQ, HW) bool: a query attends only where its mask, at the attended level's size, is foreground."""
        logits = torch.einsum("nqc,nchw->nqhw", mask_embeddings, level_mask_features)
        allowed = (logits.sigmoid() >= 0.5).flatten(2)
        # a query with an empty mask attends everywhere
        allowed = allowed | ~allowed.any(-1, keepdim=True)
        return allowed[:, None].detach()


class AvisClipModule(nn.Module):
    """The clip-level module: temporal window encoder, audio-visual fusion encoder and clip-query decoder.

    Frame queries of consecutive frames attend to each other inside windows of `clip_window_size` frames,
    alternating with windows shifted by half a window (at inference; training never shifts). Audio tokens, one per
    frame query, attend to the frame queries with the same windows (always alternating) and are added to them.
    Clip queries then attend to all audio-fused frame queries of the video.
    """

    def __init__(self, config: AvisConfig):
        super().__init__()
        dim, heads = config.clip_hidden_dim, config.clip_num_attention_heads
        self.window_size = config.clip_window_size
        self.window_chunk_size = config.clip_window_chunk_size
        self.audio_projection = AvisLinear(config.audio_feature_size, dim)
        if config.hidden_dim != dim or config.clip_enforce_input_projection:
            self.input_projection = AvisLinear(config.hidden_dim, dim)
        else:
            self.input_projection = nn.Identity()
        self.mask_features_projection = AvisConv2d(config.feature_size, config.mask_feature_size, kernel_size=1)
        layers = config.clip_encoder_layers
        self.encoder_self_attention_layers = nn.ModuleList(AvisSelfAttentionLayer(dim, heads) for _ in range(layers))
        self.encoder_ffn_layers = nn.ModuleList(
            AvisFeedForwardLayer(dim, config.clip_dim_feedforward) for _ in range(layers)
        )
        self.fusion_cross_attention_layers = nn.ModuleList(AvisCrossAttentionLayer(dim, heads) for _ in range(layers))
        self.fusion_ffn_layers = nn.ModuleList(
            AvisFeedForwardLayer(dim, config.clip_dim_feedforward) for _ in range(layers)
        )
        decoder_layers = config.clip_decoder_layers
        self.cross_attention_layers = nn.ModuleList(AvisCrossAttentionLayer(dim, heads) for _ in range(decoder_layers))
        self.self_attention_layers = nn.ModuleList(AvisSelfAttentionLayer(dim, heads) for _ in range(decoder_layers))
        self.ffn_layers = nn.ModuleList(
            AvisFeedForwardLayer(dim, config.clip_dim_feedforward) for _ in range(decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_features = nn.Embedding(config.num_clip_queries, dim)
        self.query_position_embeddings = nn.Embedding(config.num_clip_queries, dim)
        self.frame_query_position_embeddings = nn.Embedding(config.num_frame_queries, dim)
        self.class_predictor = AvisLinear(dim, config.num_labels + 1)
        self.mask_embedder = AvisMLP(dim, dim, config.mask_feature_size, 3)
        self.frame_similarity_projection = AvisLinear(dim, dim)
        self.clip_similarity_projection = AvisLinear(dim, dim)

    def forward(
        self,
        frame_queries: torch.Tensor,
        audio_features: torch.Tensor,
        output_auxiliary_logits: bool = False,
        output_hidden_states: bool = False,
    ) -> AvisClipOutput:
        # frame_queries: (L, B, T, fQ, C) from L frame-decoder layers; audio_features: (B, T, audio_dim);
        # output_auxiliary_logits: every decoder layer's predictions (D of them), else the last layer's;
        # output_hidden_states: also the window encoders' outputs (two more (L, B, T, fQ, C) tensors held)
        num_layers, batch, num_frames, num_queries, _ = frame_queries.shape
        frame_queries = self.input_projection(frame_queries.flatten(0, 1))  # (LB, T, fQ, C), index l * B + b
        audio = self.audio_projection(audio_features)  # (B, T, C)
        audio = audio[None, :, :, None].expand(num_layers, -1, -1, num_queries, -1).flatten(0, 1)  # (LB, T, fQ, C)

        window = self.window_size or num_frames
        padded_frames = math.ceil(num_frames / window) * window
        pad = (0, 0, 0, 0, 0, padded_frames - num_frames)
        frame_queries, audio = F.pad(frame_queries, pad), F.pad(audio, pad)
        is_padding = torch.arange(padded_frames, device=frame_queries.device) >= num_frames
        plain_masks = self.plain_window_masks(is_padding, window, num_queries)
        shifted_masks = self.shifted_window_masks(is_padding, window, num_queries)

        for index in range(len(self.encoder_self_attention_layers)):
            shifted = index % 2 == 1 and not self.training and self.window_size > 0
            frame_queries = self.windowed(
                frame_queries,
                None,
                window,
                shifted_masks if shifted else plain_masks,
                lambda x, memory, mask, i=index: self.encoder_ffn_layers[i](
                    self.encoder_self_attention_layers[i](x, attention_mask=mask)
                ),
            )
        for index in range(len(self.fusion_cross_attention_layers)):
            shifted = index % 2 == 1 and self.window_size > 0
            audio = self.windowed(
                audio,
                frame_queries,
                window,
                shifted_masks if shifted else plain_masks,
                lambda x, memory, mask, i=index: self.fusion_ffn_layers[i](
                    self.fusion_cross_attention_layers[i](x, memory, attention_mask=mask)
                ),
            )

        frame_queries, audio = frame_queries[:, :num_frames], audio[:, :num_frames]
        fused = (frame_queries + audio).flatten(1, 2)  # (LB, T*fQ, C)
        hidden_states = {}
        if output_hidden_states:
            hidden_states = {
                "encoded_frame_queries": frame_queries.unflatten(0, (num_layers, batch)),
                "audio_visual_features": audio.unflatten(0, (num_layers, batch)),
            }
        del frame_queries, audio  # a long video's decoder holds only the fused tokens and their keys
        positions = self.frame_query_position_embeddings.weight  # (fQ, C), the same at every frame
        keys = (fused.unflatten(1, (num_frames, num_queries)) + positions).flatten(1, 2)  # (LB, T*fQ, C)
        query_positions = self.query_position_embeddings.weight[None]  # (1, cQ, C)
        queries = self.query_features.weight[None].expand(fused.shape[0], -1, -1)  # (LB, cQ, C)
        outputs = []
        for index, (cross, self_attn, ffn) in enumerate(
            zip(self.cross_attention_layers, self.self_attention_layers, self.ffn_layers)
        ):
            queries = ffn(self_attn(cross(queries, fused, query_positions, keys), query_positions))
            if output_auxiliary_logits or index == len(self.cross_attention_layers) - 1:
                outputs.append(self.decoder_norm(queries).view(num_layers, batch, *queries.shape[1:]))
        del keys
        outputs = torch.stack(outputs)  # (D, L, B, cQ, C)
        return AvisClipOutput(
            class_logits=self.class_predictor(outputs),
            mask_embeddings=self.mask_embedder(outputs),
            clip_query_embeddings=self.clip_similarity_projection(outputs),
            frame_query_embeddings=self.frame_similarity_projection(fused).view(
                num_layers, batch, num_frames, num_queries, -1
            ),
            **hidden_states,
        )

    @staticmethod
    def plain_window_masks(is_padding: torch.Tensor, window: int, num_queries: int) -> "AvisWindowMasks":
        """The attention masks of the plain temporal windows of a video whose frames are `is_padding` (T,) or not:
        every query may attend to every real frame's tokens of its window."""
        return AvisWindowMasks((~is_padding).view(-1, 1, window), 0, num_queries)

    @staticmethod
    def shifted_window_masks(is_padding: torch.Tensor, window: int, num_queries: int) -> "AvisWindowMasks":
        """The attention masks of the temporal windows shifted by half a window (frames `is_padding` (T,) or not).

        After rolling by half a window, the first window holds the video's last frames next to its first ones:
        those two parts may not attend to each other. In the first and last windows a padded frame neither attends
        nor is attended to; in the other windows the original masks only padded queries (none fall there).
        """
        half = math.ceil(window / 2)
        rolled = torch.roll(is_padding, half).view(-1, window)  # (Nw, W)
        blocked = rolled[:, :, None].expand(-1, -1, window).clone()  # query frame is padding
        for edge in (0, -1):
            blocked[edge] = blocked[edge] | blocked[edge].T
        blocked[0, :half, half:] = True
        blocked[0, half:, :half] = True
        return AvisWindowMasks(~blocked, half, num_queries)

    def windowed(self, hidden_states, memory, window, masks: "AvisWindowMasks", layer) -> torch.Tensor:
        """Run `layer(x, memory, mask)` on each temporal window of (LB, T, fQ, C) hidden states (and of the memory,
        when not None), `clip_window_chunk_size` windows at a time: the layers' temporaries (the feed-forward
        layer's are 8x its input) stay the size of a few windows for a video of any length. Shifted windows read
        their frames rolled by `masks.shift` (frame i of the rolled video is frame i - shift) a chunk at a time, and
        write their outputs to those frames: the video is never copied whole to roll it and back. The outputs
        replace the hidden states in place (each chunk reads its frames before it writes them, and no other chunk
        reads those): a long video holds one copy of them, not two."""
        batch, frames, queries, dim = hidden_states.shape
        chunk_frames = self.window_chunk_size * window
        for start in range(0, frames, chunk_frames):
            rolled = torch.arange(start, min(start + chunk_frames, frames), device=hidden_states.device)
            index = (rolled - masks.shift) % frames
            states, memory_states = (
                None if x is None else x.index_select(1, index).view(batch, -1, window * queries, dim)
                for x in (hidden_states, memory)
            )
            chunk = slice(start // window, start // window + self.window_chunk_size)
            windows = layer(states, memory_states, masks[chunk])
            hidden_states.index_copy_(1, index, windows.view(batch, -1, queries, dim))
        return hidden_states


@dataclass
class AvisWindowMasks:
    """The attention masks of a video's temporal windows, kept per frame and expanded to tokens a chunk at a time.

    allowed (`(Nw, 1 or W, W)` bool): whether a query frame (any, when 1) may attend to a key frame, per window.
    shift (`int`): frames the windows are rolled by (0 for plain windows).
    num_queries (`int`): tokens per frame.
    `masks[windows]` gives the masks of a slice of windows as `AvisAttention` takes them: boolean for plain windows,
    additive (-1000 where blocked, the original's value) for shifted ones.
    """

    allowed: torch.Tensor
    shift: int
    num_queries: int

    def __getitem__(self, windows: slice) -> torch.Tensor:
        allowed = self.allowed[windows].repeat_interleave(self.num_queries, dim=-1)
        if not self.shift:
            return allowed[:, None]  # (w, 1, 1, W*fQ)
        allowed = allowed.repeat_interleave(self.num_queries, dim=-2)
        return ((~allowed).float() * -1000)[:, None]  # (w, 1, W*fQ, W*fQ)


class AvisPreTrainedModel(PreTrainedModel):
    config_class = AvisConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("video", "audio")

    def set_use_kernels(self, use_kernels, kernel_config=None, mode=None):
        """As transformers', but a Hub kernel that cannot be had (the Hub offline or unreachable, no build for this
        device or torch) leaves the PyTorch path, with a warning. `kernelize` loads a layer's kernel before it
        replaces that layer's forward, so a failed load leaves every deformable-attention layer as it was."""
        try:
            super().set_use_kernels(use_kernels, kernel_config, mode)
        except KERNEL_LOADING_ERRORS as error:
            logger.warning_once(
                f"The deformable-attention kernel could not be loaded ({type(error).__name__}: {error}); "
                "running the PyTorch implementation."
            )
            self._use_kernels = False

    def set_labels(self, id2label: dict[int, str]) -> None:
        """Makes the model predict the classes `id2label` names (indices 0..K-1), as fine-tuning on other classes
        needs: each class predictor (the frame decoder's and the clip module's) keeps its row for a class of the
        same name and its no-object row, and gets a new row, initialised as a new model's, for a class it did not
        know. Every other weight is kept; the config's `id2label` and `label2id` become the new ones, and the
        loss's class weights follow."""
        names = [id2label[index] for index in range(len(id2label))]
        known = {name: index for index, name in self.config.id2label.items()}
        for module in self.modules():
            if isinstance(module, AvisFrameDecoder | AvisClipModule):
                module.class_predictor = self._class_predictor_for(module.class_predictor, names, known)
        self.config.id2label = dict(enumerate(names))
        self.config.label2id = {name: index for index, name in enumerate(names)}
        for module in self.modules():
            if isinstance(module, AvisLoss):
                module.frame_empty_weight = module.class_weights(len(names), self.config.no_object_weight)
                module.clip_empty_weight = module.class_weights(len(names), self.config.clip_no_object_weight)

    def _class_predictor_for(self, predictor: AvisLinear, names: list[str], known: dict[str, int]) -> AvisLinear:
        """A predictor of len(names) classes and no-object: the rows of `predictor` for the classes it knew (by
        name, `known`) and for no-object, new rows for the others."""
        weight = predictor.weight
        resized = AvisLinear(predictor.in_features, len(names) + 1).to(weight.device, weight.dtype)
        self._init_weights(resized)
        kept = [(row, known[name]) for row, name in enumerate(names) if name in known] + [(len(names), -1)]
        rows, sources = (torch.tensor(indices, device=weight.device) for indices in zip(*kept))
        with torch.no_grad():
            resized.weight[rows] = weight[sources]
            resized.bias[rows] = predictor.bias[sources]
        resized.weight.requires_grad_(weight.requires_grad)
        resized.bias.requires_grad_(predictor.bias.requires_grad)
        return resized

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' `save_pretrained`, with the code beside the weights: every auto class, and with the
        processor saved there too, `pipeline`, load the folder (with trust_remote_code where this package is not
        installed)."""
        if self._auto_class is None:
            super().save_pretrained(save_directory, *args, **kwargs)
            return
        self.config.auto_map = dict(AUTO_MAP)
        self.config.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)
        super().save_pretrained(save_directory, *args, **kwargs)
        # imported here, not above: the pipeline's module imports this one
        from .pipeline_avis import AvisVideoSegmentationPipeline

        custom_object_save(AvisVideoSegmentationPipeline, save_directory)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # The original's initialisation: Xavier for the transformers' linear layers, C2 Xavier (Kaiming uniform,
        # a=1) for 1x1 convolutions, Deformable DETR's rotating grid for the sampling offsets.
        super()._init_weights(module)
        if isinstance(module, AvisMultiscaleDeformableAttention):
            init.zeros_(module.sampling_offsets.weight)
            thetas = torch.arange(module.num_heads, dtype=torch.float32) * (2.0 * math.pi / module.num_heads)
            grid = torch.stack([thetas.cos(), thetas.sin()], -1)
            grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(module.num_heads, 1, 1, 2)
            grid = grid.repeat(1, module.n_levels, module.n_points, 1)
            grid = grid * torch.arange(1, module.n_points + 1, dtype=torch.float32)[None, None, :, None]
            init.copy_(module.sampling_offsets.bias, grid.flatten())
            init.zeros_(module.attention_weights.weight)
            init.zeros_(module.attention_weights.bias)
            init.xavier_uniform_(module.value_proj.weight)
            init.zeros_(module.value_proj.bias)
            init.xavier_uniform_(module.output_proj.weight)
            init.zeros_(module.output_proj.bias)
        elif isinstance(module, AvisAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
            init.kaiming_uniform_(module.weight, a=1)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight, gain=self.config.init_xavier_std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight)
        elif isinstance(module, AvisPixelDecoder):
            init.normal_(module.level_embed)
        elif isinstance(module, AvisLoss):
            # Non-persistent buffers: `from_pretrained` leaves them uninitialised unless they are set here.
            num_labels = len(self.config.id2label)
            init.copy_(module.frame_empty_weight, module.class_weights(num_labels, self.config.no_object_weight))
            init.copy_(module.clip_empty_weight, module.class_weights(num_labels, self.config.clip_no_object_weight))


@dataclass
class AvisFrameEncoding(ModelOutput):
    """
    frame_queries (`(L, N, fQ, C)`): frame queries of the last L frame-decoder layers (L = 1 at inference).
    mask_features (`(N, mask_dim, h, w)`): clip-level mask features at stride 4.
    frame_decoder_output (`AvisFrameDecoderOutput`): the frame-level predictions.
    """

    frame_queries: torch.Tensor | None = None
    mask_features: torch.Tensor | None = None
    frame_decoder_output: AvisFrameDecoderOutput | None = None


class AvisModel(AvisPreTrainedModel):
    def __init__(self, config: AvisConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.pixel_decoder = AvisPixelDecoder(config, self.backbone.channels)
        self.frame_decoder = AvisFrameDecoder(config)
        self.clip_module = AvisClipModule(config)
        self.audio_encoder = None if config.audio_config is None else AvisVggishModel(config.audio_config)
        self.post_init()
        if self.audio_encoder is not None and config.freeze_audio_encoder:
            self.audio_encoder.freeze()

    def encode_audio(self, audio_log_mel: torch.Tensor) -> torch.Tensor:
        """VGGish log-mel examples (..., 96, 64) -> audio features (..., audio_feature_size).

        At inference the examples go through in chunks of `frame_chunk_size`, as the frames do: memory stays
        bounded, and a video streamed chunk by chunk gets the same features as one given whole.
        """
        if self.audio_encoder is None:
            raise ValueError("this model has no audio encoder (config.audio_config is None): give audio_features")
        examples = audio_log_mel.flatten(0, -3)
        chunk = max(len(examples), 1) if self.training else self.config.frame_chunk_size
        features = [self.audio_encoder(examples[start : start + chunk]) for start in range(0, len(examples), chunk)]
        return torch.cat(features).unflatten(0, audio_log_mel.shape[:-2])

    def encode_frames(
        self, pixel_values: torch.Tensor, audio_features: torch.Tensor, output_auxiliary_logits: bool = False
    ) -> AvisFrameEncoding:
        """The per-frame part of AVISM on a set of frames: (N, 3, H, W) and (N, audio_dim) in, frame queries and
        clip-level mask features out (and, with `output_auxiliary_logits`, every frame-decoder layer's predictions).
        Frames are independent here, so long videos can be encoded chunk by chunk."""
        # Channels-last (NHWC) maps make the CPU's convolutions, pooling and resizing faster (7 % less time in all)
        # and turn the pixel decoder's maps into token sequences without a copy.
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        pixel_output = self.pixel_decoder(self.backbone(pixel_values), output_mask_features=output_auxiliary_logits)
        frame_output = self.frame_decoder(
            pixel_output.multi_scale_features,
            pixel_output.level_mask_features,
            audio_features,
            mask_features=pixel_output.mask_features,
        )
        return AvisFrameEncoding(
            frame_queries=frame_output.frame_queries,
            mask_features=self.clip_module.mask_features_projection(pixel_output.fpn_features),
            frame_decoder_output=frame_output,
        )

    def encode_mask_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The clip-level mask features of frames, (N, 3, H, W) -> (N, mask_dim, H/4, W/4), as `encode_frames` makes
        them without the frame decoder: what inference computes again for frames it did not keep."""
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        fpn_features = self.pixel_decoder(self.backbone(pixel_values), output_mask_features=False).fpn_features
        return self.clip_module.mask_features_projection(fpn_features)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_log_mel: torch.Tensor | None = None,
        output_auxiliary_logits: bool | None = None,
        output_hidden_states: bool = False,
        inference_session=None,
        end_of_video: bool = False,
    ) -> AvisModelOutput | AvisSessionOutput:
        r"""
        pixel_values (`(B, T, 3, H, W)`): normalised frames, zero-padded (as the processor pads them).
        audio_features (`(B, T, audio_feature_size)`): one audio embedding per frame (VGGish: 128-d).
        audio_log_mel (`(B, T, 96, 64)`): instead of `audio_features`, the VGGish log-mel example of each frame,
            encoded by the model's audio encoder.
        output_auxiliary_logits (`bool`, *optional*): also return the predictions of every frame- and clip-decoder
            layer, the clip module run on the last `num_frame_query_layers` frame-decoder layers (what the loss
            needs; default: `config.output_auxiliary_logits`). Inference needs only the last layers'.
        output_hidden_states (`bool`): also return the clip module's window-encoder outputs (`AvisClipOutput`'s
            `encoded_frame_queries` and `audio_visual_features`).
        inference_session (`AvisInferenceSession`, *optional*): the frames given (`(T, 3, H, W)` and their audio,
            unbatched, as `AvisProcessor.iter_chunks` gives them; or none) are the video's next ones: they are
            encoded and kept in the session, and the output is an `AvisSessionOutput` for the windows they complete.
        end_of_video (`bool`): with a session, the video has no more frames: its last window is answered.
        """
        if inference_session is not None:
            return self.forward_in_session(
                inference_session, pixel_values, audio_features, audio_log_mel, end_of_video
            )
        if (audio_features is None) == (audio_log_mel is None):
            raise ValueError("give exactly one of audio_features and audio_log_mel")
        if audio_features is None:
            audio_features = self.encode_audio(audio_log_mel)
        if output_auxiliary_logits is None:
            output_auxiliary_logits = self.config.output_auxiliary_logits
        batch, num_frames = pixel_values.shape[:2]
        frames = pixel_values.flatten(0, 1)  # (B*T, 3, H, W), index b * T + t
        audio = audio_features.flatten(0, 1)
        # inference runs the per-frame part in chunks to bound memory; training needs every frame's graph
        chunk = frames.shape[0] if self.training else self.config.frame_chunk_size
        encodings = [
            self.encode_frames(frames[start : start + chunk], audio[start : start + chunk], output_auxiliary_logits)
            for start in range(0, frames.shape[0], chunk)
        ]
        frame_output = _concatenate_frame_outputs([encoding.frame_decoder_output for encoding in encodings])
        mask_features = torch.cat([encoding.mask_features for encoding in encodings])
        mask_features = mask_features.unflatten(0, (batch, num_frames))  # (B, T, mask_dim, h, w)

        frame_queries = frame_output.frame_queries.unflatten(1, (batch, num_frames))  # (L, B, T, fQ, C)
        clip_output = self.clip_module(frame_queries, audio_features, output_auxiliary_logits, output_hidden_states)
        return AvisModelOutput(
            class_logits=clip_output.class_logits[-1, -1],
            mask_embeddings=clip_output.mask_embeddings[-1, -1],
            mask_features=mask_features,
            frame_queries=frame_queries[-1],
            frame_decoder_output=frame_output,
            clip_output=clip_output,
        )

    @torch.inference_mode()
    def forward_in_session(
        self,
        session,
        pixel_values: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_log_mel: torch.Tensor | None = None,
        end_of_video: bool = False,
    ) -> AvisSessionOutput:
        """`forward` with an inference session: encodes the new frames into it, then answers each window they
        complete (see `session_avis`)."""
        if pixel_values is not None:
            if (audio_features is None) == (audio_log_mel is None):
                raise ValueError("give exactly one of audio_features and audio_log_mel")
            if audio_features is None:
                audio_features = self.encode_audio(audio_log_mel)
            encoding = self.encode_frames(pixel_values, audio_features)
            session.add_frames(
                encoding.frame_queries[-1], audio_features, encoding.mask_features, pixel_values.shape[-2:]
            )
        windows, outputs = [], []
        for window in session.due_windows(end_of_video):
            windows.append(window)
            outputs.append(answer_window(self.clip_module, session, window))
        return AvisSessionOutput(windows=windows, outputs=outputs)


def answer_window(clip_module: AvisClipModule, session, window) -> AvisModelOutput:
    """The clip module over a window's frames of an inference session, as `AvisModel.forward`'s output on them
    (batch of one); its mask features are the session's store in the offline mode (the whole video), a copy of the
    window's frames online."""
    frame_queries, audio_features = session.clip_inputs(window)
    clip_output = clip_module(frame_queries, audio_features)
    online = session.mode == "online"
    return AvisModelOutput(
        class_logits=clip_output.class_logits[-1, -1],
        mask_embeddings=clip_output.mask_embeddings[-1, -1],
        mask_features=[session.mask_features[window.start : window.end] if online else session.mask_features],
    )


def _concatenate_frame_outputs(outputs: list[AvisFrameDecoderOutput]) -> AvisFrameDecoderOutput:
    if len(outputs) == 1:
        return outputs[0]

    def per_layer(lists):
        return None if lists[0] is None else [torch.cat(layer) for layer in zip(*lists)]

    return AvisFrameDecoderOutput(
        frame_queries=torch.cat([o.frame_queries for o in outputs], dim=1),
        class_logits=per_layer([o.class_logits for o in outputs]),
        mask_logits=per_layer([o.mask_logits for o in outputs]),
    )


class AvisForAudioVisualInstanceSegmentation(AvisPreTrainedModel):
    """AvisModel plus the training objective: given ground truth, the output carries the weighted losses."""

    def __init__(self, config: AvisConfig):
        super().__init__(config)
        self.model = AvisModel(config)
        self.criterion = AvisLoss(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        audio_features: torch.Tensor | None = None,
        audio_log_mel: torch.Tensor | None = None,
        mask_labels: list[torch.Tensor] | None = None,
        class_labels: list[torch.Tensor] | None = None,
        output_auxiliary_logits: bool | None = None,
    ) -> AvisInstanceSegmentationOutput:
        r"""
        pixel_values (`(B, T, 3, H, W)`): normalised frames, zero-padded (as the processor pads them).
        audio_features (`(B, T, audio_feature_size)`): one audio embedding per frame.
        audio_log_mel (`(B, T, 96, 64)`): instead of `audio_features`, log-mel examples for the audio encoder.
        mask_labels (`list` of `(N_b, T, H, W)`): ground-truth masks at the padded size (empty where absent).
        class_labels (`list` of `(N_b,)`): ground-truth classes in [0, num_labels).
        output_auxiliary_logits (`bool`, *optional*): see `AvisModel.forward`; always on when labels are given (the
            loss supervises every layer), in training and in eval mode alike.
        """
        with_labels = mask_labels is not None and class_labels is not None
        outputs = self.model(pixel_values, audio_features, audio_log_mel, with_labels or output_auxiliary_logits)
        loss = loss_dict = None
        if with_labels:
            frames, clip = outputs.frame_decoder_output, outputs.clip_output
            # (D, L, B, cQ, C) x (B, T, C, h, w) -> (D, L, B, cQ, T, h, w)
            clip_masks = torch.einsum("dlbqc,btchw->dlbqthw", clip.mask_embeddings, outputs.mask_features)
            loss_dict = self.criterion(
                frames.class_logits,
                frames.mask_logits,
                clip.class_logits,
                clip_masks,
                clip.clip_query_embeddings,
                clip.frame_query_embeddings,
                mask_labels,
                class_labels,
            )
            loss = loss_dict.pop("loss")
        return AvisInstanceSegmentationOutput(**outputs, loss=loss, loss_dict=loss_dict)
