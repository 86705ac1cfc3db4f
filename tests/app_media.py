"""Videos written with PyAV for the app's tests (smooth moving gradients and a sine tone), headers that lie, and a
clip as the Live tab receives it (its pictures and sound as they arrive, a chunk of the page's microphone, Chromium's
fake camera and microphone)."""

import struct
import wave
from fractions import Fraction
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
    hold: int = 1,
    layout: str = "stereo",
) -> Path:
    """A `num_frames / fps` seconds video (and a tone of the same length, in `layout`'s channels) at `path`; the
    suffix picks the container. hold: frames each picture stays for (with the fastest preset: cheap to write at any
    size)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if video_codec == "libx264":
            video.options = {"crf": "8", "preset": "veryfast"} if hold == 1 else {"crf": "30", "preset": "ultrafast"}
        tone = container.add_stream(audio_codec, rate=48000, layout=layout) if audio else None
        picture = None
        for index in range(num_frames):
            if index % hold == 0:
                image = gradient_frame(index // hold * 40 if hold > 1 else index, width, height)
                picture = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            picture.pts = index
            container.mux(video.encode(picture))
        container.mux(video.encode())
        if tone is not None:
            _mux_tone(container, tone, num_frames / fps)
    return path


def _mux_tone(container, stream, seconds: float) -> None:
    """A sine tone in every channel of `stream`'s layout, written as interleaved samples and resampled to the
    encoder's format (PyAV 18.1 cannot build planar frames of 8 channels: from_ndarray misreads them)."""
    layout = stream.codec_context.layout
    channels = len(layout.channels)
    resampler = av.AudioResampler(
        format=stream.codec_context.format.name, layout=layout.name, rate=48000, frame_size=stream.frame_size or 1024
    )
    samples = round(48000 * seconds)
    wave = (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(samples) / 48000)).astype(np.float32)
    for start in range(0, samples, 960):
        chunk = np.repeat(wave[start : start + 960, None], channels, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout=layout.name)
        frame.sample_rate, frame.pts = 48000, start
        for resampled in resampler.resample(frame):
            container.mux(stream.encode(resampled))
    for resampled in resampler.resample(None):
        container.mux(stream.encode(resampled))
    container.mux(stream.encode())


def write_burst_video(path: Path, *, frames: int, per_second: int, width: int = 640, height: int = 360) -> Path:
    """`frames` copies of one coded frame, `per_second` of them each second by their timestamps: a file of a few
    kilobytes a frame that asks the decoder for thousands of frames a second."""
    seed = path.with_name(f"{path.stem}_seed.mp4")
    with av.open(str(seed), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "51", "g": "1"}
        picture = av.VideoFrame.from_ndarray(gradient_frame(0, width, height), format="rgb24")
        container.mux(stream.encode(picture))
        container.mux(stream.encode())
    time_base = Fraction(1, per_second)
    with av.open(str(seed)) as source, av.open(str(path), "w") as container:
        coded = next(packet for packet in source.demux(video=0) if packet.size)
        stream = container.add_stream_from_template(source.streams.video[0])
        for index in range(frames):
            packet = av.Packet(bytes(coded))
            packet.stream, packet.time_base, packet.pts, packet.dts = stream, time_base, index, index
            packet.is_keyframe = True
            container.mux(packet)
    seed.unlink()
    return path


def understate_mp4_duration(path: Path, seconds: float = 1.0) -> Path:
    """Patches an mp4's header to say it lasts `seconds` (the movie's mvhd, and each track's tkhd and mdhd), leaving
    its frames and sound as they are: a header that under-declares the length."""
    data = bytearray(path.read_bytes())
    movie_scale = None

    def boxes(start: int, end: int):
        while start + 8 <= end:
            size, kind = struct.unpack_from(">I4s", data, start)
            header = 8
            if size == 1:
                size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
            elif size == 0:
                size = end - start
            yield kind, start + header, start + size
            start += size

    def scale_of(body: int) -> int:  # mvhd and mdhd: version, flags, two times, then the timescale
        return struct.unpack_from(">I", data, body + (12 if data[body] == 0 else 20))[0]

    def set_duration(body: int, offset: int, offset_64: int, scale: int) -> None:
        if data[body] == 0:
            struct.pack_into(">I", data, body + offset, round(seconds * scale))
        else:
            struct.pack_into(">Q", data, body + offset_64, round(seconds * scale))

    def visit(start: int, end: int) -> None:
        nonlocal movie_scale
        for kind, body, stop in boxes(start, end):
            if kind in (b"moov", b"trak", b"mdia"):
                visit(body, stop)
            elif kind == b"mvhd":
                movie_scale = scale_of(body)
                set_duration(body, 16, 24, movie_scale)
            elif kind == b"tkhd":  # in the movie's timescale, after the track id and a reserved word
                set_duration(body, 20, 28, movie_scale)
            elif kind == b"mdhd":
                set_duration(body, 16, 24, scale_of(body))

    visit(0, len(data))
    path.write_bytes(bytes(data))
    return path


def understate_mkv_duration(path: Path, seconds: float = 1.0) -> Path:
    """Patches a Matroska file's Segment Duration (element 0x4489, an 8-byte float in milliseconds as FFmpeg writes
    it, at the default timecode scale) to say it lasts `seconds`."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88")
    struct.pack_into(">d", data, at + 3, seconds * 1000)
    path.write_bytes(bytes(data))
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


def live_arrivals(path: Path) -> list[tuple[float, np.ndarray | av.AudioFrame]]:
    """A clip as a live source gives it: each picture (RGB) at its time, and each audio frame once it has been heard
    (at its end), in the order they arrive."""
    with av.open(str(path)) as container:
        pictures = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        sound = [(frame.time + frame.samples / frame.sample_rate, frame) for frame in container.decode(audio=0)]
    return sorted(pictures + sound, key=lambda arrival: arrival[0])


def streamed_wav(samples: np.ndarray, rate: int) -> bytes:
    """16-bit mono PCM as a chunk of the page's microphone: a wav whose header gives the lengths of an endless
    stream (as the recorder gradio's page uses writes them)."""
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFF7) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
    return header + b"data" + struct.pack("<I", 0xFFFFFFD3) + samples.astype("<i2").tobytes()


def write_fake_devices(path: Path, folder: Path, repeat: int = 5) -> tuple[Path, Path]:
    """The clip at `path` as Chromium's fake camera and microphone play them (`--use-file-for-fake-video-capture`,
    `--use-file-for-fake-audio-capture`, both looped): a YUV4MPEG2 file of its pictures, each shown `repeat` times
    at `repeat` times its frame rate, and a 16-bit PCM wav of its sound."""
    y4m, wav = folder / f"{path.stem}.y4m", folder / f"{path.stem}.wav"
    with av.open(str(path)) as container, y4m.open("wb") as out:
        stream = container.streams.video[0]
        rate = stream.average_rate * repeat
        out.write(
            f"YUV4MPEG2 W{stream.width} H{stream.height} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg\n".encode()
        )
        for frame in container.decode(stream):
            planes = frame.reformat(format="yuv420p").to_ndarray().tobytes()
            out.write((b"FRAME\n" + planes) * repeat)
    with av.open(str(path)) as container:
        sample_rate = container.streams.audio[0].rate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        pieces = [
            piece.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for piece in resampler.resample(frame)
        ]
        pieces += [piece.to_ndarray().reshape(-1) for piece in resampler.resample(None)]
    with wave.open(str(wav), "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(sample_rate)
        sound.writeframes(np.concatenate(pieces).astype("<i2").tobytes())
    return y4m, wav
