"""A hostile visitor against `python app.py`, served in a process of its own and driven with gradio_client and raw
HTTP: videos are analysed to their first 60 s by their decoded times whatever their headers say, 7.1 sound is
heard, a cancel stops every stage within seconds (and the server's CPU with it), and the upload route keeps no more
than its bounds, per visitor and in all."""

import json
import os
import re
import socket
import time
import uuid
from pathlib import Path

import av
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.layout import EXAMPLE_FOLDER
from modeling_avis.video_io import probe_video

from .app_media import (
    stream_summary,
    understate_mkv_duration,
    understate_mp4_duration,
    write_burst_video,
    write_video,
)
from .app_server import ROOT, AppProcess, app_process
from .test_app_serving import cpu_seconds

EXAMPLE = EXAMPLE_FOLDER / "shapes_duet.mp4"
CAP_SECONDS = 60  # the default


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app as `python app.py` serves it, with its defaults."""
    with app_process(tmp_path_factory.mktemp("server")) as served:
        yield served


def analyse(client: Client, video: Path, fps: int = 1, threshold: float = 0.3, instances: int = 10):
    return client.submit(handle_file(str(video)), "Default model", fps, threshold, instances, api_name="/analyse")


def check_first_60_seconds(overlay: str, downloads: list[str], status: str) -> None:
    """The results cover the first 60 s: an overlay of 60 s, picture and sound, and a mask per sampled second."""
    summary = stream_summary(Path(overlay))
    assert summary["video"]["duration"] == pytest.approx(CAP_SECONDS, abs=0.5)
    assert summary["audio"]["duration"] == pytest.approx(CAP_SECONDS, abs=0.1)
    with av.open(overlay) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2 * CAP_SECONDS  # the source's 2 fps
    results = json.loads(next(Path(path) for path in downloads if path.endswith(".json")).read_text())
    assert results and all(len(entry["segmentations"]) == CAP_SECONDS for entry in results)
    assert f"in 60.0 s of video ({CAP_SECONDS} frames sampled at 1 per second)" in status
    assert "only its first 60 s were analysed" in status


def test_a_70_s_upload_gives_results_for_its_first_60_s(server, tmp_path):
    video = write_video(tmp_path / "seventy.mp4", width=128, height=96, fps=2, num_frames=140)
    overlay, status, _, _, downloads, *_ = analyse(server.client, video).result(timeout=300)
    check_first_60_seconds(overlay, downloads, status)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_header_that_says_1_s_of_a_90_s_video_is_not_believed_the_video_is_cut_at_60_s(server, tmp_path, suffix):
    video = write_video(tmp_path / f"lying{suffix}", width=128, height=96, fps=2, num_frames=180)
    (understate_mp4_duration if suffix == ".mp4" else understate_mkv_duration)(video, 1.0)
    assert probe_video(video).duration == pytest.approx(1.0)  # what the header now says
    overlay, status, _, _, downloads, *_ = analyse(server.client, video).result(timeout=300)
    check_first_60_seconds(overlay, downloads, status)


def test_a_7_1_upload_is_heard_and_the_server_keeps_serving(server, tmp_path):
    video = write_video(tmp_path / "surround.mp4", width=160, height=120, fps=4, num_frames=12, layout="7.1")
    with av.open(str(video)) as container:
        assert container.streams.audio[0].channels == 8
    overlay, status, *_ = analyse(server.client, video).result(timeout=300)
    summary = stream_summary(Path(overlay))
    assert summary["audio"]["duration"] == pytest.approx(3.0, abs=0.07) and "no audio track" not in status
    overlay, *_ = analyse(server.client, EXAMPLE).result(timeout=300)  # the next request is answered
    assert stream_summary(Path(overlay))["video"]["frames"] == 9


@pytest.fixture(scope="module")
def video_4k(tmp_path_factory) -> Path:
    """12 s of 3840x2160 at 10 fps (a new picture each second), with sound: seconds of work in each stage."""
    return write_video(
        tmp_path_factory.mktemp("4k") / "uhd.mp4", width=3840, height=2160, fps=10, num_frames=120, hold=10
    )


def wait_for_stage(job, stage: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        progress = job.status().progress_data
        if progress and progress[-1].desc == stage:
            return
        assert not job.done(), f"the analysis ended before {stage!r}"
        assert time.monotonic() < deadline, f"the analysis never reached {stage!r}"
        time.sleep(0.05)


def idle_after(process, start: float, seconds: float = 8.0, step: float = 0.25) -> float:
    """Seconds from `start` until the process's CPU use stays under 10 % of a core in every second that follows
    (sampled until `seconds` after `start`); infinity if it never does."""
    samples = []
    while (now := time.monotonic()) < start + seconds:
        samples.append((now, cpu_seconds(process)))
        time.sleep(step)
    window = round(1 / step)
    busy = [later - used >= 0.1 for (_, used), (_, later) in zip(samples, samples[window:])]
    last_busy = max((index for index, flag in enumerate(busy) if flag), default=-1)
    return float("inf") if last_busy == len(busy) - 1 else samples[last_busy + 1][0] - start


def ended_at(log: Path, name: str, count: int) -> tuple[float, str]:
    """When the `count`-th analysis of `name` ended, by the server's log, and how."""
    ends = re.findall(rf"analysis of {re.escape(name)} ended at ([\d.]+) \((\w+)\)", log.read_text())
    assert len(ends) >= count, f"the analysis of {name} has not ended"
    return float(ends[count - 1][0]), ends[count - 1][1]


