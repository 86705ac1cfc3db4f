"""One analysis, from an uploaded file to everything the page shows: the app without its page.

An analysis runs in a run folder of its own under the work folder and leaves there exactly its two results (the
overlay and the results JSON); a failed or cancelled one leaves nothing. The newest `kept_results` runs are kept,
for `result_seconds` at most (`RunFolders`). `cancelled()` is asked between chunks of frames and of rendering: when
it says so, the analysis stops there (`AnalysisCancelled`).
"""

import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from modeling_avis.errors import AvisError
from modeling_avis.results import write_results_json
from modeling_avis.video_io import ProgressFn
from modeling_avis.visualization import render_overlay

from .media import probe_upload
from .models import ModelCatalog
from .settings import AppSettings
from .summary import instance_table, timeline_figure

# The results JSON is a run's last file: a run folder with one is complete.
RESULTS_SUFFIX = "_avis_results.json"


class AnalysisCancelled(AvisError):
    """The visitor cancelled the analysis, or left."""


@dataclass
class Analysis:
    overlay_path: Path
    results_path: Path
    table: list[list]
    timeline: Figure
    status: str


class RunFolders:
    """The run folders under the work folder: a fresh one per analysis, removed when the analysis fails, and only
    the newest `kept_results` of the finished ones kept (gradio's `delete_cache` removes their files after
    `result_seconds`, and `prune` the folders)."""

    def __init__(self, settings: AppSettings):
        self.root = settings.work_folder
        self.kept, self.seconds = settings.kept_results, settings.result_seconds
        self._lock = threading.Lock()

    def new(self) -> Path:
        self.prune()
        folder = self.root / f"run-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def prune(self) -> None:
        """Removes the runs past the newest `kept_results` and those older than `result_seconds`."""
        with self._lock:
            runs = (
                sorted(self.root.glob("run-*"), key=lambda path: path.name, reverse=True) if self.root.is_dir() else []
            )
            now = time.time()
            for index, folder in enumerate(runs):
                finished = any(folder.glob(f"*{RESULTS_SUFFIX}"))
                too_old = now - folder.stat().st_mtime > self.seconds
                if too_old or (finished and index >= self.kept):
                    shutil.rmtree(folder, ignore_errors=True)


class AnalysisService:
    """The app without its page: `service.analyse(...)` for each visitor's video, with the models, the run folders
    and the limits of `settings`."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self.catalog = ModelCatalog(settings)
        self.runs = RunFolders(settings)

    def analyse(
        self,
        video_path: str,
        model: str,
        fps: float,
        score_threshold: float,
        max_instances: int,
        progress: ProgressFn,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Analysis:
        """Probe, run the model on the first `max_video_seconds` (by the decoded frames' times), render the overlay
        over them and write the results of one video.

        Raises AvisInputError for a video the app cannot use, ModelUnavailable / ModelStillLoading for a model it
        cannot give, AnalysisCancelled when `cancelled()` turned true.
        """

        def report(fraction: float, description: str) -> None:
            if cancelled():
                raise AnalysisCancelled("The analysis was cancelled.")
            progress(fraction, description)

        report(0.0, "Reading the video")
        video = probe_upload(video_path, self.settings.max_video_seconds)
        folder = self.runs.new()
        try:
            analysis = self._analyse(
                video, folder, Path(video_path).stem, model, fps, score_threshold, max_instances, report
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a failed or cancelled run leaves nothing behind
            raise
        self.runs.prune()
        return analysis

    def _analyse(self, video, folder, name, model, fps, score_threshold, max_instances, report) -> Analysis:
        stem = re.sub(r"[^\w-]+", "_", name)[:60] or "video"
        limit = self.settings.max_video_seconds
        report(0.0, "Loading the model")
        loaded = self.catalog.load(model)
        # the cap is on the decoded frames' times (and the sound's), never on the length the header declares
        result = loaded.segmenter(
            video.path, fps=fps, score_threshold=score_threshold, max_instances=max_instances,
            progress=_stage(report, 0.0, 0.75), max_duration=limit,
        )  # fmt: skip
        overlay_path, results_path = folder / f"{stem}_avis.mp4", folder / f"{stem}{RESULTS_SUFFIX}"
        render_overlay(video, result, overlay_path, _stage(report, 0.75, 0.98), until=limit)
        write_results_json({1: result}, results_path)
        messages = []
        if not video.has_audio:
            messages.append("The video has no audio track, so the overlay video has none either.")
        count = len(result.tracks)
        seconds = _analysed_seconds(video.duration, result.timestamps, fps, limit)
        headline = (
            f"**{count} sounding instance{'s' if count != 1 else ''}** in {seconds:.1f} s of video "
            f"({result.num_frames} frames sampled at {fps:g} per second)."
        )
        lines = [f"Model: {self.catalog.name(model)}. {loaded.summary}", *messages, *result.notes]
        return Analysis(
            overlay_path=overlay_path,
            results_path=results_path,
            table=instance_table(result),
            timeline=timeline_figure(result, seconds),
            status="\n".join([headline, *(f"- {line}" for line in lines)]),
        )


def _analysed_seconds(declared: float, timestamps, fps: float, limit: float) -> float:
    """The seconds of video the analysis covered: the video's length, or the cap, as its frames show them (a header
    that declares less than the frames hold is not believed)."""
    last = float(timestamps[-1]) if len(timestamps) else 0.0
    return min(limit, declared if last < declared else last + 1 / fps)


def _stage(progress: ProgressFn, start: float, end: float) -> ProgressFn:
    """progress for one stage, mapped onto [start, end] of the whole analysis."""
    return lambda fraction, description: progress(start + (end - start) * fraction, description)


__all__ = ["Analysis", "AnalysisCancelled", "AnalysisService", "RunFolders"]
