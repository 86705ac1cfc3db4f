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
for that reason alone. Given times (`timestamps`, increasing) are sampled the same way: the frame on screen at each.

Phone videos carry a display rotation; sampled frames are turned upright as players show them (`VideoInfo`'s width
and height are those of the upright frames).
"""

import itertools
import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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

    @property
    def decoded_size(self) -> tuple[int, int]:
        """(width, height) of the decoded frames, before the display rotation."""
        turned = round(self.rotation / 90) % 2 == 1
        return (self.height, self.width) if turned else (self.width, self.height)


@dataclass
class SampledFrame:
    """One sampled frame: its time in seconds from the video's start and its (H, W, 3) uint8 RGB pixels."""

    time: float
    image: np.ndarray


@dataclass
class AudioTrack:
    """Mono audio: `samples[i]` is sample `first + i` of a track whose sample 0 plays at `start` seconds from the
    video's start (`first` > 0 once a stream's earlier samples were let go)."""

    samples: np.ndarray
    sample_rate: int
    start: float
    first: int = 0

    @property
    def end(self) -> float:
        return self.start + (self.first + len(self.samples)) / self.sample_rate


def probe_video(path: str | Path) -> VideoInfo:
    """Opens `path`, checks it holds a decodable video stream of a sane size, decodes its first frame (for the display
    rotation) and reports what the container says."""
    with _open_media(path) as container:
        if container.format.name in STILL_IMAGE_FORMATS or container.format.name.endswith("_pipe"):
            raise AvisInputError(f"{_name(path)}: an image, not a video; give a video file with its sound")
        stream = _video_stream(container, path)
        context = stream.codec_context
        check_frame_size(context.width, context.height, path)
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
    path: str | Path,
    fps: float | None = 1.0,
    max_frames: int | None = None,
    max_duration: float | None = None,
    timestamps: Sequence[float] | None = None,
) -> Iterator[SampledFrame]:
    """The frames sampled at `fps` (None: every frame), or at `timestamps` (seconds, increasing; those past the
    video's end give none), lazily, so a long video never sits in memory decoded.

    Stops after `max_frames` frames or at `max_duration` seconds. Raises AvisInputError when the file is not a
    readable video, holds no frames, or fails to decode part-way (a truncated or corrupt file).
    """
    info = probe_video(path)
    if fps is not None and info.base_fps is not None:
        fps = min(fps, info.base_fps)
    times = None
    if timestamps is not None:
        times = iter(timestamps)
    elif fps is not None:
        times = (k / fps for k in itertools.count())
    count = 0
    for sample in _sample(decoded_frames(path, info), times, info.fps, info.decoded_size):
        if (max_frames is not None and count >= max_frames) or (
            max_duration is not None and sample.time >= max_duration - TIME_TOLERANCE
        ):
            return
        count += 1
        yield sample


def read_audio(path: str | Path, sample_rate: int = 16000, max_duration: float | None = None) -> AudioTrack | None:
    """The first audio track, channels averaged to mono and resampled to `sample_rate` (see `AudioReader`), up to
    `max_duration` seconds (None: all of it). None when the file has no audio track."""
    with AudioReader(path, sample_rate) as reader:
        return reader.read_until(math.inf if max_duration is None else max_duration)