@pytest.mark.parametrize("stage", ["Decoding and encoding frames", "Drawing masks", "Rendering"])
def test_a_cancel_stops_a_4k_analysis_in_every_stage_within_5_s_and_the_next_one_runs(server, video_4k, stage):
    before = server.log.read_text().count(f"analysis of {video_4k.name} ended")
    job = analyse(server.client, video_4k, fps=10, threshold=0.05, instances=20)  # the most work a visitor may ask
    wait_for_stage(job, stage)
    time.sleep(1.5)
    # still in it (a status between two progress reports, as the page's streamed progress line makes, has none)
    wait_for_stage(job, stage, timeout=2)
    cancelled = time.monotonic()
    job.cancel()  # answered once the analysis has stopped
    idle = idle_after(server.process, cancelled)
    deadline = cancelled + 10
    while server.log.read_text().count(f"analysis of {video_4k.name} ended") == before:
        assert time.monotonic() < deadline, "the analysis went on after the cancel"
        time.sleep(0.05)
    end, outcome = ended_at(server.log, video_4k.name, before + 1)
    print(f"cancel while {stage.lower()}: stopped {end - cancelled:.2f} s after it, server idle after {idle:.2f} s")
    assert outcome == "cancelled" and end - cancelled < 5 and idle < 5
    overlay, *_ = analyse(server.client, EXAMPLE).result(timeout=120)
    assert stream_summary(Path(overlay))["video"]["frames"] == 9


def test_a_video_of_a_thousand_frames_a_second_is_refused_before_it_is_decoded(server, tmp_path):
    burst = write_burst_video(tmp_path / "burst.mp4", frames=3000, per_second=1000)
    with pytest.raises(AppError) as refused:
        analyse(server.client, burst).result(timeout=120)
    assert refused.value.message == (
        "burst.mp4: more than 240 frames within one second of video: the app takes videos of at most 240 frames per "
        "second"
    )
    start = float(re.findall(r"analysis of burst.mp4 started at ([\d.]+)", server.log.read_text())[-1])
    end, outcome = ended_at(server.log, burst.name, 1)
    assert outcome == "failed" and end - start < 2


def test_the_file_route_serves_the_cache_only(server):
    cached = next(path for path in server.cache.rglob(EXAMPLE.name) if "avis" not in path.parts)
    assert httpx.get(f"{server.url}gradio_api/file={cached}", timeout=10).status_code == 200
    for path in (ROOT / "app.py", EXAMPLE, Path("/etc/passwd"), server.cache / ".." / "server.log"):
        assert httpx.get(f"{server.url}gradio_api/file={path}", timeout=10).status_code == 403, path


# The upload route's bounds, on a server with small ones, behind one proxy: each test is another visitor.
VISITOR_FILES, VISITOR_BYTES, TOTAL_BYTES, UPLOAD_SECONDS = 4, 6_000_000, 20_000_000, 20
MB = 1_000_000


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded")
    (root / "tmp").mkdir()
    environment = {
        "AVIS_VISITOR_UPLOADS": str(VISITOR_FILES),
        "AVIS_VISITOR_UPLOAD_BYTES": str(VISITOR_BYTES),
        "AVIS_UPLOAD_TOTAL_BYTES": str(TOTAL_BYTES),
        "AVIS_UPLOAD_SECONDS": str(UPLOAD_SECONDS),
        "AVIS_PROXY_HOPS": "1",
        "TMPDIR": str(root / "tmp"),
    }
    with app_process(root, **environment) as served:
        served.startup_files = set(files_in(served.cache))  # the examples gradio keeps in its cache
        yield served


def files_in(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in folder.rglob("*") if path.is_file()}


def uploads_on_disk(served: AppProcess) -> int:
    """Bytes of the upload folder but the examples and the analyses' results (none here)."""
    return sum(size for path, size in files_in(served.cache).items() if path not in served.startup_files)


def upload(served: AppProcess, visitor: str, size: int, name: str = "clip.mp4", content: bytes | None = None):
    files = {"files": (name, content if content is not None else os.urandom(size), "video/mp4")}
    return httpx.post(f"{served.url}gradio_api/upload", files=files, headers={"X-Forwarded-For": visitor}, timeout=60)


def test_a_visitor_gets_its_files_and_then_429_with_a_short_message(bounded):
    answers = [upload(bounded, "203.0.113.1", MB) for _ in range(30)]
    assert [answer.status_code for answer in answers] == [200] * VISITOR_FILES + [429] * (30 - VISITOR_FILES)
    assert answers[-1].text == "Too many uploads: at most 4 files per 20 s."
    assert 1 <= int(answers[-1].headers["retry-after"]) <= UPLOAD_SECONDS
    assert uploads_on_disk(bounded) == VISITOR_FILES * MB
    assert upload(bounded, "203.0.113.99", MB).status_code == 200  # another visitor's own bound


