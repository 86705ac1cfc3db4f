"""Reading media with PyAV: the video's frames at a sampling rate, its audio as 16 kHz mono, AVISeg frame folders.

Times are seconds from the video's start (the video stream's first timestamp), for frames and audio alike.

Frame sampling. AVISeg's frames are 1 fps (`JPEGImages/<video>/00000.jpg, 00001.jpg, ...`) and its audio features pair
frame k with the audio second [k, k + 1) (`extract_audio_feat/vggish_input.py`), but no frame-extraction script was
published. We sample at times t_k = k / fps (k = 0, 1, ... while t_k is before the video's end) and take, for each t_k,
the frame on screen at t_k: the last frame whose timestamp is <= t_k (the first frame when none has started yet). Frame
k then shows second k, the image its audio second starts with. This reads timestamps only, so a variable frame rate
needs nothing special: a frame that stays on screen for several sampling times is taken once for each. `fps=None`
takes every decoded frame at its own timestamp. A sampling rate above the stream's base rate (the grid every frame
timestamp falls on: the frame rate of a constant-rate video) is lowered to it, so no frame is taken twice in a row
for that reason alone.

Phone videos carry a display rotation; sampled frames are turned upright as players show them (`VideoInfo`'s width
and height are those of the upright frames).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from .errors import AvisInputError, printable

# 8K UHD (8192 x 4320, the largest H.264 level 6.2 frame): a decoded RGB frame is then ~106 MB. Larger frames are
# refused before decoding; every frame is resized to a few hundred pixels right after decoding anyway.
MAX_FRAME_PIXELS = 8192 * 4320

# The image files a frame folder holds (AVISeg's are JPEG).
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
# FFmpeg's demuxers of still images: "image2" for image files by name, "<codec>_pipe" for png, jpeg, webp, bmp ...
STILL_IMAGE_FORMATS = ("image2",)

ProgressFn = Callable[[float, str], None]
"""progress(fraction in [0, 1], what is happening): how long-running steps (inference, rendering) report."""

# Timestamps within this many seconds count as equal (container time bases round; 1/fps is rarely exact).
TIME_TOLERANCE = 1e-4


@dataclass(frozen=True)
class AvisegVideoFiles:
    """Where an AVISeg-layout split keeps a video called `name`: `<split>/JPEGImages/<name>/` (its frames, one a
    second), `<split>/FEATAudios/<name>.npy` (VGGish features, a row per frame) and `<split>/WAVAudios/<name>.wav`."""

    frames: Path
    features: Path
    wav: Path

    @classmethod
    def of(cls, split: str | Path, name: str) -> "AvisegVideoFiles":
        split = Path(split)
        return cls(
            split / "JPEGImages" / name, split / "FEATAudios" / f"{name}.npy", split / "WAVAudios" / f"{name}.wav"
        )

    @classmethod
    def of_frame_folder(cls, frames: str | Path) -> "AvisegVideoFiles":
        frames = Path(frames)
        return cls.of(frames.parent.parent, frames.name)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, checked to be decodable up to its first frame.

    width / height: the size of the frames as shown, after the display rotation (as `read_frames` returns them).
    rotation: the display rotation in degrees, counter-clockwise (0 for most videos).
    fps: the video stream's average frame rate (None when the container does not know it).
    base_fps: the rate every frame timestamp falls on (FFmpeg's guessed rate), the most frames a second can hold;
        fps itself for a constant frame rate, higher for a variable one (None when unknown).
    start_time: the video stream's first timestamp on the container's clock; every time here counts from it.
    duration: seconds from the first frame to the end of the video track (measured from the packets when the
        container does not say).
    """

    path: str
    width: int
    height: int
    rotation: int
    fps: float | None
    base_fps: float | None
    start_time: float
    duration: float
    has_audio: bool

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass
class SampledFrame:
    """One sampled frame: its time in seconds from the video's start and its (H, W, 3) uint8 RGB pixels."""

    time: float
    image: np.ndarray


@dataclass
class AudioTrack:
    """Mono audio: `samples[i]` plays at `start + i / sample_rate` seconds from the video's start."""

    samples: np.ndarray
    sample_rate: int
    start: float

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / self.sample_rate


def probe_video(path: str | Path) -> VideoInfo:
    """Opens `path`, checks it holds a decodable video stream of a sane size, decodes its first frame (for the display
    rotation) and reports what the container says."""
    with _open_media(path) as container:
        if container.format.name in STILL_IMAGE_FORMATS or container.format.name.endswith("_pipe"):
            raise AvisInputError(f"{_name(path)}: an image, not a video; give a video file with its sound")
        stream = _video_stream(container, path)
        context = stream.codec_context
        if context.width * context.height > MAX_FRAME_PIXELS:
            raise AvisInputError(
                f"{_name(path)}: frames of {context.width}x{context.height} are over the limit of "
                f"{MAX_FRAME_PIXELS / 1e6:.1f} million pixels (8192x4320)"
            )
        fps = float(stream.average_rate) if stream.average_rate else None
        start_time = _stream_start(stream)
        duration = _video_end_time(path, container, stream) - start_time
        rotation = _first_frame_rotation(container, stream, path)
        turned = round(rotation / 90) % 2 == 1
        return VideoInfo(
            path=str(path),
            width=context.height if turned else context.width,
            height=context.width if turned else context.height,
            rotation=rotation,
            fps=fps,
            base_fps=float(stream.guessed_rate) if stream.guessed_rate else None,
            start_time=start_time,
            duration=max(duration, 1 / fps if fps else 0.0),
            has_audio=bool(container.streams.audio),
        )