class AudioReader:
    """A file's first audio track as mono at `sample_rate`, decoded only as far as it is read: `read_until(seconds)`.

    The sound of a video is read in step with its frames, up to what the sampled frames need, whatever the
    container's header says of its length (a header can lie). The channels are resampled one by one and then
    averaged, as the original's `np.mean(data, axis=1)`: FFmpeg's own downmix to mono would scale a stereo track by
    sqrt(2) instead (0.33 mean log-mel difference on the AVISeg clips). The resampler's output is interleaved
    (packed) samples of every channel: PyAV 18.1 reads planar frames of 8 channels or more past their end.
    """

    def __init__(self, path: str | Path, sample_rate: int = 16000):
        self.path, self.sample_rate = path, sample_rate
        self._media = _open_media(path)
        container = self._media.__enter__()
        self.has_audio = bool(container.streams.audio)
        self._frames = None
        if self.has_audio:
            stream = container.streams.audio[0]
            if not _decodable(stream):
                self.close()
                raise AvisInputError(f"{_name(path)}: its audio codec is not supported by this FFmpeg build")
            video_start = _stream_start(container.streams.video[0]) if container.streams.video else 0.0
            self._frames = container.decode(stream)
            self._buffer = MonoAudioBuffer(sample_rate, video_start, _stream_start(stream))

    def read_until(self, seconds: float) -> AudioTrack | None:
        """The track up to at least `seconds` from the video's start (or to its end when shorter), from its start or
        from where `forget_before` let it go; None when the file has no audio track."""
        if not self.has_audio:
            return None
        try:
            while self._frames is not None and self._buffer.end < seconds:
                frame = next(self._frames, None)
                self._buffer.add(frame)
                if frame is None:
                    self._frames = None
        except av.error.FFmpegError as error:
            raise AvisInputError(
                f"{_name(self.path)}: the audio track is corrupt or truncated ({_reason(error)})"
            ) from None
        return self._buffer.track()

    def forget_before(self, seconds: float) -> None:
        """Lets the samples before `seconds` go: a long video's sound is held no longer than its frames need it."""
        if self.has_audio:
            self._buffer.forget_before(seconds)

    def close(self) -> None:
        self._frames = None
        self._media.__exit__(None, None, None)

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class MonoAudioBuffer:
    """Decoded audio frames of one track, resampled to `sample_rate` and averaged to mono as they are added
    (`add(frame)`, `add(None)` at the track's end), kept as one `AudioTrack` on the video's clock that grows at its
    end and is let go at its start (`forget_before`)."""

    def __init__(self, sample_rate: int, video_start: float, track_start: float):
        self.sample_rate = sample_rate
        self._video_start, self._track_start = video_start, track_start
        self._resampler = av.AudioResampler(format="flt", rate=sample_rate)
        self._chunks: list[np.ndarray] = []
        self._first = 0  # the track's index of the first sample held
        self._length = 0  # samples held
        self._start: float | None = None

    @property
    def end(self) -> float:
        """Seconds from the video's start up to which the track is decoded (-inf before its first frame)."""
        return -math.inf if self._start is None else self._start + (self._first + self._length) / self.sample_rate

    def add(self, frame: av.AudioFrame | None) -> None:
        if frame is not None and self._start is None:
            self._start = (frame.time if frame.time is not None else self._track_start) - self._video_start
        for out in self._resampler.resample(frame):
            channels = len(out.layout.channels) or 1
            mono = out.to_ndarray().reshape(-1, channels).mean(axis=1, dtype=np.float64).astype(np.float32)
            self._chunks.append(mono)
            self._length += len(mono)
        if frame is None and self._start is None:
            self._start = 0.0

    def forget_before(self, seconds: float) -> None:
        if self._start is None:
            return
        drop = min(max(math.floor((seconds - self._start) * self.sample_rate) - self._first, 0), self._length)
        if drop:
            samples = self._joined()[drop:]
            self._chunks = [samples.copy()]  # a copy: a view would keep the whole array
            self._first, self._length = self._first + drop, len(samples)

    def track(self) -> AudioTrack:
        return AudioTrack(self._joined(), self.sample_rate, 0.0 if self._start is None else self._start, self._first)

    def _joined(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.float32)


class LiveMedia:
    """A live source, opened: a pipe (a file object, such as stdin's binary buffer: MPEG-TS or Matroska), a URL or a
    capture device PyAV opens (`format`: its demuxer, e.g. "v4l2"; `options`: its options), or a file read as if it
    were one. `frames()` gives the decoded frames of its first video and audio streams as they arrive, in the order
    the source interleaves them; frames over `MAX_FRAME_PIXELS` are refused, and a source that fails part-way ends
    with an AvisInputError (what it gave before stands)."""

    def __init__(self, source: str | BinaryIO, format: str | None = None, options: dict | None = None):
        name = source if isinstance(source, str) else getattr(source, "name", "the source")
        self.name = printable(str(name))
        if hasattr(source, "read1") and not source.seekable():
            source = _ArrivingBytes(source)
        try:
            self._container = av.open(source, mode="r", format=format, options=options or {})
        except av.error.FFmpegError as error:
            raise AvisInputError(f"{self.name}: not a source FFmpeg can read ({_reason(error)})") from None
        if not self._container.streams.video:
            self.close()
            raise AvisInputError(f"{self.name}: the source has no video stream")
        self.video = self._container.streams.video[0]
        limit_decoded_frames(self.video)
        self.audio = self._container.streams.audio[0] if self._container.streams.audio else None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def frames(self) -> Iterator:
        count = 0
        try:
            for packet in self._container.demux(*(stream for stream in (self.video, self.audio) if stream)):
                for frame in packet.decode():
                    if frame.time_base is None:
                        frame.time_base = packet.stream.time_base
                    count += isinstance(frame, av.VideoFrame)
                    yield frame
        except av.error.FFmpegError as error:
            raise decoding_error(self.name, count, error) from None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "LiveMedia":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _ArrivingBytes:
    """A buffered pipe read as its bytes arrive: PyAV asks for 32 KB at a time, and a buffered reader's `read` waits
    until it has them all (a second or more of a live stream at a low bitrate), where `read1` gives what is there.
    Not seekable, as a pipe is not."""

    def __init__(self, pipe: BinaryIO):
        self.read = pipe.read1
        self.name = getattr(pipe, "name", "the source")


