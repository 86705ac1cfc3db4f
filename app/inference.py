"""The one seam between the app and the model: `inference_service(source).predict(...) -> AvisVideoResult`.

Everything else in the app (rendering, tables, the results JSON, the page) only sees AvisVideoResult, so wiring in
the real model is `load_service` below.
"""

import functools
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modeling_avis.errors import AvisCheckpointError
from modeling_avis.tracks import AvisVideoResult
from modeling_avis.video_io import ProgressFn

from .stand_in import ColourMotionStandIn

# The model setting of the page: its label -> ModelSource.kind.
MODEL_CHOICES = {"Embedded default": "embedded", "Local folder": "folder", "Hub id": "hub"}
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
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


class InferenceService(Protocol):
    """A loaded model that turns one video into tracks of sounding objects."""

    def predict(
        self, video_path: str, fps: float, score_threshold: float, max_instances: int, progress: ProgressFn
    ) -> AvisVideoResult:
        """Find, segment and track the sounding objects of one video.

        video_path: an mp4 / webm / mov / mkv file the app has already probed and trimmed to its length limit.
        fps: frames per second to sample for the model.
        score_threshold: instances scoring at or below it are dropped.
        max_instances: at most this many instances are returned, highest scores first (track ids 1, 2, ...).
        progress: called as progress(fraction, description) through decoding, audio and the model.
        Returns masks at the video's own (upright) size, one per sampled frame, with each sampled frame's timestamp
        in seconds from the video's start (the clock of `modeling_avis.video_io`, which the renderer holds masks by). Raises AvisInputError for media
        it cannot use and AvisCheckpointError for a model it cannot load.
        """


def load_service(source: ModelSource) -> InferenceService:
    """Load the model `source` names. The stand-in below is the line to replace with the real model."""
    return ColourMotionStandIn(source)


_loading = threading.Lock()


@functools.lru_cache(maxsize=MAX_LOADED_MODELS)
def _cached_service(source: ModelSource) -> InferenceService:
    return load_service(source)


def inference_service(source: ModelSource) -> InferenceService:
    """The service for `source`, loaded once per process; concurrent requests wait for one load."""
    with _loading:
        return _cached_service(source)
