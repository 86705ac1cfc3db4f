"""One analysis, from an uploaded file to everything the page shows: the app without its page.

An analysis runs in a run folder of its own under the work folder and leaves there its three downloads (the
overlay, the results JSON, the masks zip) and the sampled frames (JPEG, for the frame viewer); a failed or
cancelled one leaves nothing. The newest `kept_results` runs are kept, for `result_seconds` at most (`RunFolders`),
and with them what the model found: a visitor may then show only some of the objects (`AnalysisService.view`: the
downloads again, in the run's `view` folder, without the model) and look at one sampled frame
(`AnalysisService.frame`). A run is its visitor's only: it is asked for by its id and the visitor's session.
`cancelled()` is asked between chunks of frames and of rendering: when it says so, the analysis stops there
(`AnalysisCancelled`).
"""

import dataclasses
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from modeling_avis.errors import AvisError, AvisInputError
from modeling_avis.results import write_mask_zip, write_results_json
from modeling_avis.tracks import AvisVideoResult
from modeling_avis.video_io import ProgressFn, VideoInfo
from modeling_avis.visualization import (
    FAST_X264_OPTIONS,
    FILL_OPACITY,
    TIME_TOLERANCE,
    X264_OPTIONS,
    OverlayPainter,
    contour,
    contour_thickness,
    track_colour,
    transcode,
)

from .media import probe_upload
from .models import ModelCatalog
from .settings import AppSettings
from .summary import instance_table, timeline_figure

# The results JSON is a run's last file: a run folder with one is complete.
RESULTS_SUFFIX = "_avis_results.json"
MASKS_SUFFIX = "_avis_masks.zip"
# How the sampled frames kept for the frame viewer are written: JPEG without chroma subsampling (tens of kB a
# frame at 360p; a frame's colours stay within a few levels of the source's).
FRAME_JPEG = {"quality": 95, "subsampling": 0}
GONE = "These results are no longer on the server: analyse the video again."


class AnalysisCancelled(AvisError):
    """The visitor cancelled the analysis, or left."""


@dataclass(frozen=True)
class Downloads:
    """A run's files for the visitor: the overlay video, the results JSON, the masks zip."""

    overlay_path: Path
    results_path: Path
    masks_path: Path

    def paths(self) -> list[str]:
        return [str(self.overlay_path), str(self.results_path), str(self.masks_path)]


@dataclass(frozen=True)
class ObjectChoice:
    """One found instance as the page's checklist shows it."""

    track_id: int
    label: str  # "[id] class score"
    colour: str  # its overlay colour, "#rrggbb"


@dataclass
class Analysis:
    run: str  # the run's id: how the page asks for it again
    downloads: Downloads
    table: list[list]
    timeline: Figure
    status: str
    objects: list[ObjectChoice]
    num_frames: int
    embedded: bool  # the embedded sounding-shapes model answered

    @property
    def overlay_path(self) -> Path:
        return self.downloads.overlay_path

    @property
    def results_path(self) -> Path:
        return self.downloads.results_path


