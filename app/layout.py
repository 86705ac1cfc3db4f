"""The page: upload or example, settings, and the outputs of one analysis (gradio Blocks), served to the public.

Each analysis runs in a worker thread of its own; the page's handler waits for it. Stop (or a client's /cancel)
cancels the handler: it tells the analysis to stop at its next chunk of frames and waits until it has, so the next
analysis in the queue never runs beside it. A visitor who closes the tab gets the same (`unload`). At most
`concurrency_limit` analyses hold a worker at once, whatever gradio's queue does.
"""

import asyncio
import contextlib
import contextvars
import html
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from modeling_avis.errors import AvisError

from .models import DEFAULT_CHOICE
from .pipeline import AnalysisCancelled, AnalysisService
from .settings import AppSettings
from .summary import TABLE_HEADERS
from .uploads import UploadLedger

logger = logging.getLogger(__name__)

EXAMPLE_FOLDER = Path(__file__).parent / "examples"
# Videos of the embedded default's synthetic world, and real AVISeg-like clips for a converted AVISM.
SHAPE_EXAMPLES = [EXAMPLE_FOLDER / f"shapes_{name}.mp4" for name in ("duet", "solo", "silent")]
REAL_EXAMPLES = [EXAMPLE_FOLDER / "clarinet_guitar_540x360.mp4", EXAMPLE_FOLDER / "dogs_640x360.mp4"]

INTRO = """# AVIS: which objects are making the sound?
Upload a video with its sound (mp4, webm, mov or mkv) or pick an example: AVISM finds, segments and tracks every
object that is making sound. The result names the model that answered and what it knows."""

REAL_AVISM = """**A real AVISM.** The default model here may be the small one trained on synthetic *sounding shapes*
(circles, squares, triangles and diamonds, each with its own sound): it knows nothing of real scenes. For real
videos (26 classes: instruments, people, animals, vehicles), convert a published checkpoint and serve it:

```bash
python -m conversion.convert_avism AVISM_R50_IN.pth avism-r50 --preset r50_imagenet --vggish vggish-10086976.pth \\
    --push-to-hub you/avism-r50
AVIS_DEFAULT_MODEL=you/avism-r50 python app.py      # or a folder; a Space sets AVIS_DEFAULT_MODEL
```"""


class AnalysisSlots:
    """The analyses running now, per visitor session, each with its cancel flag; at most `limit` at once."""

    def __init__(self, limit: int):
        self._slots = threading.BoundedSemaphore(limit)
        self._flags: dict[str, set[threading.Event]] = defaultdict(set)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def tracking(self, session: str, cancelled: threading.Event) -> Iterator[None]:
        """`cancelled` is set if the session ends (the visitor leaves) inside the block."""
        with self._lock:
            self._flags[session].add(cancelled)
        try:
            yield
        finally:
            with self._lock:
                self._flags[session].discard(cancelled)

    def hold(self, work):
        """`work()` once a slot is free (called in a worker thread)."""
        with self._slots:
            return work()

    def cancel_session(self, session: str) -> None:
        with self._lock:
            for flag in self._flags.pop(session, ()):
                flag.set()


