"""Overlays: each sounding instance's mask, contour and label burnt into the source video, re-encoded with PyAV one
frame at a time (no video is ever held in memory whole).

Times are seconds from the video's start (`video_io`'s clock, the one `AvisVideoResult.timestamps` are on), and the
frames are painted upright, at the size the masks have.
"""

import bisect
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from .errors import AvisInputError, AvisUsageError, printable
from .outputs import atomic_file
from .tracks import AvisVideoResult
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

PaintFn = Callable[[np.ndarray, float], np.ndarray]
"""paint(image (H, W, 3) uint8 RGB upright, seconds from the video's start) -> image of the same shape."""


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The colour of a track, the same in every frame, in the table and in the timeline."""
    return PALETTE[(track_id - 1) % len(PALETTE)]


class OverlayPainter:
    """Paints the tracks of `result` on the source frames: `painter(image, time) -> image`.

    A source frame at time t shows the masks of the latest sampled frame whose timestamp is <= t, and frames
    before the first timestamp show the first sampled frame: masks are held between the model's sampled frames.
    The overlay of one sampled frame is drawn once and blended into every source frame that shows it.
    """

    def __init__(self, result: AvisVideoResult):
        self.result = result
        self.timestamps = [float(t) for t in result.timestamps]
        self.font = ImageFont.load_default(size=max(12, result.height // 28))
        self._cached_index = None
        self._cached_layer = None

    def sample_index(self, time: float) -> int:
        """The sampled frame whose masks a source frame at `time` shows."""
        return max(bisect.bisect_right(self.timestamps, time + TIME_TOLERANCE) - 1, 0)

    def __call__(self, image: np.ndarray, time: float) -> np.ndarray:
        if not self.result.tracks or not self.timestamps:
            return image
        box, colour, opacity = self._layer(self.sample_index(time))
        painted = image.copy()
        painted[box] = np.rint(image[box] + (colour - image[box]) * opacity).astype(np.uint8)
        return painted

    def _layer(self, index: int) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """The overlay of one sampled frame, cropped to where it is not transparent: the crop (rows, columns),
        its colour (h, w, 3) float32 and opacity (h, w, 1) float32."""
        if index != self._cached_index:
            rgba = self.draw_overlay(index)
            rows, cols = np.nonzero(rgba[..., 3].any(axis=1))[0], np.nonzero(rgba[..., 3].any(axis=0))[0]
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)) if len(rows) else (slice(0), slice(0))
            self._cached_index = index
            self._cached_layer = (box, rgba[box][..., :3].astype(np.float32), rgba[box][..., 3:] / np.float32(255))
        return self._cached_layer

    def draw_overlay(self, index: int) -> np.ndarray:
        """RGBA (H, W, 4) uint8 overlay of sampled frame `index`: translucent fills, opaque contours and labels."""
        height, width = self.result.height, self.result.width
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        labels = []
        # Lowest score first, so the most confident instance ends up on top where masks overlap.
        for track in sorted(self.result.tracks, key=lambda track: track.score):
            mask = track.mask(index)
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if not len(rows):
                continue
            # Drawn within the mask's box: outside it the mask is empty, as erosion's border is.
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            mask, layer = mask[box], rgba[box]
            colour = track_colour(track.track_id)
            layer[mask] = (*colour, round(255 * FILL_OPACITY))
            layer[_contour(mask, thickness=max(2, height // 180))] = (*colour, 255)
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
        left = min(max(left, 0), max(self.result.width - box_width, 0))
        top = top - box_height if top >= box_height else top
        draw.rectangle((left, top, left + box_width - 1, top + box_height - 1), fill=(*colour, 255))
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = (0, 0, 0, 255) if luminance > 140 else (255, 255, 255, 255)
        draw.text((left + 3 - x0, top + 3 - y0), text, font=self.font, fill=ink)


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

    The output keeps every source frame at its own time: its clock is the source stream's own time base, so the
    millisecond timestamps of a variable-frame-rate phone video stay distinct (frames come out in order, strictly
    increasing). The sound is re-encoded to AAC up to the end of the picture (a source without an audio track gives
    an output without one). yuv420p needs even sizes, so an odd last row or column is repeated once.
    until: keep only the frames (and sound) before this many seconds from the first video frame.
    The picture's end is where its decoded frames end, never what the container's header says (a header can lie).
    The file appears at `destination` only once complete; a failure leaves nothing there.
    """
    width, height = video.width + video.width % 2, video.height + video.height % 2
    until_time = math.inf if until is None else until
    expected_frames = max(1, round(min(until or math.inf, video.duration) * (video.fps or video.base_fps or 25.0)))
    with atomic_file(destination) as partial:
        try:
            output = av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"})
        except av.FFmpegError as error:
            raise AvisUsageError(f"{printable(destination)}: cannot be written ({error.strerror})") from None
        with output, _SourceSound(video) as sound:
            time_base = sound.video_time_base
            video_out = output.add_stream("libx264", rate=sound.video_rate, options=X264_OPTIONS)
            video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
            video_out.codec_context.time_base = video_out.time_base = time_base
            audio_out = _add_aac_stream(output, sound.stream) if sound.stream is not None else None
            last_pts, picture_end, frames_done = None, 0.0, 0
            for frame, time in decoded_frames(video.path, video):
                if not time < until_time - TIME_TOLERANCE:
                    break
                for sound_frame in sound.frames_before(time):
                    _encode(output, audio_out, sound_frame, video)
                pts = round(time / time_base)
                last_pts = pts if last_pts is None else max(pts, last_pts + 1)
                picture_end = time + _frame_seconds(frame, video)
                image = _even(paint(frame_to_rgb(frame, video.decoded_size), time), height, width)
                painted = av.VideoFrame.from_ndarray(image, format="rgb24")
                painted.pts, painted.time_base = last_pts, time_base
                _encode(output, video_out, painted, video)
                frames_done += 1
                if progress is not None:
                    progress(min(frames_done / expected_frames, 1.0), description)
            for sound_frame in sound.frames_before(min(picture_end, until_time)):
                _encode(output, audio_out, sound_frame, video)
            for stream in (video_out, audio_out):
                if stream is not None:
                    _encode(output, stream, None, video)


