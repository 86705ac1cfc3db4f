"""`python -m modeling_avis stream SOURCE` (`avis stream`): the sounding objects of a stream, found as its frames and
its sound arrive (the online mode of `session_avis`), one JSON line on stdout for each window as soon as the model
has answered it.

    avis stream app/examples/shapes_duet.mp4                         # a file, read as fast as the model goes
    avis stream concert.mp4 --realtime --out overlay.ts              # a file paced as if it were live, with its overlay
    ffmpeg -re -i concert.mp4 -f mpegts - | avis stream -            # a pipe: MPEG-TS or Matroska on stdin
    avis stream /dev/video0 --format v4l2 --option video_size=640x480     # a webcam (a device has no sound)
    avis stream rtsp://camera.local/live --option rtsp_transport=tcp --json results.json

SOURCE is a video file (read as `predict` reads it: its sound from a container of its own, its length from its
decoded frames), `-` for a pipe, or a URL or capture device that FFmpeg opens (`--format`: its demuxer, `--option
KEY=VALUE`: the demuxer's options). It ends at the end of the source, at `--max-seconds`, on Ctrl-C (status 130) or
when stdout is closed (`avis stream ... | head -3`), each time with what was answered so far written: the overlay
completed so that it plays, `--json` with the frames so far. A failure leaves neither file behind.

Each line, flushed as soon as its window is answered (stdout holds these lines only; notes go to stderr):

    {"window": 0,
     "frames": [{"index": 0, "time": 0.0, "latency": 1.27}],
     "tracks": [{"id": 1, "label": 1, "class": "square", "score": 0.99,
                 "masks": [{"size": [288, 384], "counts": "..."}]}]}

- window: the line's number, from 0.
- frames: the sampled frames the window finalises (its newest `--stride`): every sampled frame of the stream comes
  in exactly one line, in order. index: 0, 1, ... through the stream; time: seconds from its first video frame;
  latency: seconds from the frame's arrival to this line (below).
- tracks: the tracks in those frames. id: one per object for as long as it sounds (an object that falls silent ends
  its track, a new sound starts one); label and class: the model's class id and name; score: the mean of the
  track's window scores so far (class and score may change from one line to the next, as more windows vote);
  masks: one compressed COCO RLE per frame of `frames`, at the source's size (`tracks.decode_mask`, or
  pycocotools' `decode`). A track missing from a line is not in its frames.

Latency. The model pairs frame k with the sound from its time t_k to t_k + 0.975 s, so a live frame's masks wait for
that second of sound to arrive, then for the model. A frame arrives when its picture is decoded from a pipe, URL or
device (when the source opens, FFmpeg first reads up to `analyzeduration`, 5 s by default, to learn its streams:
`--option analyzeduration=500000` starts sooner), when its picture and sound are read from a file, and, with
`--realtime`, at its time after the start by the wall clock (each frame then goes to the model no earlier than its
time and the second of sound after it have come, as from a live source).
"""

import argparse
import bisect
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import torch

from .errors import AvisCheckpointError, AvisInputError, AvisUsageError, printable
from .inference_avis import AvisVideoSegmenter
from .outputs import check_output_file, check_outputs_apart
from .processing_avis import AvisLiveChunks, AvisVideoChunks, AvisVideoMetadata
from .results import write_results_json
from .runtime import configure_runtime
from .session_avis import AvisOnlineSettings
from .tracks import AvisStreamRecorder, AvisStreamUpdate, encode_mask
from .video_io import TIME_TOLERANCE, VideoInfo, probe_video
from .visualization import LIVE_SUFFIX, FileMedia, LiveOverlay

# The longest window: the online mode holds a window's frames (their mask features: 15.7 MB a frame at 360p).
MAX_WINDOW = 64


def stream(args: argparse.Namespace, model: str, autocast_dtype: torch.dtype | None) -> int:
    """The `stream` command on its parsed arguments (see `__main__.build_parser`), with `model` (a folder or Hub id)
    run in `autocast_dtype`. Returns the exit status: 0 at the source's end or when stdout is closed."""
    source = _source(args)
    _check_outputs(args, source, model)
    online = _online_settings(args)
    configure_runtime(args.threads)
    segmenter = AvisVideoSegmenter.from_pretrained(model, args.device, autocast_dtype)
    if segmenter.model.audio_encoder is None:
        raise AvisCheckpointError(
            "this model reads precomputed VGGish features (its config has no audio_config): it cannot hear a "
            "stream; convert it with --vggish so that it hears the sound"
        )
    run = StreamRun(segmenter, args)
    if isinstance(source, Path):
        chunks = run.file_chunks(source)
    else:
        chunks = run.live_chunks(source)
        # a live source may keep the command waiting: this says that the model is loaded and what it waits for
        print(
            f"reading {run.name}: windows of {online.window_size} sampled frames every {online.stride} "
            "(Ctrl-C ends it)",
            file=sys.stderr,
            flush=True,
        )
    return run(segmenter.stream_chunks(chunks, args.threshold, args.max_instances, online), chunks)


