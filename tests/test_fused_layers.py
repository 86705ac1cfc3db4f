"""oneDNN's fused CPU kernels compute what the plain torch ops compute, and only where no gradient is recorded."""

import pytest
import torch
from torch.nn import functional as F

from modeling_avis import AvisModel
from modeling_avis.backbone_avis import AvisFrozenBatchNorm2d, AvisResNetBottleneckLayer, AvisResNetConvLayer
from modeling_avis.fused_layers import AvisConv2d, AvisLinear, runs_fused

from .conftest import tiny_config

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def randomise_(module: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5)
    return module


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["no-residual", "residual"])
def test_fused_linear_equals_linear_then_residual_then_activation(activation, with_residual):
    layer = AvisLinear(24, 40, activation=activation)
    x, residual = torch.randn(2, 7, 24), torch.randn(2, 7, 40) if with_residual else None
    expected = F.linear(x, layer.weight, layer.bias) + (0 if residual is None else residual)
    expected = {None: lambda y: y, "relu": F.relu, "gelu": F.gelu}[activation](expected)
    with torch.no_grad():
        assert runs_fused(x)
        fused = layer(x, residual=residual)
    assert fused.shape == (2, 7, 40)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (3, 1), (3, 2)])
def test_fused_convolution_equals_conv_then_residual_then_relu(kernel, stride):
    conv = AvisConv2d(16, 32, kernel, stride=stride, padding=kernel // 2, activation="relu")
    x = torch.randn(2, 16, 9, 11).contiguous(memory_format=torch.channels_last)
    plain = F.conv2d(x, conv.weight, conv.bias, stride, kernel // 2)
    residual = torch.randn_like(plain)
    with torch.no_grad():
        fused = conv(x, residual=residual)
    torch.testing.assert_close(fused, F.relu(plain + residual), rtol=1e-5, atol=1e-5)


def test_a_layer_recording_gradients_takes_the_plain_ops_and_trains():
    layer = AvisLinear(8, 4, activation="relu")
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert runs_fused(x)
    assert not runs_fused(x)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_under_bfloat16_autocast_the_fused_layer_computes_in_bfloat16():
    layer = AvisLinear(32, 16)
    x = torch.randn(5, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = layer(x)
        plain = F.linear(x, layer.weight, layer.bias)
    assert fused.dtype == plain.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), plain.float(), rtol=2e-2, atol=2e-2)


def test_resnet_layers_fold_their_batch_norm_and_fuse_the_residual_add():
    backbone = randomise_(AvisModel(tiny_config()).backbone.eval())
    blocks = [m for m in backbone.modules() if isinstance(m, AvisResNetBottleneckLayer)]
    assert blocks and all(isinstance(layer, AvisResNetConvLayer) for block in blocks for layer in block.layer)
    pixel_values = torch.randn(2, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fused = backbone(pixel_values)
    with torch.enable_grad():  # the plain path: convolution, batch norm, add and ReLU one after the other
        plain = backbone(pixel_values)
    assert len(fused) == len(plain) == 4
    for ours, reference in zip(fused, plain, strict=True):
        torch.testing.assert_close(ours, reference.detach(), rtol=1e-4, atol=1e-4)


def test_folded_weights_follow_a_change_of_the_batch_norm():
    layer = AvisResNetConvLayer(torch.nn.Conv2d(4, 6, 1, bias=False), AvisFrozenBatchNorm2d(6), "relu")
    x = torch.randn(1, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        before = layer(x)
        layer.normalization.running_var.copy_(torch.full((6,), 4.0))
        after = layer(x)
    with torch.enable_grad():
        expected = layer(x).detach()
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_weights_cast_for_bfloat16_follow_a_change_of_the_layer():
    layer = AvisLinear(8, 4).eval()
    x, before_bias = torch.randn(3, 8), layer.bias.detach().clone()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = layer(x)
        assert torch.equal(layer(x), before)  # the cast weights kept
        with torch.no_grad():
            layer.weight.mul_(2.0)  # in place
        doubled = layer(x)
    layer.weight = torch.nn.Parameter(torch.zeros(4, 8))  # replaced
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        replaced = layer(x)
        layer.bias = torch.nn.Parameter(torch.ones(4))  # made in inference mode: no version to follow
        made_in_inference_mode = layer(x)
    assert torch.equal(made_in_inference_mode, torch.ones(3, 4, dtype=torch.bfloat16))
    layer.bias = torch.nn.Parameter(torch.zeros(4))
    expected = torch.zeros(3, 4, dtype=torch.bfloat16) + before_bias.bfloat16()
    assert not torch.allclose(doubled.float(), before.float(), atol=1e-2)
    assert torch.equal(replaced, expected)
