"""The app's side of media: which uploads it takes. Probing, the length cap and rendering are the library's
(`modeling_avis.video_io`, `modeling_avis.processing_avis`, `modeling_avis.visualization`)."""

from pathlib import Path

from modeling_avis.errors import AvisInputError
from modeling_avis.video_io import VideoInfo, probe_video

SUPPORTED_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")


def probe_upload(path: str | Path) -> VideoInfo:
    """Probe an uploaded video, first checking it is of a kind the app takes.

    Raises AvisInputError, worded for the person who uploaded it, for anything the app cannot use.
    """
    if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
        raise AvisInputError(f"{Path(path).name} is not a video the app takes: upload an mp4, webm, mov or mkv file")
    return probe_video(path)
