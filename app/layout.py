"""The page (gradio Blocks), served to the public, in two tabs: Upload (an uploaded video or an example, settings, and
the outputs of one analysis, the offline mode) and Live (the visitor's webcam and microphone, analysed as they
arrive, the online mode: `app.live`).

Each analysis runs in a worker thread of its own; the page's handler waits for it. Stop (or a client's /cancel)
cancels the handler: it tells the analysis to stop at its next chunk of frames and waits until it has, so the next
analysis in the queue never runs beside it. A visitor who closes the tab gets the same (`unload`), and their live
session ends. At most `concurrency_limit` analyses and live sessions hold a worker at once (`AnalysisSlots`), whatever
gradio's queue does.
"""

import asyncio
import contextlib
import contextvars
import html
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from modeling_avis.errors import AvisError, AvisInputError

from .live import FRAME_SECONDS, SOUND_SECONDS, STREAM_MARGIN_SECONDS, VIEW_TEMPLATE, LiveSessions
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

LIVE_INTRO = """Your webcam and microphone, streamed to the server and analysed as they arrive (the online mode: each
frame's masks as soon as the second of sound after it is in). Start both, the model listens as it looks: each
sounding object comes back masked and labelled. A session lasts at most {seconds:g} s; stop the webcam to end it.
The settings are read when a session starts."""


