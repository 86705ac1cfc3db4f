"""The media people actually have, written with PyAV at test time (nothing large is committed).

Every maker takes a folder and returns the path it wrote: broken files (zero bytes, truncated, text renamed .mp4),
files of the wrong kind (audio only, still images), odd geometry (1x1, 17x3, 4096x2, 4K, rotated), odd clocks (a
phone's variable frame rate, a short picture with an hour of sound), no sound, no frames, and a long video whose
sounding shape is present throughout (the shipped default model finds the shapes).
"""

from pathlib import Path

import av
import numpy as np
from PIL import Image

from .synthetic_media import write_video

EXAMPLES = Path(__file__).parents[1] / "app" / "examples"
TONE_RATE = 16000


def zero_bytes(folder: Path) -> Path:
    path = folder / "zero.mp4"
    path.write_bytes(b"")
    return path


def text_renamed(folder: Path) -> Path:
    path = folder / "notes.mp4"
    path.write_text("not a video, only a text file with a video's name\n" * 20)
    return path


def truncated(folder: Path) -> Path:
    """A real clip cut in the middle of its data (its index, at the end, lost with it)."""
    data = (EXAMPLES / "shapes_solo.mp4").read_bytes()
    path = folder / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


def audio_only(folder: Path) -> Path:
    path = folder / "song.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        _mux_tone(container, container.add_stream("aac", rate=TONE_RATE, layout="mono"), 2.0)
    return path


def png_image(folder: Path) -> Path:
    path = folder / "photo.png"
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(path)
    return path


def jpeg_image(folder: Path) -> Path:
    path = folder / "photo.jpg"
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(path)
    return path


def no_audio(folder: Path) -> Path:
    return write_video(folder / "silent.mp4", num_frames=24, fps=12, size=(64, 48))


def zero_frames(folder: Path) -> Path:
    return write_video(folder / "empty.mkv", num_frames=0)


def sized(width: int, height: int, seconds: float = 2.0, fps: int = 4):
    """A maker of a video of that size with a tone (yuv444p: 4:2:0 cannot hold a 1-pixel or odd-sized frame)."""

    def make(folder: Path) -> Path:
        path = folder / f"frames_{width}x{height}.mkv"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
            stream.options = {"preset": "ultrafast"}
            audio = container.add_stream("aac", rate=TONE_RATE, layout="mono")
            for index in range(round(seconds * fps)):
                pixels = np.full((height, width, 3), (index * 40 + 10) % 250, np.uint8)
                container.mux(stream.encode(_frame(pixels, index)))
            container.mux(stream.encode())
            _mux_tone(container, audio, seconds)
        return path

    return make


def phone_vfr(folder: Path) -> Path:
    """A phone's variable frame rate: frames 25 to 45 ms apart, millisecond timestamps, and its sound."""
    times = np.cumsum(np.random.default_rng(0).integers(25, 46, size=120)) - 25
    return write_video(
        folder / "phone.mp4", num_frames=120, fps=30, size=(96, 64), audio_seconds=5.5, frame_times_ms=times.tolist()
    )


def rotated(folder: Path) -> Path:
    return write_video(folder / "portrait.mp4", num_frames=24, fps=12, size=(64, 48), audio_seconds=2.0, rotation=90)


def hour_of_audio(folder: Path) -> Path:
    """A 2-second picture with an hour of sound: one second of AAC packets muxed 3600 times over."""
    path = folder / "long_sound.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=2)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=TONE_RATE, layout="mono")
        audio.bit_rate = 12000
        for index in range(4):
            container.mux(video.encode(_frame(np.full((48, 64, 3), 40 * index, np.uint8), index)))
        container.mux(video.encode())
        tone = _tone(1.0)
        packets = [
            packet
            for start in range(0, len(tone) - 1023, 1024)
            for packet in audio.encode(_audio_frame(tone[start : start + 1024], start))
        ]
        span = 1024 * len(packets)
        for repeat in range(-(-3600 * TONE_RATE // span)):
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.stream, copy.time_base, copy.duration = audio, packet.time_base, packet.duration
                copy.pts = copy.dts = packet.pts + repeat * span
                container.mux(copy)
    return path


def long_shapes(folder: Path, repeats: int = 23) -> Path:
    """The shipped solo example (a triangle sounding throughout, 14 s at 1 fps) looped into a 322 s video."""
    with av.open(str(EXAMPLES / "shapes_solo.mp4")) as source:
        frames = [frame.to_ndarray(format="rgb24") for frame in source.decode(video=0)]
    with av.open(str(EXAMPLES / "shapes_solo.mp4")) as source:
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=TONE_RATE)
        sound = np.concatenate(
            [out.to_ndarray()[0] for frame in source.decode(audio=0) for out in resampler.resample(frame)]
        )
    sound = np.pad(sound, (0, max(0, len(frames) * TONE_RATE - len(sound))))[: len(frames) * TONE_RATE]
    path = folder / "long_solo.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=1)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt, video.options = "yuv420p", {"preset": "ultrafast"}
        audio = container.add_stream("aac", rate=TONE_RATE, layout="mono")
        for index in range(repeats * len(frames)):
            container.mux(video.encode(_frame(frames[index % len(frames)], index)))
        container.mux(video.encode())
        looped = np.tile(sound, repeats)
        for start in range(0, len(looped), 1024):
            container.mux(audio.encode(_audio_frame(looped[start : start + 1024], start)))
        container.mux(audio.encode())
    return path


def _frame(pixels: np.ndarray, index: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
    frame.pts = index
    return frame


def _tone(seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * TONE_RATE)) / TONE_RATE)).astype(np.float32)


def _audio_frame(samples: np.ndarray, start: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples[None], dtype=np.float32), format="fltp", layout="mono"
    )
    frame.sample_rate, frame.pts = TONE_RATE, start
    return frame


def _mux_tone(container, stream, seconds: float) -> None:
    tone = _tone(seconds)
    for start in range(0, len(tone), 1024):
        container.mux(stream.encode(_audio_frame(tone[start : start + 1024], start)))
    container.mux(stream.encode())
