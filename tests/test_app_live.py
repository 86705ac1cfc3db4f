"""The Live tab without a browser: a clip's pictures and sound pushed into a live session as the page's handlers push
them, on a clock the test moves, with the shipped default model; what the page sends, read and bounded."""

import base64
import io
import itertools
import logging
import math
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import gradio as gr
import numpy as np
import pytest
from PIL import Image

from app.layout import EXAMPLE_FOLDER, AnalysisSlots, build_demo
from app.live import (
    IDLE_SECONDS,
    LiveSession,
    LiveSessions,
    MicrophoneClock,
    read_picture,
    read_sound_chunk,
)
from app.models import DEFAULT_CHOICE, ModelCatalog
from app.settings import AppSettings
from app.uploads import UploadLedger
from modeling_avis.errors import AvisInputError

from .app_media import live_arrivals, streamed_wav

DUET = EXAMPLE_FOLDER / "shapes_duet.mp4"
MAX_INSTANCES = 10


class Clock:
    """The sessions' clock, moved by the test."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> ModelCatalog:
    catalog = ModelCatalog(AppSettings(work_folder=tmp_path_factory.mktemp("runs")))
    catalog.load(DEFAULT_CHOICE)
    return catalog


def live_sessions(catalog, tmp_path, clock, max_seconds=60.0, slots=None) -> LiveSessions:
    settings = AppSettings(work_folder=tmp_path)
    return LiveSessions(catalog, slots or AnalysisSlots(1), max_seconds, UploadLedger(settings), clock)


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


def started(sessions: LiveSessions, catalog, key: str = "page") -> LiveSession:
    live = sessions.session(key, DEFAULT_CHOICE, catalog.default_threshold(), MAX_INSTANCES)
    wait_for(lambda: live.state == "live", "the session's start")
    return live


def push_clip(live: LiveSession, clock: Clock, path: Path, until: float = math.inf) -> None:
    """The clip's pictures and sound, each pushed when it arrives (the clock moved to its time)."""
    start = clock.now
    for seconds, arrival in live_arrivals(path):
        if seconds > until:
            return
        clock.now = start + seconds
        if isinstance(arrival, np.ndarray):
            live.push_frame(arrival)
        else:
            live.push_sound([arrival])


def slot_wait(slots: AnalysisSlots) -> tuple[threading.Thread, list[float]]:
    """A thread that takes a slot as soon as one is free (as the next analysis does), and when it got it."""
    got: list[float] = []
    thread = threading.Thread(target=slots.hold, args=(lambda: got.append(time.monotonic()),), daemon=True)
    thread.start()
    return thread, got


def jpeg_payload(image: np.ndarray) -> dict:
    """A picture as the page's webcam sends it (gradio's unprocessed `Image` payload)."""
    with io.BytesIO() as encoded:
        Image.fromarray(image).save(encoded, format="JPEG")
        url = "data:image/jpeg;base64," + base64.b64encode(encoded.getvalue()).decode()
    return {"path": None, "url": url, "meta": {"_type": "gradio.FileData"}}


def recorded_steps(segmenter, patch) -> list:
    """The updates of every online step the segmenter takes from now on (in the block of `patch`)."""
    steps, updates = segmenter.stream_step, []

    def recorded(*args, **kwargs):
        answered = steps(*args, **kwargs)
        updates.extend(answered)
        return answered

    patch.setattr(segmenter, "stream_step", recorded)
    return updates


def assert_same_updates(got: list, want: list) -> None:
    assert [update.timestamps for update in got] == [update.timestamps for update in want]
    for ours, theirs in zip(got, want, strict=True):
        assert ours.frames == theirs.frames
        assert [(track.track_id, track.label_name, track.score) for track in ours.tracks] == [
            (track.track_id, track.label_name, track.score) for track in theirs.tracks
        ]
        assert all(np.array_equal(a.masks, b.masks) for a, b in zip(ours.tracks, theirs.tracks, strict=True))