def test_the_visitor_is_the_address_the_proxy_saw_whatever_the_visitor_writes_before_it(bounded):
    answers = [upload(bounded, f"198.51.100.{k}, 203.0.113.2", MB).status_code for k in range(8)]
    assert answers == [200] * VISITOR_FILES + [429] * 4


def test_bytes_are_counted_as_they_arrive_whatever_the_headers_say(bounded):
    before = uploads_on_disk(bounded)
    over = upload(bounded, "203.0.113.3", VISITOR_BYTES + MB)
    assert (over.status_code, over.text) == (429, "Too much uploaded: at most 6 MB per 20 s.")

    def endless():  # chunked: no length declared, three times what the visitor may send
        yield b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="endless.mp4"\r\n\r\n'
        for _ in range(3 * VISITOR_BYTES // (256 * 1024)):
            yield os.urandom(256 * 1024)

    headers = {"Content-Type": "multipart/form-data; boundary=b0undary", "X-Forwarded-For": "203.0.113.4"}
    chunked = httpx.post(f"{bounded.url}gradio_api/upload", content=endless(), headers=headers, timeout=60)
    assert chunked.status_code == 429
    read = re.findall(r"upload from 203\.0\.113\.4 refused \((\d+) bytes read\)", bounded.log.read_text())
    assert len(read) == 1 and VISITOR_BYTES < int(read[0]) <= VISITOR_BYTES + 256 * 1024
    assert uploads_on_disk(bounded) == before  # gradio's parser removed what it had written


def test_an_upload_whose_sender_goes_away_leaves_nothing_and_does_not_count(bounded):
    before = uploads_on_disk(bounded)
    with socket.create_connection(("127.0.0.1", int(bounded.url.rsplit(":", 1)[1].strip("/")))) as connection:
        head = b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="left.mp4"\r\n\r\n'
        connection.sendall(
            b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 203.0.113.5\r\n"
            b"Content-Type: multipart/form-data; boundary=b0undary\r\nContent-Length: 5000000\r\n\r\n" + head
        )
        connection.sendall(os.urandom(2 * MB))
        time.sleep(1)
        assert uploads_on_disk(bounded) > before  # gradio's temporary file, as it arrives
    deadline = time.monotonic() + 5
    while uploads_on_disk(bounded) != before:
        assert time.monotonic() < deadline, "the interrupted upload was left on disk"
        time.sleep(0.1)
    assert [upload(bounded, "203.0.113.5", MB).status_code for _ in range(VISITOR_FILES)] == [200] * VISITOR_FILES


def test_no_request_names_a_file_by_a_link_or_reaches_the_recording_route_and_bodies_are_bounded(bounded):
    temporary = bounded.cache.parent / "tmp"
    before = {**files_in(bounded.cache), **files_in(temporary)}
    link = {"path": "https://example.com/huge.mp4", "meta": {"_type": "gradio.FileData"}}
    body = {"data": [link, "Default model", 1, 0.5, 10], "fn_index": 0, "session_hash": uuid.uuid4().hex}
    joined = httpx.post(f"{bounded.url}gradio_api/queue/join", json=body, timeout=10)
    assert (joined.status_code, joined.text) == (400, "The app analyses uploaded videos only, not links.")
    files = {"video": ("screen.mp4", os.urandom(MB), "video/mp4")}
    recorded = httpx.post(f"{bounded.url}gradio_api/process_recording", files=files, timeout=10)
    assert recorded.status_code == 404
    huge = httpx.post(f"{bounded.url}gradio_api/queue/join", content=b"[" + b"0," * MB + b"0]", timeout=10)
    assert (huge.status_code, huge.text) == (413, "A request may carry at most 1 MiB.")
    assert {**files_in(bounded.cache), **files_in(temporary)} == before


def test_all_visitors_together_keep_no_more_than_the_total_and_stale_uploads_go(bounded):
    # an upload of an example's own bytes and name is stored where gradio keeps the example, which must stay
    example = next(path for path in bounded.startup_files if path.name == EXAMPLE.name)
    assert upload(bounded, "192.0.2.250", 0, EXAMPLE.name, EXAMPLE.read_bytes()).json() == [str(example)]
    answers = [upload(bounded, f"192.0.2.{k}", 2 * MB).status_code for k in range(12)]
    assert 413 in answers and set(answers) == {200, 413}
    refused = upload(bounded, "192.0.2.200", MB)
    assert (refused.status_code, refused.text) == (
        413,
        "The server holds too many uploads right now; try again in a few minutes.",
    )
    print(f"uploads kept on disk at the bound: {uploads_on_disk(bounded) / MB:.1f} MB (at most {TOTAL_BYTES / MB:g})")
    assert TOTAL_BYTES - 2 * MB < uploads_on_disk(bounded) <= TOTAL_BYTES
    time.sleep(UPLOAD_SECONDS + 1)
    assert upload(bounded, "192.0.2.201", MB).status_code == 200  # every earlier upload is stale now
    assert uploads_on_disk(bounded) == MB and example.is_file()
