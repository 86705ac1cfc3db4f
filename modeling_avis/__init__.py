"""AVISM (Audio-Visual Instance Segmentation, CVPR 2025) as a Hugging Face transformers model."""

from transformers import AutoConfig

from .configuration_avis import AVISEG_LABELS, PRESETS, AvisConfig, AvisVggishConfig
from .errors import AvisCheckpointError, AvisError, AvisInputError

AutoConfig.register("avis", AvisConfig, exist_ok=True)
AutoConfig.register("avis_vggish", AvisVggishConfig, exist_ok=True)

__all__ = [
    "AVISEG_LABELS",
    "PRESETS",
    "AvisCheckpointError",
    "AvisConfig",
    "AvisError",
    "AvisInputError",
    "AvisVggishConfig",
]
