"""Small videos written with PyAV for the app's tests: smooth moving gradients and a sine tone."""

from pathlib import Path

import av
import numpy as np

TONE_HZ = 440.0


def gradient_frame(index: int, width: int, height: int) -> np.ndarray:
    """A smooth RGB gradient that drifts by a pixel per frame: easy on the codec, different in every frame."""
    x, y = np.meshgrid(np.arange(width) + index, np.arange(height))
    red = 40 + 150 * x / (width + 60)
    green = 60 + 120 * y / height
    blue = np.full(x.shape, 110.0)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def write_video(
    path: Path,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 12,
    num_frames: int = 24,
    audio: bool = True,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
) -> Path:
    """A `num_frames / fps` seconds video (and a tone of the same length) at `path`; the suffix picks the container."""
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if video_codec == "libx264":
            video.options = {"crf": "8", "preset": "veryfast"}
        tone = container.add_stream(audio_codec, rate=48000, layout="stereo") if audio else None
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(gradient_frame(index, width, height), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if tone is not None:
            samples = round(48000 * num_frames / fps)
            wave = (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(samples) / 48000)).astype(np.float32)
            for start in range(0, samples, 960):
                chunk = np.ascontiguousarray(np.stack([wave[start : start + 960]] * 2))
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = 48000, start
                container.mux(tone.encode(frame))
            container.mux(tone.encode())
    return path


def decode_rgb(path: Path) -> list[np.ndarray]:
    """Every video frame of a (small) file as RGB arrays."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def stream_summary(path: Path) -> dict:
    """Codec, frame count, duration in seconds, and (video) pixel format and size, per stream type."""
    with av.open(str(path)) as container:
        summary = {}
        for stream in container.streams:
            duration = float(stream.duration * stream.time_base) if stream.duration is not None else None
            summary[stream.type] = {"codec": stream.codec_context.name, "frames": stream.frames, "duration": duration}
            if stream.type == "video":
                context = stream.codec_context
                summary["video"].update(pix_fmt=context.format.name, size=(context.width, context.height))
        return summary