class StreamRun:
    """One run of the command: the lines it prints, each sampled frame's arrival, and the outputs it writes as it
    goes (`LiveOverlay`, and an `AvisStreamRecorder` for --json)."""

    def __init__(self, segmenter: AvisVideoSegmenter, args: argparse.Namespace):
        self.processor = segmenter.processor
        self.args = args
        self.name = "the source"
        self.arrivals = Arrivals()
        self.overlay: LiveOverlay | None = None
        self.recorder: AvisStreamRecorder | None = None
        # what the summary says, in constant memory however long the stream
        self.frames, self.tracks, self.latency_sum, self.latency_max = 0, 0, 0.0, 0.0

    def file_chunks(self, path: Path) -> "FileChunks":
        self.name = printable(path.name)
        chunks = self.processor.iter_chunks(
            path, 1, fps=self.args.fps, max_duration=self.args.max_seconds, mute_audio=self.args.mute_audio
        )
        extractor = self.processor.feature_extractor
        lead = extractor.example_length / extractor.sampling_rate if chunks.metadata().has_audio else 0.0
        video = probe_video(path) if self.args.out is not None else None
        return FileChunks(
            chunks, self.arrivals, self.args.realtime, lead, video, self._start_overlay, 1 / self.args.fps
        )

    def live_chunks(self, source) -> AvisLiveChunks:
        self.name = printable(getattr(source, "name", source))
        chunks = AvisLiveChunks(
            self.processor, source, self.args.format, dict(self.args.option or []), fps=self.args.fps,
            mute_audio=self.args.mute_audio, max_duration=self.args.max_seconds,
        )  # fmt: skip
        chunks.on_frame = LiveFrames(chunks, self.arrivals, self.args.realtime, self._start_overlay)
        return chunks

    def _start_overlay(self, time_base, rate, audio) -> LiveOverlay | None:
        """The overlay (with --out), once the source's clock, frame rate and audio stream are known."""
        if self.args.out is not None:
            self.overlay = LiveOverlay(
                self.args.out, 1 / self.args.fps, time_base, rate, audio, self.args.max_seconds, self.name
            )
        return self.overlay

    def __call__(self, updates: Iterator[AvisStreamUpdate], chunks) -> int:
        """Prints a line for each update and adds it to the outputs; completes them however the stream ends."""
        try:
            with contextlib.closing(updates):
                for window, update in enumerate(updates):
                    latencies = [time.monotonic() - self.arrivals.of(sampled) for sampled in update.timestamps]
                    with interrupts_held():  # a window's line goes out with its frames in the outputs, or neither
                        _print_line(stream_line(window, update, latencies))
                        self.frames += len(latencies)
                        self.latency_sum += sum(latencies)
                        self.latency_max = max([self.latency_max, *latencies])
                        self._add(update, chunks.metadata())
        except StdoutClosed:
            with interrupts_held():
                self._finish(chunks, ended=False)
            _silence_stdout()
            return 0
        except KeyboardInterrupt:
            with interrupts_held():
                self._finish(chunks, ended=False)
            raise
        except BaseException:
            if self.overlay is not None:
                self.overlay.discard()
            raise
        with interrupts_held():
            self._finish(chunks, ended=True)
        return 0

    def _add(self, update: AvisStreamUpdate, metadata: AvisVideoMetadata) -> None:
        self.tracks = max([self.tracks, *(track.track_id for track in update.tracks)])  # ids count from 1
        if self.overlay is not None:
            self.overlay.add_update(update)
        if self.args.json is not None:
            self.recorder = self.recorder or AvisStreamRecorder(*metadata.original_size)
            self.recorder.add(update)

    def _finish(self, chunks, ended: bool) -> None:
        """Completes the outputs with what was answered (at the source's end: every frame), and says what was done."""
        if self.overlay is not None and not self.overlay.finish(ended):
            print(
                f"note: no frame was answered: no overlay was written to {printable(self.args.out)}", file=sys.stderr
            )
        metadata = chunks.metadata()
        if self.args.json is not None:
            results = {}
            if self.recorder is not None:
                results[1] = self.recorder.result(metadata.has_audio, metadata.fps, metadata.notes)
            write_results_json(results, self.args.json)
        for note in metadata.notes if metadata is not None else []:
            print(f"note: {note}", file=sys.stderr)
        summary = f"{self.name}: {self.tracks} sounding track{'s' * (self.tracks != 1)} in {self.frames} frames"
        if self.frames:
            summary += f"; latency mean {self.latency_sum / self.frames:.2f} s, max {self.latency_max:.2f} s"
        print(summary, file=sys.stderr)


