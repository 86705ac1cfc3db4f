"""Overlays: each sounding instance's mask, contour and label burnt into the source video, re-encoded with PyAV one
frame at a time (no video is ever held in memory whole): a video's once its result is complete (`render_overlay`),
or a stream's as its masks come (`LiveOverlay`, MPEG-TS that plays while it grows).

Times are seconds from the video's start (`video_io`'s clock, the one `AvisVideoResult.timestamps` are on), and the
frames are painted upright, at the size the masks have.
"""

import bisect
import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from .errors import AvisInputError, AvisUsageError, printable
from .outputs import atomic_file
from .tracks import AvisStreamUpdate, AvisVideoResult
from .video_io import ProgressFn, VideoInfo, decoded_frames, frame_to_rgb

# 20 colours that stay distinct from each other and on most footage (Sasha Trubetskoy's list), RGB.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip

FILL_OPACITY = 0.45
# Timestamps and frame times are both float seconds from PyAV; a millisecond absorbs their round-off.
TIME_TOLERANCE = 1e-3

# Sample rates the AAC encoder takes; anything else (rare) is resampled to 48 kHz.
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

# x264 quality: visually lossless for overlays, fast enough for two CPU cores.
X264_OPTIONS = {"crf": "18", "preset": "veryfast"}
# A live overlay's x264 has no lookahead and no B-frames: each frame's packet is written as the frame is painted
# (else x264 holds ~10 frames back: 10 s of a stream at 1 fps).
LIVE_X264_OPTIONS = {**X264_OPTIONS, "tune": "zerolatency"}
# A live overlay is MPEG-TS: its 188-byte packets stand alone, so the file plays while it grows, and up to wherever
# it was cut should the process be killed; Matroska writes its index, and fragmented MP4 each fragment, only once
# they are complete (a fragment per keyframe: seconds to minutes behind a live source).
LIVE_FORMAT, LIVE_SUFFIX = "mpegts", ".ts"

PaintFn = Callable[[np.ndarray, float], np.ndarray]
"""paint(image (H, W, 3) uint8 RGB upright, seconds from the video's start) -> image of the same shape."""


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The colour of a track, the same in every frame, in the table and in the timeline."""
    return PALETTE[(track_id - 1) % len(PALETTE)]


class OverlayDrawing:
    """Draws the sounding instances of one sampled frame as an RGBA overlay of the video's size (height, width):
    `drawing([(track, mask), ...]) -> (H, W, 4) uint8`, translucent fills, opaque contours and labels in each track's
    colour. `track` is anything with a `track_id`, `label_name` and `score` (`AvisTrack`, `AvisStreamTrack`)."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.font = ImageFont.load_default(size=max(12, height // 28))

    def __call__(self, tracks: Iterable[tuple[object, np.ndarray]]) -> np.ndarray:
        rgba = np.zeros((self.height, self.width, 4), dtype=np.uint8)
        labels = []
        # Lowest score first, so the most confident instance ends up on top where masks overlap.
        for track, mask in sorted(tracks, key=lambda pair: pair[0].score):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if not len(rows):
                continue
            # Drawn within the mask's box: outside it the mask is empty, as erosion's border is.
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            mask, layer = mask[box], rgba[box]
            colour = track_colour(track.track_id)
            layer[mask] = (*colour, round(255 * FILL_OPACITY))
            layer[_contour(mask, thickness=max(2, self.height // 180))] = (*colour, 255)
            labels.append((f"[{track.track_id}] {track.label_name} {track.score:.2f}", colour, cols[0], rows[0]))
        canvas = Image.fromarray(rgba)  # (H, W, 4) uint8 is RGBA
        draw = ImageDraw.Draw(canvas)
        for text, colour, left, top in labels:
            self._draw_label(draw, text, colour, left, top)
        return np.asarray(canvas)

    def _draw_label(self, draw: ImageDraw.ImageDraw, text: str, colour: tuple, left: int, top: int) -> None:
        """A filled box in the track's colour with the text in black or white, above the mask if it fits."""
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=self.font)
        box_width, box_height = x1 - x0 + 6, y1 - y0 + 6
        left = min(max(left, 0), max(self.width - box_width, 0))
        top = top - box_height if top >= box_height else top
        draw.rectangle((left, top, left + box_width - 1, top + box_height - 1), fill=(*colour, 255))
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = (0, 0, 0, 255) if luminance > 140 else (255, 255, 255, 255)
        draw.text((left + 3 - x0, top + 3 - y0), text, font=self.font, fill=ink)


class OverlayLayer:
    """One sampled frame's RGBA overlay, cropped to where it is not transparent, blended into the source frames that
    show it: `layer(image) -> painted image` (the same image where the overlay is empty)."""

    def __init__(self, rgba: np.ndarray):
        rows, cols = np.nonzero(rgba[..., 3].any(axis=1))[0], np.nonzero(rgba[..., 3].any(axis=0))[0]
        self.box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)) if len(rows) else None
        if self.box is not None:
            self.colour = rgba[self.box][..., :3].astype(np.float32)
            self.opacity = rgba[self.box][..., 3:] / np.float32(255)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.box is None:
            return image
        painted = image.copy()
        box = image[self.box]
        painted[self.box] = np.rint(box + (self.colour - box) * self.opacity).astype(np.uint8)
        return painted


