"""Overlay rendering and PyAV re-encoding (modeling_avis.visualization, and the app's trimming) on small synthetic videos."""

import av
import numpy as np
import pytest
from scipy import ndimage

from app.media import probe_upload
from modeling_avis.errors import AvisInputError
from modeling_avis.tracks import AvisTrack, AvisVideoResult, encode_mask
from modeling_avis.video_io import probe_video
from modeling_avis.visualization import (
    FILL_OPACITY,
    OverlayDrawing,
    OverlayPainter,
    render_overlay,
    track_colour,
    transcode,
)

from .app_media import decode_rgb, stream_summary, write_video
from .synthetic_media import write_video as write_phone_video

WIDTH, HEIGHT, FPS, NUM_FRAMES = 320, 240, 12, 24


def no_progress(fraction, description):
    pass


def box_mask(top, bottom, left, right, height=HEIGHT, width=WIDTH):
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def result_with(masks_per_track, timestamps, height=HEIGHT, width=WIDTH):
    """An AvisVideoResult whose track k has the masks masks_per_track[k] (one per timestamp)."""
    tracks = [
        AvisTrack(k + 1, 2, "guitar", 0.9 - 0.1 * k, [encode_mask(mask) for mask in masks])
        for k, masks in enumerate(masks_per_track)
    ]
    return AvisVideoResult(tracks, np.asarray(timestamps, dtype=float), height, width, fps=FPS)


@pytest.fixture
def video(tmp_path):
    return probe_video(write_video(tmp_path / "input.mp4", width=WIDTH, height=HEIGHT, fps=FPS, num_frames=NUM_FRAMES))


CONTAINERS = {
    "mp4-h264-aac": (".mp4", "libx264", "aac"),
    "webm-vp9-opus": (".webm", "libvpx-vp9", "libopus"),
    "mkv-h264-opus": (".mkv", "libx264", "libopus"),
    "mov-h264-aac": (".mov", "libx264", "aac"),
}


@pytest.mark.parametrize("suffix, video_codec, audio_codec", CONTAINERS.values(), ids=CONTAINERS.keys())
def test_overlay_is_h264_aac_mp4_with_the_input_frames_and_duration(tmp_path, suffix, video_codec, audio_codec):
    source = write_video(
        tmp_path / f"input{suffix}", width=WIDTH, height=HEIGHT, fps=FPS, num_frames=NUM_FRAMES,
        video_codec=video_codec, audio_codec=audio_codec,
    )  # fmt: skip
    video = probe_video(source)
    result = result_with([[box_mask(100, 200, 20, 120)] * 2], [0.0, 1.0])
    render_overlay(video, result, tmp_path / "overlay.mp4", no_progress)

    summary = stream_summary(tmp_path / "overlay.mp4")
    assert summary["video"]["codec"] == "h264" and summary["video"]["pix_fmt"] == "yuv420p"
    assert summary["video"]["size"] == (WIDTH, HEIGHT)
    assert summary["audio"]["codec"] == "aac"
    assert abs(summary["video"]["frames"] - NUM_FRAMES) <= 1
    assert abs(summary["video"]["duration"] - NUM_FRAMES / FPS) <= 1 / FPS
    assert abs(summary["audio"]["duration"] - NUM_FRAMES / FPS) <= 1 / FPS
    assert len(decode_rgb(tmp_path / "overlay.mp4")) == NUM_FRAMES


