"""The original checkpoint's `backbone.*` weights (detectron2 ResNet or D2SwinTransformer names) as the state dict of
`modeling_avis.backbone_avis.build_backbone`."""

import re
from collections.abc import Callable

import torch
from torch import Tensor
from transformers import AutoConfig, PreTrainedConfig

from modeling_avis.backbone_avis import BACKBONE_STAGES, build_backbone
from modeling_avis.errors import AvisCheckpointError

ORIGINAL_PREFIX = "backbone."
ORIGINAL_STAGES = ["res2", "res3", "res4", "res5"]
# detectron2's bottleneck ResNets: blocks per stage for `MODEL.RESNETS.DEPTH`.
RESNET_DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
# transformers' bottleneck narrows its 1x1 and 3x3 convolutions to a quarter of the stage width.
BOTTLENECK_REDUCTION = 4

# Original keys with no counterpart in our backbone, and why they can be dropped.
SKIPPED_KEYS = {
    "resnet": {
        r".*\.norm\.num_batches_tracked": "a frozen batch norm keeps no batch counter",
    },
    "swin": {
        r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_index": "a constant that Swin recomputes from the window",
    },
}


def _require(condition: bool, setting: str) -> None:
    if not condition:
        raise AvisCheckpointError(f"the original config sets {setting}, which the AVISM port does not support")


def _resnet_config(resnets: dict) -> PreTrainedConfig:
    _require(resnets["DEPTH"] in RESNET_DEPTHS, f"RESNETS.DEPTH={resnets['DEPTH']}")
    _require(resnets["NORM"] == "FrozenBN", f"RESNETS.NORM={resnets['NORM']}")
    _require(not resnets["STRIDE_IN_1X1"], "RESNETS.STRIDE_IN_1X1=True")
    _require(resnets["NUM_GROUPS"] == 1, f"RESNETS.NUM_GROUPS={resnets['NUM_GROUPS']}")
    _require(not any(resnets["DEFORM_ON_PER_STAGE"]), "deformable convolutions (RESNETS.DEFORM_ON_PER_STAGE)")
    _require(resnets["RES5_DILATION"] == 1, f"RESNETS.RES5_DILATION={resnets['RES5_DILATION']}")
    width = resnets["WIDTH_PER_GROUP"] * resnets["NUM_GROUPS"]
    _require(
        width * BOTTLENECK_REDUCTION == resnets["RES2_OUT_CHANNELS"],
        f"a res2 bottleneck width {width} that is not a quarter of RES2_OUT_CHANNELS={resnets['RES2_OUT_CHANNELS']}",
    )
    return AutoConfig.for_model(
        "resnet",
        embedding_size=resnets["STEM_OUT_CHANNELS"],
        hidden_sizes=[resnets["RES2_OUT_CHANNELS"] * 2**stage for stage in range(4)],
        depths=RESNET_DEPTHS[resnets["DEPTH"]],
        layer_type="bottleneck",
        downsample_in_bottleneck=False,
        out_features=BACKBONE_STAGES,
    )


def _swin_config(swin: dict) -> PreTrainedConfig:
    _require(not swin["APE"], "SWIN.APE=True")
    _require(swin["PATCH_NORM"], "SWIN.PATCH_NORM=False")
    _require(swin["QK_SCALE"] is None, f"SWIN.QK_SCALE={swin['QK_SCALE']}")
    return AutoConfig.for_model(
        "swin",
        image_size=swin["PRETRAIN_IMG_SIZE"],
        patch_size=swin["PATCH_SIZE"],
        embed_dim=swin["EMBED_DIM"],
        depths=list(swin["DEPTHS"]),
        num_heads=list(swin["NUM_HEADS"]),
        window_size=swin["WINDOW_SIZE"],
        mlp_ratio=swin["MLP_RATIO"],
        qkv_bias=swin["QKV_BIAS"],
        hidden_dropout_prob=swin["DROP_RATE"],
        attention_probs_dropout_prob=swin["ATTN_DROP_RATE"],
        drop_path_rate=swin["DROP_PATH_RATE"],
        out_features=BACKBONE_STAGES,
    )


def original_backbone_config(model_cfg: dict) -> PreTrainedConfig:
    """The transformers backbone config equal to the `MODEL` section of an original (merged) config.yaml."""
    name = model_cfg["BACKBONE"]["NAME"]
    if name == "build_resnet_backbone":
        section = model_cfg["RESNETS"]
        config = _resnet_config(section)
    elif name == "D2SwinTransformer":
        section = model_cfg["SWIN"]
        config = _swin_config(section)
    else:
        raise AvisCheckpointError(f"the original backbone {name!r} is not one of AVISM's (ResNet or D2 Swin)")
    _require(list(section["OUT_FEATURES"]) == ORIGINAL_STAGES, f"OUT_FEATURES={section['OUT_FEATURES']}")
    return config


