"""The app's side of media: which uploads it takes, and trimming long ones. Probing and rendering are the library's
(`modeling_avis.video_io`, `modeling_avis.visualization`)."""

from pathlib import Path

from modeling_avis.errors import AvisInputError
from modeling_avis.video_io import ProgressFn, VideoInfo, probe_video
from modeling_avis.visualization import transcode

SUPPORTED_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")


def probe_upload(path: str | Path) -> VideoInfo:
    """Probe an uploaded video, first checking it is of a kind the app takes.

    Raises AvisInputError, worded for the person who uploaded it, for anything the app cannot use.
    """
    if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
        raise AvisInputError(f"{Path(path).name} is not a video the app takes: upload an mp4, webm, mov or mkv file")
    return probe_video(path)


def trim_video(video: VideoInfo, destination: str | Path, seconds: float, progress: ProgressFn) -> VideoInfo:
    """The first `seconds` of `video` as a new mp4 (re-encoded, sound included), probed."""
    transcode(video, destination, lambda image, time: image, progress, until=seconds, description="Trimming")
    return probe_video(destination)
