"""Configuration of AVISM, the audio-visual instance segmentation model of AVIS (CVPR 2025)."""

import re

import torch
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto import AutoConfig

from .config_ranges import (
    BACKBONE_RANGES,
    MODEL_RANGES,
    NUM_LABELS,
    VGGISH_MAX_FLAT_SIZE,
    VGGISH_RANGES,
    check_ranges,
    shown,
)

AVISEG_LABELS = (
    "person", "violin", "guitar", "cello", "flute", "piano", "ukulele", "accordion", "guzheng", "clarinet",
    "cat", "car", "saxophone", "dog", "lawn_mover", "tuba", "banjo", "pipa", "bassoon", "airplane",
    "tree_harvester", "trumpet", "lion", "bass", "erhu", "horse",
)  # fmt: skip

# The ResNet-50 of detectron2 as transformers' ResNet: stride in the 3x3 convolution (STRIDE_IN_1X1=False).
R50_BACKBONE = {
    "model_type": "resnet",
    "embedding_size": 64,
    "hidden_sizes": [256, 512, 1024, 2048],
    "depths": [3, 4, 6, 3],
    "layer_type": "bottleneck",
    "downsample_in_bottleneck": False,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}

# Swin-L (window 12, pre-trained at 384) as the original's D2SwinTransformer.
SWIN_L_BACKBONE = {
    "model_type": "swin",
    "image_size": 384,
    "embed_dim": 192,
    "depths": [2, 2, 18, 2],
    "num_heads": [6, 12, 24, 48],
    "window_size": 12,
    "drop_path_rate": 0.3,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}


# The pixel decoder's GroupNorm groups (detectron2's, as in the original): feature_size is a multiple of it.
FEATURE_GROUPS = 32