def test_a_clip_pushed_live_gives_the_updates_that_stream_chunks_gives_on_the_same_clip(
    catalog, tmp_path, monkeypatch
):
    segmenter = catalog.load(DEFAULT_CHOICE).segmenter
    clock = Clock()
    live = started(live_sessions(catalog, tmp_path, clock), catalog)
    with monkeypatch.context() as patch:
        live_updates = recorded_steps(segmenter, patch)
        push_clip(live, clock, DUET)
        clock.now += IDLE_SECONDS + 1  # the webcam stops: the session ends with the frames it has
        wait_for(lambda: live.ended, "the end of the session")
    expected = list(segmenter.stream(DUET, score_threshold=catalog.default_threshold(), max_instances=MAX_INSTANCES))
    assert [stamp for update in expected for stamp in update.timestamps] == [float(second) for second in range(13)]
    assert_same_updates(live_updates, expected)
    # the example's two sounding shapes, each masked, and each frame's latency measured
    assert {track.label_name for track in live.result().tracks} == {"square", "triangle"}
    assert len(live.latencies) == 13 and min(live.latencies) >= 0
    assert (
        "The live session ended: the webcam sent no picture for a few seconds."
        in live.push_frame(np.zeros((288, 384, 3), np.uint8))[1]
    )


def test_the_length_cap_ends_the_session_by_the_streams_clock_with_a_message_and_frees_its_slot(
    catalog, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="app")
    clock, slots = Clock(), AnalysisSlots(1)
    live = started(live_sessions(catalog, tmp_path, clock, max_seconds=4, slots=slots), catalog)
    push_clip(live, clock, DUET, until=8)  # the webcam goes on past the cap
    wait_for(lambda: live.ended, "the end of the session")
    assert live.result().timestamps.tolist() == [0.0, 1.0, 2.0, 3.0]
    view, status, *_ = live.push_frame(np.zeros((288, 384, 3), np.uint8))
    assert view == gr.skip()
    assert (
        "The live session reached its limit of 4 s: stop the webcam, and start it again a few seconds later for a new session."
        in status
    )
    thread, got = slot_wait(slots)
    thread.join(timeout=5)
    assert got, "the slot was not freed"
    assert "(limit): 4 frames" in caplog.text


def test_leaving_the_page_ends_its_session_at_once_and_the_next_analysis_takes_the_slot(catalog, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="app")
    clock, slots = Clock(), AnalysisSlots(1)
    sessions = live_sessions(catalog, tmp_path, clock, slots=slots)
    live = started(sessions, catalog, key="leaving")
    push_clip(live, clock, DUET, until=3)
    thread, got = slot_wait(slots)
    time.sleep(1)
    assert not got  # the live session holds the only slot
    left = time.monotonic()
    sessions.leave("leaving")
    thread.join(timeout=5)
    print(f"leaving: the next analysis took the slot {got[0] - left:.3f} s after the page was left")
    assert got and got[0] - left < 1.0
    wait_for(lambda: "(left)" in caplog.text, "the log of the session's end")
    # a picture of the page still on its way starts no new session
    picture = jpeg_payload(np.zeros((288, 384, 3), np.uint8))
    assert sessions.frame("leaving", picture, DEFAULT_CHOICE, 0.5, MAX_INSTANCES) == (gr.skip(),) * 4
    assert sessions.get("leaving") is None


def test_a_webcam_that_stops_ends_the_session_and_its_next_picture_starts_a_new_one(catalog, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="app")
    clock = Clock()
    sessions = live_sessions(catalog, tmp_path, clock)
    live = started(sessions, catalog)
    push_clip(live, clock, DUET, until=2)
    clock.now += IDLE_SECONDS + 0.5
    wait_for(lambda: live.ended, "the end of the session")
    assert "(stopped)" in caplog.text
    assert sessions.session("page", DEFAULT_CHOICE, 0.5, MAX_INSTANCES) is not live


