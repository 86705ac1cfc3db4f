"""The Live tab's server side: a visitor's webcam and microphone, streamed by the page, analysed as they arrive.

The page streams them with gradio's own streaming events: the webcam as pictures (inline JPEGs, one every
`FRAME_SECONDS`: `read_picture`), the microphone as chunks of PCM wav, each an upload (one every `SOUND_SECONDS`:
`read_sound_chunk`). Per visitor session, a `LiveSession` puts both on one clock, the server's, from when the session
started: a picture's time is when it arrived; the sound is the chunks one after the other, sample for sample, each
after silence where it starts (by its arrival) more than `SOUND_GAP_SECONDS` later than the sound so far reaches
(gradio keeps only the latest chunk of a stream while the server is busy with the one before; a microphone may start
late), and silence while the microphone is stopped or sends nothing (`MicrophoneClock`). `AvisLiveInputs` samples
the pictures at the model's rate and pairs each with its second of sound; the session's worker thread runs the
online mode on each as soon as it is ready (`AvisVideoSegmenter.stream_step`), holding one of the app's analysis
slots (`AnalysisSlots`, the Upload tab's: at most `concurrency_limit` analyses and live sessions use the CPU at once)
for the whole session. Every picture comes back painted with the latest masks (`OverlayPainter`, as the overlay
video is), with the instance table, the timeline and the latency: for each analysed frame, the seconds from the
arrival of the picture the model sampled to its masks.

A session ends at `max_video_seconds` of its own clock (with a message; the pictures that follow are no longer
analysed), when the visitor leaves the page (at once), and when no picture came for `IDLE_SECONDS` (the webcam was
stopped); its slot is free then. Nothing of a session goes to disk: each chunk of sound is removed once read
(`UploadLedger.consume`), and the painted pictures go back inline (`inline_jpeg`), not as files.
"""

import base64
import io
import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import gradio as gr
import numpy as np
from gradio.processing_utils import extract_base64_data
from PIL import Image

from modeling_avis.errors import AvisError, AvisInputError, one_line
from modeling_avis.processing_avis import AvisLiveInputs
from modeling_avis.tracks import AvisStreamRecorder, AvisStreamUpdate, AvisVideoResult
from modeling_avis.video_io import TIME_TOLERANCE, check_frame_size
from modeling_avis.visualization import OverlayPainter

from .models import ModelCatalog
from .summary import instance_table, timeline_figure
from .uploads import MAX_SOUND_CHUNK_BYTES, SOUND_CHUNK_NAME, UploadLedger

logger = logging.getLogger(__name__)

# Seconds between two pictures of the webcam, and between two chunks of the microphone, as the page sends them.
FRAME_SECONDS = 0.25
SOUND_SECONDS = 0.25
# Seconds without a picture after which a session ends (the webcam was stopped), and without sound after which
# the frames are given silence (the microphone is off): a few of gradio's round trips.
IDLE_SECONDS = 3.0
# A chunk of sound that starts this much later than the sound so far reaches follows lost chunks.
SOUND_GAP_SECONDS = 0.5
# Seconds between two looks of a session's worker at its session when nothing arrives.
POLL_SECONDS = 0.1
# The sound of silence before the microphone sent any: 16-bit mono at 48 kHz, as browsers record it.
SILENCE_FORMAT = ("s16", "mono", 48000)
# Seconds a page that was left is remembered: longer than any of its requests takes to arrive.
LEFT_SECONDS = 60
# Seconds a live stream may wait for its slot and its model beyond the length cap, before gradio's queue puts it
# behind the streams waiting for their turn.
STREAM_MARGIN_SECONDS = 30
# What the page says when a session ends, by how it ended.
ENDINGS = {
    "limit": "The live session reached its limit of {seconds:g} s: stop the webcam, and start it again a few seconds "
    "later for a new session.",
    "stopped": "The live session ended: the webcam sent no picture for a few seconds.",
    "left": "The live session ended: its page was left.",
}
# JPEG quality of the painted pictures sent back, and the page's element that shows them (a `gr.HTML` template).
VIEW_QUALITY = 85
VIEW_TEMPLATE = """${value ? `<img src="${value}" alt="the webcam, painted" style="width: 100%">` : ""}"""