NO_LAYER = OverlayLayer(np.zeros((0, 0, 4), dtype=np.uint8))


class OverlayPainter:
    """Paints the tracks of `result` on the source frames: `painter(image, time) -> image`.

    A source frame at time t shows the masks of the latest sampled frame whose timestamp is <= t, and frames
    before the first timestamp show the first sampled frame: masks are held between the model's sampled frames.
    The overlay of one sampled frame is drawn once and blended into every source frame that shows it.
    """

    def __init__(self, result: AvisVideoResult):
        self.result = result
        self.timestamps = [float(t) for t in result.timestamps]
        self.drawing = OverlayDrawing(result.height, result.width)
        self._cached_index = None
        self._cached_layer = None

    def sample_index(self, time: float) -> int:
        """The sampled frame whose masks a source frame at `time` shows."""
        return sample_index(self.timestamps, time)

    def __call__(self, image: np.ndarray, time: float) -> np.ndarray:
        if not self.result.tracks or not self.timestamps:
            return image
        index = self.sample_index(time)
        if index != self._cached_index:
            self._cached_index, self._cached_layer = index, OverlayLayer(self.draw_overlay(index))
        return self._cached_layer(image)

    def draw_overlay(self, index: int) -> np.ndarray:
        """RGBA (H, W, 4) uint8 overlay of sampled frame `index` (see `OverlayDrawing`)."""
        return self.drawing((track, track.mask(index)) for track in self.result.tracks)


def sample_index(timestamps: Sequence[float], time: float) -> int:
    """Of sampled frames at `timestamps` (increasing), the one a source frame at `time` shows: the latest at or before
    it, the first for a frame before them all."""
    return max(bisect.bisect_right(timestamps, time + TIME_TOLERANCE) - 1, 0)


def render_overlay(
    video: VideoInfo,
    result: AvisVideoResult,
    destination: str | Path,
    progress: ProgressFn | None = None,
    until: float | None = None,
) -> None:
    """Write `video` with the tracks of `result` drawn on it as an H.264 + AAC mp4 (see `transcode`), up to `until`
    seconds (the span the result was analysed over)."""
    if (result.height, result.width) != (video.height, video.width):
        raise ValueError(f"the masks are {result.width}x{result.height} but the video is {video.width}x{video.height}")
    transcode(video, destination, OverlayPainter(result), progress, until=until)