def test_a_microphone_that_sends_nothing_gives_the_frames_silence_as_a_muted_clip_gets(catalog, tmp_path, monkeypatch):
    segmenter = catalog.load(DEFAULT_CHOICE).segmenter
    clock = Clock()
    live = started(live_sessions(catalog, tmp_path, clock), catalog)
    pictures = [arrival for _, arrival in live_arrivals(DUET) if isinstance(arrival, np.ndarray)]
    start = clock.now
    with monkeypatch.context() as patch:
        live_updates = recorded_steps(segmenter, patch)
        for second, picture in enumerate(pictures[:8]):
            clock.now = start + second
            live.push_frame(picture)
        # silence up to the clock's 7 s: the frames to 6 s have their second of sound
        wait_for(lambda: len(live_updates) == 7, "the masks of 7 frames")
    status = live.push_frame(pictures[7])[1]
    assert "the microphone sent no sound for 3 s: the frames are given silence while it is quiet" in status
    muted = segmenter.stream(DUET, score_threshold=catalog.default_threshold(), max_instances=MAX_INSTANCES,
                             mute_audio=True)  # fmt: skip
    assert_same_updates(live_updates, list(muted)[:7])


def test_the_microphone_clock_follows_the_chunks_and_puts_silence_where_they_are_missing():
    clock, rate = MicrophoneClock(), 48000

    def chunk(samples: int, sample_rate: int = rate) -> list[av.AudioFrame]:
        frame = av.AudioFrame.from_ndarray(np.ones((1, samples), np.int16), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        return [frame]

    placed = [clock.place(chunk(12000), end) for end in (0.25, 0.5, 1.0)]  # the third follows one lost chunk
    assert [[frame.pts for frame in frames] for frames in placed] == [[0], [12000], [24000]]
    assert placed[0][0].time_base == Fraction(1, rate)
    late = clock.place(chunk(12000), 2.25)  # four more lost: 1.25 s behind its arrival, over the tolerance
    assert [(frame.pts, frame.samples) for frame in late] == [(36000, 60000), (96000, 12000)]
    assert not late[0].to_ndarray().any()
    quiet = clock.silence_until(3.0)  # the microphone sends nothing
    assert [(frame.pts, frame.samples) for frame in quiet] == [(108000, 36000)] and clock.silence_until(2.0) == []
    converted = clock.place(chunk(4410, 44100), 3.1)  # another rate: converted to the first chunk's
    assert {(frame.format.name, frame.layout.name, frame.sample_rate) for frame in converted} == {
        ("s16", "mono", rate)
    }
    assert converted[0].pts == 144000 and 4000 < sum(frame.samples for frame in converted) <= 4800
    before = MicrophoneClock().silence_until(0.5)  # before any chunk: silence as browsers record
    assert [(frame.format.name, frame.sample_rate, frame.samples) for frame in before] == [("s16", 48000, 24000)]


def test_a_picture_is_read_from_the_webcams_inline_jpeg_only_and_an_oversized_one_before_it_is_decoded():
    image = np.zeros((288, 384, 3), np.uint8)
    image[100:200, 50:150] = (200, 30, 30)
    assert read_picture(jpeg_payload(image)).shape == (288, 384, 3)
    assert read_picture(None) is None
    with io.BytesIO() as encoded:
        Image.new("RGB", (16, 16)).save(encoded, format="JPEG")
        data = bytearray(encoded.getvalue())
    frame_header = data.index(b"\xff\xc0")  # SOF0: length, precision, then height and width
    data[frame_header + 5 : frame_header + 9] = (9000).to_bytes(2, "big") * 2
    huge = {"url": "data:image/jpeg;base64," + base64.b64encode(bytes(data)).decode()}
    start = time.monotonic()
    with pytest.raises(AvisInputError) as refused:
        read_picture(huge)
    assert str(refused.value) == (
        "the webcam: frames of 9000x9000 are over the limit of 35.4 million pixels (8192x4320)"
    )
    assert time.monotonic() - start < 0.5  # refused from its header: 243 MB were never decoded
    for payload, message in [
        ({"path": str(DUET), "url": None}, "the webcam sent something that is not a picture"),
        ({"url": "data:image/jpeg;base64,bm90IGEgcGljdHVyZQ=="}, "the webcam sent a picture that cannot be read"),
    ]:
        with pytest.raises(AvisInputError, match=message):
            read_picture(payload)


def test_a_chunk_of_the_microphone_is_read_as_the_page_uploads_it_and_nothing_else(tmp_path):
    (tmp_path / "chunk").mkdir()
    chunk = tmp_path / "chunk" / "audio.wav"
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(12000) / 48000)).astype(np.int16)
    chunk.write_bytes(streamed_wav(tone, 48000))
    frames = read_sound_chunk(chunk)
    assert sum(frame.samples for frame in frames) == 12000 and frames[0].sample_rate == 48000
    assert np.array_equal(np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]), tone)
    named = tmp_path / "clip.wav"
    named.write_bytes(chunk.read_bytes())
    (tmp_path / "big").mkdir()
    big = tmp_path / "big" / "audio.wav"
    big.write_bytes(streamed_wav(np.zeros(600_000, np.int16), 48000))
    (tmp_path / "video").mkdir()
    video = tmp_path / "video" / "audio.wav"
    video.write_bytes(DUET.read_bytes())
    for path, message in [
        (named, "the microphone sent something that is not a chunk of sound"),
        (big, "the microphone sent a chunk of sound over 1 MiB"),
        (video, "the microphone sent a chunk of sound that cannot be read"),
    ]:
        with pytest.raises(AvisInputError, match=message):
            read_sound_chunk(path)