@strict
class AvisVggishConfig(PreTrainedConfig):
    r"""
    The VGGish audio encoder: log-mel patches (`num_frames` x `num_mel_bins`) to one embedding per patch.

    conv_channels (`list[int]`): output channels of the 3x3 convolutions.
    pool_after (`list[int]`): indices of the convolutions followed by a 2x2 max-pool.
    fc_sizes (`list[int]`): widths of the fully connected layers; the last is the embedding size.
    num_frames (`int`): log-mel frames per example (96 x 10 ms).
    num_mel_bins (`int`): mel bands per frame.
    initializer_range (`float`, *optional*): standard deviation of the truncated-normal initial weights (VGGish's
        0.01, for weights that are then loaded). None: He initialisation, for an encoder trained from scratch: at
        0.01 its activations shrink layer after layer, and the first large updates leave every ReLU of the embedding
        dead, so that the model never hears anything.
    """

    model_type = "avis_vggish"

    conv_channels: list[int] | tuple[int, ...] = (64, 128, 256, 256, 512, 512)
    pool_after: list[int] | tuple[int, ...] = (0, 1, 3, 5)
    fc_sizes: list[int] | tuple[int, ...] = (4096, 4096, 128)
    num_frames: int = 96
    num_mel_bins: int = 64
    initializer_range: float | None = 0.01

    def validate_architecture(self):
        super().validate_architecture()
        check_ranges(self, VGGISH_RANGES)
        if len(set(self.pool_after)) != len(self.pool_after) or max(self.pool_after, default=0) >= len(
            self.conv_channels
        ):
            raise ValueError(
                f"pool_after {list(self.pool_after)} must name distinct convolutions of the "
                f"{len(self.conv_channels)} (0..{len(self.conv_channels) - 1})"
            )
        downsampling = 2 ** len(self.pool_after)
        if min(self.num_frames, self.num_mel_bins) < downsampling:
            raise ValueError(
                f"an example of {self.num_frames} x {self.num_mel_bins} log-mel values is smaller than its "
                f"{len(self.pool_after)} 2x2 max-pools need ({downsampling} x {downsampling})"
            )
        flat_size = self.conv_channels[-1] * (self.num_frames // downsampling) * (self.num_mel_bins // downsampling)
        if flat_size > VGGISH_MAX_FLAT_SIZE:
            raise ValueError(
                f"the last convolution's output flattens to {flat_size} values (conv_channels[-1] x num_frames x "
                f"num_mel_bins / {downsampling}^2), allowed up to {VGGISH_MAX_FLAT_SIZE}"
            )


@strict
class AvisConfig(PreTrainedConfig):
    r"""
    Every hyperparameter of the AVISM model (`configs/avism/*.yaml` of the original), with the R50 / ImageNet
    defaults. Pre- and post-processing settings (frame size, normalisation, padding, top-k, score threshold) are the
    processor's (`AvisProcessor`).

    backbone_config (`dict` or `PreTrainedConfig`): a transformers ResNet or Swin config; the four stages
        (strides 4, 8, 16, 32) feed the pixel decoder.
    audio_config (`dict` or `AvisVggishConfig`, *optional*): the audio encoder run on log-mel patches. Without it
        the model takes precomputed 128-d audio features only.
    feature_size (`int`): channels of the pixel decoder (`SEM_SEG_HEAD.CONVS_DIM`).
    mask_feature_size (`int`): channels of the mask features (`SEM_SEG_HEAD.MASK_DIM`).
    encoder_layers (`int`): multi-scale deformable-attention encoder layers of the pixel decoder.
    encoder_feedforward_dim (`int`): FFN width of those layers (hard-coded 1024 in the original).
    encoder_n_points (`int`): sampling points per head and level.
    num_feature_levels (`int`): backbone levels the deformable encoder attends to (res3..res5).
    hidden_dim (`int`): width of the frame-level decoder (`MASK_FORMER.HIDDEN_DIM`).
    num_attention_heads (`int`): heads of the frame-level decoder and of the deformable encoder.
    dim_feedforward (`int`): FFN width of the frame-level decoder.
    decoder_layers (`int`): frame-level decoder layers (the original's `DEC_LAYERS` minus one).
    num_frame_queries (`int`): frame queries per frame.
    enforce_input_projection (`bool`): a 1x1 input projection before the frame decoder even when widths match.
    clip_hidden_dim (`int`), clip_num_attention_heads (`int`), clip_dim_feedforward (`int`): the clip-level
        module (`MODEL.AVISM.*`).
    clip_encoder_layers (`int`): layers of the frame-query window encoder and of the audio-visual fusion encoder.
    clip_window_size (`int`): frames per temporal window (0: attend over the whole video).
    clip_decoder_layers (`int`): clip-level decoder layers.
    num_clip_queries (`int`): clip queries, one candidate instance each.
    clip_enforce_input_projection (`bool`): a linear projection of the frame queries before the clip module.
    num_frame_query_layers (`int`): frame-decoder layers whose queries train the clip module (`LAST_LAYER_NUM`).
    audio_feature_size (`int`): width of one audio feature (VGGish: 128).
    freeze_audio_encoder (`bool`): keep the audio encoder's weights fixed in training (the published models read
        precomputed VGGish features, so their encoder never trained with them).
    frame_chunk_size (`int`): frames per backbone + pixel decoder + frame decoder pass at inference.
    clip_window_chunk_size (`int`): temporal windows per pass of the clip-level window encoders.
    output_auxiliary_logits (`bool`): also output the predictions of every decoder layer (and the frame queries of
        the last `num_frame_query_layers` frame-decoder layers), which the loss needs; on whenever labels are given.
    no_object_weight, class_weight, mask_weight, dice_weight (`float`): loss weights.
    sim_weight (`float`): weight of the query similarity loss. The original's `SIM_WEIGHT: 0.5` only switched the
        loss on (its weight-dict key did not match the loss's name), so the published models trained with 1.0.
    clip_no_object_weight (`float`): no-object weight of the clip-level classification loss.
    train_num_points, oversample_ratio, importance_sample_ratio: point sampling of the mask losses.
    """

    model_type = "avis"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet", init_kwargs=R50_BACKBONE),
        "audio_config": SubConfigSpec(config_class=AvisVggishConfig, optional=True),
    }
    attribute_map = {"hidden_size": "hidden_dim"}

    backbone_config: dict | PreTrainedConfig | None = None
    audio_config: dict | AvisVggishConfig | None = None
    # pixel decoder
    feature_size: int = 256
    mask_feature_size: int = 256
    encoder_layers: int = 6
    encoder_feedforward_dim: int = 1024
    encoder_n_points: int = 4
    num_feature_levels: int = 3
    # frame-level decoder
    hidden_dim: int = 256
    num_attention_heads: int = 8
    dim_feedforward: int = 2048
    decoder_layers: int = 9
    num_frame_queries: int = 100
    enforce_input_projection: bool = False
    # clip-level module
    clip_hidden_dim: int = 256
    clip_num_attention_heads: int = 8
    clip_dim_feedforward: int = 2048
    clip_encoder_layers: int = 6
    clip_window_size: int = 6
    clip_decoder_layers: int = 3
    num_clip_queries: int = 100
    clip_enforce_input_projection: bool = True
    num_frame_query_layers: int = 3
    # audio
    audio_feature_size: int = 128
    freeze_audio_encoder: bool = True
    # inference
    frame_chunk_size: int = 18
    clip_window_chunk_size: int = 16
    output_auxiliary_logits: bool = False
    # training
    no_object_weight: float = 0.1
    clip_no_object_weight: float = 0.1
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    sim_weight: float = 1.0
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    init_xavier_std: float = 1.0

    def __post_init__(self, **kwargs):
        # checked before transformers reads them: it turns the label keys to int and builds the backbone's config
        if self.id2label is None:
            self.id2label = dict(enumerate(AVISEG_LABELS))
            self.label2id = {name: index for index, name in self.id2label.items()}
        else:
            self.id2label = _class_names(self.id2label)
        backbone_type = self.backbone_config.get("model_type") if isinstance(self.backbone_config, dict) else None
        if backbone_type is not None and backbone_type not in BACKBONE_RANGES:
            raise ValueError(f"AVISM runs on a ResNet or a Swin backbone, not {backbone_type!r}")
        for key, dtype in (("dtype", self.dtype), ("torch_dtype", kwargs.get("torch_dtype"))):
            if isinstance(dtype, str) and not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"{key} is {shown(dtype)}, not the name of a torch dtype")
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        super().validate_architecture()
        check_ranges(self, MODEL_RANGES)
        backbone = self.backbone_config
        if backbone.model_type not in BACKBONE_RANGES:
            raise ValueError(f"AVISM runs on a ResNet or a Swin backbone, not {backbone.model_type!r}")
        check_ranges(backbone, BACKBONE_RANGES[backbone.model_type], prefix="backbone_config.")
        if backbone.model_type == "swin":
            for stage, heads in enumerate(backbone.num_heads):
                if (backbone.embed_dim * 2**stage) % heads:
                    raise ValueError(
                        f"backbone_config: stage {stage + 1} is {backbone.embed_dim * 2**stage} wide, not divisible "
                        f"by its {heads} heads"
                    )
        if self.audio_config is not None and self.audio_config.fc_sizes[-1] != self.audio_feature_size:
            raise ValueError(
                f"the audio encoder gives {self.audio_config.fc_sizes[-1]}-d embeddings but the model reads "
                f"audio_feature_size={self.audio_feature_size}"
            )
        if self.hidden_dim % self.num_attention_heads or self.clip_hidden_dim % self.clip_num_attention_heads:
            raise ValueError("the attention widths must be divisible by their numbers of heads")
        if self.feature_size % self.num_attention_heads:
            raise ValueError(
                f"feature_size {self.feature_size} must be divisible by num_attention_heads "
                f"{self.num_attention_heads} (the deformable encoder's heads)"
            )
        if self.feature_size % FEATURE_GROUPS:
            raise ValueError(f"feature_size {self.feature_size} must be a multiple of {FEATURE_GROUPS} (GroupNorm)")
        if self.num_frame_query_layers > self.decoder_layers:
            raise ValueError(
                f"num_frame_query_layers {self.num_frame_query_layers} is more than the {self.decoder_layers} "
                "decoder_layers"
            )

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "AvisConfig":
        """One of the four published models: `r50_imagenet`, `r50_coco`, `swinl_imagenet`, `swinl_coco`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **kwargs})


def _class_names(id2label: object) -> dict[int, str]:
    """`id2label` as {class index: name}: a JSON object naming the classes 0..N-1 once each (its keys are strings)."""
    if not isinstance(id2label, dict):
        raise ValueError(f"id2label must be a JSON object of class names, not a {type(id2label).__name__}")
    names = {}
    for key, name in id2label.items():
        index = int(key) if isinstance(key, int | str) and re.fullmatch(r"\d{1,9}", str(key)) else None
        if index is None or not isinstance(name, str):
            raise ValueError(f"id2label must map class indices to names, not {shown(key)} to {shown(name)}")
        names[index] = name
    if not NUM_LABELS.admits(len(names)):
        raise ValueError(f"id2label names {len(names)} classes, allowed {NUM_LABELS}")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"id2label must name the classes 0..{len(names) - 1}, once each")
    return names


# Differences between the published configs: Swin-L uses 200 frame queries; the COCO-pretrained models only
# rename the clip module's weights (handled by the converter).
PRESETS = {
    "r50_imagenet": {"backbone_config": R50_BACKBONE},
    "r50_coco": {"backbone_config": R50_BACKBONE},
    "swinl_imagenet": {"backbone_config": SWIN_L_BACKBONE, "num_frame_queries": 200},
    "swinl_coco": {"backbone_config": SWIN_L_BACKBONE, "num_frame_queries": 200},
}

__all__ = ["AVISEG_LABELS", "AvisConfig", "AvisVggishConfig", "PRESETS"]
