"""The two backbones of AVISM on transformers' ResNet and Swin, computing what the original's detectron2 ResNet-50
(frozen batch norm) and D2SwinTransformer compute."""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig, ResNetBackbone, SwinBackbone
from transformers.activations import GELUActivation
from transformers.models.resnet.modeling_resnet import ResNetBottleNeckLayer, ResNetConvLayer, ResNetShortCut
from transformers.models.swin.modeling_swin import SwinLayer, window_partition

from .fused_layers import AvisLinear, compute_dtype, conv2d, derived_parameters, linear, runs_fused

# The pixel decoder reads res2..res5 (strides 4, 8, 16, 32): the four stages of either backbone.
BACKBONE_STAGES = ["stage1", "stage2", "stage3", "stage4"]


class AvisFrozenBatchNorm2d(nn.Module):
    """
    Batch norm with fixed statistics and affine parameters, as detectron2's `FrozenBatchNorm2d`: all four are
    buffers, so neither train mode nor the optimizer changes them. The state-dict keys are those of `nn.BatchNorm2d`
    without `num_batches_tracked`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Buffer(torch.ones(num_features))
        self.bias = nn.Buffer(torch.zeros(num_features))
        self.running_mean = nn.Buffer(torch.zeros(num_features))
        self.running_var = nn.Buffer(torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A transformers ResNet checkpoint carries the counter of a trainable batch norm; it has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, H, W), normalised with the stored statistics whatever the module's mode.
        return nn.functional.batch_norm(
            hidden_states, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


def _freeze_batch_norm(module: nn.Module) -> None:
    """Replace every `nn.BatchNorm2d` under `module` with a fresh `AvisFrozenBatchNorm2d` (`post_init` fills it)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, AvisFrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            _freeze_batch_norm(child)


class AvisResNetConvLayer(nn.Module):
    """
    A ResNet convolution, its frozen batch norm and its activation: transformers' `ResNetConvLayer` (and, with no
    activation, `ResNetShortCut`), with the same submodules and keys, computing `activation(norm(conv(x)) +
    residual)`. At CPU inference it is one oneDNN convolution with the batch norm folded into its weights and the
    residual add and ReLU fused after it (see `fused_layers`): a third less time for the full-size R50.
    """

    def __init__(self, convolution: nn.Conv2d, normalization: AvisFrozenBatchNorm2d, activation: str | None):
        super().__init__()
        self.convolution = convolution
        self.normalization = normalization
        self.activation = activation

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        # (N, C, H, W) -> (N, C', H', W'); residual: (N, C', H', W')
        if runs_fused(hidden_states):
            weight, bias = self.folded_weights(compute_dtype(hidden_states))
            return conv2d(hidden_states, self.convolution, weight, bias, self.activation, residual)
        hidden_states = self.normalization(self.convolution(hidden_states))
        hidden_states = hidden_states if residual is None else hidden_states + residual
        return hidden_states if self.activation is None else F.relu(hidden_states)

    def folded_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution's weight and bias with the batch norm folded in (w * s and b - mean * s, where s =
        weight / sqrt(var + eps)), in `dtype`; made again only when a parameter changes."""
        norm = self.normalization

        def fold(weight, norm_weight, norm_bias, mean, variance):
            scale = norm_weight * torch.rsqrt(variance + norm.eps)
            return (weight * scale[:, None, None, None]).to(dtype), (norm_bias - mean * scale).to(dtype)

        tensors = (self.convolution.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        return derived_parameters(self, f"_folded_in_{dtype}", fold, *tensors)


class AvisResNetBottleneckLayer(nn.Module):
    """transformers' `ResNetBottleNeckLayer` (same submodules and keys) whose final ReLU is its last convolution
    layer's, after the residual add: relu(expand(middle(reduce(x))) + shortcut(x))."""

    def __init__(self, shortcut: nn.Module, layer: nn.Sequential):
        super().__init__()
        self.shortcut = shortcut
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)
        residual = self.shortcut(hidden_states)
        reduce, middle, expand = self.layer
        return expand(middle(reduce(hidden_states)), residual=residual)


