"""The app's side of media: which uploads it takes. Probing, the length cap and rendering are the library's
(`modeling_avis.video_io`, `modeling_avis.processing_avis`, `modeling_avis.visualization`)."""

import math
from collections import Counter
from pathlib import Path

import av

from modeling_avis.errors import AvisInputError
from modeling_avis.video_io import VideoInfo, probe_video

SUPPORTED_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
# Frames a video may show within one second: slow-motion phone videos film 240. A file of thousands of frames a
# second (a few megabytes of repeated frames) would keep the decoder busy for minutes between two sampled frames,
# where a cancel is noticed, and the overlay's drawing for hours.
MAX_FRAMES_PER_SECOND = 240


def probe_upload(path: str | Path, max_seconds: float = math.inf) -> VideoInfo:
    """Probe an uploaded video, first checking it is of a kind the app takes, and then that its first `max_seconds`
    (the part the app decodes) show at most `MAX_FRAMES_PER_SECOND` frames in any second, by their timestamps.

    Raises AvisInputError, worded for the person who uploaded it, for anything the app cannot use.
    """
    if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
        raise AvisInputError(f"{Path(path).name} is not a video the app takes: upload an mp4, webm, mov or mkv file")
    video = probe_video(path)
    _check_frame_rate(video, max_seconds)
    return video


def _check_frame_rate(video: VideoInfo, max_seconds: float) -> None:
    """Counts the video's packets per second of their timestamps, reading the file without decoding it."""
    frames = Counter()
    with av.open(video.path) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None:
                continue
            seconds = float(stamp * packet.time_base) - video.start_time
            if seconds >= max_seconds:
                return
            second = math.floor(seconds)
            frames[second] += 1
            if frames[second] > MAX_FRAMES_PER_SECOND:
                raise AvisInputError(
                    f"{video.name}: more than {MAX_FRAMES_PER_SECOND} frames within one second of video: the app "
                    f"takes videos of at most {MAX_FRAMES_PER_SECOND} frames per second"
                )
