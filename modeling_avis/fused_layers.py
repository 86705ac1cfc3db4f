"""Linear and convolution layers that, at CPU inference, run as oneDNN kernels with their bias, residual add and
activation fused in.

On the CPU, torch runs a 1x1 convolution of one frame on one thread through its generic path, at about half of
oneDNN's speed, and every bias, batch norm, residual add and ReLU as a pass of its own over memory. The layers here
are drop-in `nn.Linear` / `nn.Conv2d` (same parameters, same state-dict keys) that take oneDNN's fused kernels
(`torch.ops.mkldnn._linear_pointwise` / `_convolution_pointwise`, the ones torch.compile's CPU backend emits)
whenever no gradient is recorded on the CPU, and the plain torch ops otherwise (training, CUDA). Both compute
`activation(layer(x) + residual)` and agree up to float rounding (about 1e-6 relative). Under autocast they
compute in the autocast dtype, as `F.linear` / `F.conv2d` would.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

# Activations oneDNN fuses, by the names its kernels take, and the algorithm of each ("none": GELU by erf, as F.gelu).
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}
ALGORITHMS = {"gelu": "none"}
# What oneDNN computes in on the CPU.
FUSED_DTYPES = (torch.float32, torch.bfloat16)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer or convolution computes `x` in: the autocast dtype where autocast is on."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def runs_fused(x: torch.Tensor) -> bool:
    """Whether a layer given `x` takes oneDNN's fused kernels: on the CPU, with no gradient to record."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and compute_dtype(x) in FUSED_DTYPES
        and torch.backends.mkldnn.is_available()
    )


def _cast(dtype: torch.dtype, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.to(dtype) for t in tensors]


@torch.no_grad()
def derived_parameters(module: nn.Module, name: str, make: Callable, *parameters: torch.Tensor | None):
    """make(*parameters), kept on `module` as `name` until one of `parameters` changes (in place, or replaced, or
    moved): for tensors an inference call would otherwise remake from the same weights at every call. Weights
    made in inference mode keep no version counter: for them it is made at every call."""
    if any(p is not None and p.is_inference() for p in parameters):
        return make(*parameters)
    key = tuple((None, None) if p is None else (p.data_ptr(), p._version) for p in parameters)
    cached = module.__dict__.get(name)
    if cached is None or cached[0] != key:
        cached = (key, make(*parameters))
        module.__dict__[name] = cached
    return cached[1]


def cast_parameters(module: nn.Module, dtype: torch.dtype, *parameters: torch.Tensor | None) -> list:
    """`parameters` of `module` in `dtype` (see `derived_parameters`). Under bf16 autocast the fused kernels take
    bf16 weights; cast at every call, the pixel and frame decoders' weights cost 2 % of a frame's time."""
    if all(p is None or p.dtype == dtype for p in parameters):
        return list(parameters)
    return derived_parameters(module, f"_parameters_in_{dtype}", lambda *p: _cast(dtype, *p), *parameters)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """activation(x W^T + b + residual), x (..., in) -> (..., out); fused by oneDNN where `runs_fused(x)`."""
    if not runs_fused(x):
        y = F.linear(x, weight, bias)
        y = y if residual is None else y + residual
        return y if activation is None else ACTIVATIONS[activation](y)
    x, weight, bias, residual = _cast(compute_dtype(x), x, weight, bias, residual)
    if residual is None:
        return torch.ops.mkldnn._linear_pointwise(
            x, weight, bias, activation or "none", [], ALGORITHMS.get(activation)
        )
    y = torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
    return y if activation is None else ACTIVATIONS[activation](y)


def conv2d(
    x: torch.Tensor,
    conv: nn.Conv2d,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """activation(conv(x; weight, bias) + residual) with `conv`'s stride, padding, dilation and groups, (N, C, H, W)
    -> (N, C', H', W'); fused by oneDNN where `runs_fused(x)` (channels-last in, channels-last out)."""
    if not runs_fused(x):
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        y = y if residual is None else y + residual
        return y if activation is None else ACTIVATIONS[activation](y)
    x, weight, bias, residual = _cast(compute_dtype(x), x, weight, bias, residual)
    geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    if residual is None:
        algorithm = ALGORITHMS.get(activation)
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry, activation or "none", [], algorithm)
    return torch.ops.mkldnn._convolution_pointwise(
        x, residual, weight, bias, *geometry, "add", 1.0, activation or "none", [], ALGORITHMS.get(activation)
    )


class AvisLinear(nn.Linear):
    """`nn.Linear` followed by an optional residual add and activation ("relu", "gelu"), fused at CPU inference."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None):
        super().__init__(in_features, out_features, bias)
        self.activation = activation

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        # (..., in) -> (..., out); residual: (..., out)
        weight, bias = self.weight, self.bias
        if runs_fused(hidden_states):
            weight, bias = cast_parameters(self, compute_dtype(hidden_states), weight, bias)
        return linear(hidden_states, weight, bias, self.activation, residual)


class AvisConv2d(nn.Conv2d):
    """`nn.Conv2d` (zero padding) followed by an optional residual add and activation, fused at CPU inference."""

    def __init__(self, *args, activation: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = activation

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if runs_fused(hidden_states):
            weight, bias = cast_parameters(self, compute_dtype(hidden_states), weight, bias)
        return conv2d(hidden_states, self, weight, bias, self.activation, residual)


__all__ = [
    "AvisConv2d",
    "AvisLinear",
    "cast_parameters",
    "compute_dtype",
    "conv2d",
    "derived_parameters",
    "linear",
    "runs_fused",
]
