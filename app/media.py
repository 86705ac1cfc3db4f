"""Reading and re-encoding videos with PyAV, one frame at a time, so no video is ever held in memory whole."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from modeling_avis.errors import AvisInputError

SUPPORTED_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")

# Sample rates the AAC encoder takes; anything else (rare) is resampled to 48 kHz.
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

# x264 quality: visually lossless for overlays, fast enough for two CPU cores.
X264_OPTIONS = {"crf": "18", "preset": "veryfast"}

# Files interleave audio and video within a second or so: once frames run this far past a cut, none before it is left.
INTERLEAVING_SLACK = 2.0

ProgressFn = Callable[[float, str], None]
"""progress(fraction in [0, 1], what is happening): how long-running steps report to the page."""

PaintFn = Callable[[np.ndarray, float], np.ndarray]
"""paint(image (H, W, 3) uint8 RGB, time in seconds on the source's clock) -> image of the same shape."""


@dataclass(frozen=True)
class VideoInfo:
    """What the app needs to know about an input video before touching its frames.

    start_time: time of the first video frame on the source's clock (PyAV's `frame.time`), usually 0.
    duration: seconds from the first video frame to the end of the video track.
    """

    path: str
    width: int
    height: int
    fps: float
    start_time: float
    duration: float
    has_audio: bool

    @property
    def name(self) -> str:
        return Path(self.path).name


def probe_video(path: str | Path) -> VideoInfo:
    """Open a video, decode its first frame and read its size, rate and length.

    Raises AvisInputError, worded for the person who uploaded it, for anything the app cannot use.
    """
    name = Path(path).name
    if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
        raise AvisInputError(f"{name} is not a video the app takes: upload an mp4, webm, mov or mkv file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise AvisInputError(f"{name} has no video track")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise AvisInputError(f"{name} has no video frames")
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise AvisInputError(f"{name} does not say its frame rate")
            start_time = float(first.time or 0.0)
            end_time = _video_end_time(container, stream)
            return VideoInfo(
                path=str(path),
                width=first.width,
                height=first.height,
                fps=float(rate),
                start_time=start_time,
                duration=max(end_time - start_time, 1.0 / float(rate)),
                has_audio=bool(container.streams.audio),
            )
    except av.FFmpegError as error:
        raise AvisInputError(f"{name} could not be read as a video ({error.strerror})") from None


def transcode(
    video: VideoInfo,
    destination: str | Path,
    paint: PaintFn,
    progress: ProgressFn,
    until: float | None = None,
    description: str = "Rendering",
) -> None:
    """Re-encode `video` as an H.264 (yuv420p) + AAC mp4, passing every video frame through `paint`.

    The output keeps the source's frame rate and frame times; the sound is re-encoded to AAC (a source without an
    audio track gives an output without one). yuv420p needs even sizes, so an odd last row or column is cropped.
    until: keep only this many seconds from the first video frame.
    """
    width, height = video.width // 2 * 2, video.height // 2 * 2
    end = video.start_time + until if until is not None else float("inf")
    expected_frames = max(1, round(min(video.duration, until or video.duration) * video.fps))
    try:
        with (
            av.open(video.path) as source,
            av.open(str(destination), "w", format="mp4", options={"movflags": "+faststart"}) as output,
        ):
            video_in = source.streams.video[0]
            audio_in = source.streams.audio[0] if source.streams.audio else None
            video_out = output.add_stream(
                "libx264", rate=video_in.average_rate or video_in.guessed_rate, options=X264_OPTIONS
            )
            video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
            video_out.time_base = video_in.time_base
            audio_out = _add_aac_stream(output, audio_in) if audio_in is not None else None
            first_video_pts = None
            frames_done = 0
            for frame in _decoded_frames(source, video_in, audio_in):
                if frame.time >= end + INTERLEAVING_SLACK:
                    break
                if frame.time >= end:
                    continue
                if isinstance(frame, av.AudioFrame):
                    if frame.time >= video.start_time:
                        # The output's clock starts at the first video frame, for the sound as for the picture.
                        frame.pts -= round(video.start_time / frame.time_base)
                        output.mux(audio_out.encode(frame))
                    continue
                first_video_pts = frame.pts if first_video_pts is None else first_video_pts
                image = paint(frame.to_ndarray(format="rgb24"), frame.time)[:height, :width]
                painted = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                painted.pts, painted.time_base = frame.pts - first_video_pts, frame.time_base
                output.mux(video_out.encode(painted))
                frames_done += 1
                progress(min(frames_done / expected_frames, 1.0), description)
            output.mux(video_out.encode())
            if audio_out is not None:
                output.mux(audio_out.encode())
    except av.FFmpegError as error:
        raise AvisInputError(f"{video.name} could not be decoded to the end ({error.strerror})") from None


def trim_video(video: VideoInfo, destination: str | Path, seconds: float, progress: ProgressFn) -> VideoInfo:
    """The first `seconds` of `video` as a new mp4 (re-encoded, sound included), probed."""
    transcode(video, destination, lambda image, time: image, progress, until=seconds, description="Trimming")
    return probe_video(destination)


def _decoded_frames(source: av.container.InputContainer, *streams):
    """Video and audio frames in the order the file interleaves them, frames without a time left out."""
    for packet in source.demux(*(stream for stream in streams if stream is not None)):
        for frame in packet.decode():
            if frame.time is not None:
                yield frame


def _add_aac_stream(output: av.container.OutputContainer, audio_in: av.audio.stream.AudioStream):
    rate = audio_in.rate if audio_in.rate in AAC_SAMPLE_RATES else 48000
    layout = "mono" if audio_in.channels == 1 else "stereo"
    return output.add_stream("aac", rate=rate, layout=layout)


def _video_end_time(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    """The end of the video track in seconds; from the headers, or from the packets when they say nothing."""
    if stream.duration is not None:
        return float((stream.start_time or 0) + stream.duration) * float(stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    # Some recorders (browsers' MediaRecorder webm) write no duration at all.
    end = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end
