"""`python app.py` as a public server, driven with gradio_client: the length cap holds for the sound too, in
bounded memory; a cancelled analysis stops within seconds and the next one never runs beside it; after many
runs, failures and cancels among them, the server keeps only its newest results and nothing partial."""

import re
import time
from pathlib import Path

import psutil
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.layout import EXAMPLE_FOLDER, SHAPE_EXAMPLES
from modeling_avis.outputs import PARTIAL

from . import media_corpus
from .app_media import stream_summary, write_video
from .app_server import app_process

EXAMPLE = EXAMPLE_FOLDER / "shapes_duet.mp4"
KEPT_RESULTS = 4
CAP_SECONDS = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app served by `python app.py` with its defaults but for a 30 s cap, 4 kept results, and room for the two
    dozen uploads of this one visitor (gradio_client uploads the video again for each analysis)."""
    environment = {
        "AVIS_MAX_SECONDS": str(CAP_SECONDS),
        "AVIS_KEPT_RESULTS": str(KEPT_RESULTS),
        "AVIS_VISITOR_UPLOADS": "64",
    }
    with app_process(tmp_path_factory.mktemp("server"), **environment) as served:
        yield served


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """28 s at 24 fps: sampled at 10 fps, ten seconds of work (here) to cancel in the middle of."""
    return write_video(tmp_path_factory.mktemp("long") / "long_job.mp4", width=320, height=240, fps=24, num_frames=672)


def analyse(client: Client, video: Path, model: str = "Default model", fps: int = 1):
    return client.submit(handle_file(str(video)), model, fps, 0.6, 10, api_name="/analyse")


def peak_rss_bytes(process: psutil.Process) -> int:
    """The process's high-water mark of resident memory (Linux's VmHWM)."""
    line = next(
        line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    return int(line.split()[1]) * 1024


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + sum(child.cpu_times().user for child in process.children(recursive=True))


def cancel_after_it_starts(job, log: Path, name: str) -> float:
    """Cancels `job` two seconds after the server logs that the analysis of `name` started (by then it decodes
    and encodes frames); returns when (time.monotonic())."""
    started = log.read_text().count(f"analysis of {name} started")
    deadline = time.monotonic() + 120
    while log.read_text().count(f"analysis of {name} started") == started:
        if time.monotonic() > deadline:
            pytest.fail(f"the analysis of {name} never started")
        time.sleep(0.1)
    time.sleep(2)
    assert not job.done()
    job.cancel()
    return time.monotonic()


def analyses_in_the_log(log: Path) -> list[tuple[str, float, float]]:
    """(video name, start, end, outcome) of every analysis the server logged, in order."""
    starts = dict(re.findall(r"analysis of (\S+) started at ([\d.]+)", log.read_text()))
    ends = re.findall(r"analysis of (\S+) ended at ([\d.]+) \((\w+)\)", log.read_text())
    return [(name, float(starts[name]), float(end), outcome) for name, end, outcome in ends]


def test_a_short_video_with_an_hour_of_sound_is_cut_to_the_cap_in_both_streams_in_bounded_memory(server, tmp_path):
    video = media_corpus.hour_of_audio(tmp_path)
    overlay, status, *_ = analyse(server.client, video).result(timeout=300)
    summary = stream_summary(Path(overlay))
    assert summary["video"]["duration"] <= CAP_SECONDS and summary["audio"]["duration"] <= CAP_SECONDS
    assert summary["audio"]["duration"] == pytest.approx(summary["video"]["duration"], abs=0.1)
    print(f"hour of sound: overlay {summary['video']['duration']:.2f} s video, {summary['audio']['duration']:.2f} s audio;"
          f" server peak RSS {peak_rss_bytes(server.process) / 1e9:.2f} GB")  # fmt: skip
    assert peak_rss_bytes(server.process) < 1.5e9
    assert "Model: avis-sounding-shapes (the default). A small AVISM trained on synthetic sounding shapes" in status


def test_a_cancelled_analysis_stops_within_seconds_and_the_next_never_runs_beside_it(server, long_video):
    client, process = server.client, server.process
    at = cancel_after_it_starts(analyse(client, long_video, fps=10), server.log, long_video.name)
    following = analyse(client, EXAMPLE)
    following.result(timeout=300)
    time.sleep(max(0.0, at + 5 - time.monotonic()))
    before = cpu_seconds(process)
    time.sleep(3)
    idle_cpu = cpu_seconds(process) - before
    (first, _, first_end, outcome), (second, second_start, _, _) = analyses_in_the_log(server.log)[-2:]
    print(f"cancel: stopped {first_end - at:.2f} s after it, CPU {idle_cpu:.2f} s in 3 s from 5 s after it")
    assert idle_cpu < 0.5  # idle 5 s after the cancel
    assert (first, outcome, second) == ("long_job.mp4", "cancelled", "shapes_duet.mp4")
    assert first_end - at < 5 and first_end <= second_start


def test_after_many_runs_with_failures_and_cancels_only_the_newest_results_are_kept(server, long_video, tmp_path):
    client = server.client
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    outcomes = []
    for run in range(20):
        kind = ("good", "good", "corrupt", "good", "refused model", "cancelled")[run % 6]
        if kind == "cancelled":
            cancel_after_it_starts(analyse(client, long_video, fps=10), server.log, long_video.name)
        else:
            try:
                analyse(
                    client,
                    corrupt if kind == "corrupt" else EXAMPLE,
                    "/etc" if kind == "refused model" else "Default model",
                ).result(timeout=300)
                outcomes.append("done")
            except AppError:
                outcomes.append("refused")
    cache = server.cache
    runs = sorted((cache / "avis").iterdir())
    print(
        f"20 runs: {len(runs)} results kept (at most {KEPT_RESULTS}), {sum(len(list(run.iterdir())) for run in runs)} files"
    )
    assert len(runs) <= KEPT_RESULTS
    # each: the overlay, the results JSON, the masks zip, and its sampled frames (for the frame viewer)
    assert all(sorted(path.suffix for path in run.iterdir()) == ["", ".json", ".mp4", ".zip"] for run in runs)
    files = [path for path in cache.rglob("*") if path.is_file()]
    assert not [path for path in files if PARTIAL in path.name or path.name.startswith(".")]
    # besides the kept results: the app's examples the page offers (served from the cache), and one copy of each distinct upload
    # that is none of them (the corrupt file, the long video, and the first test's hour of sound)
    examples = {path.name for path in SHAPE_EXAMPLES}  # by default the page offers the shapes only
    others = [path for path in files if "avis" not in path.relative_to(cache).parts]
    # and the frame viewer's mask layers (gradio's AnnotatedImage writes them, named by their content, and its
    # delete_cache removes them): the example's two objects in its first frame, the same in every run
    layers = [path for path in others if path.name == "image.png"]
    assert 1 <= len(layers) <= 2
    others = [path for path in others if path not in layers]
    assert {path.name for path in others} - examples == {"corrupt.mp4", long_video.name, "long_sound.mp4"}
    assert len(others) == len(examples) + 3, others
    assert outcomes.count("done") == 11 and outcomes.count("refused") == 6  # and 3 cancelled
