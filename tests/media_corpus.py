"""The media people actually have, written with PyAV at test time (nothing large is committed).

Every maker takes a folder and returns the path it wrote: broken files (zero bytes, truncated, text renamed .mp4),
files of the wrong kind (audio only, still images), odd geometry (1x1, 17x3, 4096x2, 4K, rotated), odd clocks (a
phone's variable frame rate, a short picture with an hour of sound), no sound, no frames, and a long video whose
sounding shape is present throughout (the shipped default model finds the shapes).
"""

import io
import struct
import zlib
from fractions import Fraction
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


# --- hostile and unusual files: what a crafted upload can be ------------------------------------------------------


def surround(codec: str, layout: str, suffix: str, rate: int = 48000, seconds: float = 2.0):
    """A maker of a 64x48 video whose sound has `layout`'s channels (7.1, 22.2 ...) in `codec`.

    PyAV 18.1 cannot make planar frames of 8 channels or more from arrays (nor read them back): the tone is made as
    interleaved samples and resampled to the encoder's format by FFmpeg.
    """

    def make(folder: Path) -> Path:
        path = folder / f"sound_{layout.replace('.', '_')}_{codec}{suffix}"
        with av.open(str(path), "w") as container:
            video = container.add_stream("libx264", rate=4)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            audio = container.add_stream(codec, rate=rate, layout=layout)
            for index in range(round(seconds * 4)):
                container.mux(video.encode(_frame(np.full((48, 64, 3), 30 * index, np.uint8), index)))
            container.mux(video.encode())
            _mux_interleaved_tone(container, audio, layout, rate, seconds)
        return path

    return make


def surround_wav(path: Path, layout: str = "7.1", seconds: float = 3.0, rate: int = 16000) -> Path:
    """A PCM WAV of `layout`'s channels."""
    with av.open(str(path), "w") as container:
        _mux_interleaved_tone(
            container, container.add_stream("pcm_s16le", rate=rate, layout=layout), layout, rate, seconds
        )
    return path


def _mux_interleaved_tone(container, stream, layout: str, rate: int, seconds: float) -> None:
    channels = len(av.AudioLayout(layout).channels)
    frame_size = stream.codec_context.frame_size or 1024
    resampler = av.AudioResampler(
        format=stream.codec_context.format.name, layout=layout, rate=rate, frame_size=frame_size
    )
    total = round(seconds * rate)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / rate)
    for start in range(0, total, frame_size):
        piece = tone[start : start + frame_size]
        interleaved = np.repeat(piece, channels).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(interleaved, format="flt", layout=layout)
        frame.sample_rate, frame.pts = rate, start
        for out in resampler.resample(frame):
            container.mux(stream.encode(out))
    for out in resampler.resample(None):
        container.mux(stream.encode(out))
    container.mux(stream.encode())


def under_declared_mp4(seconds: int, declared: float):
    """A maker of an mp4 of `seconds` at 2 fps whose duration fields (mvhd, tkhd, mdhd) say `declared` seconds."""

    def make(folder: Path) -> Path:
        source = _gradient_video(folder / "honest.mp4", seconds)
        path = folder / "lying_header.mp4"
        path.write_bytes(_patched_mp4_durations(source.read_bytes(), declared))
        source.unlink()
        return path

    return make


def under_declared_mkv(seconds: int, declared: float):
    """A maker of a Matroska file of `seconds` at 2 fps whose Segment Duration says `declared` seconds."""

    def make(folder: Path) -> Path:
        source = _gradient_video(folder / "honest.mkv", seconds)
        data = bytearray(source.read_bytes())
        at = data.find(b"\x44\x89")  # the Duration element, a float of milliseconds (the default TimecodeScale)
        if data[at + 2] == 0x88:
            data[at + 3 : at + 11] = struct.pack(">d", declared * 1000)
        else:
            data[at + 3 : at + 7] = struct.pack(">f", declared * 1000)
        path = folder / "lying_header.mkv"
        path.write_bytes(bytes(data))
        source.unlink()
        return path

    return make