def read_frames(
    path: str | Path, fps: float | None = 1.0, max_frames: int | None = None, max_duration: float | None = None
) -> Iterator[SampledFrame]:
    """The frames sampled at `fps` (None: every frame), lazily, so a long video never sits in memory decoded.

    Stops after `max_frames` frames or at `max_duration` seconds. Raises AvisInputError when the file is not a
    readable video, holds no frames, or fails to decode part-way (a truncated or corrupt file).
    """
    info = probe_video(path)
    if fps is not None and info.base_fps is not None:
        fps = min(fps, info.base_fps)
    count = 0
    for sample in _sample(_decoded_frames(path, info), fps, info.fps):
        if (max_frames is not None and count >= max_frames) or (
            max_duration is not None and sample.time >= max_duration - TIME_TOLERANCE
        ):
            return
        count += 1
        yield sample


def read_audio(path: str | Path, sample_rate: int = 16000, max_duration: float | None = None) -> AudioTrack | None:
    """The first audio track, channels averaged to mono and resampled to `sample_rate` with PyAV's resampler.

    None when the file has no audio track. Decoding stops past `max_duration` seconds. The channels are resampled
    one by one and then averaged, as the original's `np.mean(data, axis=1)`: FFmpeg's own downmix to mono would
    scale a stereo track by sqrt(2) instead (0.33 mean log-mel difference on the AVISeg clips).
    """
    with _open_media(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        if not _decodable(stream):
            raise AvisInputError(f"{_name(path)}: its audio codec is not supported by this FFmpeg build")
        video_start = _stream_start(container.streams.video[0]) if container.streams.video else 0.0
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks, start, length = [], None, 0
        try:
            for frame in container.decode(stream):
                if start is None:
                    start = (frame.time if frame.time is not None else _stream_start(stream)) - video_start
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
                length += frame.samples * sample_rate / frame.sample_rate
                if max_duration is not None and start + length / sample_rate > max_duration:
                    break
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except av.error.FFmpegError as error:
            raise AvisInputError(
                f"{_name(path)}: the audio track is corrupt or truncated ({_reason(error)})"
            ) from None
        if not chunks:
            return AudioTrack(np.zeros(0, dtype=np.float32), sample_rate, 0.0)
        samples = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float64).astype(np.float32)
        return AudioTrack(samples, sample_rate, start)


def is_frame_folder(path: Path) -> bool:
    """Whether `path` is a folder of frames (AVISeg's `JPEGImages/<video>/`) rather than of videos."""
    return path.is_dir() and any(entry.suffix.lower() in FRAME_SUFFIXES for entry in path.iterdir())


def read_frame_folder(folder: str | Path) -> list[Path]:
    """The frames of an AVISeg-style folder (`JPEGImages/<video>/00000.jpg, ...`), ordered by their number."""
    folder = Path(folder)
    frames = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
    if not frames:
        raise AvisInputError(f"{folder}: the folder holds no .jpg or .png frames")
    numbered = [p for p in frames if _trailing_number(p.stem) is not None]
    if len(numbered) != len(frames):
        odd = next(p.name for p in frames if _trailing_number(p.stem) is None)
        raise AvisInputError(f"{folder}: frame {odd!r} is not numbered like AVISeg's 00000.jpg")
    return sorted(frames, key=lambda p: _trailing_number(p.stem))


def read_image(path: str | Path) -> np.ndarray:
    """A JPEG frame as (H, W, 3) uint8 RGB, decoded as detectron2's `read_image` does (PIL, EXIF orientation applied).

    PIL rather than PyAV: FFmpeg upsamples JPEG chroma differently from libjpeg (0.7 grey levels on average, up to 28
    at colour edges), and AVISeg's frames were read with PIL.
    """
    try:
        with Image.open(path) as image:
            return np.array(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, SyntaxError) as error:
        raise AvisInputError(f"{_name(path)}: not a readable image ({error})") from None


