"""The original's merged detectron2 config (a YAML dump of `cfg`) as an AvisConfig."""

from pathlib import Path

import yaml

from modeling_avis.configuration_avis import AVISEG_LABELS, AvisConfig
from modeling_avis.errors import AvisCheckpointError

# ResNet depth -> blocks per stage (detectron2's build_resnet_backbone)
RESNET_DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def load_original_config(path: str | Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _resnet_config(model: dict) -> dict:
    resnets = model["RESNETS"]
    if resnets["DEPTH"] not in RESNET_DEPTHS:
        raise AvisCheckpointError(f"ResNet depth {resnets['DEPTH']} is not supported (50 or 101)")
    if resnets.get("STRIDE_IN_1X1", False) or resnets.get("NUM_GROUPS", 1) != 1:
        raise AvisCheckpointError("only ResNets with the stride in the 3x3 convolution and one group are supported")
    res2 = resnets["RES2_OUT_CHANNELS"]
    # transformers' bottleneck reduces by 4: detectron2's bottleneck width must be a quarter of the stage width
    if resnets["WIDTH_PER_GROUP"] * resnets.get("NUM_GROUPS", 1) * 4 != res2:
        raise AvisCheckpointError("the ResNet bottleneck width must be a quarter of RES2_OUT_CHANNELS")
    return {
        "model_type": "resnet",
        "embedding_size": resnets["STEM_OUT_CHANNELS"],
        "hidden_sizes": [res2 * 2**stage for stage in range(4)],
        "depths": RESNET_DEPTHS[resnets["DEPTH"]],
        "layer_type": "bottleneck",
        "downsample_in_bottleneck": False,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    }


def _swin_config(model: dict) -> dict:
    swin = model["SWIN"]
    if swin.get("APE", False):
        raise AvisCheckpointError("Swin with absolute position embeddings (APE) is not supported")
    return {
        "model_type": "swin",
        "image_size": swin["PRETRAIN_IMG_SIZE"],
        "patch_size": swin.get("PATCH_SIZE", 4),
        "embed_dim": swin["EMBED_DIM"],
        "depths": list(swin["DEPTHS"]),
        "num_heads": list(swin["NUM_HEADS"]),
        "window_size": swin["WINDOW_SIZE"],
        "mlp_ratio": swin.get("MLP_RATIO", 4.0),
        "qkv_bias": swin.get("QKV_BIAS", True),
        "drop_path_rate": swin.get("DROP_PATH_RATE", 0.3),
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    }


def avis_config_from_original(cfg: dict) -> AvisConfig:
    """Every AvisConfig field from the original's merged config; unsupported variants are errors."""
    model = cfg["MODEL"]
    backbone_name = model["BACKBONE"]["NAME"]
    if backbone_name == "build_resnet_backbone":
        backbone = _resnet_config(model)
    elif backbone_name == "D2SwinTransformer":
        backbone = _swin_config(model)
    else:
        raise AvisCheckpointError(f"backbone {backbone_name!r} is not supported (ResNet or D2SwinTransformer)")
    head, decoder, clip = model["SEM_SEG_HEAD"], model["MASK_FORMER"], model["AVISM"]
    if decoder.get("PRE_NORM", False) or clip.get("PRE_NORM", False):
        raise AvisCheckpointError("pre-norm transformer decoders are not supported")
    if list(head["DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"]) != ["res3", "res4", "res5"]:
        raise AvisCheckpointError("the deformable encoder must read res3, res4 and res5")
    num_classes = head["NUM_CLASSES"]
    labels = {} if num_classes == len(AVISEG_LABELS) else {"id2label": {i: f"class_{i}" for i in range(num_classes)}}
    return AvisConfig(
        **labels,
        backbone_config=backbone,
        feature_size=head["CONVS_DIM"],
        mask_feature_size=head["MASK_DIM"],
        encoder_layers=head["TRANSFORMER_ENC_LAYERS"],
        common_stride=head["COMMON_STRIDE"],
        hidden_dim=decoder["HIDDEN_DIM"],
        num_attention_heads=decoder["NHEADS"],
        dim_feedforward=decoder["DIM_FEEDFORWARD"],
        # the original counts the prediction on the learnable queries as a layer
        decoder_layers=decoder["DEC_LAYERS"] - 1,
        num_frame_queries=decoder["NUM_OBJECT_QUERIES"],
        enforce_input_projection=decoder["ENFORCE_INPUT_PROJ"],
        clip_hidden_dim=clip["HIDDEN_DIM"],
        clip_num_attention_heads=clip["NHEADS"],
        clip_dim_feedforward=clip["DIM_FEEDFORWARD"],
        clip_encoder_layers=clip["ENC_LAYERS"],
        clip_window_size=clip["ENC_WINDOW_SIZE"],
        clip_decoder_layers=clip["DEC_LAYERS"],
        num_clip_queries=clip["NUM_OBJECT_QUERIES"],
        clip_enforce_input_projection=clip["ENFORCE_INPUT_PROJ"],
        num_frame_query_layers=clip["LAST_LAYER_NUM"],
        frame_chunk_size=clip["TEST_RUN_CHUNK_SIZE"],
        mask_chunk_size=clip["TEST_INTERPOLATE_CHUNK_SIZE"],
        num_detections=cfg["TEST"]["DETECTIONS_PER_IMAGE"],
        pixel_mean=list(model["PIXEL_MEAN"]),
        pixel_std=list(model["PIXEL_STD"]),
        size_divisibility=decoder["SIZE_DIVISIBILITY"],
        no_object_weight=decoder["NO_OBJECT_WEIGHT"],
        clip_no_object_weight=clip["NO_OBJECT_WEIGHT"],
        class_weight=decoder["CLASS_WEIGHT"],
        mask_weight=decoder["MASK_WEIGHT"],
        dice_weight=decoder["DICE_WEIGHT"],
        sim_weight=clip["SIM_WEIGHT"],
        train_num_points=decoder["TRAIN_NUM_POINTS"],
        oversample_ratio=decoder["OVERSAMPLE_RATIO"],
        importance_sample_ratio=decoder["IMPORTANCE_SAMPLE_RATIO"],
    )