def transcode(
    video: VideoInfo,
    destination: str | Path,
    paint: PaintFn,
    progress: ProgressFn | None = None,
    until: float | None = None,
    description: str = "Rendering",
) -> None:
    """Re-encode `video` as an H.264 (yuv420p) + AAC mp4, passing every video frame, upright, through `paint`.

    The output keeps every source frame at its own time (see `_OverlayEncoder`), and the sound up to the end of the
    picture (see `FileMedia`; a source without an audio track gives an output without one).
    until: keep only the frames (and sound) before this many seconds from the first video frame.
    The picture's end is where its decoded frames end, never what the container's header says (a header can lie).
    The file appears at `destination` only once complete; a failure leaves nothing there.
    """
    expected_frames = max(1, round(min(until or math.inf, video.duration) * (video.fps or video.base_fps or 25.0)))
    with atomic_file(destination) as partial:
        output = _open_output(partial, destination, "mp4", {"movflags": "+faststart"})
        with output, FileMedia(video) as media:
            encoder = _OverlayEncoder(
                output, video.width, video.height, media.video_time_base, media.video_rate, media.audio,
                X264_OPTIONS, video.name,
            )  # fmt: skip
            frames_done = 0
            for frame, time in media.frames(until):
                if isinstance(frame, av.AudioFrame):
                    encoder.audio(frame, time)
                    continue
                encoder.video(paint(frame_to_rgb(frame, video.decoded_size), time), time)
                frames_done += 1
                if progress is not None:
                    progress(min(frames_done / expected_frames, 1.0), description)
            encoder.flush()


class LiveOverlay:
    """A stream's overlay, written as the stream goes: MPEG-TS (H.264 + AAC) at `destination`, which plays while it
    grows (see `LIVE_SUFFIX`).

    Source frames are added as they arrive (`add_video_frame(frame, time)`, `add_audio_frame(frame, time)`: decoded
    frames and their seconds from the first video frame) and held, as decoded, until the masks of the sampled frame
    they show are in (`add_update`); then each is painted as `OverlayPainter` paints (a source frame shows the latest
    sampled frame at or before it) and encoded after the sound that comes before it. A frame is known to show
    sampled frame k once k's masks are in and it comes less than `sample_interval` (the least time between sampled
    frames) after k, or once a later sampled frame is in.

    time_base, rate: the source video's clock and frame rate (each frame keeps its time); audio: the source's audio
    stream (its rate and channels; None: no sound); until: frames and sound from this many seconds on are left out;
    name: the source's, for errors. `finish(ended)` completes the file so that it plays; `discard()` removes it.
    """

    def __init__(
        self,
        destination: str | Path,
        sample_interval: float,
        time_base: Fraction,
        rate: Fraction | None,
        audio: av.audio.stream.AudioStream | None,
        until: float | None = None,
        name: str = "the source",
    ):
        self.destination = Path(destination)
        self.sample_interval, self.time_base, self.rate, self.audio = sample_interval, time_base, rate, audio
        self.until = math.inf if until is None else until
        self.name = name
        self._video: deque[tuple[av.VideoFrame, float]] = deque()
        self._sound: deque[tuple[av.AudioFrame, float]] = deque()
        self._layers: list[tuple[float, OverlayLayer]] = []  # from the latest sampled frame a held frame may show
        self._drawing: OverlayDrawing | None = None
        self._encoder: _OverlayEncoder | None = None
        self._decoded_size: tuple[int, int] | None = None
        self._picture_end = 0.0
        # every packet goes to the file as it is made: a reader sees the stream up to its last frame
        self._output = _open_output(self.destination, self.destination, LIVE_FORMAT, {"flush_packets": "1"})

    def add_video_frame(self, frame: av.VideoFrame, time: float) -> None:
        if time < self.until - TIME_TOLERANCE:
            self._decoded_size = self._decoded_size or (frame.width, frame.height)
            self._video.append((frame, time))
            self._paint()

    def add_audio_frame(self, frame: av.AudioFrame, time: float) -> None:
        if self.audio is not None and 0 <= time < self.until - TIME_TOLERANCE:
            self._sound.append((frame, time))

    def add_update(self, update: AvisStreamUpdate) -> None:
        """The masks of the sampled frames an online window finalised."""
        for index, time in enumerate(update.timestamps):
            masks = [(track, track.masks[index]) for track in update.tracks]
            if masks and self._drawing is None:
                self._drawing = OverlayDrawing(*masks[0][1].shape)
            self._layers.append((time, OverlayLayer(self._drawing(masks)) if masks else NO_LAYER))
        self._paint()

    def finish(self, ended: bool) -> bool:
        """Writes what is held and completes the file: when the stream `ended`, every frame (those after the last
        sampled frame with its masks); when it was cut short, the frames whose masks are known. The sound goes up
        to the picture's end. Returns whether a frame was written (else there is no file)."""
        self._paint(ended)
        if self._encoder is not None:
            while self._sound and self._sound[0][1] < min(self._picture_end, self.until) - TIME_TOLERANCE:
                self._encoder.audio(*self._sound.popleft())
            self._encoder.flush()
        self._output.close()
        if self._encoder is None:
            self.destination.unlink(missing_ok=True)
        return self._encoder is not None

    def discard(self) -> None:
        """Removes the file (the stream failed): no partial overlay is left."""
        with contextlib.suppress(av.FFmpegError, OSError):
            self._output.close()
        self.destination.unlink(missing_ok=True)

    def _paint(self, ended: bool = False) -> None:
        while self._video and self._layers:
            frame, time = self._video[0]
            index = sample_index([sampled for sampled, _ in self._layers], time)
            newest = self._layers[index][0]
            if index == len(self._layers) - 1 and not ended and time >= newest + self.sample_interval - TIME_TOLERANCE:
                return  # it may show a sampled frame whose masks are still to come
            self._video.popleft()
            del self._layers[:index]
            self._write(frame, time, self._layers[0][1])

    def _write(self, frame: av.VideoFrame, time: float, layer: "OverlayLayer") -> None:
        image = frame_to_rgb(frame, self._decoded_size)
        if self._encoder is None:
            height, width = image.shape[:2]
            self._encoder = _OverlayEncoder(
                self._output, width, height, self.time_base, self.rate, self.audio, LIVE_X264_OPTIONS, self.name
            )
        while self._sound and self._sound[0][1] < time - TIME_TOLERANCE:
            self._encoder.audio(*self._sound.popleft())
        self._encoder.video(layer(image), time)
        self._picture_end = time + _frame_seconds(frame, self.rate)