def is_frame_folder(path: Path) -> bool:
    """Whether `path` is a folder of frames (AVISeg's `JPEGImages/<video>/`) rather than of videos."""
    return path.is_dir() and any(entry.suffix.lower() in FRAME_SUFFIXES for entry in path.iterdir())


def read_frame_folder(folder: str | Path) -> list[Path]:
    """The frames of an AVISeg-style folder (`JPEGImages/<video>/00000.jpg, ...`), ordered by their number."""
    folder = Path(folder)
    frames = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
    if not frames:
        raise AvisInputError(f"{folder}: the folder holds no .jpg or .png frames")
    # a pipe or a device named like a frame would block the reading or never end it
    special = next((p.name for p in frames if not p.is_file()), None)
    if special is not None:
        raise AvisInputError(f"{printable(folder)}: {printable(special)!r} is not a regular file")
    numbered = [p for p in frames if _trailing_number(p.stem) is not None]
    if len(numbered) != len(frames):
        odd = next(p.name for p in frames if _trailing_number(p.stem) is None)
        raise AvisInputError(f"{folder}: frame {odd!r} is not numbered like AVISeg's 00000.jpg")
    return sorted(frames, key=lambda p: _trailing_number(p.stem))


def read_image(path: str | Path) -> np.ndarray:
    """A JPEG frame as (H, W, 3) uint8 RGB, decoded as detectron2's `read_image` does (PIL, EXIF orientation applied).

    PIL rather than PyAV: FFmpeg upsamples JPEG chroma differently from libjpeg (0.7 grey levels on average, up to 28
    at colour edges), and AVISeg's frames were read with PIL. An image over `MAX_FRAME_PIXELS` is refused from its
    header, before it is decoded.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns of images over 89 million pixels (and refuses those over 179): the limit here is lower
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_frame_size(image.width, image.height, path)
                return np.array(ImageOps.exif_transpose(image).convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AvisInputError(f"{_name(path)}: {_over_the_limit('the image is')}") from None
    except (OSError, SyntaxError) as error:
        raise AvisInputError(f"{_name(path)}: not a readable image ({error})") from None


def check_frame_size(width: int, height: int, path: str | Path) -> None:
    """Refuses a frame of more than `MAX_FRAME_PIXELS`, naming its size."""
    if width * height > MAX_FRAME_PIXELS:
        raise AvisInputError(f"{_name(path)}: {_over_the_limit(f'frames of {width}x{height} are')}")


def limit_decoded_frames(stream: av.video.stream.VideoStream) -> None:
    """Makes FFmpeg refuse to decode a frame over `MAX_FRAME_PIXELS` (before allocating it): a container declares
    the size of its first frames only, and a later frame may be of any size."""
    stream.codec_context.options = {**stream.codec_context.options, "max_pixels": str(MAX_FRAME_PIXELS)}


def decoding_error(path: str | Path, frames: int, error: av.error.FFmpegError) -> AvisInputError:
    """A decoder's refusal in one line. The size limit makes FFmpeg refuse a frame with "Invalid argument", which
    names the size only in FFmpeg's log (off unless the user turns it on): without it, both causes are said."""
    oversized = re.search(r"Picture size (\d+)x(\d+) exceeds", _log_text(error))
    if oversized:
        width, height = oversized.groups()
        return AvisInputError(
            f"{_name(path)}: frame {frames + 1}: {_over_the_limit(f'frames of {width}x{height} are')}"
        )
    if isinstance(error, av.error.ArgumentError):
        return AvisInputError(
            f"{_name(path)}: frame {frames + 1} could not be decoded ({_reason(error)}): it is "
            f"{_over_the_limit('either')}, or corrupt"
        )
    return AvisInputError(
        f"{_name(path)}: the video is corrupt or truncated: decoding failed after {frames} frames ({_reason(error)})"
    )


