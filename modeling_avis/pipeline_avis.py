"""The transformers pipeline of the task, and the model folder that carries it.

    from transformers import pipeline
    segment = pipeline(model="path/or/owner-name", trust_remote_code=True)   # the task is read from the folder
    result = segment("concert.mp4", fps=1)                                   # AvisVideoResult

The pipeline runs `AvisVideoSegmenter` (the two-pass streaming inference) with the folder's processor, so a video
of any length goes through in the memory of a few frames. The model's and the processor's `save_pretrained`
(`save_model_folder` runs both) write a folder that every entry point loads: weights and config, the processor, the
code behind them, and the `auto_map` / `custom_pipelines` entries through which transformers' auto classes and
`pipeline` find that code without this package installed.
"""

from pathlib import Path

from transformers import Pipeline

from .inference_avis import AvisVideoSegmenter
from .modeling_avis import TASK, AvisPreTrainedModel
from .processing_avis import AvisProcessor
from .tracks import AvisVideoResult


class AvisVideoSegmentationPipeline(Pipeline):
    """`pipeline(model=..., trust_remote_code=True)(video, fps=None, threshold=None, max_instances=None,
    mute_audio=False)`: the sounding instances of a video (a media file or an AVISeg frame folder) as tracks."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = getattr(self.model, "model", self.model)  # the segmentation model's inference part
        self.segmenter = AvisVideoSegmenter(model, self.processor)

    def _sanitize_parameters(self, fps=None, threshold=None, max_instances=None, mute_audio=None, **kwargs):
        forward = {"fps": fps, "score_threshold": threshold, "max_instances": max_instances, "mute_audio": mute_audio}
        return {}, {key: value for key, value in forward.items() if value is not None}, {}

    def preprocess(self, video: str | Path) -> dict:
        # the frames are decoded and encoded chunk by chunk inside the segmenter, not held here
        return {"video": video}

    def _forward(self, inputs: dict, **segmenter_arguments) -> AvisVideoResult:
        return self.segmenter(inputs["video"], **segmenter_arguments)

    def postprocess(self, result: AvisVideoResult) -> AvisVideoResult:
        return result


def save_model_folder(folder: str | Path, model: AvisPreTrainedModel, processor: AvisProcessor) -> None:
    """Writes `model` and `processor` to `folder` with their code (their `save_pretrained`), loadable by
    `AutoConfig`, `AutoModel`, `AutoModelForInstanceSegmentation`, `AutoProcessor` and `pipeline` (with
    `trust_remote_code=True` where this package is not installed)."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


__all__ = ["TASK", "AvisVideoSegmentationPipeline", "save_model_folder"]
