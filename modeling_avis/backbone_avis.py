"""The two backbones of AVISM on transformers' ResNet and Swin, computing what the original's detectron2 ResNet-50
(frozen batch norm) and D2SwinTransformer compute."""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig, ResNetBackbone, SwinBackbone
from transformers.models.resnet.modeling_resnet import ResNetBottleNeckLayer, ResNetConvLayer, ResNetShortCut
from transformers.models.swin.modeling_swin import SwinMLP

from .fused_layers import compute_dtype, conv2d, runs_fused

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
        self._folded = None  # (parameters' identity and versions, dtype), weight, bias

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        # (N, C, H, W) -> (N, C', H', W'); residual: (N, C', H', W')
        if runs_fused(hidden_states):
            weight, bias = self.folded_weights(compute_dtype(hidden_states))
            return conv2d(hidden_states, self.convolution, weight, bias, self.activation, residual)
        hidden_states = self.normalization(self.convolution(hidden_states))
        hidden_states = hidden_states if residual is None else hidden_states + residual
        return hidden_states if self.activation is None else F.relu(hidden_states)

    @torch.no_grad()
    def folded_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution's weight and bias with the batch norm folded in (w * s and b - mean * s, where s =
        weight / sqrt(var + eps)), in `dtype`; made again only when a parameter changes."""
        norm = self.normalization
        tensors = (self.convolution.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        key = (dtype, *((tensor.data_ptr(), tensor._version) for tensor in tensors))
        if self._folded is None or self._folded[0] != key:
            scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
            weight = self.convolution.weight * scale[:, None, None, None]
            self._folded = (key, weight.to(dtype), (norm.bias - norm.running_mean * scale).to(dtype))
        return self._folded[1:]


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


class AvisSwinMLP(SwinMLP):
    """Swin's MLP followed by stochastic depth: D2 Swin drops the MLP branch of a block as well as its attention
    branch, while transformers' `SwinLayer` drops only the attention branch."""

    def __init__(self, config: PreTrainedConfig, dim: int, drop_path: nn.Module):
        super().__init__(config, dim)
        self.drop_path = drop_path

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.drop_path(super().forward(hidden_states))


class AvisSwinBackbone(SwinBackbone):
    """
    D2SwinTransformer on transformers' Swin: each stage is padded to a multiple of the window and always keeps its
    full window and shift, however small the stage (`SwinBackbone` partitions with `always_partition=True`; the
    shift mask is -100), and each output stage goes through its own LayerNorm.
    """

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        # The backbone outputs are the per-stage norms; D2 Swin has no norm after the last stage.
        self.swin.layernorm = nn.Identity()
        for stage in self.swin.encoder.layers:
            for block in stage.blocks:
                # The block's own stochastic-depth module: same rate on both branches, drawn independently.
                block.mlp = AvisSwinMLP(config, block.layernorm_after.normalized_shape[0], block.drop_path)
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
