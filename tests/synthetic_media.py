"""Small media files written with PyAV for the decoding and processor tests (nothing binary is committed)."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_value(index: int) -> int:
    """The grey level of synthetic frame `index`: frames are told apart by it after lossy encoding."""
    return (index * 40 + 10) % 250


def write_video(
    path: Path,
    num_frames: int = 24,
    fps: int = 24,
    size: tuple[int, int] = (64, 48),
    audio_seconds: float | None = None,
    frame_times_ms: list[int] | None = None,
    container_format: str | None = None,
    codec: str = "libx264",
    rotation: int | None = None,
) -> Path:
    """A video of flat grey frames (`frame_value(i)`), optionally with a 440 Hz stereo AAC track of `audio_seconds`.

    frame_times_ms gives each frame its own timestamp (a variable frame rate).
    """
    width, height = size
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if frame_times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = container.add_stream("aac", rate=44100, layout="stereo") if audio_seconds is not None else None
        for index in range(num_frames):
            pixels = np.full((height, width, 3), frame_value(index), dtype=np.uint8)
            if rotation is not None:
                pixels[:8, :8] = 255  # marks the top-left corner
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if frame_times_ms is not None:
                frame.pts, frame.time_base = frame_times_ms[index], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio is not None:
            _encode_tone(container, audio, audio_seconds)
        if num_frames == 0:
            container.start_encoding()
    return path


def write_wav(path: Path, seconds: float, sample_rate: int = 16000) -> Path:
    """A mono 16-bit WAV of a 440 Hz tone."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sample_rate)) / sample_rate) * 32767).astype(
            np.int16
        )
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _encode_tone(container, stream, seconds: float) -> None:
    sample_rate = stream.codec_context.sample_rate
    total = int(seconds * sample_rate)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / sample_rate)).astype(np.float32)
    for start in range(0, total, 1024):
        chunk = tone[start : start + 1024]
        frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = sample_rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