def stream_line(window: int, update: AvisStreamUpdate, latencies: list[float]) -> str:
    """The JSON line of one window (see the module docstring)."""
    return json.dumps(
        {
            "window": window,
            "frames": [
                {"index": index, "time": float(sampled), "latency": round(latency, 3)}
                for index, sampled, latency in zip(update.frames, update.timestamps, latencies)
            ],
            "tracks": [
                {
                    "id": track.track_id,
                    "label": track.label,
                    "class": track.label_name,
                    "score": track.score,
                    "masks": [encode_mask(mask) for mask in track.masks],
                }
                for track in update.tracks
            ],
        }
    )


class Arrivals:
    """When the source's frames arrived (`time.monotonic()`), by their times in the stream (seconds from its first
    video frame): `of(t)` is the arrival of the frame on screen at t, the latest at or before it. Asked in the order
    of the stream, it lets the earlier ones go."""

    def __init__(self):
        self._times: list[float] = []
        self._arrivals: list[float] = []

    def add(self, time_in_stream: float, arrival: float) -> None:
        self._times.append(time_in_stream)
        self._arrivals.append(arrival)

    def of(self, time_in_stream: float) -> float:
        index = max(bisect.bisect_right(self._times, time_in_stream + TIME_TOLERANCE) - 1, 0)
        del self._times[:index], self._arrivals[:index]
        return self._arrivals[0]


class FileChunks:
    """A file's model inputs, one sampled frame at a time (`AvisVideoChunks`), with each sampled frame's arrival
    noted and, for the overlay, the file's frames and sound that show it handed over as the model gets it.

    realtime: each frame given no earlier than its time after the start, plus `lead` (the second of sound it is
        paired with, which a live source would give only then), and taken to arrive at its time.
    video: the file, read again for the overlay (`FileMedia`: frames up to the next sampled frame's time, `interval`
        on, go over as each sampled frame goes to the model); None: no overlay. `start_overlay(time_base, rate,
        audio)` makes the overlay once the file is open.
    """

    def __init__(
        self,
        chunks: AvisVideoChunks,
        arrivals: Arrivals,
        realtime: bool,
        lead: float,
        video: VideoInfo | None,
        start_overlay: Callable[..., LiveOverlay | None],
        interval: float,
    ):
        self.chunks, self.arrivals, self.realtime, self.lead = chunks, arrivals, realtime, lead
        self.video, self.start_overlay, self.interval = video, start_overlay, interval
        self._pending = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        with FileMedia(self.video) if self.video is not None else contextlib.nullcontext() as media:
            overlay = None
            if media is not None:
                overlay = self.start_overlay(media.video_time_base, media.video_rate, media.audio)
            frames = media.frames(overlay.until) if media is not None else iter(())
            start = None
            for chunk in self.chunks:
                sampled = self.chunks.metadata().timestamps[-1]
                if self.realtime:
                    start = time.monotonic() if start is None else start
                    _sleep_until(start + sampled + self.lead)
                    self.arrivals.add(sampled, start + sampled)
                else:
                    self.arrivals.add(sampled, time.monotonic())
                self._feed(frames, overlay, sampled + self.interval)
                yield chunk
            self._feed(frames, overlay, math.inf)

    def metadata(self) -> AvisVideoMetadata:
        return self.chunks.metadata()

    def _feed(self, frames: Iterator, overlay: LiveOverlay | None, until: float) -> None:
        """Hands the overlay the file's frames and sound before `until` seconds."""
        while overlay is not None:
            if self._pending is None:
                self._pending = next(frames, None)
                if self._pending is None:
                    return
            frame, seconds = self._pending
            if not seconds < until - TIME_TOLERANCE:
                return
            self._pending = None
            if isinstance(frame, av.VideoFrame):
                overlay.add_video_frame(frame, seconds)
            else:
                overlay.add_audio_frame(frame, seconds)