def _conv_layer(layer: ResNetConvLayer | ResNetShortCut, activation: str | None) -> AvisResNetConvLayer:
    return AvisResNetConvLayer(layer.convolution, layer.normalization, activation)


def _activation_name(layer: ResNetConvLayer | ResNetBottleNeckLayer) -> str | None:
    if isinstance(layer.activation, nn.Identity):
        return None
    if isinstance(layer.activation, nn.ReLU):
        return "relu"
    raise ValueError(f"AVISM's ResNet uses ReLU, not {type(layer.activation).__name__}")


def _fuse_resnet_layers(module: nn.Module) -> None:
    """Replace transformers' convolution, shortcut and bottleneck layers under `module` with the fusable ones above
    (the same submodules: the weights stay where they are)."""
    for name, child in module.named_children():
        if isinstance(child, ResNetBottleNeckLayer):
            shortcut = child.shortcut if isinstance(child.shortcut, nn.Identity) else _conv_layer(child.shortcut, None)
            reduce, middle, expand = child.layer
            layer = nn.Sequential(
                _conv_layer(reduce, _activation_name(reduce)),
                _conv_layer(middle, _activation_name(middle)),
                _conv_layer(expand, _activation_name(child)),
            )
            setattr(module, name, AvisResNetBottleneckLayer(shortcut, layer))
        elif isinstance(child, ResNetConvLayer):
            setattr(module, name, _conv_layer(child, _activation_name(child)))
        else:
            _fuse_resnet_layers(child)


class AvisResNetBackbone(ResNetBackbone):
    """
    detectron2's ResNet as the original runs it: max-pool stem, stride in the 3x3 convolution
    (`downsample_in_bottleneck=False`) and frozen batch norm; its convolution layers fused at CPU inference
    (`AvisResNetConvLayer`).
    """

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        _freeze_batch_norm(self)
        _fuse_resnet_layers(self)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # (N, 3, H, W) normalised and padded to a multiple of 32 -> res2..res5, each (N, C_i, H / s_i, W / s_i)
        return super().forward(pixel_values).feature_maps


def _fusable_linear(layer: nn.Linear) -> AvisLinear:
    """`layer`'s parameters in an `AvisLinear` (oneDNN's kernel at CPU inference)."""
    fusable = AvisLinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    fusable.weight, fusable.bias = layer.weight, layer.bias
    return fusable


