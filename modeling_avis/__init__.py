"""AVISM (Audio-Visual Instance Segmentation, CVPR 2025) as a Hugging Face transformers model."""

from transformers import AutoConfig, AutoModel

from .configuration_avis import AVISEG_LABELS, PRESETS, AvisConfig, AvisVggishConfig
from .errors import AvisCheckpointError, AvisError, AvisInputError
from .feature_extraction_avis import AvisFeatureExtractor
from .image_processing_avis import AvisImageProcessor
from .inference_avis import DEFAULT_MODEL, AvisVideoSegmenter
from .modeling_avis import AvisForAudioVisualInstanceSegmentation, AvisModel, AvisPreTrainedModel
from .modeling_vggish import AvisVggishModel
from .processing_avis import AvisProcessor
from .results import build_video_result, track_summary, write_results_json, write_track_summary

AutoConfig.register("avis", AvisConfig, exist_ok=True)
AutoConfig.register("avis_vggish", AvisVggishConfig, exist_ok=True)
AutoModel.register(AvisConfig, AvisModel, exist_ok=True)
# Saved folders carry their code and an auto_map, so that `AutoModel.from_pretrained(folder,
# trust_remote_code=True)` works where this package is not installed; it returns the saved class.
AvisConfig.register_for_auto_class()
AvisModel.register_for_auto_class("AutoModel")
AvisForAudioVisualInstanceSegmentation.register_for_auto_class("AutoModel")

__all__ = [
    "AVISEG_LABELS",
    "DEFAULT_MODEL",
    "AvisVideoSegmenter",
    "PRESETS",
    "AvisFeatureExtractor",
    "AvisImageProcessor",
    "AvisProcessor",
    "AvisVggishModel",
    "build_video_result",
    "track_summary",
    "write_results_json",
    "write_track_summary",
    "AvisCheckpointError",
    "AvisConfig",
    "AvisError",
    "AvisForAudioVisualInstanceSegmentation",
    "AvisInputError",
    "AvisModel",
    "AvisPreTrainedModel",
    "AvisVggishConfig",
]
