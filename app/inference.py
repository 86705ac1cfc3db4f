"""The one seam between the app and the model: `inference_service(source)(video, ...) -> AvisVideoResult`.

Everything else in the app (rendering, tables, the results JSON, the page) only sees AvisVideoResult.
"""

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

from modeling_avis.__main__ import default_model
from modeling_avis.errors import AvisCheckpointError
from modeling_avis.inference_avis import AvisVideoSegmenter
from modeling_avis.loading import HUB_ID, load_config, load_processor

# The model setting of the page: its label -> ModelSource.kind.
MODEL_CHOICES = {"Embedded default": "embedded", "Local folder": "folder", "Hub id": "hub"}
# Loaded models kept in memory at once (each R50 model is ~200 MB, Swin-L ~1 GB).
MAX_LOADED_MODELS = 2


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: the embedded default, a folder written by save_pretrained, or a Hub id.

    location: the folder's absolute path or the Hub id; empty for the embedded default.
    """

    kind: str
    location: str = ""

    @classmethod
    def from_setting(cls, choice: str, location: str) -> "ModelSource":
        """The source the page's model setting names; AvisCheckpointError when it cannot be one."""
        kind = MODEL_CHOICES.get(choice)
        location = (location or "").strip()
        if kind is None:
            raise AvisCheckpointError(f"unknown model choice {choice!r}: pick one of {', '.join(MODEL_CHOICES)}")
        if kind == "embedded":
            return cls(kind)
        if not location:
            raise AvisCheckpointError(f"type the model's {'folder' if kind == 'folder' else 'Hub id'} in the box")
        if kind == "hub":
            if not HUB_ID.match(location):
                raise AvisCheckpointError(f"{location!r} is not a Hub id of the form owner/name")
            return cls(kind, location)
        folder = Path(location).expanduser()
        if not folder.is_dir():
            raise AvisCheckpointError(f"there is no model folder at {location}")
        if not (folder / "config.json").is_file():
            raise AvisCheckpointError(f"{location} has no config.json: give a folder written by save_pretrained")
        return cls(kind, str(folder.resolve()))


def load_service(source: ModelSource) -> AvisVideoSegmenter:
    """The model `source` names, with its processor, on CUDA when there is one (else the CPU).

    Its call, `service(video, fps=..., score_threshold=..., max_instances=..., progress=...)`, gives masks at the
    video's own (upright) size, one per sampled frame, with each sampled frame's timestamp on the clock of
    `modeling_avis.video_io`, by which the renderer holds masks between sampled frames. Raises AvisCheckpointError for
    a model it cannot load.
    """
    return AvisVideoSegmenter.from_pretrained(source.location or default_model())


def default_score_threshold() -> float:
    """The embedded default's score threshold (the page's starting value)."""
    name = default_model()
    return load_processor(name, load_config(name)).score_threshold


_loading = threading.Lock()


@functools.lru_cache(maxsize=MAX_LOADED_MODELS)
def _cached_service(source: ModelSource) -> AvisVideoSegmenter:
    return load_service(source)


def inference_service(source: ModelSource) -> AvisVideoSegmenter:
    """The service for `source`, loaded once per process; concurrent requests wait for one load."""
    with _loading:
        return _cached_service(source)