def test_chunks_of_sound_count_in_the_visitors_bytes_not_files_and_go_once_read(tmp_path, monkeypatch):
    settings = AppSettings(work_folder=tmp_path / "runs", visitor_uploads=2)
    ledger = UploadLedger(settings)
    folders = (tmp_path / f"upload-{index}" for index in itertools.count())

    def uploaded(name: str, content: bytes) -> Path:
        folder = next(folders)
        folder.mkdir()
        path = folder / name
        path.write_bytes(content)
        upload = ledger.begin("203.0.113.7")
        upload.bytes, upload.files = len(content), 1
        assert ledger.refusal(upload) is None
        ledger.finish(upload, [str(path)])
        return path

    chunk = streamed_wav(np.zeros(12000, np.int16), 48000)
    chunks = [uploaded("audio.wav", chunk) for _ in range(30)]
    assert ledger.kept_bytes() == 30 * len(chunk)
    ledger.consume(str(chunks[0]))
    assert not chunks[0].exists() and not chunks[0].parent.exists()
    assert ledger.kept_bytes() == 29 * len(chunk)
    videos = [uploaded("clip.mp4", b"x" * 100) for _ in range(2)]
    third = ledger.begin("203.0.113.7")
    assert ledger.refusal(third).message == "Too many uploads: at most 2 files per 10 min."
    ledger.finish(third, [])
    ledger.consume(str(videos[0]))  # only a chunk of sound is consumed
    assert videos[0].exists()
    # a live session reads a chunk once, however many times gradio hands it on
    sessions = LiveSessions(None, AnalysisSlots(1), 60.0, ledger)
    sessions.sound("page", str(chunks[1]))
    sessions.sound("page", str(chunks[1]))
    assert not chunks[1].exists()
    monkeypatch.setattr("app.uploads.SOUND_CHUNK_SECONDS", 0)
    ledger.prune()  # the chunks no session read go; the videos stay their `upload_seconds`
    assert not any(path.exists() for path in chunks) and all(path.exists() for path in videos)


def test_the_live_tab_streams_the_webcam_and_the_microphone_within_the_servers_limits(tmp_path):
    settings = AppSettings(concurrency_limit=2, max_video_seconds=30, work_folder=tmp_path)
    demo = build_demo(settings, UploadLedger(settings))
    frames, sound = (
        next(fn for fn in demo.fns.values() if fn.api_name == name) for name in ("live_frame", "live_sound")
    )
    assert (frames.concurrency_limit, frames.time_limit, frames.stream_every, frames.preprocess) == (
        2,
        60,
        0.25,
        False,
    )
    assert (sound.concurrency_limit, sound.time_limit, sound.stream_every) == (2, 60, 0.25)
    assert frames.concurrency_id != sound.concurrency_id
    webcam, microphone = frames.inputs[0], sound.inputs[0]
    assert (webcam.sources, webcam.streaming, microphone.sources, microphone.streaming) == (
        ["webcam"],
        True,
        ["microphone"],
        True,
    )
