"""The original's merged detectron2 config (a YAML dump of `cfg`) as an AvisConfig."""

from pathlib import Path

import yaml

from modeling_avis.configuration_avis import AVISEG_LABELS, AvisConfig
from modeling_avis.errors import AvisCheckpointError, one_line, printable
from modeling_avis.image_processing_avis import AvisImageProcessor
from modeling_avis.processing_avis import AvisProcessor

from .backbone_keys import original_backbone_config

# A detectron2 dump nests 4 levels and has ~1000 values; its aliases (`&id001` / `*id001`) repeat a few lists.
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 100_000


class UnboundedYaml(yaml.YAMLError):
    """A YAML document nested deeper, or whose aliases expand to more values, than a config has."""


class BoundedSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses documents nested deeper than MAX_YAML_DEPTH levels or holding more than
    MAX_YAML_VALUES values once aliases are expanded (a "billion laughs" of aliases of aliases): safe_load composes
    such a document recursively, or cheaply as shared nodes that whatever walks the result then expands."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._expanded = {}  # id(node) -> values under it, aliases expanded

    def compose_node(self, parent, index):
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise UnboundedYaml(f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._expanded:  # an alias is its anchor's node, counted where it was composed
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            self._expanded[id(node)] = 1 + sum(self._expanded[id(child)] for child in children)
        if self._expanded[id(node)] > MAX_YAML_VALUES:
            raise UnboundedYaml(f"its aliases expand to more than {MAX_YAML_VALUES} values")
        return node


def load_original_config(path: str | Path) -> dict:
    """The original's merged config, read from its YAML dump."""
    try:
        with open(path) as handle:
            cfg = yaml.load(handle, Loader=BoundedSafeLoader)
    except UnboundedYaml as error:
        raise AvisCheckpointError(f"{path}: not a config dump ({error})") from None
    except yaml.YAMLError as error:
        raise AvisCheckpointError(f"{printable(path)}: not a YAML file ({one_line(error)})") from None
    if not isinstance(cfg, dict) or "MODEL" not in cfg:
        raise AvisCheckpointError(f"{printable(path)}: not a detectron2 config of AVISM (it has no MODEL section)")
    return cfg


def avis_config_from_original(cfg: dict) -> AvisConfig:
    """Every AvisConfig field from the original's merged config; unsupported variants are errors."""
    try:
        return _avis_config(cfg)
    except KeyError as error:
        raise AvisCheckpointError(f"the original config has no {error.args[0]} setting") from None


def _avis_config(cfg: dict) -> AvisConfig:
    model = cfg["MODEL"]
    head, decoder, clip = model["SEM_SEG_HEAD"], model["MASK_FORMER"], model["AVISM"]
    if decoder.get("PRE_NORM", False) or clip.get("PRE_NORM", False):
        raise AvisCheckpointError("pre-norm transformer decoders are not supported")
    if list(head["DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"]) != ["res3", "res4", "res5"]:
        raise AvisCheckpointError("the deformable encoder must read res3, res4 and res5")
    if head["COMMON_STRIDE"] != 4:
        raise AvisCheckpointError("the mask features must be at stride 4 (SEM_SEG_HEAD.COMMON_STRIDE)")
    num_classes = head["NUM_CLASSES"]
    labels = {} if num_classes == len(AVISEG_LABELS) else {"id2label": {i: f"class_{i}" for i in range(num_classes)}}
    return AvisConfig(
        **labels,
        backbone_config=original_backbone_config(model),
        feature_size=head["CONVS_DIM"],
        mask_feature_size=head["MASK_DIM"],
        encoder_layers=head["TRANSFORMER_ENC_LAYERS"],
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
        no_object_weight=decoder["NO_OBJECT_WEIGHT"],
        clip_no_object_weight=clip["NO_OBJECT_WEIGHT"],
        class_weight=decoder["CLASS_WEIGHT"],
        mask_weight=decoder["MASK_WEIGHT"],
        dice_weight=decoder["DICE_WEIGHT"],
        # SIM_WEIGHT only switched the similarity loss on; the original applied it with weight 1
        sim_weight=1.0 if clip["SIM_WEIGHT"] > 0 else 0.0,
        train_num_points=decoder["TRAIN_NUM_POINTS"],
        oversample_ratio=decoder["OVERSAMPLE_RATIO"],
        importance_sample_ratio=decoder["IMPORTANCE_SAMPLE_RATIO"],
    )


def avis_processor_from_original(cfg: dict) -> AvisProcessor:
    """The processor of the original's test: its frame size, normalisation and padding, top-k and mask chunking (and
    its fixed 0.3 score threshold)."""
    try:
        model, test = cfg["MODEL"], cfg["TEST"]
        image_processor = AvisImageProcessor(
            shortest_edge=cfg["INPUT"]["MIN_SIZE_TEST"],
            longest_edge=cfg["INPUT"]["MAX_SIZE_TEST"],
            image_mean=list(model["PIXEL_MEAN"]),
            image_std=list(model["PIXEL_STD"]),
            size_divisibility=model["MASK_FORMER"]["SIZE_DIVISIBILITY"],
        )
        return AvisProcessor(
            image_processor,
            num_detections=test["DETECTIONS_PER_IMAGE"],
            mask_chunk_size=model["AVISM"]["TEST_INTERPOLATE_CHUNK_SIZE"],
        )
    except KeyError as error:
        raise AvisCheckpointError(f"the original config has no {error.args[0]} setting") from None
