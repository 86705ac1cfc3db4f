import av
import numpy as np
import pytest

from modeling_avis.errors import AvisInputError
from modeling_avis.video_io import probe_video, read_audio, read_frame_folder, read_frames

from .fixture_data import MEDIA
from .synthetic_media import frame_value, write_video, write_wav

CLIPS = sorted(MEDIA.glob("*.mp4"))


@pytest.mark.parametrize("clip", CLIPS, ids=[c.stem for c in CLIPS])
def test_avisseg_clip_decodes_one_frame_per_second_at_whole_seconds(clip):
    info = probe_video(clip)
    frames = list(read_frames(clip, fps=1.0))
    assert (info.fps, info.duration) == (24.0, 5.0)
    assert [f.time for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert frames[0].image.shape == (info.height, info.width, 3) and frames[0].image.dtype == np.uint8


@pytest.mark.parametrize("clip", CLIPS, ids=[c.stem for c in CLIPS])
def test_avisseg_clip_decodes_every_frame_at_the_native_rate(clip):
    frames = list(read_frames(clip, fps=None))
    assert len(frames) == 120
    np.testing.assert_allclose([f.time for f in frames], np.arange(120) / 24, atol=1e-9)
    # The 1 fps frames are the native frames 0, 24, 48, ...: the same pixels.
    np.testing.assert_array_equal(list(read_frames(clip, fps=1.0))[2].image, frames[48].image)


@pytest.mark.parametrize("clip", CLIPS, ids=[c.stem for c in CLIPS])
def test_avisseg_clip_audio_covers_the_video(clip):
    audio = read_audio(clip, 16000)
    assert audio.sample_rate == 16000 and audio.samples.dtype == np.float32
    assert audio.start == 0.0 and audio.end >= 5.0
    assert 0.05 < np.abs(audio.samples).max() <= 1.0


def test_sampling_above_the_native_rate_takes_each_frame_once(tmp_path):
    path = write_video(tmp_path / "clip.mp4", num_frames=12, fps=12)
    assert len(list(read_frames(path, fps=30.0))) == 12


def test_max_frames_and_max_duration_stop_sampling(tmp_path):
    path = write_video(tmp_path / "clip.mp4", num_frames=48, fps=12)
    assert [f.time for f in read_frames(path, fps=2.0, max_frames=3)] == [0.0, 0.5, 1.0]
    assert [f.time for f in read_frames(path, fps=1.0, max_duration=2.5)] == [0.0, 1.0, 2.0]


def test_variable_frame_rate_samples_the_frame_on_screen_at_each_second(tmp_path):
    times_ms = [0, 100, 900, 1033, 2600]
    path = write_video(tmp_path / "vfr.mp4", num_frames=5, frame_times_ms=times_ms)
    native = list(read_frames(path, fps=None))
    np.testing.assert_allclose([f.time for f in native], np.array(times_ms) / 1000, atol=1e-3)
    sampled = list(read_frames(path, fps=1.0))
    # On screen at 0, 1, 2, 3 s: the frames shown from 0, 0.9, 1.033 and 2.6 s (frames 0, 2, 3, 4).
    assert [f.time for f in sampled] == [0.0, 1.0, 2.0, 3.0]
    assert [int(f.image.mean()) for f in sampled] == pytest.approx([frame_value(i) for i in (0, 2, 3, 4)], abs=3)


def test_variable_frame_rate_below_the_sampling_rate_repeats_frames(tmp_path):
    # Four frames over 10 s: about one a second on average, but timestamps on a 10 fps grid, so 2 fps is not lowered.
    path = write_video(tmp_path / "slides.mp4", num_frames=4, frame_times_ms=[0, 100, 3000, 10000])
    info = probe_video(path)
    assert info.fps < 2 and info.base_fps == 10.0
    sampled = list(read_frames(path, fps=2.0))
    assert [f.time for f in sampled][:10] == [k / 2 for k in range(10)]
    shown = [0, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [int(f.image.mean()) for f in sampled][:10] == pytest.approx([frame_value(i) for i in shown], abs=3)


def test_display_rotation_turns_frames_upright(tmp_path):
    path = write_video(tmp_path / "phone.mp4", num_frames=2, size=(64, 48), rotation=90)
    image = next(read_frames(path)).image
    assert image.shape == (64, 48, 3)
    # Turned 90 degrees counter-clockwise, the marked top-left corner is now bottom-left.
    assert image[-8:, :8].mean() > 240 and image[:8, :8].mean() < 40


def test_video_without_audio_track_reads_no_audio(tmp_path):
    path = write_video(tmp_path / "silent.mp4")
    assert probe_video(path).has_audio is False
    assert read_audio(path) is None


def test_audio_shorter_than_the_video_ends_early(tmp_path):
    path = write_video(tmp_path / "short.mp4", num_frames=72, fps=24, audio_seconds=1.5)
    audio = read_audio(path)
    assert 1.5 <= audio.end < 1.6


def test_frame_folder_is_ordered_by_frame_number(tmp_path):
    for name in ["00010.jpg", "00002.jpg", "00001.jpg"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in read_frame_folder(tmp_path)] == ["00001.jpg", "00002.jpg", "00010.jpg"]


def test_frame_folder_without_jpegs_is_refused(tmp_path):
    with pytest.raises(AvisInputError, match="holds no .jpg or .png frames"):
        read_frame_folder(tmp_path)


def _faststart_noise(tmp_path):
    """Two seconds of noise frames with the index (moov) before the data, so a cut file still opens."""
    path = tmp_path / "noise.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(48):
            noise = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(noise, format="rgb24")))
        container.mux(stream.encode())
    return path