def test_pixels_inside_a_mask_take_its_colour_and_pixels_far_from_it_keep_the_input(tmp_path, video):
    mask = box_mask(120, 220, 20, 120)
    render_overlay(video, result_with([[mask]], [0.0]), tmp_path / "overlay.mp4", no_progress)
    source, overlay = decode_rgb(tmp_path / "input.mp4"), decode_rgb(tmp_path / "overlay.mp4")

    for index in (0, NUM_FRAMES // 2, NUM_FRAMES - 1):
        before, after = source[index].astype(float), overlay[index].astype(float)
        inner = box_mask(130, 210, 30, 110)  # away from the contour
        expected = before[inner] + (np.array(track_colour(1)) - before[inner]) * round(255 * FILL_OPACITY) / 255
        assert np.abs(after[inner] - before[inner]).mean() > 40
        assert np.abs(after[inner] - expected).mean() < 3
        # Right of the mask and of its label: untouched up to the two encodings' noise (measured mean 1.4, max 8).
        far = np.abs(after[:, 200:] - before[:, 200:])
        assert far.mean() < 2.5 and far.max() <= 12


def test_masks_are_held_from_one_sampled_frame_to_the_next(tmp_path, video):
    left, right = box_mask(120, 220, 10, 90), box_mask(120, 220, 230, 310)
    # Sampled at 0.5 s and 1.25 s: frames before 0.5 s show the first sampled frame.
    render_overlay(video, result_with([[left, right]], [0.5, 1.25]), tmp_path / "overlay.mp4", no_progress)
    source, overlay = decode_rgb(tmp_path / "input.mp4"), decode_rgb(tmp_path / "overlay.mp4")

    def changed(index, mask):
        inner = mask & np.roll(mask, 8, axis=1) & np.roll(mask, -8, axis=1) & np.roll(mask, 8, axis=0)
        return np.abs(overlay[index][inner].astype(float) - source[index][inner]).mean()

    for index in (0, 3, 6, 14):  # 0.0 s and 0.25 s (before the first timestamp), 0.5 s, 1.17 s
        assert changed(index, left) > 20 and changed(index, right) < 2
    for index in (15, 18, 23):  # 1.25 s, 1.5 s, 1.92 s
        assert changed(index, right) > 20 and changed(index, left) < 2


def test_a_phone_video_keeps_every_frame_at_its_time_with_the_mask_of_its_own_sampled_frame(tmp_path):
    # Frames 25 to 45 ms apart with millisecond timestamps; sampled at 2 fps, sampled frame k has a mask in band k.
    times_ms = (np.cumsum(np.random.default_rng(0).integers(25, 46, size=120)) - 25).tolist()
    source_path = write_phone_video(tmp_path / "phone.mp4", num_frames=120, fps=30, size=(320, 64),
                                    audio_seconds=4.5, frame_times_ms=times_ms)  # fmt: skip
    video = probe_video(source_path)
    sampled = np.arange(0, video.duration, 0.5)
    bands = [box_mask(8, 56, 32 * k + 4, 32 * k + 28, height=64, width=320) for k in range(len(sampled))]
    render_overlay(video, result_with([bands], sampled, height=64, width=320), tmp_path / "overlay.mp4", no_progress)

    with av.open(str(source_path)) as container:
        source = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        overlay = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    assert len(overlay) == len(source) == 120
    start = source[0][0]
    for (time, before), (overlay_time, after) in zip(source, overlay, strict=True):
        assert abs(overlay_time - (time - start)) < 1e-3
        shown = int((time - start + 1e-3) // 0.5)
        # per column, in rows below the label (drawn at the mask's top-left, wider than a band)
        change = np.abs(after[36:56].astype(float) - before[36:56]).mean(axis=(0, 2))
        inside = change[32 * shown + 8 : 32 * shown + 24]
        elsewhere = np.delete(change, np.s_[32 * shown : 32 * shown + 32])
        assert inside.min() > 20 and elsewhere.max() < 3


def test_sample_index_is_the_latest_timestamp_at_or_before_the_frame():
    painter = OverlayPainter(result_with([[box_mask(0, 1, 0, 1)] * 3], [0.5, 1.0, 1.5]))
    times = [0.0, 0.49, 0.5, 0.99, 1.0 - 1e-9, 1.0, 1.2, 1.5, 9.0]
    assert [painter.sample_index(t) for t in times] == [0, 0, 0, 0, 1, 1, 1, 2, 2]


def test_fills_and_contours_are_those_of_the_whole_frame_where_masks_touch_the_border_and_overlap(monkeypatch):
    # each mask is drawn within its box: its fill and contour must be those drawn on the whole frame
    monkeypatch.setattr(OverlayDrawing, "_draw_label", lambda *args: None)
    generator = np.random.default_rng(0)
    blobs = ndimage.gaussian_filter(generator.random((2, HEIGHT, WIDTH)), sigma=(0, 3, 3)) > 0.5
    masks = [blobs[0], blobs[1] & box_mask(50, 200, 0, 150), box_mask(0, 40, 280, 320)]
    overlay = OverlayPainter(result_with([[mask] for mask in masks], [0.0])).draw_overlay(0)

    expected = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    for k in reversed(range(3)):  # lowest score first
        edge = masks[k] & ~ndimage.binary_erosion(masks[k], iterations=2, border_value=0)
        expected[masks[k]] = (*track_colour(k + 1), round(255 * FILL_OPACITY))
        expected[edge] = (*track_colour(k + 1), 255)
    assert np.count_nonzero(expected[..., 3]) > 0.3 * HEIGHT * WIDTH
    assert np.count_nonzero(expected[..., 3] == 255) > 5000
    assert np.array_equal(overlay, expected)


def test_each_track_keeps_its_palette_colour_in_every_frame():
    masks = [[box_mask(10, 60, 10 + 60 * k, 60 + 60 * k)] * 2 for k in range(3)]
    painter = OverlayPainter(result_with(masks, [0.0, 1.0]))
    grey = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    for time in (0.0, 1.0):
        painted = painter(grey, time).astype(float)
        for k in range(3):
            expected = 128 + (np.array(track_colour(k + 1)) - 128) * round(255 * FILL_OPACITY) / 255
            np.testing.assert_allclose(painted[35, 35 + 60 * k], expected, atol=1)
    assert len({track_colour(k) for k in range(1, 21)}) == 20


def test_video_without_audio_gives_an_overlay_without_audio(tmp_path):
    video = probe_video(write_video(tmp_path / "silent.mp4", audio=False))
    assert not video.has_audio
    render_overlay(video, result_with([[box_mask(0, 10, 0, 10)]], [0.0]), tmp_path / "overlay.mp4", no_progress)
    summary = stream_summary(tmp_path / "overlay.mp4")
    assert "audio" not in summary and summary["video"]["frames"] == NUM_FRAMES


def test_odd_sized_video_is_padded_to_even_for_yuv420p_with_its_last_row_and_column_repeated(tmp_path):
    video = probe_video(write_video(tmp_path / "odd.mkv", width=97, height=65, video_codec="mpeg4"))
    transcode(video, tmp_path / "even.mp4", lambda image, time: image, no_progress)
    assert stream_summary(tmp_path / "even.mp4")["video"]["size"] == (98, 66)
    frame = decode_rgb(tmp_path / "even.mp4")[0].astype(int)
    assert np.abs(frame[:, -1] - frame[:, -2]).max() <= 6 and np.abs(frame[-1] - frame[-2]).max() <= 6


def test_until_keeps_only_the_first_seconds_with_sound(tmp_path, video):
    transcode(video, tmp_path / "cut.mp4", lambda image, time: image, no_progress, until=1.0)
    summary = stream_summary(tmp_path / "cut.mp4")
    assert summary["video"]["frames"] == FPS
    assert abs(probe_video(tmp_path / "cut.mp4").duration - 1.0) <= 1 / FPS
    assert abs(summary["audio"]["duration"] - 1.0) <= 0.05


def test_progress_reaches_the_end_of_the_video(tmp_path, video):
    reports = []
    transcode(video, tmp_path / "copy.mp4", lambda image, time: image, lambda f, d: reports.append((f, d)))
    assert len(reports) == NUM_FRAMES and reports[-1] == (1.0, "Rendering")
    assert all(a <= b for (a, _), (b, _) in zip(reports, reports[1:], strict=False))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("corrupt.mp4", b"\x00\x01not a video" * 100, "not a video FFmpeg can read"),
        ("notes.txt", b"hello", "not a video the app takes"),
    ],
    ids=["corrupt", "wrong-suffix"],
)
def test_unusable_files_raise_a_one_line_input_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AvisInputError, match=message) as caught:
        probe_upload(path)
    assert "\n" not in str(caught.value) and name in str(caught.value)


def test_audio_only_file_is_refused_for_having_no_video_track(tmp_path):
    import av

    path = tmp_path / "tone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4800), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(AvisInputError, match="has no video stream"):
        probe_upload(path)


def test_a_rotated_video_is_rendered_upright_at_the_size_of_its_masks(tmp_path):
    from .synthetic_media import write_video as write_marked_video

    video = probe_video(write_marked_video(tmp_path / "phone.mp4", num_frames=12, fps=12, size=(64, 48), rotation=90))
    assert (video.width, video.height, video.rotation) == (48, 64, 90)
    render_overlay(video, result_with([], [0.0], height=64, width=48), tmp_path / "overlay.mp4", no_progress)
    first = decode_rgb(tmp_path / "overlay.mp4")[0]
    assert first.shape == (64, 48, 3)
    # The coded frame's marked top-left corner is bottom-left once the frame is upright.
    assert first[-8:, :8].mean() > 200 and first[:8, :8].mean() < 60