class LiveFrames:
    """What the command does with each frame a live source gives (`AvisLiveChunks.on_frame`), on the stream's clock
    (seconds from its first video frame, as `AvisLiveInputs`'): with `realtime`, it holds the frame until its time
    after the first one's arrival; it notes each video frame's arrival, and hands frames and sound to the overlay
    (`start_overlay(time_base, rate, audio)` makes it, or None, at the first video frame)."""

    def __init__(
        self,
        chunks: AvisLiveChunks,
        arrivals: Arrivals,
        realtime: bool,
        start_overlay: Callable[..., LiveOverlay | None],
    ):
        self.chunks, self.arrivals, self.realtime, self.start_overlay = chunks, arrivals, realtime, start_overlay
        self.overlay: LiveOverlay | None = None
        self._origin: float | None = None  # the source time of the first video frame
        self._start: float | None = None  # its arrival
        self._early_sound: list[av.AudioFrame] = []

    def __call__(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        if frame.time is None:
            return
        video = isinstance(frame, av.VideoFrame)
        if self._origin is None:
            if not video:
                # The stream's clock starts at its first video frame, which may come after the sound of its time
                # (MPEG-TS gives a picture once the next one begins): that sound waits for it.
                self._early_sound.append(frame)
                return
            self._origin, self._start = frame.time, time.monotonic()
            video_in = self.chunks.media.video
            rate = video_in.average_rate or video_in.guessed_rate
            self.overlay = self.start_overlay(frame.time_base, rate, self.chunks.media.audio)
        seconds = frame.time - self._origin
        if self.realtime:
            _sleep_until(self._start + seconds)
        if video:
            self.arrivals.add(seconds, time.monotonic())
        if self.overlay is not None:
            for sound in self._early_sound:
                self.overlay.add_audio_frame(sound, sound.time - self._origin)
            (self.overlay.add_video_frame if video else self.overlay.add_audio_frame)(frame, seconds)
        self._early_sound.clear()


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C held back until the block ends (then raised), so that what it writes is written whole. Only the main
    thread receives signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class StdoutClosed(Exception):
    """Whoever read stdout has closed it (`avis stream ... | head`)."""


def _print_line(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed from None


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that the interpreter's last flush of what is left in its buffer does not fail
    again on the closed pipe as it exits."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _source(args: argparse.Namespace):
    """What SOURCE names: a Path for a file, stdin's bytes for `-`, else the URL or device as given."""
    if args.source == "-":
        return sys.stdin.buffer
    path = Path(args.source)
    if path.is_file():
        if args.format is not None or args.option:
            raise AvisUsageError(
                f"{printable(args.source)}: a file is read as predict reads it; --format and --option are for a "
                "pipe, a URL or a device"
            )
        return path
    if path.is_dir():
        raise AvisInputError(
            f"{printable(args.source)}: a folder, not a stream; give a file, - (stdin), a URL or a device"
        )
    if "://" not in args.source and args.format is None and not path.exists():
        raise AvisInputError(f"{printable(args.source)}: no such file (a URL has a scheme://; a device, --format)")
    return args.source


def _check_outputs(args: argparse.Namespace, source, model: str) -> None:
    """Every output checked before the model is loaded (as predict's): each can be written, none writes over an
    input (the source file, a file of the model folder) or the other. The overlay grows in place as the stream goes,
    so it must be a new file: a failure removes it, which must not take a file of the user's with it."""
    files = [(flag, path) for flag, path in (("--out", args.out), ("--json", args.json)) if path is not None]
    if args.out is not None:
        if args.out.suffix.lower() != LIVE_SUFFIX:
            raise AvisUsageError(
                f"{printable(args.out)}: the overlay of a stream is MPEG-TS, which plays while it grows: give a "
                f"{LIVE_SUFFIX} name"
            )
        if os.path.lexists(args.out) and not args.out.is_dir():
            raise AvisUsageError(
                f"{printable(args.out)}: already exists; the overlay grows in place as the stream goes (and is "
                "removed if it fails): give a new name"
            )
    for _, path in files:
        check_output_file(path)
    inputs = [*([source] if isinstance(source, Path) else []), *Path(model).glob("*")]
    check_outputs_apart(files, inputs)


def _online_settings(args: argparse.Namespace) -> AvisOnlineSettings:
    if args.stride > args.window:
        raise AvisUsageError(f"--stride must be at most --window ({args.window}), not {args.stride}")
    return AvisOnlineSettings(window_size=args.window, stride=args.stride)


__all__ = ["MAX_WINDOW", "Arrivals", "FileChunks", "LiveFrames", "StreamRun", "stream", "stream_line"]
