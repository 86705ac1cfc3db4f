"""Overlay rendering: each sounding instance's mask, contour and label burnt into the source video."""

import bisect
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from modeling_avis.tracks import AvisVideoResult

from .media import ProgressFn, VideoInfo, transcode

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
            if not mask.any():
                continue
            colour = track_colour(track.track_id)
            rgba[mask] = (*colour, round(255 * FILL_OPACITY))
            rgba[_contour(mask, thickness=max(2, height // 180))] = (*colour, 255)
            rows, cols = np.nonzero(mask)
            labels.append((f"[{track.track_id}] {track.label_name} {track.score:.2f}", colour, cols.min(), rows.min()))
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


def render_overlay(video: VideoInfo, result: AvisVideoResult, destination: str | Path, progress: ProgressFn) -> None:
    """Write `video` with the tracks of `result` drawn on it as an H.264 + AAC mp4 (see media.transcode)."""
    if (result.height, result.width) != (video.height, video.width):
        raise ValueError(f"the masks are {result.width}x{result.height} but the video is {video.width}x{video.height}")
    transcode(video, destination, OverlayPainter(result), progress)


def _contour(mask: np.ndarray, thickness: int) -> np.ndarray:
    """The pixels of `mask` within `thickness` of its edge."""
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