def _over_the_limit(what: str) -> str:
    return f"{what} over the limit of {MAX_FRAME_PIXELS / 1e6:.1f} million pixels (8192x4320)"


def _log_text(error: av.error.FFmpegError) -> str:
    log = getattr(error, "log", None)
    return str(log[-1]) if isinstance(log, tuple) and log else ""


def _sample(
    frames: Iterator[tuple[av.VideoFrame, float]],
    times: Iterator[float] | None,
    native_fps: float | None,
    size: tuple[int, int],
):
    """For each sampling time (increasing; None: every frame at its own time), the frame on screen then (see the
    module docstring), as RGB of `size` (see `frame_to_rgb`). Decoding stops once the times run out."""
    if times is None:
        for frame, time in frames:
            yield SampledFrame(time, frame_to_rgb(frame, size))
        return
    sample_time, on_screen, image, end = next(times, None), None, None, 0.0
    for frame, time in frames:
        while on_screen is not None and sample_time is not None and sample_time < time - TIME_TOLERANCE:
            image = frame_to_rgb(on_screen, size) if image is None else image
            yield SampledFrame(sample_time, image)
            sample_time = next(times, None)
        if sample_time is None:
            return
        on_screen, image, end = frame, None, time + _frame_duration(frame, native_fps)
    # The last frame stays on screen for its own duration.
    while sample_time is not None and sample_time < end - TIME_TOLERANCE:
        image = frame_to_rgb(on_screen, size) if image is None else image
        yield SampledFrame(sample_time, image)
        sample_time = next(times, None)


def decoded_frames(path: str | Path, info: VideoInfo) -> Iterator[tuple[av.VideoFrame, float]]:
    """Every frame in presentation order with its time from the video's start (from the frame's timestamp, or from
    its index at the video's rate for a raw stream without timestamps).

    A packet the demuxer flags as corrupt (a file cut inside it) is an error: with threaded decoding FFmpeg would
    drop it silently. A file cut exactly between packets decodes as the shorter video it now is. No frame over
    `MAX_FRAME_PIXELS` is decoded, wherever it is in the video.
    """
    with _open_media(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        limit_decoded_frames(stream)
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    raise AvisInputError(f"{_name(path)}: the video is truncated or corrupt after {count} frames")
                for frame in packet.decode():
                    yield frame, _frame_time(frame, count, info, path)
                    count += 1
        except av.error.FFmpegError as error:
            raise decoding_error(path, count, error) from None
        if count == 0:
            raise AvisInputError(f"{_name(path)}: the video stream holds no frames")


def _first_frame_rotation(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str | Path
) -> int:
    """The display rotation of the first frame, in degrees; decoding errors are worded as `decoded_frames` words them."""
    limit_decoded_frames(stream)
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise AvisInputError(f"{_name(path)}: the video is truncated or corrupt after 0 frames")
            for frame in packet.decode():
                return round(frame.rotation or 0)
    except av.error.FFmpegError as error:
        raise decoding_error(path, 0, error) from None
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


def frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB, turned upright by its display rotation as players show it.

    size: the (width, height) the video's frames have before rotation: a frame of another size (a stream may change
    size part-way) is scaled to it, as players show it, so that every frame of a video has one size.
    """
    if size is not None and (frame.width, frame.height) != tuple(size):
        image = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
    else:
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
    "LiveMedia",
    "MAX_FRAME_PIXELS",
    "AvisegVideoFiles",
    "AudioReader",
    "AudioTrack",
    "MonoAudioBuffer",
    "ProgressFn",
    "SampledFrame",
    "VideoInfo",
    "check_frame_size",
    "decoded_frames",
    "decoding_error",
    "frame_to_rgb",
    "is_frame_folder",
    "limit_decoded_frames",
    "probe_video",
    "read_audio",
    "read_frame_folder",
    "read_frames",
    "read_image",
]
