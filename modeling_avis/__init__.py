"""AVISM (Audio-Visual Instance Segmentation, CVPR 2025) as a Hugging Face transformers model."""

from transformers import AutoConfig, AutoModel, AutoModelForInstanceSegmentation, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_avis import AVISEG_LABELS, PRESETS, AvisConfig, AvisVggishConfig
from .errors import AvisCheckpointError, AvisError, AvisInputError
from .feature_extraction_avis import AvisFeatureExtractor
from .image_processing_avis import AvisImageProcessor
from .inference_avis import AvisVideoSegmenter
from .modeling_avis import AvisForAudioVisualInstanceSegmentation, AvisModel, AvisPreTrainedModel
from .modeling_vggish import AvisVggishModel
from .pipeline_avis import TASK, AvisVideoSegmentationPipeline, save_model_folder
from .processing_avis import AvisProcessor, AvisVideoInputs, AvisVideoMetadata
from .results import track_summary, write_results_json, write_track_summary
from .tracks import AvisTrack, AvisVideoResult

# The one place the classes meet transformers' auto classes and pipeline. With the package imported they resolve
# here; a saved folder carries the same classes' code and an auto_map naming them (`save_model_folder`), so that
# with `trust_remote_code=True` the same auto classes give the same classes where this package is not installed.
AutoConfig.register("avis", AvisConfig, exist_ok=True)
AutoConfig.register("avis_vggish", AvisVggishConfig, exist_ok=True)
AutoModel.register(AvisConfig, AvisModel, exist_ok=True)
AutoModelForInstanceSegmentation.register(AvisConfig, AvisForAudioVisualInstanceSegmentation, exist_ok=True)
AutoProcessor.register(AvisConfig, AvisProcessor, exist_ok=True)
AvisConfig.register_for_auto_class("AutoConfig")
AvisModel.register_for_auto_class("AutoModel")
AvisForAudioVisualInstanceSegmentation.register_for_auto_class("AutoModelForInstanceSegmentation")
AvisProcessor.register_for_auto_class("AutoProcessor")
PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=AvisVideoSegmentationPipeline, pt_model=AutoModel)

__all__ = [
    "AVISEG_LABELS",
    "PRESETS",
    "TASK",
    "AvisCheckpointError",
    "AvisConfig",
    "AvisError",
    "AvisFeatureExtractor",
    "AvisForAudioVisualInstanceSegmentation",
    "AvisImageProcessor",
    "AvisInputError",
    "AvisModel",
    "AvisPreTrainedModel",
    "AvisProcessor",
    "AvisTrack",
    "AvisVggishConfig",
    "AvisVggishModel",
    "AvisVideoInputs",
    "AvisVideoMetadata",
    "AvisVideoResult",
    "AvisVideoSegmentationPipeline",
    "AvisVideoSegmenter",
    "save_model_folder",
    "track_summary",
    "write_results_json",
    "write_track_summary",
]