class AnalysisSlots:
    """The analyses and live sessions running now (the analyses per visitor session, each with its cancel flag); at
    most `limit` at once."""

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
    live = LiveSessions(service.catalog, slots, settings.max_video_seconds, uploads)
    choices = service.catalog.choices()
    threshold = service.catalog.default_threshold()

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

    # Its inputs come unprocessed (the picture is checked before it is decoded: `read_picture`); the settings are
    # checked here as gradio checks them.
    def live_frame(picture, model, score_threshold, max_instances, request: gr.Request):
        model, score_threshold = live_model.preprocess(model), live_threshold.preprocess(score_threshold)
        max_instances = live_instances.preprocess(max_instances)
        try:
            return live.frame(request.session_hash or "", picture, model, score_threshold, max_instances)
        except AvisInputError as error:
            raise gr.Error(_one_line(str(error)), print_exception=False) from None

    def live_sound(chunk, request: gr.Request):
        try:
            live.sound(request.session_hash or "", chunk)
        except AvisInputError as error:
            raise gr.Error(_one_line(str(error)), print_exception=False) from None

    def live_sound_stopped(request: gr.Request):
        live.sound_stopped(request.session_hash or "")

    def leave(request: gr.Request):
        slots.cancel_session(request.session_hash or "")
        live.leave(request.session_hash or "")

    with gr.Blocks(
        title="AVIS: audio-visual instance segmentation",
        analytics_enabled=False,
        delete_cache=(60, settings.result_seconds),
    ) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Upload", id="upload"):
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
                        model = _model_choice(choices, "model")
                        fps = gr.Slider(
                            1,
                            10,
                            value=1,
                            step=1,
                            label="Frames per second",
                            info="AVISM was trained on 1 frame per second",
                            elem_id="fps",
                        )
                        score_threshold, max_instances = _threshold_slider(threshold), _instances_slider()
                    gr.Markdown(
                        f"Videos longer than {settings.max_video_seconds:g} s are analysed to their first {settings.max_video_seconds:g} s."
                    )
                    with gr.Row():
                        button = gr.Button("Find the sounding objects", variant="primary", elem_id="run-button")
                        stop = gr.Button("Stop", elem_id="stop-button")
                with gr.Column():
                    overlay = gr.Video(label="Sounding objects", interactive=False, elem_id="overlay-video")
                    status = gr.Markdown(elem_id="status")
                    table, timeline = _instance_table("instances"), _timeline("timeline")
                    downloads = gr.File(
                        label="Downloads: overlay video and AVIS results JSON",
                        file_count="multiple",
                        interactive=False,
                        elem_id="downloads",
                    )
        with gr.Tab("Live", id="live"):
            gr.Markdown(LIVE_INTRO.format(seconds=settings.max_video_seconds))
            with gr.Row():
                with gr.Column():
                    webcam = gr.Image(
                        sources=["webcam"],
                        streaming=True,
                        label="Webcam",
                        # a picture of this size is a few tens of kilobytes, well within a request's bound
                        webcam_options=gr.WebcamOptions(constraints={"video": {"width": {"ideal": 640}}}),
                        elem_id="live-webcam",
                    )
                    microphone = gr.Audio(
                        sources=["microphone"],
                        streaming=True,
                        type="filepath",
                        label="Microphone",
                        elem_id="live-microphone",
                    )
                    with gr.Accordion("Settings", open=False):
                        live_model = _model_choice(choices, "live-model")
                        live_threshold, live_instances = _threshold_slider(threshold), _instances_slider()
                with gr.Column():
                    view = gr.HTML(html_template=VIEW_TEMPLATE, label="Sounding objects, live", elem_id="live-view")
                    live_status = gr.Markdown(elem_id="live-status")
                    live_table, live_timeline = _instance_table("live-instances"), _timeline("live-timeline")
        gr.Markdown(REAL_AVISM)
        analysis = button.click(
            run,
            inputs=[video, model, fps, score_threshold, max_instances],
            outputs=[overlay, status, table, timeline, downloads],
            api_name="analyse",
            concurrency_limit=settings.concurrency_limit,
        )
        stop.click(None, cancels=[analysis])
        # gradio's queue ends a stream after `time_limit` and the page joins it again, behind any stream waiting
        stream_limit = math.ceil(settings.max_video_seconds) + STREAM_MARGIN_SECONDS
        webcam.stream(
            live_frame,
            inputs=[webcam, live_model, live_threshold, live_instances],
            outputs=[view, live_status, live_table, live_timeline],
            api_name="live_frame",
            show_progress="hidden",
            preprocess=False,
            concurrency_limit=settings.concurrency_limit,
            concurrency_id="live-frames",
            time_limit=stream_limit,
            stream_every=FRAME_SECONDS,
        )
        microphone.stream(
            live_sound,
            inputs=[microphone],
            outputs=None,
            api_name="live_sound",
            show_progress="hidden",
            concurrency_limit=settings.concurrency_limit,
            concurrency_id="live-sound",
            time_limit=stream_limit,
            stream_every=SOUND_SECONDS,
        )
        microphone.stop_recording(live_sound_stopped, api_visibility="private", show_progress="hidden")
        demo.unload(leave)
    demo.queue(max_size=settings.queue_size)
    uploads.protect(path for block in demo.blocks.values() for path in getattr(block, "keep_in_cache", ()))
    return demo


def _model_choice(choices: list[str], elem_id: str) -> gr.Dropdown:
    # the catalog, not the list, decides what is refused, in its one answer for everything
    return gr.Dropdown(choices, value=DEFAULT_CHOICE, label="Model", allow_custom_value=True, elem_id=elem_id)


def _threshold_slider(threshold: float) -> gr.Slider:
    return gr.Slider(
        0.05,
        0.95,
        value=threshold,
        step=0.05,
        label="Score threshold",
        info="the default model's own threshold to start with",
    )


def _instances_slider() -> gr.Slider:
    return gr.Slider(1, 20, value=10, step=1, label="Maximum instances")


def _instance_table(elem_id: str) -> gr.Dataframe:
    return gr.Dataframe(
        headers=TABLE_HEADERS,
        datatype=["number", "str", "number", "number", "number", "number"],
        label="Instances",
        interactive=False,
        elem_id=elem_id,
    )


def _timeline(elem_id: str) -> gr.Plot:
    return gr.Plot(label="When each instance sounds", show_label=False, elem_id=elem_id)


def _one_line(message: str) -> str:
    """An error message as one escaped line for the page (gradio renders it as HTML)."""
    return html.escape(message.splitlines()[0] if message.strip() else "the video could not be analysed")
