"""The ResNet-50 and Swin backbones against the original's detectron2 ResNet and D2SwinTransformer."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import AutoBackbone, AutoConfig
from transformers.models.swin.modeling_swin import SwinLayer

from conversion.backbone_keys import convert_backbone_state_dict, original_backbone_config
from modeling_avis.backbone_avis import AvisFrozenBatchNorm2d, build_backbone
from modeling_avis.configuration_avis import R50_BACKBONE, SWIN_L_BACKBONE
from modeling_avis.errors import AvisCheckpointError

from .fixture_data import ORIGINAL

FIXTURES = ORIGINAL
MODELS = sorted(path.parent.name for path in FIXTURES.glob("*/manifest.json"))
KEY_LISTS = sorted(FIXTURES.glob("keys/*.json"))
LEVELS = ["res2", "res3", "res4", "res5"]
# The fixtures' suggested tolerance for intermediates (manifest comparison_advice), relative where values exceed 1.
TOLERANCE = 1e-4


def manifest(model: str) -> dict:
    return json.loads((FIXTURES / model / "manifest.json").read_text())


def original_model_cfg(model: str) -> dict:
    return yaml.safe_load((FIXTURES / model / "config.yaml").read_text())["MODEL"]


def preset_config(preset: dict):
    return AutoConfig.for_model(**preset)


def load_original_backbone(model: str):
    config = original_backbone_config(original_model_cfg(model))
    original = torch.load(FIXTURES / model / "model_final.pth", weights_only=True)["model"]
    backbone = build_backbone(config)
    backbone.load_state_dict(convert_backbone_state_dict(original, config), strict=True)
    return backbone.eval(), original


def backbone_input(images: torch.Tensor, key_config_values: dict) -> torch.Tensor:
    # uint8 (T, 3, H, W) -> float (T, 3, H', W'): normalised as AVISM.inference, then zero-padded bottom/right to a
    # multiple of the size divisibility, as ImageList.from_tensors does after normalisation.
    mean = torch.tensor(key_config_values["MODEL.PIXEL_MEAN"]).view(3, 1, 1)
    std = torch.tensor(key_config_values["MODEL.PIXEL_STD"]).view(3, 1, 1)
    divisibility = key_config_values["MODEL.MASK_FORMER.SIZE_DIVISIBILITY"]
    frames = (images.float() - mean) / std
    height, width = frames.shape[-2:]
    return F.pad(frames, (0, -width % divisibility, 0, -height % divisibility))


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / max(1.0, reference.abs().max().item())).item()


IO_CASES = [(model, case) for model in MODELS for case in manifest(model)["io"]]


@pytest.mark.parametrize(("model", "case"), IO_CASES, ids=[f"{model}-{case}" for model, case in IO_CASES])
def test_backbone_features_match_the_original(model, case, record_property):
    info = manifest(model)
    io = load_file(FIXTURES / model / info["io"][case]["file"])
    backbone, _ = load_original_backbone(model)
    pixel_values = backbone_input(io["input.images"], info["key_config_values"])
    assert list(pixel_values.shape[-2:]) == info["io"][case]["padded_size"]

    with torch.no_grad():
        features = backbone(pixel_values)

    errors = {}
    for level, ours in zip(LEVELS, features, strict=True):
        reference = io[f"backbone.{level}"]
        assert ours.shape == reference.shape, level
        errors[level] = relative_error(ours, reference)
        record_property(f"max_diff_{level}", errors[level])
    print(f"{model}/{case} max |ours - original| / max(1, max|original|): {errors}")
    assert max(errors.values()) <= TOLERANCE, errors


def test_original_r50_config_gives_the_shrunk_resnet():
    overrides = dict(manifest("r50_tiny")["overrides"])
    config = original_backbone_config(original_model_cfg("r50_tiny"))
    assert config.embedding_size == overrides["MODEL.RESNETS.STEM_OUT_CHANNELS"] == 8
    assert config.hidden_sizes == [32, 64, 128, 256]
    assert config.hidden_sizes[0] // 4 == overrides["MODEL.RESNETS.WIDTH_PER_GROUP"]
    assert config.depths == [3, 4, 6, 3] and not config.downsample_in_bottleneck


def test_original_swin_config_gives_the_shrunk_swin():
    overrides = dict(manifest("swin_tiny")["overrides"])
    config = original_backbone_config(original_model_cfg("swin_tiny"))
    assert config.embed_dim == overrides["MODEL.SWIN.EMBED_DIM"] == 32
    assert config.depths == overrides["MODEL.SWIN.DEPTHS"] == [2, 2, 2, 2]
    assert config.num_heads == overrides["MODEL.SWIN.NUM_HEADS"] == [1, 2, 4, 8]
    assert config.window_size == overrides["MODEL.SWIN.WINDOW_SIZE"] == 12
    assert config.image_size == overrides["MODEL.SWIN.PRETRAIN_IMG_SIZE"] == 384


@pytest.mark.parametrize(
    ("model", "section", "published", "preset"),
    [
        (
            "r50_tiny",
            "RESNETS",
            {"STEM_OUT_CHANNELS": 64, "RES2_OUT_CHANNELS": 256, "WIDTH_PER_GROUP": 64},
            R50_BACKBONE,
        ),
        (
            "swin_tiny",
            "SWIN",
            {"EMBED_DIM": 192, "DEPTHS": [2, 2, 18, 2], "NUM_HEADS": [6, 12, 24, 48]},
            SWIN_L_BACKBONE,
        ),
    ],
    ids=["r50", "swinl"],
)
def test_published_original_config_gives_the_preset(model, section, published, preset):
    model_cfg = original_model_cfg(model)
    model_cfg[section].update(published)
    assert original_backbone_config(model_cfg).to_dict() == preset_config(preset).to_dict()


def test_unsupported_original_setting_is_named():
    model_cfg = original_model_cfg("r50_tiny")
    model_cfg["RESNETS"]["STRIDE_IN_1X1"] = True
    with pytest.raises(AvisCheckpointError, match="STRIDE_IN_1X1"):
        original_backbone_config(model_cfg)


@pytest.mark.parametrize("key_list", KEY_LISTS, ids=[path.stem for path in KEY_LISTS])
def test_full_size_checkpoint_keys_fill_the_preset_backbone_strictly(key_list):
    listing = json.loads(key_list.read_text())
    preset = SWIN_L_BACKBONE if "/SwinL/" in listing["config"] else R50_BACKBONE
    config = preset_config(preset)
    # Meta tensors: keys and shapes are what is checked here (values are checked by the parity tests), and Swin-L's
    # backbone alone is 0.8 GB.
    original = {
        key: torch.empty(entry["shape"], dtype=getattr(torch, entry["dtype"]), device="meta")
        for key, entry in listing["keys"].items()
        if key.startswith("backbone.")
    }
    converted = convert_backbone_state_dict(original, config)
    with torch.device("meta"):
        backbone = build_backbone(config)
    expected = backbone.state_dict()
    assert converted.keys() == expected.keys()
    assert all(converted[key].shape == expected[key].shape for key in expected)
    result = backbone.load_state_dict(converted, strict=True, assign=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])


def test_unknown_backbone_key_is_an_error_naming_it():
    config = original_backbone_config(original_model_cfg("r50_tiny"))
    original = torch.load(FIXTURES / "r50_tiny" / "model_final.pth", weights_only=True)["model"]
    original["backbone.res6.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(AvisCheckpointError, match=r"backbone\.res6\.0\.conv1\.weight"):
        convert_backbone_state_dict(original, config)


def test_missing_backbone_key_is_an_error_naming_ours():
    config = original_backbone_config(original_model_cfg("swin_tiny"))
    original = torch.load(FIXTURES / "swin_tiny" / "model_final.pth", weights_only=True)["model"]
    del original["backbone.norm3.weight"]
    with pytest.raises(AvisCheckpointError, match=r"hidden_states_norms\.stage4\.weight"):
        convert_backbone_state_dict(original, config)


def test_backbone_key_of_the_wrong_shape_is_an_error():
    config = original_backbone_config(original_model_cfg("swin_tiny"))
    original = torch.load(FIXTURES / "swin_tiny" / "model_final.pth", weights_only=True)["model"]
    original["backbone.patch_embed.proj.weight"] = torch.zeros(16, 3, 4, 4)
    with pytest.raises(AvisCheckpointError, match=r"patch_embed\.proj\.weight.*\(16, 3, 4, 4\)"):
        convert_backbone_state_dict(original, config)


def test_skipped_swin_relative_position_index_equals_the_recomputed_one():
    backbone, original = load_original_backbone("swin_tiny")
    for stage, layer in enumerate(backbone.swin.encoder.layers):
        for index, block in enumerate(layer.blocks):
            ours = block.attention.relative_position_bias.relative_position_index
            theirs = original[f"backbone.layers.{stage}.blocks.{index}.attn.relative_position_index"]
            assert torch.equal(ours, theirs.view(-1))


def windows_of(hidden_states: torch.Tensor, window: int) -> torch.Tensor:
    # (B, H, W, C) -> (B * H/window * W/window, window * window, C)
    batch, height, width, channels = hidden_states.shape
    hidden_states = hidden_states.view(batch, height // window, window, width // window, window, channels)
    return hidden_states.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def map_of(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    # (B * H/window * W/window, window * window, C) -> (B, H, W, C)
    channels = windows.shape[-1]
    hidden_states = windows.view(-1, height // window, width // window, window, window, channels)
    return hidden_states.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def d2_swin_block(block, relative_position_index, hidden_states, height, width, window, shifted):
    """mask2former's SwinTransformerBlock.forward with BasicLayer's shift mask, written out on our block's weights:
    pad to the window, never shrink it nor drop the shift."""
    batch, _, channels = hidden_states.shape
    shift = window // 2
    states = block.layernorm_before(hidden_states).view(batch, height, width, channels)
    states = F.pad(states, (0, 0, 0, -width % window, 0, -height % window))
    padded_height, padded_width = states.shape[1:3]

    regions = torch.zeros(1, padded_height, padded_width, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for row, rows in enumerate(cuts):
        for column, columns in enumerate(cuts):
            regions[:, rows, columns, :] = 3 * row + column
    regions = windows_of(regions, window).squeeze(-1)
    shift_mask = (regions[:, None, :] != regions[:, :, None]).float() * -100.0  # (nW, N, N)

    if shifted:
        states = torch.roll(states, shifts=(-shift, -shift), dims=(1, 2))
    tokens = windows_of(states, window)  # (B * nW, N, C)
    attention = block.attention
    heads = attention.num_attention_heads
    query, key, value = (
        projection(tokens).view(tokens.shape[0], -1, heads, channels // heads).transpose(1, 2)
        for projection in (attention.q_proj, attention.k_proj, attention.v_proj)
    )
    table = attention.relative_position_bias.relative_position_bias_table
    bias = table[relative_position_index.view(-1)].view(window**2, window**2, heads).permute(2, 0, 1)
    scores = (query * (channels // heads) ** -0.5) @ key.transpose(-2, -1) + bias
    if shifted:
        scores = (scores.view(batch, -1, heads, window**2, window**2) + shift_mask[None, :, None]).flatten(0, 1)
    tokens = (scores.softmax(-1) @ value).transpose(1, 2).reshape(tokens.shape[0], -1, channels)
    states = map_of(attention.o_proj(tokens), window, padded_height, padded_width)
    if shifted:
        states = torch.roll(states, shifts=(shift, shift), dims=(1, 2))
    hidden_states = hidden_states + states[:, :height, :width].reshape(batch, height * width, channels)
    return hidden_states + block.mlp(block.layernorm_after(hidden_states))


@pytest.mark.parametrize(
    ("height", "width", "last_stage"), [(360, 640, (12, 20)), (200, 300, (7, 10))], ids=["360x640", "200x300"]
)
def test_swin_keeps_full_shifted_windows_on_stages_no_larger_than_the_window(height, width, last_stage):
    backbone, original = load_original_backbone("swin_tiny")
    window = backbone.config.window_size
    generator = torch.Generator().manual_seed(0)
    # two frames: a batch's windows are grouped by their mask across its frames
    images = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=generator)
    pixel_values = backbone_input(images, manifest("swin_tiny")["key_config_values"])

    calls = []
    for stage, layer in enumerate(backbone.swin.encoder.layers):
        for index, block in enumerate(layer.blocks):
            block.register_forward_hook(
                lambda module, args, output, stage=stage, index=index: calls.append(
                    (stage, index, module, args[0], args[1], output[0])
                )
            )
    with torch.no_grad():
        features = backbone(pixel_values)
    assert tuple(features[-1].shape[-2:]) == last_stage and min(last_stage) <= window

    errors = []
    for stage, index, block, inputs, (stage_height, stage_width), outputs in calls:
        assert (block.window_size, block.shift_size) == (window, window // 2 if index % 2 else 0)
        index_buffer = original[f"backbone.layers.{stage}.blocks.{index}.attn.relative_position_index"]
        with torch.no_grad():
            reference = d2_swin_block(block, index_buffer, inputs, stage_height, stage_width, window, index % 2 == 1)
        errors.append(relative_error(outputs, reference))
    print(f"{height}x{width} max block error against D2: {max(errors):.2e}")
    assert max(errors) <= TOLERANCE


def test_transformers_shrinking_swin_path_differs_where_a_stage_equals_the_window():
    # transformers' other Swin path (SwinModel, always_partition=False) shrinks the window to the stage and drops the
    # shift when min(stage) <= window: 360x640 frames give a 12x20 last stage, where it computes something else.
    # (Below the window it does not run at all: the relative-position bias keeps the full window's size.)
    backbone, _ = load_original_backbone("swin_tiny")
    window = backbone.config.window_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1, 3, 360, 640), dtype=torch.uint8, generator=generator)
    pixel_values = backbone_input(images, manifest("swin_tiny")["key_config_values"])
    shifted_block = backbone.swin.encoder.layers[3].blocks[1]
    calls = []
    shifted_block.register_forward_hook(lambda module, args, output: calls.append((args[0], args[1], output[0])))
    with torch.no_grad():
        backbone(pixel_values)
    inputs, dimensions, outputs = calls[0]
    assert dimensions == (12, 20) and (shifted_block.window_size, shifted_block.shift_size) == (window, window // 2)

    # transformers' own block on the same weights: always partitioned it computes ours, shrinking it does not
    channels = inputs.shape[-1]
    reference = SwinLayer(
        backbone.config, channels, dimensions, backbone.config.num_heads[3], shift_size=window // 2
    ).eval()
    reference.load_state_dict(shifted_block.state_dict())
    with torch.no_grad():
        partitioned = reference(inputs, dimensions, always_partition=True)[0]
        shrunk = reference(inputs, dimensions, always_partition=False)[0]
    assert relative_error(partitioned, outputs) <= TOLERANCE
    assert (reference.window_size, reference.shift_size) == (window, 0)
    assert relative_error(shrunk, outputs) > 1e-2


def test_swin_mlp_branch_has_stochastic_depth_like_d2():
    config = preset_config({**SWIN_L_BACKBONE, "embed_dim": 8, "depths": [2, 2, 2, 2], "num_heads": [1, 1, 1, 1]})
    block = build_backbone(config).swin.encoder.layers[3].blocks[1]
    keep = 1 - block.drop_path.drop_prob
    assert keep == pytest.approx(0.7)  # the last block of a 0.3 drop-path schedule
    hidden_states = torch.randn(256, 4, 64)
    with torch.no_grad():
        # without its attention branch the block is x + drop_path(MLP(norm(x)))
        block.attention.o_proj.weight.zero_()
        block.attention.o_proj.bias.zero_()
        kept = block.eval()(hidden_states, (2, 2))[0] - hidden_states
        sampled = block.train()(hidden_states, (2, 2))[0] - hidden_states
    is_kept = torch.isclose(sampled, kept / keep, atol=1e-6).flatten(1).all(1)
    is_dropped = (sampled == 0).flatten(1).all(1)
    assert bool((is_kept | is_dropped).all()) and 0 < int(is_dropped.sum()) < 256


def test_resnet_batch_norm_stays_frozen_in_train_mode():
    backbone, _ = load_original_backbone("r50_tiny")
    norms = [module for module in backbone.modules() if isinstance(module, AvisFrozenBatchNorm2d)]
    assert len(norms) == 53
    assert not any(
        name.endswith(("normalization.weight", "normalization.bias")) for name, _ in backbone.named_parameters()
    )
    assert not any(key.endswith("num_batches_tracked") for key in backbone.state_dict())
    statistics = {key: value.clone() for key, value in backbone.state_dict().items() if "normalization" in key}
    pixel_values = torch.randn(2, 3, 64, 64) * 3 + 1

    with torch.no_grad():
        evaluated = backbone.eval()(pixel_values)
        trained = backbone.train()(pixel_values)

    assert all(torch.equal(backbone.state_dict()[key], value) for key, value in statistics.items())
    assert all(torch.equal(a, b) for a, b in zip(evaluated, trained, strict=True))


def test_transformers_resnet_checkpoint_loads_into_the_frozen_backbone():
    config = preset_config({**R50_BACKBONE, "embedding_size": 8, "hidden_sizes": [32, 64, 128, 256]})
    stock = AutoBackbone.from_config(config).state_dict()
    assert any(key.endswith("num_batches_tracked") for key in stock)
    result = build_backbone(config).load_state_dict(stock, strict=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])


def test_backbone_without_the_four_stages_is_refused():
    config = preset_config({**R50_BACKBONE, "out_features": ["stage4"]})
    with pytest.raises(ValueError, match="stage1"):
        build_backbone(config)