@dataclass
class _KeptRun:
    """What a finished run keeps for its visitor: the source, what the model found, where its files are."""

    session: str
    video: VideoInfo
    result: AvisVideoResult
    folder: Path
    stem: str
    limit: float


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
        self._kept: dict[str, _KeptRun] = {}
        self._kept_lock = threading.Lock()

    def analyse(
        self,
        video_path: str,
        model: str,
        fps: float,
        score_threshold: float,
        max_instances: int,
        progress: ProgressFn,
        cancelled: Callable[[], bool] = lambda: False,
        session: str = "",
    ) -> Analysis:
        """Probe, run the model on the first `max_video_seconds` (by the decoded frames' times), render the overlay
        over them and write the results of one video.

        Raises AvisInputError for a video the app cannot use, ModelUnavailable / ModelStillLoading for a model it
        cannot give, AnalysisCancelled when `cancelled()` turned true.
        """

        report = _cancellable(progress, cancelled)
        report(0.0, "Reading the video")
        video = probe_upload(video_path, self.settings.max_video_seconds)
        folder = self.runs.new()
        try:
            analysis = self._analyse(
                video, folder, Path(video_path).stem, model, fps, score_threshold, max_instances, report, session
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a failed or cancelled run leaves nothing behind
            raise
        self.runs.prune()
        with self._kept_lock:  # what the model found is kept as long as its run folder
            self._kept = {run: kept for run, kept in self._kept.items() if kept.folder.is_dir()}
        return analysis

    def source(self, run: str, session: str) -> str:
        """The video a visitor's run analysed (an upload, or an example)."""
        return self._run(run, session).video.path

    def objects(self, run: str, session: str) -> list[ObjectChoice]:
        """The objects a visitor's run found, as the checklist shows them."""
        return [object_choice(track) for track in self._run(run, session).result.tracks]

    def view(
        self,
        run: str,
        session: str,
        shown: list[int],
        progress: ProgressFn,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Downloads:
        """The downloads of a visitor's run again with only the objects whose ids are in `shown`, without the model:
        in the run's `view` folder, which replaces the one before."""
        kept = self._run(run, session)
        if not Path(kept.video.path).is_file():
            raise AvisInputError("The video is no longer on the server: upload it again.")
        folder = kept.folder / f"view-{time.time_ns()}"
        folder.mkdir()
        try:
            downloads = _write_downloads(
                kept.video, _only(kept.result, shown), folder, kept.stem, kept.limit,
                _cancellable(progress, cancelled), sound_of=kept.folder / f"{kept.stem}_avis.mp4",
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        for earlier in kept.folder.glob("view-*"):
            if earlier != folder:
                shutil.rmtree(earlier, ignore_errors=True)
        return downloads

    def frame(self, run: str, session: str, shown: list[int], index: int) -> tuple[str, list[tuple[np.ndarray, str]]]:
        """Sampled frame `index` of a visitor's run and the masks of the objects in `shown` there, as the frame
        viewer (gradio's AnnotatedImage) takes them: the frame's JPEG, and per object an opacity map (the mask's
        fill, its outline opaque) with its label."""
        kept = self._run(run, session)
        index = min(max(int(index), 0), kept.result.num_frames - 1)
        picture = _frame_path(kept.folder, index)
        if not picture.is_file():
            raise AvisInputError(GONE)
        masks = []
        for track in _only(kept.result, shown).tracks:
            mask = track.mask(index)
            opacity = np.where(mask, FILL_OPACITY, 0.0)
            opacity[contour(mask, contour_thickness(mask.shape[0]))] = 1.0
            masks.append((opacity, object_choice(track).label))
        return str(picture), masks

    def _run(self, run: str, session: str) -> _KeptRun:
        with self._kept_lock:
            kept = self._kept.get(run)
        if kept is None or kept.session != session or not kept.folder.is_dir():
            raise AvisInputError(GONE)
        return kept

    def _analyse(self, video, folder, name, model, fps, score_threshold, max_instances, report, session) -> Analysis:
        stem = re.sub(r"[^\w-]+", "_", name)[:60] or "video"
        limit = self.settings.max_video_seconds
        report(0.0, "Loading the model")
        loaded = self.catalog.load(model)
        # the cap is on the decoded frames' times (and the sound's), never on the length the header declares
        result = loaded.segmenter(
            video.path, fps=fps, score_threshold=score_threshold, max_instances=max_instances,
            progress=_stage(report, 0.0, 0.75), max_duration=limit,
        )  # fmt: skip
        downloads = _write_downloads(video, result, folder, stem, limit, _stage(report, 0.75, 1.0), folder / "frames")
        with self._kept_lock:
            self._kept[folder.name] = _KeptRun(session, video, result, folder, stem, limit)
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
            run=folder.name,
            downloads=downloads,
            table=instance_table(result),
            timeline=timeline_figure(result, seconds),
            status="\n".join([headline, *(f"- {line}" for line in lines)]),
            objects=[object_choice(track) for track in result.tracks],
            num_frames=result.num_frames,
            embedded=self.catalog.is_embedded(model),
        )


def object_choice(track) -> ObjectChoice:
    red, green, blue = track_colour(track.track_id)
    return ObjectChoice(
        track.track_id, f"[{track.track_id}] {track.label_name} {track.score:.2f}", f"#{red:02x}{green:02x}{blue:02x}"
    )


def _write_downloads(
    video: VideoInfo,
    result: AvisVideoResult,
    folder: Path,
    stem: str,
    limit: float,
    report: ProgressFn,
    frames: Path | None = None,
    sound_of: Path | None = None,
) -> Downloads:
    """The overlay (and, into `frames`, each sampled frame as the model saw it; with the sound of the overlay
    `sound_of`, if given, copied), the results JSON, the masks zip."""
    downloads = Downloads(
        folder / f"{stem}_avis.mp4", folder / f"{stem}{RESULTS_SUFFIX}", folder / f"{stem}{MASKS_SUFFIX}"
    )
    painter = OverlayPainter(result)
    paint = painter if frames is None else _FrameKeeper(painter, frames)
    # a redraw is waited for: it trades file size for time
    options = X264_OPTIONS if sound_of is None else FAST_X264_OPTIONS
    transcode(
        video, downloads.overlay_path, paint, _stage(report, 0.0, 0.9), until=limit, sound_of=sound_of,
        x264_options=options,
    )  # fmt: skip
    report(0.9, "Writing the masks")
    write_mask_zip(result, downloads.masks_path)
    write_results_json({1: result}, downloads.results_path)  # last: a run folder with it is complete
    return downloads


class _FrameKeeper:
    """Paints as `painter` does, and keeps each sampled frame's picture (the source frame at its timestamp) in
    `folder`, for the frame viewer."""

    def __init__(self, painter: OverlayPainter, folder: Path):
        self.painter, self.folder = painter, folder
        folder.mkdir()
        self._kept: set[int] = set()

    def __call__(self, image: np.ndarray, time: float) -> np.ndarray:
        timestamps = self.painter.timestamps
        if timestamps:
            index = self.painter.sample_index(time)
            if index not in self._kept and time >= timestamps[index] - TIME_TOLERANCE:
                Image.fromarray(image).save(_frame_path(self.folder.parent, index), **FRAME_JPEG)
                self._kept.add(index)
        return self.painter(image, time)


def _frame_path(folder: Path, index: int) -> Path:
    return folder / "frames" / f"frame_{index:05d}.jpg"


def _only(result: AvisVideoResult, shown: list[int]) -> AvisVideoResult:
    """`result` with only the tracks whose ids are in `shown`."""
    ids = {int(track_id) for track_id in shown}
    return dataclasses.replace(result, tracks=[track for track in result.tracks if track.track_id in ids])


def _cancellable(progress: ProgressFn, cancelled: Callable[[], bool]) -> ProgressFn:
    def report(fraction: float, description: str) -> None:
        if cancelled():
            raise AnalysisCancelled("The analysis was cancelled.")
        progress(fraction, description)

    return report


def _analysed_seconds(declared: float, timestamps, fps: float, limit: float) -> float:
    """The seconds of video the analysis covered: the video's length, or the cap, as its frames show them (a header
    that declares less than the frames hold is not believed)."""
    last = float(timestamps[-1]) if len(timestamps) else 0.0
    return min(limit, declared if last < declared else last + 1 / fps)


def _stage(progress: ProgressFn, start: float, end: float) -> ProgressFn:
    """progress for one stage, mapped onto [start, end] of the whole analysis."""
    return lambda fraction, description: progress(start + (end - start) * fraction, description)


__all__ = ["Analysis", "AnalysisCancelled", "AnalysisService", "Downloads", "ObjectChoice", "RunFolders"]