_BATCH_NORM = r"norm\.(weight|bias|running_mean|running_var)"
_SWIN_BLOCK_PARTS = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.o_proj",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def _resnet_weights(name: str, tensor: Tensor) -> dict[str, Tensor] | None:
    # stem.conv1.{weight, norm.*} and res{2..5}.{block}.{conv1..conv3, shortcut}.{weight, norm.*}
    if match := re.fullmatch(r"stem\.conv1\.(.+)", name):
        layer, param = "embedder.embedder", match[1]
    elif match := re.fullmatch(r"res([2-5])\.(\d+)\.(?:conv([1-3])|shortcut)\.(.+)", name):
        part = f"layer.{int(match[3]) - 1}" if match[3] else "shortcut"
        layer, param = f"encoder.stages.{int(match[1]) - 2}.layers.{match[2]}.{part}", match[4]
    else:
        return None
    if param == "weight":
        return {f"{layer}.convolution.weight": tensor}
    if match := re.fullmatch(_BATCH_NORM, param):
        return {f"{layer}.normalization.{match[1]}": tensor}
    return None


def _swin_weights(name: str, tensor: Tensor) -> dict[str, Tensor] | None:
    if match := re.fullmatch(r"patch_embed\.proj\.(weight|bias)", name):
        return {f"swin.embeddings.patch_embeddings.projection.{match[1]}": tensor}
    if match := re.fullmatch(r"patch_embed\.norm\.(weight|bias)", name):
        return {f"swin.embeddings.norm.{match[1]}": tensor}
    if match := re.fullmatch(r"norm(\d)\.(weight|bias)", name):
        return {f"hidden_states_norms.stage{int(match[1]) + 1}.{match[2]}": tensor}
    if match := re.fullmatch(r"layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)", name):
        return {f"swin.encoder.layers.{match[1]}.downsample.{match[2]}": tensor}
    if not (match := re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", name)):
        return None
    block, part = f"swin.encoder.layers.{match[1]}.blocks.{match[2]}", match[3]
    if part == "attn.relative_position_bias_table":
        return {f"{block}.attention.relative_position_bias.relative_position_bias_table": tensor}
    if match := re.fullmatch(r"attn\.qkv\.(weight|bias)", part):
        # D2 stacks the query, key and value projections along the output dimension, in that order.
        return {
            f"{block}.attention.{p}_proj.{match[1]}": t.clone() for p, t in zip("qkv", tensor.chunk(3), strict=True)
        }
    if (match := re.fullmatch(r"(.+)\.(weight|bias)", part)) and match[1] in _SWIN_BLOCK_PARTS:
        return {f"{block}.{_SWIN_BLOCK_PARTS[match[1]]}.{match[2]}": tensor}
    return None


_RENAMERS: dict[str, Callable[[str, Tensor], dict[str, Tensor] | None]] = {
    "resnet": _resnet_weights,
    "swin": _swin_weights,
}


def _expected_shapes(backbone_config: PreTrainedConfig) -> dict[str, tuple[int, ...]]:
    # On the meta device: the keys and shapes of the backbone without allocating (Swin-L has 197M weights).
    with torch.device("meta"):
        backbone = build_backbone(backbone_config)
    return {key: tuple(tensor.shape) for key, tensor in backbone.state_dict().items()}


def convert_backbone_state_dict(original: dict[str, Tensor], backbone_config: PreTrainedConfig) -> dict[str, Tensor]:
    """
    The `backbone.*` entries of an original AVISM state dict (other keys are ignored) renamed, and split where the
    layouts differ, into the state dict of `build_backbone(backbone_config)`. Every original backbone key is used or
    listed in `SKIPPED_KEYS`, and every key of the backbone is filled with a tensor of its shape; anything else
    raises `AvisCheckpointError`.
    """
    model_type = backbone_config.model_type
    if model_type not in _RENAMERS:
        raise AvisCheckpointError(f"no backbone conversion for {model_type!r}; AVISM runs on a ResNet or a Swin")
    rename, skipped = _RENAMERS[model_type], SKIPPED_KEYS[model_type]
    expected = _expected_shapes(backbone_config)

    converted = {}
    for key, tensor in original.items():
        if not key.startswith(ORIGINAL_PREFIX):
            continue
        name = key.removeprefix(ORIGINAL_PREFIX)
        if any(re.fullmatch(pattern, name) for pattern in skipped):
            continue
        renamed = rename(name, tensor)
        if renamed is None:
            raise AvisCheckpointError(f"the checkpoint's {key!r} is not a weight of a {model_type} backbone")
        for new_key, value in renamed.items():
            if new_key not in expected:
                raise AvisCheckpointError(
                    f"the checkpoint's {key!r} has no place in the configured {model_type} backbone: "
                    "do the checkpoint and the configuration describe the same model?"
                )
            if tuple(value.shape) != expected[new_key]:
                raise AvisCheckpointError(
                    f"the checkpoint's {key!r} has shape {tuple(value.shape)} where the configured backbone "
                    f"expects {expected[new_key]}"
                )
            converted[new_key] = value

    missing = sorted(expected.keys() - converted.keys())
    if missing:
        raise AvisCheckpointError(
            f"the checkpoint has no weights for {len(missing)} backbone tensors, the first being {missing[0]!r}"
        )
    return converted