def read_picture(payload: dict | None) -> np.ndarray | None:
    """A picture of the webcam as the page streams it (gradio's `Image` payload, unprocessed: an inline JPEG), as
    (H, W, 3) uint8 RGB. Raises AvisInputError for anything else, and for a picture whose header declares more than
    `MAX_FRAME_PIXELS` (`video_io.check_frame_size`), before it is decoded."""
    if payload is None:
        return None
    url = payload.get("url") if isinstance(payload, dict) else None
    if not isinstance(url, str) or not url.startswith("data:image/"):
        raise AvisInputError("the webcam sent something that is not a picture")
    try:
        picture = Image.open(io.BytesIO(base64.b64decode(extract_base64_data(url))))
    except (OSError, ValueError, Image.DecompressionBombError):
        raise AvisInputError("the webcam sent a picture that cannot be read") from None
    with picture:
        check_frame_size(*picture.size, "the webcam")
        try:
            return np.array(picture.convert("RGB"))
        except OSError:
            raise AvisInputError("the webcam sent a picture that cannot be read") from None


def inline_jpeg(image: np.ndarray) -> str:
    """A picture as an inline JPEG (a data URL), for `VIEW_TEMPLATE`: a stream of pictures sent back as files would
    be a stream of files in gradio's cache."""
    with io.BytesIO() as encoded:
        Image.fromarray(image).save(encoded, format="JPEG", quality=VIEW_QUALITY)
        return "data:image/jpeg;base64," + base64.b64encode(encoded.getvalue()).decode()


def read_sound_chunk(path: str | Path) -> list[av.AudioFrame]:
    """A chunk of the microphone as the page uploads it, a PCM wav (its header's lengths those of an endless stream):
    its decoded audio frames. Raises AvisInputError for anything else: another kind of file, or one over
    `MAX_SOUND_CHUNK_BYTES` (PCM: its samples are no larger than its bytes)."""
    path = Path(path)
    if path.name != SOUND_CHUNK_NAME or not path.is_file():
        raise AvisInputError("the microphone sent something that is not a chunk of sound")
    if path.stat().st_size > MAX_SOUND_CHUNK_BYTES:
        raise AvisInputError(f"the microphone sent a chunk of sound over {MAX_SOUND_CHUNK_BYTES >> 20} MiB")
    try:
        with av.open(str(path), format="wav") as container:
            stream = container.streams.audio[0]
            if not stream.codec_context.name.startswith("pcm_"):
                raise AvisInputError("the microphone sent a chunk of sound that is not PCM")
            return list(container.decode(stream))
    except (av.FFmpegError, IndexError):
        raise AvisInputError("the microphone sent a chunk of sound that cannot be read") from None


class MicrophoneClock:
    """A session's sound as audio frames on its clock, from 0 (when the session started), in one format: each chunk
    of the microphone follows the sound so far sample for sample, after silence where it starts more than
    `SOUND_GAP_SECONDS` later than that (chunks were lost, or the microphone started late); `silence_until` gives
    silence while the microphone sends nothing. A chunk of another format than the first is converted to it (the
    format of silence before any chunk: `SILENCE_FORMAT`)."""

    def __init__(self):
        self.format: tuple[str, str, int] | None = None  # the frames' sample format, channel layout and rate
        self.next = 0  # samples so far
        self._convert: av.AudioResampler | None = None

    def place(self, frames: list[av.AudioFrame], end: float) -> list[av.AudioFrame]:
        """A chunk's frames, arrived when the clock read `end` seconds, with their times on the clock (their own are
        not used), after silence if they start later than the sound so far reaches."""
        frames = self._conform(frames)
        start = round(end * self.format[2]) - sum(frame.samples for frame in frames)
        gap = [self._silence(start - self.next)] if start - self.next > SOUND_GAP_SECONDS * self.format[2] else []
        return self._timed([*gap, *frames])

    def silence_until(self, end: float) -> list[av.AudioFrame]:
        """Silence from where the sound so far ends to `end` seconds (none if it reaches that far)."""
        if self.format is None:
            self.format = SILENCE_FORMAT
        samples = round(end * self.format[2]) - self.next
        return self._timed([self._silence(samples)] if samples > 0 else [])

    def _conform(self, frames: list[av.AudioFrame]) -> list[av.AudioFrame]:
        if self.format is None:
            self.format = (frames[0].format.name, frames[0].layout.name, frames[0].sample_rate)
        if all((frame.format.name, frame.layout.name, frame.sample_rate) == self.format for frame in frames):
            return frames
        if self._convert is None:
            sample_format, layout, rate = self.format
            self._convert = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
        return [converted for frame in frames for converted in self._convert.resample(frame)]

    def _silence(self, samples: int) -> av.AudioFrame:
        sample_format, layout, rate = self.format
        silence = av.AudioFrame(format=sample_format, layout=layout, samples=samples)
        for plane in silence.planes:
            plane.update(bytes(plane.buffer_size))
        silence.sample_rate = rate
        return silence

    def _timed(self, frames: list[av.AudioFrame]) -> list[av.AudioFrame]:
        for frame in frames:
            frame.pts, frame.time_base = self.next, Fraction(1, self.format[2])
            self.next += frame.samples
        return frames