def _truncated_faststart(tmp_path):
    path = _faststart_noise(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbled_middle(tmp_path):
    path = _faststart_noise(tmp_path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _moov_at_end_truncated(tmp_path):
    path = write_video(tmp_path / "cut.mp4", audio_seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _unknown_codec(tmp_path):
    path = write_video(tmp_path / "odd.avi", container_format="avi", codec="mpeg4")
    path.write_bytes(path.read_bytes().replace(b"FMP4", b"ZZZZ"))
    return path


def _huge(tmp_path):
    path = tmp_path / "huge.nut"
    with av.open(str(path), "w", format="nut") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8704, 4352, "gray"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((4352, 8704), np.uint8), format="gray")))
        container.mux(stream.encode())
    return path


BAD_INPUTS = {
    "zero_frames_mp4": (
        lambda d: write_video(d / "empty.mp4", num_frames=0),
        "empty.mp4: the file has no video stream",
    ),
    "zero_frames_mkv": (lambda d: write_video(d / "empty.mkv", num_frames=0), "empty.mkv: the file is empty or holds"),
    "zero_frames_avi": (
        lambda d: write_video(d / "empty.avi", num_frames=0, container_format="avi", codec="mpeg4"),
        "empty.avi: the video stream holds no frames",
    ),
    "truncated_moov_at_end": (_moov_at_end_truncated, "cut.mp4: not a video FFmpeg can read; the file may be corrupt"),
    "truncated_faststart": (_truncated_faststart, "noise.mp4: the video is truncated or corrupt after 1"),
    "garbled_data": (_garbled_middle, "noise.mp4: the video is corrupt or truncated: decoding failed after 2"),
    "text_file": (
        lambda d: (d / "notes.mp4").write_text("not a video\n" * 20) and d / "notes.mp4",
        "notes.mp4: not a video FFmpeg can read",
    ),
    "empty_file": (
        lambda d: (d / "zero.mp4").write_bytes(b"") or d / "zero.mp4",
        r"zero.mp4: the file is empty \(0 bytes\)",
    ),
    "audio_only_wav": (lambda d: write_wav(d / "speech.wav", 1.0), "speech.wav: the file has no video stream"),
    "unsupported_codec": (_unknown_codec, "odd.avi: its video codec is not supported by this FFmpeg build"),
    "huge_resolution": (_huge, r"huge.nut: frames of 8704x4352 are over the limit of 35.4 million pixels"),
    "missing_file": (lambda d: d / "nowhere.mp4", "nowhere.mp4: no such file"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_video_raises_a_one_line_input_error(tmp_path, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(AvisInputError, match=message) as raised:
        list(read_frames(path))
    assert "\n" not in str(raised.value)
