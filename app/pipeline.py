"""One analysis, from an uploaded file to everything the page shows: the app without its page."""

import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from modeling_avis.results import write_results_json
from modeling_avis.video_io import ProgressFn
from modeling_avis.visualization import render_overlay

from .inference import ModelSource, inference_service
from .media import probe_upload, trim_video
from .summary import instance_table, timeline_figure

# A video this much longer than the limit (container round-off) is still taken whole.
LENGTH_SLACK = 0.05
# Run folders older than this are removed when a new run starts (the page has long since copied their files).
RUN_FOLDER_LIFETIME = 2 * 3600


@dataclass(frozen=True)
class AppSettings:
    """Limits of one app process.

    max_video_seconds: longer videos are trimmed to their first max_video_seconds, with a message.
    concurrency_limit: analyses running at once; the others wait in the queue.
    queue_size: analyses waiting at most; more are refused by the queue.
    max_upload_size: the largest upload, in gradio's notation.
    work_folder: where each run writes its files.
    """

    max_video_seconds: float = 60.0
    concurrency_limit: int = 1
    queue_size: int = 16
    max_upload_size: str = "500mb"
    work_folder: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "avis_app")


@dataclass
class Analysis:
    overlay_path: Path
    results_path: Path
    table: list[list]
    timeline: Figure
    status: str


def analyse_video(
    video_path: str,
    source: ModelSource,
    fps: float,
    score_threshold: float,
    max_instances: int,
    settings: AppSettings,
    progress: ProgressFn,
) -> Analysis:
    """Probe, trim if too long, run the model, render the overlay and write the results of one video.

    Raises AvisInputError for a video the app cannot use and AvisCheckpointError for a model it cannot load.
    """
    progress(0.0, "Reading the video")
    video = probe_upload(video_path)
    folder = new_run_folder(settings.work_folder)
    try:
        return _analyse(video, folder, video_path, source, fps, score_threshold, max_instances, settings, progress)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a failed run leaves nothing behind
        raise


def _analyse(video, folder, video_path, source, fps, score_threshold, max_instances, settings, progress) -> Analysis:
    stem = re.sub(r"[^\w-]+", "_", Path(video_path).stem)[:60] or "video"
    messages = []
    if video.duration > settings.max_video_seconds + LENGTH_SLACK:
        messages.append(
            f"The video is {video.duration:.1f} s long: only its first {settings.max_video_seconds:g} s were analysed."
        )
        video = trim_video(video, folder / f"{stem}_trimmed.mp4", settings.max_video_seconds, _stage(progress, 0, 0.1))
    progress(0.1, "Loading the model")
    service = inference_service(source)
    result = service(
        video.path,
        fps=fps,
        score_threshold=score_threshold,
        max_instances=max_instances,
        progress=_stage(progress, 0.1, 0.75),
    )
    overlay_path, results_path = folder / f"{stem}_avis.mp4", folder / f"{stem}_avis_results.json"
    render_overlay(video, result, overlay_path, _stage(progress, 0.75, 0.98))
    write_results_json({1: result}, results_path)
    if not video.has_audio:
        messages.append("The video has no audio track, so the overlay video has none either.")
    count = len(result.tracks)
    headline = (
        f"**{count} sounding instance{'s' if count != 1 else ''}** in {video.duration:.1f} s of video "
        f"({result.num_frames} frames sampled at {fps:g} per second)."
    )
    status = "\n".join([headline, *(f"- {line}" for line in [*messages, *result.notes])])
    return Analysis(
        overlay_path=overlay_path,
        results_path=results_path,
        table=instance_table(result),
        timeline=timeline_figure(result, video.duration),
        status=status,
    )


def new_run_folder(root: Path) -> Path:
    """A fresh folder under `root` for one run's files; folders of runs older than RUN_FOLDER_LIFETIME go."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("run-*"):
        if time.time() - old.stat().st_mtime > RUN_FOLDER_LIFETIME:
            shutil.rmtree(old, ignore_errors=True)
    folder = root / f"run-{uuid.uuid4().hex}"
    folder.mkdir()
    return folder


def _stage(progress: ProgressFn, start: float, stop: float) -> ProgressFn:
    """`progress` for one stage that runs from `start` to `stop` of the whole analysis."""
    return lambda fraction, description: progress(start + (stop - start) * fraction, description)