def _gradient_video(path: Path, seconds: int, fps: int = 2) -> Path:
    from .app_media import write_video as write_gradient_video

    return write_gradient_video(path, width=64, height=48, fps=fps, num_frames=seconds * fps)


def _patched_mp4_durations(data: bytes, seconds: float) -> bytes:
    """An mp4 whose mvhd, tkhd and mdhd boxes declare `seconds` (in each box's timescale; tkhd in the movie's)."""
    data = bytearray(data)
    movie_scale = None
    for box in (b"mvhd", b"mdhd", b"tkhd"):
        at = data.find(box)
        while at != -1:
            version, body = data[at + 4], at + 8  # after the box type: version (1), flags (3)
            if box == b"tkhd":
                field, scale = body + (20 if version else 12), movie_scale  # times, track id, reserved
            else:
                scale_at = body + (16 if version else 8)  # creation and modification times
                scale = struct.unpack(">I", data[scale_at : scale_at + 4])[0]
                movie_scale = scale if box == b"mvhd" else movie_scale
                field = scale_at + 4
            value = round(seconds * scale)
            data[field : field + (8 if version else 4)] = struct.pack(">Q" if version else ">I", value)
            at = data.find(box, at + 4)
    return bytes(data)


def frames_hours_apart(folder: Path) -> Path:
    """A tiny Matroska file of two frames 10 hours apart (36,000 sampling times at 1 fps between them)."""
    path = folder / "ten_hours.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for index, milliseconds in enumerate((0, 36_000_000)):
            frame = _frame(np.full((48, 64, 3), 60 + 100 * index, np.uint8), milliseconds)
            frame.time_base = Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _jpeg(width: int, height: int, value: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), value if mode == "L" else (value,) * 3).save(buffer, "JPEG")
    return buffer.getvalue()


def _mjpeg_video(path: Path, pictures: list[bytes], fps: int = 4) -> Path:
    """A Matroska file of JPEG pictures, each packet a whole picture (of any size)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        container.start_encoding()
        for index, picture in enumerate(pictures):
            packet = av.Packet(picture)
            packet.stream, packet.time_base = stream, Fraction(1, fps)
            packet.pts = packet.dts = index
            container.mux(packet)
    return path


def oversized_later_frames(folder: Path) -> Path:
    """A 6 MB video whose first frames are 64x48 and whose later ones are 9000x9000 (81 million pixels)."""
    small = [_jpeg(64, 48, 20 + 30 * index) for index in range(4)]
    return _mjpeg_video(folder / "grows.mkv", small + [_jpeg(9000, 9000, 200, "L")] * 2)


def size_changing_frames(folder: Path) -> Path:
    """A video whose frames between the sampled ones are of another size (a stream that changes size part-way)."""
    pictures = [_jpeg(64, 48, 40) if index % 4 == 0 else _jpeg(96, 80, 160) for index in range(12)]
    return _mjpeg_video(folder / "resized.mkv", pictures)


def raw_h264(folder: Path) -> Path:
    """A raw H.264 stream: no container, no timestamps."""
    return write_video(folder / "camera.h264", num_frames=24, fps=12, size=(64, 48), container_format="h264")


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (grey) and holds no pixels: readers that trust its header allocate them."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def aviseg_frames(folder: Path, frames: int = 3, wav_layout: str | None = None) -> Path:
    """An AVISeg frame folder `<folder>/aviseg/JPEGImages/clip/` of `frames` 64x48 JPEGs (1 fps), with a
    `WAVAudios/clip.wav` of `wav_layout`'s channels beside it when given."""
    frames_folder = folder / "aviseg" / "JPEGImages" / "clip"
    frames_folder.mkdir(parents=True)
    for index in range(frames):
        Image.fromarray(np.full((48, 64, 3), 40 + 50 * index, np.uint8)).save(frames_folder / f"{index:05d}.jpg")
    if wav_layout is not None:
        (folder / "aviseg" / "WAVAudios").mkdir()
        surround_wav(folder / "aviseg" / "WAVAudios" / "clip.wav", wav_layout, seconds=frames + 1.0)
    return frames_folder
