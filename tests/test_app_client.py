"""The app served in-process on 127.0.0.1 and driven through its API with gradio_client, end to end."""

import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.layout import EXAMPLE_FOLDER, build_demo
from app.settings import AppSettings
from app.uploads import UploadLedger
from modeling_avis.tracks import decode_mask
from training.evaluation import evaluate_predictions

from .app_media import decode_rgb, stream_summary
from .app_server import serve_app

EXAMPLE = EXAMPLE_FOLDER / "shapes_duet.mp4"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with serve_app(tmp_path_factory.mktemp("runs")) as url:
        yield Client(
            url, verbose=False, analytics_enabled=False, download_files=str(tmp_path_factory.mktemp("downloads"))
        )


def test_example_runs_end_to_end_to_a_playable_overlay_and_results_json(client):
    video, status, table, timeline, downloads, *_ = client.predict(
        handle_file(str(EXAMPLE)), "Default model", 1, 0.5, 10, api_name="/analyse"
    )
    overlay = stream_summary(Path(video))
    assert overlay["video"]["codec"] == "h264" and overlay["video"]["pix_fmt"] == "yuv420p"
    assert overlay["video"]["size"] == (384, 288) and overlay["audio"]["codec"] == "aac"
    assert overlay["video"]["frames"] == 9 and abs(overlay["video"]["duration"] - 9.0) <= 1.0
    assert abs(overlay["audio"]["duration"] - 9.0) <= 0.07  # one AAC frame of 1024 samples at 16 kHz

    results_path = next(Path(path) for path in downloads if path.endswith(".json"))
    entries = json.loads(results_path.read_text())
    assert len(entries) == len(table["data"]) >= 1
    for entry, row in zip(entries, table["data"], strict=True):
        assert set(entry) == {"video_id", "score", "category_id", "segmentations"}
        assert entry["score"] == pytest.approx(row[2], abs=1e-3) and len(entry["segmentations"]) == 9
    assert table["headers"] == ["id", "class", "score", "first second", "last second", "frames"]
    assert f"**{len(entries)} sounding instance" in status
    assert timeline["type"] == "matplotlib"
    assert sorted(Path(path).suffix for path in downloads) == [".json", ".mp4", ".zip"]

    # The benchmark's evaluator reads the JSON against the example's ground truth: the two sounding shapes are found
    # (a square and a diamond, not the silent circle) and segmented where they are (LocA: the IoU of the matched
    # masks), in every frame (FSLA).
    ground_truth = json.loads(EXAMPLE.with_suffix(".json").read_text())
    assert {entry["category_id"] for entry in entries} == {a["category_id"] for a in ground_truth["annotations"]}
    metrics = evaluate_predictions(ground_truth, entries)
    assert metrics["LocA"] >= 85 and metrics["FSLA"] >= 80
    # Where a mask is drawn, the overlay's pixels are the instance's colour blended in, not the input's.
    drawn, source = decode_rgb(Path(video)), decode_rgb(EXAMPLE)
    for frame in range(0, 9, 4):
        mask = decode_mask(entries[0]["segmentations"][frame])
        if mask.any():
            difference = np.abs(drawn[frame].astype(int) - source[frame].astype(int)).sum(-1)
            assert difference[mask].mean() > 30 and np.median(difference[~mask]) < 10


def test_corrupt_upload_is_answered_with_a_one_line_message(client, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(corrupt)), "Default model", 1, 0.3, 10, api_name="/analyse")
    message = caught.value.message
    assert message.startswith("corrupt.mp4: not a video FFmpeg can read") and "\n" not in message


def test_any_model_but_the_offered_ones_gets_one_answer_that_says_nothing_of_the_servers_files(client, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "avis"}')
    answers = set()
    for model in (str(tmp_path / "model"), str(tmp_path / "missing"), "/etc/passwd", "owner/avism-r50", "../models"):
        with pytest.raises(AppError) as caught:
            client.predict(handle_file(str(EXAMPLE)), model, 1, 0.3, 10, api_name="/analyse")
        answers.add(caught.value.message)
    assert answers == {"This model is not available on this server."}


def test_a_request_naming_a_file_of_the_servers_gets_one_failure_for_an_existing_and_a_missing_one(client, tmp_path):
    # Raw requests: gradio_client would upload a local file it is given. The server takes uploads only.
    own = tmp_path / "private.mp4"
    own.write_bytes(EXAMPLE.read_bytes())
    answers = [raw_analysis(client.src, str(path)) for path in (own, tmp_path / "missing.mp4")]
    assert answers[0] == answers[1] == {"success": False, "output": {"error": None}, "title": "Error"}


def raw_analysis(url: str, video_path: str) -> dict:
    """The final message of an /analyse request whose video names `video_path` on the server."""
    config = httpx.get(url + "config", timeout=10).json()
    fn_index = next(index for index, fn in enumerate(config["dependencies"]) if fn.get("api_name") == "analyse")
    prefix, session = config.get("api_prefix", "/gradio_api"), uuid.uuid4().hex
    video = {"path": video_path, "meta": {"_type": "gradio.FileData"}}
    body = {"data": [video, "Default model", 1, 0.6, 10], "fn_index": fn_index, "session_hash": session}
    httpx.post(f"{url.rstrip('/')}{prefix}/queue/join", json=body, timeout=10).raise_for_status()
    with httpx.stream("GET", f"{url.rstrip('/')}{prefix}/queue/data?session_hash={session}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and (message := json.loads(line[5:])).get("msg") == "process_completed":
                return {key: message.get(key) for key in ("success", "output", "title")}
    raise AssertionError("no final message")


def test_analyses_run_through_a_queue_with_the_configured_limits(tmp_path):
    settings = AppSettings(concurrency_limit=2, queue_size=3, work_folder=tmp_path)
    demo = build_demo(settings, UploadLedger(settings))
    analyse = next(fn for fn in demo.fns.values() if fn.api_name == "analyse")
    assert analyse.concurrency_limit == 2 and demo._queue.max_size == 3


def test_an_unexpected_failure_shows_one_generic_line_and_no_traceback(client, monkeypatch, caplog):
    def broken_render(*args, **kwargs):
        raise RuntimeError("internal detail that must stay in the server log")

    monkeypatch.setattr("app.pipeline.transcode", broken_render)
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(EXAMPLE)), "Default model", 1, 0.3, 10, api_name="/analyse")
    assert caught.value.message == "Something went wrong while analysing this video; the server log has the details."
    assert "internal detail" in caplog.text