def _sample(frames: Iterator[tuple[av.VideoFrame, float]], fps: float | None, native_fps: float | None):
    """For each sampling time k / fps, the frame on screen then (see the module docstring)."""
    if fps is None:
        for frame, time in frames:
            yield SampledFrame(time, frame_to_rgb(frame))
        return
    k, on_screen, image, end = 0, None, None, 0.0
    for frame, time in frames:
        while on_screen is not None and k / fps < time - TIME_TOLERANCE:
            image = frame_to_rgb(on_screen) if image is None else image
            yield SampledFrame(k / fps, image)
            k += 1
        on_screen, image, end = frame, None, time + _frame_duration(frame, native_fps)
    # The last frame stays on screen for its own duration.
    while k / fps < end - TIME_TOLERANCE:
        image = frame_to_rgb(on_screen) if image is None else image
        yield SampledFrame(k / fps, image)
        k += 1


def _decoded_frames(path: str | Path, info: VideoInfo) -> Iterator[tuple[av.VideoFrame, float]]:
    """Every frame in presentation order with its time from the video's start.

    A packet the demuxer flags as corrupt (a file cut inside it) is an error: with threaded decoding FFmpeg would
    drop it silently. A file cut exactly between packets decodes as the shorter video it now is.
    """
    with _open_media(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    raise AvisInputError(f"{_name(path)}: the video is truncated or corrupt after {count} frames")
                for frame in packet.decode():
                    yield frame, _frame_time(frame, count, info, path)
                    count += 1
        except av.error.FFmpegError as error:
            raise AvisInputError(
                f"{_name(path)}: the video is corrupt or truncated: decoding failed after {count} frames "
                f"({_reason(error)})"
            ) from None
        if count == 0:
            raise AvisInputError(f"{_name(path)}: the video stream holds no frames")


def _first_frame_rotation(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str | Path
) -> int:
    """The display rotation of the first frame, in degrees; decoding errors are worded as `_decoded_frames` words them."""
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise AvisInputError(f"{_name(path)}: the video is truncated or corrupt after 0 frames")
            for frame in packet.decode():
                return round(frame.rotation or 0)
    except av.error.FFmpegError as error:
        raise AvisInputError(
            f"{_name(path)}: the video is corrupt or truncated: decoding failed after 0 frames ({_reason(error)})"
        ) from None
    raise AvisInputError(f"{_name(path)}: the video stream holds no frames")


def _video_end_time(
    path: str | Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float:
    """The end of the video track in seconds on the container's clock: from the headers, or from the packets when
    they say nothing (browsers' MediaRecorder webm files, for one)."""
    if stream.duration is not None:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    end = 0.0
    with _open_media(path) as again:
        video = again.streams.video[0]
        for packet in again.demux(video):
            if packet.pts is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end


def _frame_time(frame: av.VideoFrame, index: int, info: VideoInfo, path: str | Path) -> float:
    if frame.time is not None:
        return frame.time - info.start_time
    if info.fps is None:
        raise AvisInputError(f"{_name(path)}: the video has neither frame timestamps nor a frame rate")
    return index / info.fps


def _frame_duration(frame: av.VideoFrame, native_fps: float | None) -> float:
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    return 1 / native_fps if native_fps else 0.0


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB, turned upright by its display rotation as players show it."""
    image = frame.to_ndarray(format="rgb24")
    quarter_turns = round((frame.rotation or 0) / 90)
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns % 4 else image


@contextmanager
def _open_media(path: str | Path) -> Iterator[av.container.InputContainer]:
    """av.open for local files, with PyAV's errors turned into one-line AvisInputErrors naming the file."""
    if not Path(path).is_file():
        raise AvisInputError(f"{path}: no such file")
    if Path(path).stat().st_size == 0:
        raise AvisInputError(f"{_name(path)}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.error.EOFError:
        raise AvisInputError(f"{_name(path)}: the file is empty or holds no media") from None
    except av.error.FFmpegError as error:
        raise AvisInputError(
            f"{_name(path)}: not a video FFmpeg can read; the file may be corrupt, truncated or of another kind "
            f"({_reason(error)})"
        ) from None
    try:
        yield container
    finally:
        container.close()


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise AvisInputError(f"{_name(path)}: the file has no video stream")
    stream = container.streams.video[0]
    if not _decodable(stream):
        raise AvisInputError(f"{_name(path)}: its video codec is not supported by this FFmpeg build")
    return stream


def _decodable(stream: av.stream.Stream) -> bool:
    """FFmpeg leaves the codec context out for a codec it does not know at all."""
    return stream.codec_context is not None and stream.codec_context.codec is not None


def _stream_start(stream: av.stream.Stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _trailing_number(stem: str) -> int | None:
    digits = len(stem) - len(stem.rstrip("0123456789"))
    return int(stem[-digits:]) if digits else None


def _name(path: str | Path) -> str:
    return printable(Path(path).name)


def _reason(error: av.error.FFmpegError) -> str:
    return error.strerror or type(error).__name__


__all__ = [
    "MAX_FRAME_PIXELS",
    "AvisegVideoFiles",
    "AudioTrack",
    "ProgressFn",
    "SampledFrame",
    "VideoInfo",
    "frame_to_rgb",
    "is_frame_folder",
    "probe_video",
    "read_audio",
    "read_frame_folder",
    "read_frames",
    "read_image",
]