class FileMedia:
    """A video file's frames and sound in the order its overlay is written: `frames(until)` gives each video frame
    (decoded, with its time from the video's start) after the sound that starts before it, then the sound up to the
    picture's end, all before `until` seconds, as (frame, seconds) pairs. The sound is read from a container of its
    own in step with the picture, so that a file that keeps its sound apart from its picture (an hour of sound after
    two seconds of picture) is read no further than the picture. Also the video stream's clock and rate and the
    audio stream, for the output's."""

    def __init__(self, video: VideoInfo):
        self.video = video
        self._container = av.open(video.path)
        video_in = self._container.streams.video[0]
        self.video_time_base = video_in.time_base
        self.video_rate = video_in.average_rate or video_in.guessed_rate
        self.audio = self._container.streams.audio[0] if self._container.streams.audio else None
        self._sound = self._container.decode(self.audio) if self.audio is not None else iter(())
        self._next: av.AudioFrame | None = None

    def frames(self, until: float | None = None) -> Iterator[tuple[av.VideoFrame | av.AudioFrame, float]]:
        until_time = math.inf if until is None else until
        picture_end = 0.0
        for frame, time in decoded_frames(self.video.path, self.video):
            if not time < until_time - TIME_TOLERANCE:
                break
            yield from self._sound_before(time)
            picture_end = time + _frame_seconds(frame, self.video.fps or self.video.base_fps)
            yield frame, time
        yield from self._sound_before(min(picture_end, until_time))

    def _sound_before(self, time: float) -> Iterator[tuple[av.AudioFrame, float]]:
        """The sound's frames that start before `time` and were not given yet, on the video's clock."""
        try:
            while True:
                if self._next is None:
                    self._next = next(self._sound, None)
                    if self._next is None:
                        return
                frame = self._next
                if frame.time is None:
                    self._next = None
                    continue
                seconds = frame.time - self.video.start_time
                if not seconds < time - TIME_TOLERANCE:
                    return
                self._next = None
                if seconds >= 0:
                    yield frame, seconds
        except av.FFmpegError as error:
            raise AvisInputError(
                f"{printable(self.video.name)}: the audio track is corrupt or truncated ({error.strerror})"
            ) from None

    def __enter__(self) -> "FileMedia":
        return self

    def __exit__(self, *exc_info) -> None:
        self._container.close()