class _SourceSound:
    """The source's first audio track, read from a container of its own in step with the picture: `frames_before(t)`
    gives its frames that start before `t` seconds from the video's start and were not given yet, on that clock, so
    that a file that keeps its sound apart from its picture (an hour of sound after two seconds of picture) is read
    no further than the picture. Also the video stream's clock and rate, for the output's."""

    def __init__(self, video: VideoInfo):
        self.video = video
        self._container = av.open(video.path)
        video_in = self._container.streams.video[0]
        self.video_time_base = video_in.time_base
        self.video_rate = video_in.average_rate or video_in.guessed_rate
        self.stream = self._container.streams.audio[0] if self._container.streams.audio else None
        self._frames = self._container.decode(self.stream) if self.stream is not None else iter(())
        self._next: av.AudioFrame | None = None

    def frames_before(self, time: float) -> Iterator[av.AudioFrame]:
        try:
            while True:
                if self._next is None:
                    self._next = next(self._frames, None)
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
                    # The output's clock starts at the first video frame, for the sound as for the picture.
                    frame.pts -= round(self.video.start_time / frame.time_base)
                    yield frame
        except av.FFmpegError as error:
            raise AvisInputError(
                f"{printable(self.video.name)}: the audio track is corrupt or truncated ({error.strerror})"
            ) from None

    def __enter__(self) -> "_SourceSound":
        return self

    def __exit__(self, *exc_info) -> None:
        self._container.close()


def _frame_seconds(frame: av.VideoFrame, video: VideoInfo) -> float:
    """How long a frame stays on screen: its own duration, else one frame at the video's rate."""
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    rate = video.fps or video.base_fps
    return 1 / rate if rate else 0.0


def _encode(output: av.container.OutputContainer, stream, frame, video: VideoInfo) -> None:
    """Encodes a frame (None: flushes the encoder) and writes its packets; an encoder's refusal in one line."""
    try:
        output.mux(stream.encode(frame))
    except av.FFmpegError as error:
        raise AvisInputError(f"{printable(video.name)}: its overlay could not be encoded ({error.strerror})") from None


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


__all__ = ["FILL_OPACITY", "PALETTE", "OverlayPainter", "render_overlay", "track_colour", "transcode"]
