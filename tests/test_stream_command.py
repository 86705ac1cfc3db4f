"""`python -m modeling_avis stream SOURCE`: one JSON line per window as the stream comes, from a pipe fed at real
time, a file, or a file paced as if live; the overlay that plays while it grows; the results JSON of the stream;
Ctrl-C and a closed stdout; bad input in one line; one track id through the 322 s one-shape video.

The pipes carry the shipped examples re-encoded as MPEG-TS, as a live encoder sends them, written at test time.
"""

import json
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from modeling_avis.__main__ import main
from modeling_avis.tracks import AvisStreamTrack, AvisStreamUpdate, decode_mask
from modeling_avis.visualization import LiveOverlay
from training.evaluation import evaluate_predictions

from . import media_corpus
from .app_media import stream_summary
from .entry_cases import Case, fresh_accelerate_state, out, run_case  # noqa: F401 (the fixture applies here)
from .test_real_world_inputs import looped_ground_truth

EXAMPLES = Path(__file__).parents[1] / "app" / "examples"
ROOT = Path(__file__).parents[1]
# An AAC track is longer than its sound by the encoder's priming and the padding of its last frame: two frames of
# 1024 samples, 0.128 s at 16 kHz.
AAC_PADDING = 0.13


def live_ts(example: str, folder: Path) -> Path:
    """The shipped example re-encoded as MPEG-TS as a live encoder sends it: H.264 without lookahead or B-frames
    (each frame's packet as soon as it is encoded), AAC, the two interleaved by time."""
    source = EXAMPLES / f"{example}.mp4"
    with av.open(str(source)) as container:
        pictures = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(source)) as container:
        sound = list(container.decode(audio=0))
    path = folder / f"{example}.ts"
    with av.open(str(path), "w", format="mpegts") as container:
        video = container.add_stream("libx264", rate=1, options={"preset": "ultrafast", "tune": "zerolatency"})
        video.height, video.width = pictures[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono")
        for index, picture in enumerate([*pictures, None]):
            if picture is not None:
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = index
            container.mux(video.encode(frame if picture is not None else None))
            while sound and (picture is None or sound[0].time < index + 1):
                piece = sound.pop(0)
                piece.pts = None
                container.mux(audio.encode(piece))
        container.mux(audio.encode())
    return path


def feed_at_real_time(pipe, path: Path) -> float:
    """Writes the MPEG-TS file at `path` into `pipe` as a live source sends it (each packet's bytes once its time
    has come, by the wall clock from the first packet's), then closes it; returns when the last byte went."""
    with av.open(str(path)) as container:
        packets = sorted(
            (packet.pos, float(packet.dts * packet.time_base))
            for packet in container.demux()
            if packet.pos is not None and packet.dts is not None
        )
    data = path.read_bytes()
    start, sent, due = time.monotonic(), 0, 0.0
    for (_, seconds), end in zip(packets, [pos for pos, _ in packets[1:]] + [len(data)]):
        due = max(due, seconds - packets[0][1])
        time.sleep(max(0.0, start + due - time.monotonic()))
        pipe.write(data[sent:end])
        pipe.flush()
        sent = end
    pipe.close()
    return time.monotonic()


def avis(*arguments: str, **popen) -> subprocess.Popen:
    """`python -m modeling_avis ...` in a process of its own, stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "modeling_avis", *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def frames_and_ids(lines: list[dict]) -> tuple[list[int], set[int]]:
    """Every line's sampled frames, in the order they came, and every track id."""
    frames = [frame["index"] for line in lines for frame in line["frames"]]
    return frames, {track["id"] for line in lines for track in line["tracks"]}


def test_a_pipe_at_real_time_is_answered_as_it_comes_and_its_overlay_plays_while_it_grows(tmp_path):
    feed = live_ts("shapes_solo", tmp_path)  # 14 s at 1 frame a second
    overlay = tmp_path / "overlay.ts"
    process = avis("stream", "-", "--out", str(overlay), stdin=subprocess.PIPE)
    ready = process.stderr.readline().decode()
    assert ready.startswith("reading <stdin>: windows of 5 sampled frames every 1"), ready
    feed_end = []
    feeder = threading.Thread(target=lambda: feed_end.append(feed_at_real_time(process.stdin, feed)))
    feeder.start()
    lines, arrived, played_while_growing = [], [], None
    for line in process.stdout:
        lines.append(json.loads(line))
        arrived.append(time.monotonic())
        if len(lines) == 9:  # the stream is still coming: the overlay so far plays
            played_while_growing = video_frames(overlay)
    feeder.join()
    assert process.wait() == 0, process.stderr.read().decode()
    assert arrived[0] < feed_end[0]
    assert arrived[-1] - feed_end[0] < 2.0
    frames, ids = frames_and_ids(lines)
    assert frames == list(range(14)) and ids == {1}
    assert 1 <= played_while_growing < 14 and video_frames(overlay) == 14
    assert stream_summary(overlay)["audio"]["duration"] == pytest.approx(14.0, abs=AAC_PADDING)


@pytest.mark.parametrize(
    ("example", "window", "stride", "frames_per_line", "ids"),
    [
        ("shapes_duet", 5, 1, [1] * 13, {1, 2}),
        ("shapes_solo", 5, 1, [1] * 14, {1}),
        ("shapes_duet", 4, 3, [3, 3, 3, 3, 1], None),
    ],
)
def test_each_sampled_frame_comes_once_in_order_with_the_tracks_of_the_example(
    capsys, example, window, stride, frames_per_line, ids
):
    video = EXAMPLES / f"{example}.mp4"
    assert main(["stream", str(video), "--window", str(window), "--stride", str(stride)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    frames, seen = frames_and_ids(lines)
    assert [len(line["frames"]) for line in lines] == frames_per_line and [line["window"] for line in lines] == list(
        range(len(lines))
    )
    assert frames == list(range(sum(frames_per_line)))
    assert [frame["time"] for line in lines for frame in line["frames"]] == [float(k) for k in frames]
    assert all(frame["latency"] >= 0 for line in lines for frame in line["frames"])
    for line in lines:
        for track in line["tracks"]:
            assert len(track["masks"]) == len(line["frames"])
            assert decode_mask(track["masks"][0]).shape == (288, 384)
            assert track["class"] in {"circle", "square", "triangle", "diamond"}
    if ids is not None:
        assert seen == ids


def test_the_results_json_of_a_stream_scores_as_the_offline_predict_and_its_overlay_has_every_frame(tmp_path, capsys):
    video, truth = EXAMPLES / "shapes_duet.mp4", EXAMPLES / "shapes_duet.json"
    online, offline, overlay = tmp_path / "online.json", tmp_path / "offline.json", tmp_path / "duet.ts"
    assert main(["stream", str(video), "--json", str(online), "--out", str(overlay)]) == 0
    assert main(["predict", str(video), "--json", str(offline)]) == 0
    online_metrics, offline_metrics = evaluate_predictions(truth, online), evaluate_predictions(truth, offline)
    assert abs(online_metrics["HOTA"] - offline_metrics["HOTA"]) <= 5.0
    assert len(json.loads(online.read_text())) == 2
    summary = stream_summary(overlay)
    assert video_frames(overlay) == 13 and summary["video"]["size"] == (384, 288)
    assert summary["audio"]["duration"] == pytest.approx(13.0, abs=AAC_PADDING)


def test_ctrl_c_ends_with_the_lines_so_far_and_both_files_complete(tmp_path):
    overlay, results = tmp_path / "overlay.ts", tmp_path / "results.json"
    video = EXAMPLES / "shapes_solo.mp4"
    process = avis("stream", str(video), "--realtime", "--out", str(overlay), "--json", str(results))
    lines = []
    for line in process.stdout:
        lines.append(json.loads(line))
        if len(lines) == 5:
            process.send_signal(signal.SIGINT)
    stderr = process.stderr.read().decode()
    assert process.wait() == 130 and "Traceback" not in stderr and stderr.splitlines()[-1] == "interrupted"
    frames, _ = frames_and_ids(lines)
    assert 5 <= len(lines) < 14 and frames == list(range(len(lines)))
    assert video_frames(overlay) == len(lines)  # one source frame a second
    assert [len(entry["segmentations"]) for entry in json.loads(results.read_text())] == [len(lines)]


def test_a_closed_stdout_ends_the_stream_quietly_with_the_results_so_far(tmp_path):
    results = tmp_path / "results.json"
    process = avis("stream", str(EXAMPLES / "shapes_solo.mp4"), "--realtime", "--json", str(results))
    for _ in range(2):
        json.loads(process.stdout.readline())
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait() == 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    (entry,) = json.loads(results.read_text())
    assert 2 <= len(entry["segmentations"]) < 14


def test_the_live_overlay_holds_each_frame_until_its_sampled_frame_is_in_and_paints_its_masks(tmp_path):
    """Frames at 4 a second and sampled frames at 1 a second whose masks are bands 16 pixels apart: each frame
    shows the band of the latest sampled frame at or before it, whichever of frames and masks came first; a stream
    cut short keeps the frames whose masks were in."""
    grey = np.full((48, 64, 3), 128, dtype=np.uint8)

    def update(k: int) -> AvisStreamUpdate:
        mask = np.zeros((48, 64), dtype=bool)
        mask[4:46, 16 * k : 16 * k + 16] = True
        return AvisStreamUpdate([k], [float(k)], [AvisStreamTrack(1, 0, "circle", 0.9, mask[None])])

    def frame(index: int) -> av.VideoFrame:
        picture = av.VideoFrame.from_ndarray(grey, format="rgb24")
        picture.pts, picture.time_base = index, Fraction(1, 4)
        return picture

    def write(path: Path, updates: int, ended: bool) -> list[np.ndarray]:
        overlay = LiveOverlay(path, 1.0, Fraction(1, 4), Fraction(4), None)
        for index in range(8):
            overlay.add_video_frame(frame(index), index / 4)
        for k in range(min(updates, 2)):
            overlay.add_update(update(k))
        for index in range(8, 16):
            overlay.add_video_frame(frame(index), index / 4)
        for k in range(2, updates):
            overlay.add_update(update(k))
        assert overlay.finish(ended)
        with av.open(str(path)) as container:
            return [picture.to_ndarray(format="rgb24") for picture in container.decode(video=0)]

    for painted, expected_frames in (
        (write(tmp_path / "all.ts", 4, True), 16),
        (write(tmp_path / "cut.ts", 3, False), 12),
    ):
        assert len(painted) == expected_frames
        for index, image in enumerate(painted):
            change = np.abs(image[28:44].astype(float) - 128).mean(axis=(0, 2))  # below the label
            band = index // 4
            assert change[16 * band + 3 : 16 * band + 13].min() > 20
            assert np.delete(change, np.s_[16 * band : 16 * band + 16]).max() < 3


# --- bad and unusual input, through the table-driven corpus (`entry_cases`) -------------------------------------


def stream(make_video, *extra: str, overlay: str = "overlay.ts"):
    def make(folder: Path) -> list[str]:
        video = make_video(folder)
        outputs = ["--json", str(out(folder) / "results.json"), "--out", str(out(folder) / overlay)]
        return ["stream", str(video), *outputs, *extra]

    return make


def answered(frames: int, source_frames: int, seconds: float, note: str | None = None):
    """`frames` sampled frames in the lines and the results JSON, an overlay of `source_frames` with stereo sound
    lasting `seconds`, and `note` on stderr."""

    def check(folder: Path, stdout: str, stderr: str) -> None:
        lines = [json.loads(line) for line in stdout.splitlines()]
        assert frames_and_ids(lines)[0] == list(range(frames))
        for entry in json.loads((folder / "out" / "results.json").read_text()):
            assert len(entry["segmentations"]) == frames
        overlay = folder / "out" / "overlay.ts"
        summary = stream_summary(overlay)
        assert video_frames(overlay) == source_frames
        assert summary["audio"]["duration"] == pytest.approx(seconds, abs=AAC_PADDING)
        with av.open(str(overlay)) as container:
            assert container.streams.audio[0].layout.name == "stereo"
        assert (note is None and "note:" not in stderr) or (note is not None and f"note: {note}" in stderr)

    return check


def existing_overlay(folder: Path) -> list[str]:
    (out(folder) / "overlay.ts").write_bytes(b"the user's file")
    return stream(media_corpus.no_audio)(folder)


CASES = {
    "zero_bytes": Case("stream", stream(media_corpus.zero_bytes), "zero.mp4: the file is empty (0 bytes)"),
    "truncated_part_way": Case("stream", stream(media_corpus.truncated), "cut.mp4: the video is truncated or corrupt"),
    "text_renamed_mp4": Case("stream", stream(media_corpus.text_renamed), "notes.mp4: not a video FFmpeg can read"),
    "no_video_stream": Case("stream", stream(media_corpus.audio_only), "song.m4a: the file has no video stream"),
    "7_1_sound": Case("stream", stream(media_corpus.surround("aac", "7.1", ".mp4")), check=answered(2, 8, 2.0)),
    "header_says_1_s_of_20_capped_at_8": Case(
        "stream",
        stream(media_corpus.under_declared_mp4(20, 1.0), "--max-seconds", "8"),
        check=answered(8, 16, 8.0, "the video runs past 8 s: only its first 8 s were analysed"),
    ),
    "overlay_of_another_format": Case(
        "stream",
        stream(media_corpus.no_audio, overlay="overlay.mp4"),
        "overlay.mp4: the overlay of a stream is MPEG-TS, which plays while it grows: give a .ts name",
    ),
    "overlay_over_a_file": Case("stream", existing_overlay, "overlay.ts: already exists"),
    "results_over_the_source": Case(
        "stream",
        lambda folder: ["stream", str(media_corpus.no_audio(folder)), "--json", str(folder / "silent.mp4")],
        "--json would write over the input",
    ),
    "stride_past_the_window": Case(
        "stream",
        stream(media_corpus.no_audio, "--window", "3", "--stride", "4"),
        "--stride must be at most --window (3)",
    ),
    "demuxer_for_a_file": Case(
        "stream", stream(media_corpus.no_audio, "--format", "mpegts"), "--format and --option are for a pipe"
    ),
    "no_such_source": Case(
        "stream", lambda folder: ["stream", str(folder / "nowhere.mp4")], "nowhere.mp4: no such file"
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_every_bad_source_or_output_ends_in_its_lines_or_one_error_line_with_status_2(name, tmp_path, capsys):
    run_case(CASES[name], tmp_path, capsys)


def test_the_322_s_one_shape_video_keeps_one_track_id_through_the_stream(tmp_path, capsys):
    video = media_corpus.long_shapes(tmp_path)
    results = tmp_path / "results.json"
    assert main(["stream", str(video), "--json", str(results)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert frames_and_ids(lines)[0] == list(range(322))
    assert all([track["id"] for track in line["tracks"]] in ([1], []) for line in lines)
    present = sum(decode_mask(track["masks"][0]).any() for line in lines for track in line["tracks"])
    assert present >= 300
    assert evaluate_predictions(looped_ground_truth(23), results)["LocA"] >= 85