class LiveSession:
    """One visitor's live session (see the module docstring): pictures and sound pushed by the page's handlers
    (`push_frame`, `push_sound`, `microphone_stopped`), analysed by `run` in a worker thread that holds an analysis
    slot.

    catalog, choice: the model; threshold, max_instances: as an analysis's; max_seconds: the length cap.
    clock: seconds, monotonic (a test's own clock).
    """

    def __init__(
        self,
        key: str,
        catalog: ModelCatalog,
        choice: str,
        threshold: float,
        max_instances: int,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.key, self.catalog, self.choice = key, catalog, choice
        self.threshold, self.max_instances, self.max_seconds = float(threshold), int(max_instances), max_seconds
        self.clock = clock
        self.cancelled = threading.Event()
        self.state = "waiting"  # then "loading", "live", "ended"
        self.message = "Waiting for a free slot: the server runs a few analyses and live sessions at a time."
        self.last_frame = clock()
        self.latencies: list[float] = []
        self._changed = threading.Condition()
        self._pushed = False  # something arrived since the worker last looked
        self._inputs: AvisLiveInputs | None = None
        self._origin = 0.0  # the clock's time when the session started: the session's clock reads from it
        self._first: float | None = None  # the session's time of the first picture: the stream's clock reads from it
        self._arrivals: deque[float] = deque()  # pictures' times on the stream's clock, from the next sampled one's
        self._sound = MicrophoneClock()
        self._heard: float | None = None  # the session's time of the latest chunk of sound
        self._microphone_stopped = False
        self._quiet_noted = False
        self._recorder: AvisStreamRecorder | None = None
        self._painter: OverlayPainter | None = None
        self._summary: tuple | None = None  # the table and the timeline of the latest update
        self._shown: tuple | None = None  # the summary the page shows
        self._model_line = ""

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    def push_frame(self, image: np.ndarray) -> tuple:
        """A picture from the webcam, (H, W, 3) uint8 RGB, arrived now: the page's outputs for it (the picture
        painted with the latest masks as an inline JPEG, the status, and the table and the timeline when they
        changed; gr.skip() for those that did not)."""
        arrival = self.clock()
        with self._changed:
            self.last_frame = arrival
            live = self.state == "live"
            if live:
                seconds = arrival - self._origin
                self._first = seconds if self._first is None else self._first
                self._inputs.add_video_frame(image, seconds)
                self._arrivals.append(seconds - self._first)
                self._notify()
            painter, summary, status = self._painter, self._summary, self._status()
        table, timeline = summary if summary is not self._shown else (gr.skip(), gr.skip())
        self._shown = summary
        view = inline_jpeg(self._paint(painter, image, seconds - self._first)) if live else gr.skip()
        return view, status, table, timeline

    def push_sound(self, frames: list[av.AudioFrame]) -> None:
        """A chunk of the microphone (its frames' own times are not used), arrived now."""
        arrival = self.clock()
        with self._changed:
            if self.state != "live" or not frames:
                return
            self._heard, self._microphone_stopped = arrival - self._origin, False
            for frame in self._sound.place(frames, arrival - self._origin):
                self._inputs.add_audio_frame(frame)
            self._notify()

    def microphone_stopped(self) -> None:
        """The microphone was stopped: the frames are given silence until it sends sound again."""
        with self._changed:
            self._microphone_stopped = True
            self._notify()

    def run(self) -> str:
        """The session's work, in its worker thread, once it holds a slot: load the model, then analyse each frame
        as soon as its inputs are ready, until the session ends; returns how it ended ("limit", "stopped", "left",
        "failed")."""
        outcome = self._analyse()
        if not self.ended:
            self._finish(ENDINGS[outcome].format(seconds=self.max_seconds))
        return outcome

    def fail(self, message: str) -> None:
        self._finish(message)

    def result(self) -> AvisVideoResult | None:
        """Everything analysed so far, as an analysis's result (None before the first frame's masks)."""
        with self._changed:
            return None if self._recorder is None else self._result()

    def _status(self) -> str:
        """The page's status (Markdown; the lock held)."""
        if self.state in ("waiting", "loading"):
            return self.message
        lines = []
        frames = len(self._recorder.timestamps) if self._recorder is not None else 0
        if self.state == "live":
            seconds = self._arrivals[-1] if self._arrivals else 0.0
            lines.append(f"**Live**: {seconds:.0f} s of {self.max_seconds:g} s, {_frames(frames)} analysed.")
            if self._heard is None and not self._quiet_noted:
                lines.append("- Waiting for the microphone: start it too, the model listens as it looks.")
        else:
            lines.append(f"**{self.message}** {_frames(frames)} analysed.")
        if self.latencies:
            lines.append(
                f"- Latency (from a frame's arrival to its masks): {self.latencies[-1]:.2f} s, median "
                f"{statistics.median(self.latencies):.2f} s, at most {max(self.latencies):.2f} s."
            )
        notes = self._inputs.notes if self._inputs is not None else []
        lines += [f"- {line}" for line in (self._model_line, *notes) if line]
        return "\n".join(lines)

    def _analyse(self) -> str:
        if self.cancelled.is_set():
            return "left"
        if self.clock() - self.last_frame > IDLE_SECONDS:
            return "stopped"  # while it waited for its slot
        with self._changed:
            self.state, self.message = "loading", "Loading the model."
        try:
            loaded = self.catalog.load(self.choice)
        except AvisError as error:
            self._finish(one_line(error))
            return "failed"
        segmenter = loaded.segmenter
        session = segmenter.processor.init_video_session("online")
        with self._changed:
            self._inputs = AvisLiveInputs(segmenter.processor, max_duration=self.max_seconds)
            self._model_line = f"Model: {self.catalog.name(self.choice)}. {loaded.summary}"
            self.state, self.last_frame = "live", self.clock()
            self._origin = self.last_frame
        logger.info("live session %s started at %.3f", self.key[:8], time.monotonic())
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pushed or self.cancelled.is_set(), timeout=POLL_SECONDS)
                self._pushed = False
                outcome = self._outcome()
                if outcome == "left":
                    return outcome
                self._silence_when_quiet()
                if outcome is not None:
                    self._inputs.end()  # the sound of the last frames is not waited for
                chunks, metadata = self._inputs.ready(), self._inputs.metadata()
            for chunk in chunks:
                if self.cancelled.is_set():
                    return "left"
                self._publish(segmenter.stream_step(session, chunk, metadata, self.threshold, self.max_instances))
            if outcome is not None:
                if metadata is not None:
                    self._publish(segmenter.stream_step(session, None, metadata, self.threshold, self.max_instances))
                return outcome

    def _notify(self) -> None:
        self._pushed = True
        self._changed.notify()

    def _outcome(self) -> str | None:
        """How the session ends now, if it does (the lock held)."""
        if self.cancelled.is_set():
            return "left"
        if self._inputs.ended:
            return "limit"
        if self.clock() - self.last_frame > IDLE_SECONDS:
            return "stopped"
        return None

    def _silence_when_quiet(self) -> None:
        """While the microphone is stopped, or has sent nothing for `IDLE_SECONDS`, the sound is silence up to now:
        the frames are given the sound of silence rather than wait for one (the lock held)."""
        now = self.clock() - self._origin
        if not (self._microphone_stopped or now - (self._heard or 0.0) > IDLE_SECONDS):
            return
        if not self._quiet_noted:
            self._quiet_noted = True
            since = "was stopped" if self._microphone_stopped else f"sent no sound for {IDLE_SECONDS:g} s"
            self._inputs.notes.append(f"the microphone {since}: the frames are given silence while it is quiet")
        for frame in self._sound.silence_until(now):
            self._inputs.add_audio_frame(frame)

    def _publish(self, updates: list[AvisStreamUpdate]) -> None:
        """The masks of the frames the model just finalised: into the result, the painter, the table and the
        timeline; each frame's latency measured now."""
        if not updates:
            return
        with self._changed:
            ready = self.clock() - self._origin - self._first
            metadata = self._inputs.metadata()
            if self._recorder is None:
                self._recorder = AvisStreamRecorder(*metadata.original_size)
            for update in updates:
                self._recorder.add(update)
                for timestamp in update.timestamps:
                    while len(self._arrivals) > 1 and self._arrivals[1] <= timestamp + TIME_TOLERANCE:
                        self._arrivals.popleft()
                    self.latencies.append(ready - self._arrivals[0])
            result = self._result()
        end = float(result.timestamps[-1]) + 1 / self._inputs.fps
        painter, summary = OverlayPainter(result), (instance_table(result), timeline_figure(result, end))
        with self._changed:
            self._painter, self._summary = painter, summary

    def _result(self) -> AvisVideoResult:
        """(the lock held)"""
        return self._recorder.result(has_audio=self._inputs.hears, notes=self._inputs.notes)

    def _paint(self, painter: OverlayPainter | None, image: np.ndarray, time: float) -> np.ndarray:
        if painter is None:
            return image
        height, width = painter.result.height, painter.result.width
        if image.shape[:2] != (height, width):  # the webcam changed its size: the masks keep the first one
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
        return painter(image, time)

    def _finish(self, message: str) -> None:
        with self._changed:
            self.state, self.message = "ended", message


