"""The page: upload or example, settings, and the outputs of one analysis (gradio Blocks)."""

import html
import logging
from pathlib import Path

import gradio as gr

from modeling_avis.errors import AvisError

from .inference import MODEL_CHOICES, ModelSource, default_score_threshold
from .pipeline import AppSettings, analyse_video
from .summary import TABLE_HEADERS

logger = logging.getLogger(__name__)

EXAMPLE_FOLDER = Path(__file__).parent / "examples"
# Videos of the embedded default's synthetic world, and real AVISeg-like clips for a converted AVISM.
SHAPE_EXAMPLES = [EXAMPLE_FOLDER / f"shapes_{name}.mp4" for name in ("duet", "solo", "silent")]
REAL_EXAMPLES = [EXAMPLE_FOLDER / "clarinet_guitar_540x360.mp4", EXAMPLE_FOLDER / "dogs_640x360.mp4"]

INTRO = """# AVIS: which objects are making the sound?
Upload a video with its sound (mp4, webm, mov or mkv) or pick an example. AVISM finds, segments and tracks every
object that is making sound. The embedded default is a small AVISM trained on synthetic *sounding shapes* (a circle
hums at 440 Hz, a square plays a chord, a triangle hisses, a diamond buzzes; silent shapes are not sounding objects):
try it on the shapes examples. For real videos (26 classes: instruments, people, animals, vehicles), give the folder
or Hub id of a converted AVISM checkpoint."""


def build_demo(settings: AppSettings) -> gr.Blocks:
    """The app's page, with its queue: `build_demo(settings).launch()` serves it."""

    # gradio finds the progress tracker by its default value, so the call in the signature is the API.
    def run(
        video_path,
        model_choice,
        model_location,
        fps,
        score_threshold,
        max_instances,
        progress=gr.Progress(),  # noqa: B008
    ):
        if not video_path:
            raise gr.Error("Upload a video or pick an example first.", print_exception=False)
        try:
            analysis = analyse_video(
                video_path,
                ModelSource.from_setting(model_choice, model_location),
                float(fps),
                float(score_threshold),
                int(max_instances),
                settings,
                lambda fraction, description: progress(fraction, desc=description),
            )
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

    with gr.Blocks(title="AVIS: audio-visual instance segmentation", analytics_enabled=False) as demo:
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
                    model_choice = gr.Radio(list(MODEL_CHOICES), value="Embedded default", label="Model")
                    model_location = gr.Textbox(
                        label="Model folder or Hub id",
                        placeholder="a folder written by save_pretrained, or owner/name on the Hub",
                    )
                    fps = gr.Slider(
                        1,
                        10,
                        value=1,
                        step=1,
                        label="Frames per second",
                        info="AVISM was trained on 1 frame per second",
                    )
                    score_threshold = gr.Slider(
                        0.05,
                        0.95,
                        value=default_score_threshold(),
                        step=0.05,
                        label="Score threshold",
                        info="the embedded default's own threshold to start with",
                    )
                    max_instances = gr.Slider(1, 20, value=10, step=1, label="Maximum instances")
                gr.Markdown(f"Videos longer than {settings.max_video_seconds:g} s are trimmed to their start.")
                button = gr.Button("Find the sounding objects", variant="primary", elem_id="run-button")
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
        button.click(
            run,
            inputs=[video, model_choice, model_location, fps, score_threshold, max_instances],
            outputs=[overlay, status, table, timeline, downloads],
            api_name="analyse",
            concurrency_limit=settings.concurrency_limit,
        )
    demo.queue(max_size=settings.queue_size)
    return demo


def _one_line(message: str) -> str:
    """An error message as one escaped line for the page (gradio renders it as HTML)."""
    return html.escape(message.splitlines()[0] if message.strip() else "the video could not be analysed")