def build_demo(settings: AppSettings, uploads: UploadLedger) -> gr.Blocks:
    """The app's page, with its queue, reading the uploads of `uploads`: `app.cli.serve` serves it."""
    service = AnalysisService(settings)
    slots = AnalysisSlots(settings.concurrency_limit)
    choices = service.catalog.choices()

    # gradio finds the progress tracker by its default value, so the call in the signature is the API.
    async def run(video_path, model, fps, score_threshold, max_instances, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        if not video_path:
            raise gr.Error("Upload a video or pick an example first.", print_exception=False)
        with uploads.using(video_path):
            if not Path(video_path).is_file():
                raise gr.Error(
                    "This upload is no longer on the server: upload the video again.", print_exception=False
                )
            return await analyse(video_path, model, fps, score_threshold, max_instances, request, progress)

    async def analyse(video_path, model, fps, score_threshold, max_instances, request, progress):
        cancelled = threading.Event()
        session = request.session_hash or ""

        def work():
            name, outcome = Path(video_path).name, "failed"
            logger.info("analysis of %s started at %.3f", name, time.monotonic())
            try:
                analysis = service.analyse(
                    video_path, model, float(fps), float(score_threshold), int(max_instances),
                    lambda fraction, description: progress(fraction, desc=description), cancelled.is_set,
                )  # fmt: skip
                outcome = "done"
                return analysis
            except AnalysisCancelled:
                outcome = "cancelled"
                raise
            finally:
                logger.info("analysis of %s ended at %.3f (%s)", name, time.monotonic(), outcome)

        try:
            with slots.tracking(session, cancelled):
                # in this request's context, where gradio's progress finds its event (else it reports nothing)
                context = contextvars.copy_context()
                job = asyncio.get_running_loop().run_in_executor(None, context.run, slots.hold, work)
                try:
                    analysis = await asyncio.shield(job)
                except asyncio.CancelledError:
                    cancelled.set()
                    await asyncio.wait([job])  # stopped at its next chunk: only then may the queue start another
                    job.exception()  # AnalysisCancelled, as expected
                    raise
        except AnalysisCancelled:
            raise gr.Error("The analysis was cancelled.", print_exception=False) from None
        except AvisError as error:
            raise gr.Error(_one_line(str(error)), duration=None, print_exception=False) from None
        except Exception:
            logger.exception("analysis of %s failed", video_path)
            raise gr.Error(
                "Something went wrong while analysing this video; the server log has the details.",
                duration=None,
                print_exception=False,
            ) from None
        files = [str(analysis.overlay_path), str(analysis.results_path)]
        return str(analysis.overlay_path), analysis.status, analysis.table, analysis.timeline, files

    def leave(request: gr.Request):
        slots.cancel_session(request.session_hash or "")

    with gr.Blocks(
        title="AVIS: audio-visual instance segmentation",
        analytics_enabled=False,
        delete_cache=(60, settings.result_seconds),
    ) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video with sound", sources=["upload"], elem_id="input-video")
                gr.Examples(
                    examples=[[str(path)] for path in SHAPE_EXAMPLES],
                    inputs=[video],
                    label="Sounding shapes (for the embedded default)",
                    example_labels=[path.stem.replace("_", ": ") for path in SHAPE_EXAMPLES],
                )
                gr.Examples(
                    examples=[[str(path)] for path in REAL_EXAMPLES],
                    inputs=[video],
                    label="Real clips (for a converted AVISM; ACVIS clips, MIT)",
                    example_labels=[path.stem.rsplit("_", 1)[0].replace("_", " ") for path in REAL_EXAMPLES],
                )
                with gr.Accordion("Settings", open=True):
                    # the catalog, not the list, decides what is refused, in its one answer for everything
                    model = gr.Dropdown(
                        choices, value=DEFAULT_CHOICE, label="Model", allow_custom_value=True, elem_id="model"
                    )
                    fps = gr.Slider(
                        1,
                        10,
                        value=1,
                        step=1,
                        label="Frames per second",
                        info="AVISM was trained on 1 frame per second",
                        elem_id="fps",
                    )
                    score_threshold = gr.Slider(
                        0.05,
                        0.95,
                        value=service.catalog.default_threshold(),
                        step=0.05,
                        label="Score threshold",
                        info="the default model's own threshold to start with",
                    )
                    max_instances = gr.Slider(1, 20, value=10, step=1, label="Maximum instances")
                gr.Markdown(
                    f"Videos longer than {settings.max_video_seconds:g} s are analysed to their first {settings.max_video_seconds:g} s."
                )
                with gr.Row():
                    button = gr.Button("Find the sounding objects", variant="primary", elem_id="run-button")
                    stop = gr.Button("Stop", elem_id="stop-button")
            with gr.Column():
                overlay = gr.Video(label="Sounding objects", interactive=False, elem_id="overlay-video")
                status = gr.Markdown(elem_id="status")
                table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    datatype=["number", "str", "number", "number", "number", "number"],
                    label="Instances",
                    interactive=False,
                    elem_id="instances",
                )
                timeline = gr.Plot(label="When each instance sounds", show_label=False, elem_id="timeline")
                downloads = gr.File(
                    label="Downloads: overlay video and AVIS results JSON",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
        gr.Markdown(REAL_AVISM)
        analysis = button.click(
            run,
            inputs=[video, model, fps, score_threshold, max_instances],
            outputs=[overlay, status, table, timeline, downloads],
            api_name="analyse",
            concurrency_limit=settings.concurrency_limit,
        )
        stop.click(None, cancels=[analysis])
        demo.unload(leave)
    demo.queue(max_size=settings.queue_size)
    uploads.protect(path for block in demo.blocks.values() for path in getattr(block, "keep_in_cache", ()))
    return demo


def _one_line(message: str) -> str:
    """An error message as one escaped line for the page (gradio renders it as HTML)."""
    return html.escape(message.splitlines()[0] if message.strip() else "the video could not be analysed")