class LiveSessions:
    """The live session of each visitor's page (by gradio's session hash): `frame`, `sound` and `sound_stopped` are
    the page's handlers, `leave` its unload. A page's next session starts with its first picture after the last one
    ended and the webcam was stopped (no picture for `IDLE_SECONDS`); a page that was left starts none (a picture
    still on its way would otherwise start one). Each session's worker holds one of `slots`."""

    def __init__(
        self,
        catalog: ModelCatalog,
        slots,
        max_seconds: float,
        uploads: UploadLedger,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.catalog, self.slots, self.max_seconds, self.uploads = catalog, slots, max_seconds, uploads
        self.clock = clock
        self._sessions: dict[str, LiveSession] = {}
        self._left: dict[str, float] = {}  # the pages left in the last `LEFT_SECONDS`, when
        self._lock = threading.Lock()

    def frame(self, key: str, picture: dict | None, choice: str, threshold: float, max_instances: int) -> tuple:
        """A picture of the webcam (see `read_picture`): the page's outputs for it (see `LiveSession.push_frame`)."""
        image = read_picture(picture)
        live = self.session(key, choice, threshold, max_instances) if image is not None else None
        return tuple(gr.skip() for _ in range(4)) if live is None else live.push_frame(image)

    def session(self, key: str, choice: str, threshold: float, max_instances: int) -> LiveSession | None:
        """The page's live session, started (its worker waiting for a slot) if it has none or its last one ended
        and the webcam was stopped since; None for a page that was left."""
        with self._lock:
            if key in self._left:
                return None
            live = self._sessions.get(key)
            if live is None or (live.ended and self.clock() - live.last_frame > IDLE_SECONDS):
                live = self._sessions[key] = LiveSession(
                    key, self.catalog, choice, threshold, max_instances, self.max_seconds, self.clock
                )
                threading.Thread(target=self._work, args=(live,), name="avis-live", daemon=True).start()
            return live

    def sound(self, key: str, path: str | None) -> None:
        """A chunk of the microphone (see `read_sound_chunk`)."""
        if not path or not Path(path).exists():
            return  # gradio hands a chunk on twice at times: it was read, and removed, the first time
        frames = read_sound_chunk(path)
        self.uploads.consume(path)
        live = self.get(key)
        if live is not None:
            live.push_sound(frames)

    def sound_stopped(self, key: str) -> None:
        live = self.get(key)
        if live is not None:
            live.microphone_stopped()

    def leave(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            live = self._sessions.pop(key, None)
            self._left = {page: when for page, when in self._left.items() if now - when < LEFT_SECONDS}
            self._left[key] = now
        if live is not None:
            live.cancelled.set()

    def get(self, key: str) -> LiveSession | None:
        with self._lock:
            return self._sessions.get(key)

    def _work(self, live: LiveSession) -> None:
        outcome = "failed"
        try:
            outcome = self.slots.hold(live.run)
        except Exception:
            logger.exception("live session %s failed", live.key[:8])
            live.fail("Something went wrong in the live session; the server log has the details.")
        finally:
            latencies = live.latencies or [math.nan]
            logger.info(
                "live session %s ended at %.3f (%s): %d frames, latency median %.2f s, at most %.2f s",
                live.key[:8], time.monotonic(), outcome, len(live.latencies), statistics.median(latencies),
                max(latencies),
            )  # fmt: skip


def _frames(count: int) -> str:
    return f"{count} frame{'s' if count != 1 else ''}"


__all__ = [
    "FRAME_SECONDS",
    "IDLE_SECONDS",
    "SOUND_SECONDS",
    "VIEW_TEMPLATE",
    "LiveSession",
    "LiveSessions",
    "MicrophoneClock",
    "inline_jpeg",
    "read_picture",
    "read_sound_chunk",
]