class AvisSwinLayer(nn.Module):
    """
    One D2 Swin block on the submodules (and keys) of transformers' `SwinLayer`: x + drop(W-MSA(norm(x))), then
    + drop(MLP(norm(.))), windows of `window_size` over the map zero-padded to a multiple of it, cyclically shifted
    by `shift_size` in every other block. Stochastic depth drops both branches (transformers' drops only the
    attention's).

    Padding tokens never go through a projection: a zero token's query, key and value are the projections' biases,
    and attention outputs at padding are cropped away, so the q/k/v projection (one matmul) runs on the H*W real
    tokens and one zero token, and the output projection after the windows are merged, with the residual add fused
    in. For stage 4 of Swin-L at 448x800 that is 351 tokens instead of 864. Windows are gathered and merged by one
    index each (the pad, roll and partition of the reference in one copy), and the attention runs through SDPA, on
    groups of windows that share a mask (`windows`).
    """

    def __init__(self, layer: SwinLayer):
        super().__init__()
        if not isinstance(layer.mlp.activation_fn, nn.GELU | GELUActivation):
            raise ValueError(f"AVISM's Swin uses GELU, not {type(layer.mlp.activation_fn).__name__}")
        self.attention = layer.attention
        self.layernorm_before = layer.layernorm_before
        self.layernorm_after = layer.layernorm_after
        self.mlp = layer.mlp
        self.drop_path = layer.drop_path
        self.window_size = layer.window_size
        self.shift_size = layer.shift_size

    def forward(self, hidden_states: torch.Tensor, input_dimensions: tuple[int, int], **kwargs):
        # hidden_states: (B, H*W, C) -> (B, H*W, C); a tuple as `SwinStage` expects (no attention weights kept)
        height, width = input_dimensions
        attention = self.attention
        batch_size, _, channels = hidden_states.shape
        heads, head_dim = attention.num_attention_heads, attention.head_dim
        gather, scatter, counts, regions = self.windows(height, width, batch_size, hidden_states.device)

        qkv_weight, qkv_bias = self.qkv_parameters()
        # a zero token appended: its projections are the biases, the padding's (B, H*W + 1, 3C)
        qkv = linear(F.pad(self.layernorm_before(hidden_states), (0, 0, 0, 1)), qkv_weight, qkv_bias)
        windows = qkv.flatten(0, 1)[gather].view(-1, self.window_size**2, 3, heads, head_dim)
        query, key, value = windows.permute(2, 0, 3, 1, 4)  # each (B * windows, heads, ws^2, head_dim)
        groups = zip(
            query.split(counts), key.split(counts), value.split(counts), self.attention_masks(regions, query.dtype)
        )
        attended = [
            F.scaled_dot_product_attention(
                group_query,
                group_key,
                group_value,
                attn_mask=attention_mask,
                dropout_p=attention.attention_dropout if self.training else 0.0,
                scale=attention.scaling,
            ).transpose(1, 2)  # (windows of the group, ws^2, heads, head_dim)
            for group_query, group_key, group_value, attention_mask in groups
        ]
        # the window positions in gather's order -> the real tokens in raster order, (B, H*W, C)
        attended = torch.cat(attended).view(-1, channels)[scatter].view(batch_size, -1, channels)
        hidden_states = self.residual_branch(attention.o_proj, attended, hidden_states)

        fc1, fc2 = self.mlp.fc1, self.mlp.fc2
        expanded = linear(self.layernorm_after(hidden_states), fc1.weight, fc1.bias, "gelu")
        return (self.residual_branch(fc2, expanded, hidden_states), None)

    def qkv_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The q, k and v projections as one: their weights (3C, C) and biases (3C,) concatenated (at inference,
        once: 7 MB of copying a stage-3 block of Swin-L saves at every frame)."""
        attention = self.attention
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        parameters = [p.weight for p in projections] + [p.bias for p in projections]

        def concatenate(*tensors):
            return torch.cat(tensors[:3]), torch.cat(tensors[3:])

        if torch.is_grad_enabled():
            return concatenate(*parameters)
        return derived_parameters(self, "_qkv_parameters", concatenate, *parameters)

    def residual_branch(self, projection: nn.Linear, branch: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + drop_path(projection(branch)); the add fused into the projection where nothing is dropped."""
        if self.training:
            return residual + self.drop_path(projection(branch))
        return linear(branch, projection.weight, projection.bias, residual=residual)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.window_size) * self.window_size, -(-width // self.window_size) * self.window_size

    def windows(
        self, height: int, width: int, batch_size: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor]:
        """How B maps of H*W tokens (and a padding token after each) are cut into windows, grouped by the regions of
        the rolled map their positions are in: `gather` (B * windows * ws^2,) the flat index, among the B * (H*W + 1)
        tokens, of each window position on the zero-padded, cyclically shifted maps, group after group; `scatter`
        (B * H*W,) the window position of each real token; `counts` the windows of each group; `regions` (groups,
        ws^2) the region of each position of a group's windows. A shifted block's windows fall in four groups (the
        interior, along the bottom, along the right, the corner), one without a shift in one: a group's windows
        share one attention mask (`attention_masks`), broadcast rather than made for each window."""
        padded_height, padded_width = self.padded_size(height, width)
        rows = torch.arange(padded_height, device=device).roll(-self.shift_size)
        columns = torch.arange(padded_width, device=device).roll(-self.shift_size)
        index = torch.where(
            (rows[:, None] < height) & (columns[None, :] < width),
            rows[:, None] * width + columns[None, :],
            height * width,
        )
        window_tokens = window_partition(index[None, :, :, None], self.window_size).flatten(1)  # (windows, ws^2)
        regions, window_group = self.window_regions(height, width, device).unique(dim=0, return_inverse=True)
        order = window_group.argsort(stable=True)
        counts = window_group.bincount(minlength=len(regions)).tolist()
        offsets = torch.arange(batch_size, device=device)[:, None, None] * (height * width + 1)
        tokens = offsets + window_tokens[order]  # (B, windows, ws^2), windows in their groups' order
        gather = torch.cat([group.flatten() for group in tokens.split(counts, dim=1)])
        scatter = torch.empty(batch_size * (height * width + 1), dtype=torch.long, device=device)
        scatter[gather] = torch.arange(len(gather), device=device)
        scatter = scatter.view(batch_size, -1)[:, : height * width].flatten()
        return gather, scatter, [batch_size * count for count in counts], regions

    def window_regions(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Which region of the rolled map each window position is in, (windows, ws^2): the regions that a shifted
        block keeps apart (all 0 in a block without a shift)."""
        padded_height, padded_width = self.padded_size(height, width)
        region = self.shift_regions(padded_height, device)[:, None] * 3 + self.shift_regions(padded_width, device)
        return window_partition(region[None, :, :, None], self.window_size).flatten(1)

    def attention_masks(self, regions: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        """For each group of windows (`windows`), the relative position bias plus -100 between positions in
        different regions: (1, heads, ws^2, ws^2) each."""
        relative = self.attention.relative_position_bias
        if torch.is_grad_enabled():
            bias = relative()  # (1, heads, ws^2, ws^2)
        else:  # gathered from its table once
            bias = derived_parameters(
                self, "_relative_bias", lambda _: relative(), relative.relative_position_bias_table
            )
        bias = bias.to(dtype)
        apart = regions[:, :, None] != regions[:, None, :]  # (groups, ws^2, ws^2)
        return [torch.where(group_apart, -100.0, 0.0).to(dtype) + bias for group_apart in apart]

    def shift_regions(self, length: int, device: torch.device) -> torch.Tensor:
        """Which of the rolled map's three regions along an axis each position is in (0, 1, 2; all 0 unshifted)."""
        if self.shift_size == 0:
            return torch.zeros(length, dtype=torch.long, device=device)
        positions = torch.arange(length, device=device)
        return (positions >= length - self.window_size).long() + (positions >= length - self.shift_size).long()


class AvisSwinBackbone(SwinBackbone):
    """
    D2SwinTransformer on transformers' Swin: each stage is padded to a multiple of the window and always keeps its
    full window and shift, however small the stage, the shift mask is -100 (`AvisSwinLayer`), and each output stage
    goes through its own LayerNorm.
    """

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        # The backbone outputs are the per-stage norms; D2 Swin has no norm after the last stage.
        self.swin.layernorm = nn.Identity()
        for stage in self.swin.encoder.layers:
            stage.blocks = nn.ModuleList(AvisSwinLayer(block) for block in stage.blocks)
            if stage.downsample is not None:
                stage.downsample.reduction = _fusable_linear(stage.downsample.reduction)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # (N, 3, H, W) normalised and padded to a multiple of 32 -> res2..res5, each (N, C_i, H / s_i, W / s_i)
        return super().forward(pixel_values).feature_maps


BACKBONE_CLASSES = {"resnet": AvisResNetBackbone, "swin": AvisSwinBackbone}


def build_backbone(backbone_config: PreTrainedConfig) -> AvisResNetBackbone | AvisSwinBackbone:
    """The backbone of `AvisConfig.backbone_config`: a transformers ResNet or Swin config with the four stages."""
    if backbone_config.model_type not in BACKBONE_CLASSES:
        raise ValueError(f"AVISM runs on a ResNet or a Swin backbone, not {backbone_config.model_type!r}")
    if list(backbone_config.out_features) != BACKBONE_STAGES:
        raise ValueError(f"the backbone must output {BACKBONE_STAGES}, not {backbone_config.out_features}")
    return BACKBONE_CLASSES[backbone_config.model_type](backbone_config)
