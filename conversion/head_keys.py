"""Key mapping of the original AVISM head (pixel decoder, frame decoder, clip module) onto ours.

The original (detectron2) names: `sem_seg_head.pixel_decoder.*`, `sem_seg_head.predictor.*`, and the clip
module as `avism_module.*` (meta-arch AVISM) or `vita_module.*` (AVISM_COCO, with `vita_mask_features`).
"""

import re

import torch

from modeling_avis.errors import AvisCheckpointError

# Loss buffers of the original criteria: they hold the no-object weight, which our config carries instead.
TRAINING_ONLY_KEYS = ("criterion.empty_weight", "avism_criterion.empty_weight", "vita_criterion.empty_weight")

_PIXEL_DECODER = [
    (r"input_proj\.(\d+)\.(\d)\.", r"input_projections.\1.\2."),
    (r"transformer\.level_embed$", "level_embed"),
    (r"transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"encoder_layers.\1.self_attn."),
    (r"transformer\.encoder\.layers\.(\d+)\.norm1\.", r"encoder_layers.\1.norm1."),
    (r"transformer\.encoder\.layers\.(\d+)\.linear([12])\.", r"encoder_layers.\1.ffn.linear\2."),
    (r"transformer\.encoder\.layers\.(\d+)\.norm2\.", r"encoder_layers.\1.ffn.norm."),
    (r"mask_features\.", "mask_projection."),
]

# Both decoders (frame-level and clip-level) share Mask2Former's layer and head names.
_DECODER = [
    (r"transformer_self_attention_layers\.", "self_attention_layers."),
    (r"transformer_cross_attention_layers\.", "cross_attention_layers."),
    (r"transformer_ffn_layers\.", "ffn_layers."),
    (r"decoder_norm\.", "decoder_norm."),
    (r"query_feat\.", "query_features."),
    (r"query_embed\.", "query_position_embeddings."),
    (r"class_embed\.", "class_predictor."),
    (r"mask_embed\.", "mask_embedder."),
]

_FRAME_DECODER = _DECODER + [
    (r"av_pre_proj\.", "audio_projection."),
    (r"av_sf\.", "audio_attention_layers."),
    (r"av_post_proj\.", "audio_fusion."),
    (r"level_embed\.", "level_embed."),
    (r"input_proj\.", "input_projections."),
]

_CLIP_MODULE = _DECODER + [
    (r"av_proj\.", "audio_projection."),
    (r"enc_self_attn\.", "encoder_self_attention_layers."),
    (r"enc_ffn\.", "encoder_ffn_layers."),
    (r"enc_av_cross_attn\.", "fusion_cross_attention_layers."),
    (r"enc_av_ffn\.", "fusion_ffn_layers."),
    (r"(avism|vita)_mask_features\.", "mask_features_projection."),
    (r"fq_pos\.", "frame_query_position_embeddings."),
    (r"input_proj_dec\.", "input_projection."),
    (r"sim_embed_frame\.", "frame_similarity_projection."),
    (r"sim_embed_clip\.", "clip_similarity_projection."),
]

_SECTIONS = [
    ("sem_seg_head.pixel_decoder.", "pixel_decoder.", _PIXEL_DECODER),
    ("sem_seg_head.predictor.", "frame_decoder.", _FRAME_DECODER),
    ("avism_module.", "clip_module.", _CLIP_MODULE),
    ("vita_module.", "clip_module.", _CLIP_MODULE),
]


def _fpn_rule(key: str, num_fpn_levels: int) -> str | None:
    """`adapter_k` / `layer_k` serve res{k+1}; ours are ordered top-down (coarsest first)."""
    match = re.match(r"(adapter|layer)_(\d+)\.(norm\.)?(weight|bias)$", key)
    if match is None:
        return None
    kind, index, norm, name = match.groups()
    position = num_fpn_levels - int(index)
    module = "lateral_convs" if kind == "adapter" else "output_convs"
    return f"{module}.{position}.{1 if norm else 0}.{name}"


def rename_head_key(key: str, num_fpn_levels: int) -> str | None:
    """Our name (relative to AvisModel) for an original head key, or None if the key is not a head key."""
    for prefix, target, rules in _SECTIONS:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if target == "pixel_decoder.":
            fpn = _fpn_rule(rest, num_fpn_levels)
            if fpn is not None:
                return target + fpn
        for pattern, replacement in rules:
            renamed, count = re.subn("^" + pattern, replacement, rest)
            if count:
                return target + renamed
        raise AvisCheckpointError(f"unknown key in the original checkpoint: {key}")
    return None


def convert_head_state_dict(original: dict[str, torch.Tensor], num_fpn_levels: int) -> dict[str, torch.Tensor]:
    """Every head tensor of an original state dict under our names (backbone keys are left to the caller)."""
    converted = {}
    for key, tensor in original.items():
        name = rename_head_key(key, num_fpn_levels)
        if name is not None:
            converted[name] = tensor
    return converted
