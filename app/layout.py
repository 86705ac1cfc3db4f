"""The page (gradio Blocks), served to the public, in two tabs: Upload (an uploaded video or an example, settings, and
the outputs of one analysis, the offline mode) and Live (the visitor's webcam and microphone, analysed as they
arrive, the online mode: `app.live`).

Each analysis runs in a worker thread of its own; the page's handler waits for it, showing its stage and how far
it is (`#progress`, every `PROGRESS_SECONDS`). Once it is done, the visitor may untick objects (the overlay and the
downloads are made again without them, without the model: `AnalysisService.view`) and look at one sampled frame
with its masks (the frame viewer). Stop (or a client's /cancel)
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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from modeling_avis.errors import AvisError, AvisInputError

from .live import FRAME_SECONDS, SOUND_SECONDS, STREAM_MARGIN_SECONDS, VIEW_TEMPLATE, LiveSessions
from .models import DEFAULT_CHOICE
from .pipeline import Analysis, AnalysisCancelled, AnalysisService, ObjectChoice
from .settings import AppSettings
from .summary import TABLE_HEADERS
from .uploads import UploadLedger

logger = logging.getLogger(__name__)

EXAMPLE_FOLDER = Path(__file__).parent / "examples"
# Videos of the embedded default's synthetic world, and real AVISeg-like clips for a converted AVISM.
SHAPE_EXAMPLES = [EXAMPLE_FOLDER / f"shapes_{name}.mp4" for name in ("duet", "solo", "silent")]
REAL_EXAMPLES = [EXAMPLE_FOLDER / "clarinet_guitar_540x360.mp4", EXAMPLE_FOLDER / "dogs_640x360.mp4"]

# How often the page's progress line is brought up to date while an analysis runs.
PROGRESS_SECONDS = 0.2

DONE = "**Done: 100 %**"

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

EMBEDDED_NOTICE = """> ⚠️ **This answer is the embedded sounding-shapes model's.** It knows four synthetic shapes (circles, squares,
> triangles and diamonds) and their four sounds, nothing of real scenes: on a real video its answer means nothing.
> For real videos, serve a converted AVISM (see the end of the page)."""

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
        session = request.session_hash or ""
        with uploads.using(video_path):
            if not Path(video_path).is_file():
                raise gr.Error(
                    "This upload is no longer on the server: upload the video again.", print_exception=False
                )

            def work(report, cancelled):
                name, outcome = Path(video_path).name, "failed"
                logger.info("analysis of %s started at %.3f", name, time.monotonic())
                try:
                    analysis = service.analyse(
                        video_path, model, float(fps), float(score_threshold), int(max_instances), report,
                        cancelled, session,
                    )  # fmt: skip
                    outcome = "done"
                    return analysis
                except AnalysisCancelled:
                    outcome = "cancelled"
                    raise
                finally:
                    logger.info("analysis of %s ended at %.3f (%s)", name, time.monotonic(), outcome)

            async for update in held(session, work, progress, "analysing this video"):
                if isinstance(update, Finished):
                    yield finished_outputs(update.value, session)
                else:
                    yield {progress_line: update}

    def finished_outputs(analysis: Analysis, session: str) -> dict:
        shown = [choice.track_id for choice in analysis.objects]
        return {
            overlay: str(analysis.overlay_path),
            status: analysis.status,
            table: analysis.table,
            timeline: analysis.timeline,
            downloads: analysis.downloads.paths(),
            objects: gr.CheckboxGroup(
                choices=[(choice.label, choice.track_id) for choice in analysis.objects],
                value=shown,
                visible=bool(shown),
            ),
            legend: gr.HTML(_legend(analysis.objects), visible=bool(shown)),
            frame_index: gr.Slider(maximum=max(analysis.num_frames - 1, 1), value=0, visible=analysis.num_frames > 0),
            frame_view: frame_picture(analysis.run, session, shown, 0, analysis.objects)
            if analysis.num_frames
            else gr.AnnotatedImage(None, visible=False),
            notice: gr.Markdown(EMBEDDED_NOTICE, visible=analysis.embedded),
            progress_line: DONE,
            run_state: analysis.run,
        }

    def frame_picture(run: str, session: str, shown: list[int], index: int, choices: list[ObjectChoice]):
        picture, masks = service.frame(run, session, shown, index)
        colours = {choice.label: choice.colour for choice in choices}
        return gr.AnnotatedImage((picture, masks), color_map=colours, visible=True)

    async def show_objects(run, shown, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        """The overlay and downloads again with only the ticked objects (no model run)."""
        if not run:
            raise gr.Error("Analyse a video first.", print_exception=False)
        session, shown = request.session_hash or "", [int(track_id) for track_id in shown or []]
        try:
            source = service.source(run, session)
        except AvisError as error:
            raise gr.Error(_one_line(str(error)), print_exception=False) from None
        with uploads.using(source):

            def work(report, cancelled):
                return service.view(run, session, shown, report, cancelled)

            async for update in held(session, work, progress, "drawing the objects again"):
                if isinstance(update, Finished):
                    yield {
                        overlay: str(update.value.overlay_path),
                        downloads: update.value.paths(),
                        progress_line: DONE,
                    }
                else:
                    yield {progress_line: update}

    def show_frame(run, shown, index, request: gr.Request):
        """Sampled frame `index` with the masks of the ticked objects."""
        if not run:
            return gr.skip()
        session = request.session_hash or ""
        try:
            choices = service.objects(run, session)
            return frame_picture(run, session, [int(track_id) for track_id in shown or []], int(index), choices)
        except AvisError as error:
            raise gr.Error(_one_line(str(error)), print_exception=False) from None

    async def held(session: str, work: Callable, progress: gr.Progress, doing: str) -> AsyncIterator:
        """Runs `work(report, cancelled)` in a worker thread holding an analysis slot: yields its stage and how far
        it is (a line of Markdown) whenever that changed, every PROGRESS_SECONDS, and last `Finished(its value)`;
        its errors come out as gr.Errors (one line)."""
        cancelled = threading.Event()
        passed: list[str] = []  # the stages so far, the last one running
        stage = ["**Waiting for a free analysis slot**"]

        def report(fraction: float, description: str) -> None:
            progress(fraction, desc=description)
            if description == "Done":  # the model's end, not the analysis's: what it does next is shown instead
                return
            if not passed or passed[-1] != description:
                passed.append(description)
            stage[0] = " · ".join(
                [*(f"{name} ✓" for name in passed[:-1]), f"**{description}: {round(100 * fraction)} %**"]
            )

        try:
            with slots.tracking(session, cancelled):
                # in this request's context, where gradio's progress finds its event (else it reports nothing)
                context = contextvars.copy_context()
                job = asyncio.get_running_loop().run_in_executor(
                    None, context.run, slots.hold, lambda: work(report, cancelled.is_set)
                )
                shown = None
                try:
                    while not job.done():
                        if stage[0] != shown:
                            shown = stage[0]
                            yield shown
                        await asyncio.wait([job], timeout=PROGRESS_SECONDS)
                    value = job.result()
                finally:
                    # cancelled, or closed at a yield (gradio closes a generator whose page went away)
                    if not job.done():
                        cancelled.set()
                        await asyncio.wait([job])  # stopped at its next chunk: only then may the queue start another
                        job.exception()  # AnalysisCancelled, as expected
        except AnalysisCancelled:
            raise gr.Error("The analysis was cancelled.", print_exception=False) from None
        except AvisError as error:
            raise gr.Error(_one_line(str(error)), duration=None, print_exception=False) from None
        except Exception:
            logger.exception("%s failed", doing)
            raise gr.Error(
                f"Something went wrong while {doing}; the server log has the details.",
                duration=None,
                print_exception=False,
            ) from None
        yield Finished(value)

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
                        label="Sounding shapes (for the embedded sounding-shapes model)",
                        example_labels=[path.stem.replace("_", ": ") for path in SHAPE_EXAMPLES],
                    )
                    if service.catalog.offers_a_real_model():  # the embedded model has no answer for them
                        gr.Examples(
                            examples=[[str(path)] for path in REAL_EXAMPLES],
                            inputs=[video],
                            label="Real clips (for a real AVISM, not the embedded shapes model; ACVIS clips, MIT)",
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
                    progress_line = gr.Markdown(elem_id="progress")
                    notice = gr.Markdown(visible=False, elem_id="notice")
                    overlay = gr.Video(label="Sounding objects", interactive=False, elem_id="overlay-video")
                    status = gr.Markdown(elem_id="status")
                    objects = gr.CheckboxGroup(
                        label="Objects shown (untick one to hide it in the overlay, the frames and the downloads)",
                        visible=False,
                        elem_id="objects",
                    )
                    legend = gr.HTML(visible=False, elem_id="legend")
                    frame_index = gr.Slider(
                        0, 1, value=0, step=1, label="Sampled frame", visible=False, elem_id="frame-index"
                    )
                    frame_view = gr.AnnotatedImage(
                        label="The sampled frame and its masks", visible=False, elem_id="frame-view"
                    )
                    table, timeline = _instance_table("instances"), _timeline("timeline")
                    downloads = gr.File(
                        label="Downloads: overlay video, AVIS results JSON, PNG masks (zip)",
                        file_count="multiple",
                        interactive=False,
                        elem_id="downloads",
                    )
                    run_state = gr.State("")
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
            outputs=[
                overlay, status, table, timeline, downloads, objects, legend, frame_index, frame_view, notice,
                progress_line, run_state,
            ],
            api_name="analyse",
            concurrency_limit=settings.concurrency_limit,
            show_progress_on=[overlay],  # the progress line is the page's own
        )  # fmt: skip
        # only the visitor's own ticking (not the analysis filling the list) draws the objects again
        redraw = objects.input(
            show_objects,
            inputs=[run_state, objects],
            outputs=[overlay, downloads, progress_line],
            api_name="show_objects",
            trigger_mode="always_last",
            show_progress_on=[overlay],
            concurrency_limit=settings.concurrency_limit,
        )
        # the frame viewer follows, once the overlay is back
        redraw.success(
            show_frame, inputs=[run_state, objects, frame_index], outputs=[frame_view], show_progress="hidden"
        )
        frame_index.input(
            show_frame,
            inputs=[run_state, objects, frame_index],
            outputs=[frame_view],
            api_name="show_frame",
            trigger_mode="always_last",
            show_progress="hidden",
        )
        stop.click(None, cancels=[analysis, redraw])
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


@dataclass(frozen=True)
class Finished:
    """What a held work gave, once it is done (see `held`)."""

    value: object


def _legend(choices: list[ObjectChoice]) -> str:
    """Each object's colour in the overlay, beside its label."""
    items = "".join(
        f'<span style="margin-right:1em"><span style="display:inline-block;width:0.9em;height:0.9em;'
        f'background:{choice.colour};border:1px solid #000;vertical-align:middle"></span> {html.escape(choice.label)}'
        "</span>"
        for choice in choices
    )
    return f"<div>{items}</div>"


def _one_line(message: str) -> str:
    """An error message as one escaped line for the page (gradio renders it as HTML)."""
    return html.escape(message.splitlines()[0] if message.strip() else "the video could not be analysed")