class _OverlayEncoder:
    """Painted frames as H.264 (yuv420p) and the source's sound re-encoded as AAC, muxed into `output` on the source
    video's clock (`time_base`): each frame at its own time, so that the millisecond timestamps of a variable-frame-rate
    phone video stay distinct (frames come in order, strictly increasing), and the output's clock starting at the
    first video frame for the sound as for the picture. yuv420p needs even sizes, so an odd last row or column is
    repeated once. `name`: the source's, for errors."""

    def __init__(
        self,
        output: av.container.OutputContainer,
        width: int,
        height: int,
        time_base: Fraction,
        rate: Fraction | None,
        audio: av.audio.stream.AudioStream | None,
        options: dict[str, str],
        name: str,
    ):
        self.output, self.name, self.time_base = output, name, time_base
        self.width, self.height = width + width % 2, height + height % 2
        self.video_out = output.add_stream("libx264", rate=rate, options=options)
        self.video_out.width, self.video_out.height, self.video_out.pix_fmt = self.width, self.height, "yuv420p"
        self.video_out.codec_context.time_base = self.video_out.time_base = time_base
        self.audio_out = _add_aac_stream(output, audio) if audio is not None else None
        self._last_pts: int | None = None

    def video(self, image: np.ndarray, time: float) -> None:
        """An upright (h, w, 3) uint8 RGB frame shown from `time` seconds."""
        pts = round(time / self.time_base)
        self._last_pts = pts if self._last_pts is None else max(pts, self._last_pts + 1)
        painted = av.VideoFrame.from_ndarray(_even(image, self.height, self.width), format="rgb24")
        painted.pts, painted.time_base = self._last_pts, self.time_base
        self._encode(self.video_out, painted)

    def audio(self, frame: av.AudioFrame, time: float) -> None:
        """A frame of the source's sound that plays from `time` seconds."""
        if self.audio_out is not None:
            frame.pts = round(time / frame.time_base)
            self._encode(self.audio_out, frame)

    def flush(self) -> None:
        for stream in (self.video_out, self.audio_out):
            if stream is not None:
                self._encode(stream, None)

    def _encode(self, stream, frame) -> None:
        """Encodes a frame (None: flushes the encoder) and writes its packets; an encoder's refusal in one line."""
        try:
            self.output.mux(stream.encode(frame))
        except av.FFmpegError as error:
            raise AvisInputError(
                f"{printable(self.name)}: its overlay could not be encoded ({error.strerror})"
            ) from None


def _open_output(path: Path, destination: str | Path, format: str, options: dict[str, str]):
    """`path` opened for writing `destination` as `format`; a refusal in one line naming the destination."""
    try:
        return av.open(str(path), "w", format=format, options=options)
    except av.FFmpegError as error:
        raise AvisUsageError(f"{printable(destination)}: cannot be written ({error.strerror})") from None


def _frame_seconds(frame: av.VideoFrame, rate: float | None) -> float:
    """How long a frame stays on screen: its own duration, else one frame at the video's rate."""
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    return 1 / float(rate) if rate else 0.0


def _even(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` with its last row and column repeated up to (height, width), contiguous, for the encoder."""
    rows, columns = height - image.shape[0], width - image.shape[1]
    if rows or columns:
        image = np.pad(image, ((0, rows), (0, columns), (0, 0)), mode="edge")
    return np.ascontiguousarray(image)


def _add_aac_stream(output: av.container.OutputContainer, audio_in: av.audio.stream.AudioStream):
    rate = audio_in.rate if audio_in.rate in AAC_SAMPLE_RATES else 48000
    layout = "mono" if audio_in.channels == 1 else "stereo"
    return output.add_stream("aac", rate=rate, layout=layout)


def _contour(mask: np.ndarray, thickness: int) -> np.ndarray:
    """The pixels of `mask` within `thickness` of its edge."""
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)


__all__ = [
    "FILL_OPACITY",
    "LIVE_SUFFIX",
    "PALETTE",
    "FileMedia",
    "LiveOverlay",
    "OverlayDrawing",
    "OverlayLayer",
    "OverlayPainter",
    "render_overlay",
    "sample_index",
    "track_colour",
    "transcode",
]
