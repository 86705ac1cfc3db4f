"""Inference on videos of any length, in the memory of a few frames.

AVISM's clip queries attend to every frame of the video, so no mask can be drawn before the last frame is encoded.
Inference therefore runs in two passes:

1. every frame goes through the per-frame part of the model (backbone, pixel decoder, frame decoder) in chunks of a
   few frames; its frame queries (100 x 256 floats) are kept, its clip-level mask features (256 x H/4 x W/4, 15.7 MB
   at 360p) go to an `AvisMaskFeatureStore` (memory up to a budget, then a temporary file);
2. the clip module reads all frame queries and gives the clip queries; the processor's post-processing then reads the
   mask features back twice, chunk by chunk: once to score the top (query, class) pairs, once to draw the kept
   instances' masks, which are encoded as RLE as they are made and never held for the whole video.

The frames meet the model in exactly the chunks the one-shot `AvisModel.forward` uses for the same
`frame_chunk_size`, and the post-processing reads the same frame chunks, so both give identical results.

    segmenter = AvisVideoSegmenter.from_pretrained("path/to/model")
    result = segmenter("concert.mp4")            # AvisVideoResult: tracks with one RLE mask per sampled frame
"""

import contextlib
import itertools
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .errors import AvisCheckpointError, AvisInputError
from .heap import release_freed_memory
from .loading import load_model, load_processor
from .modeling_avis import AvisModel, AvisModelOutput, answer_window
from .processing_avis import AvisLiveChunks, AvisProcessor, AvisVideoChunks, AvisVideoMetadata
from .session_avis import AvisFrameBlocks, AvisInferenceSession, AvisOnlineSettings
from .tracks import AvisStreamUpdate, AvisVideoResult
from .video_io import ProgressFn

# Frames per pass of the per-frame part on the CPU, for each thread. One frame costs no more compute than the original's
# chunks of 18 (measured), and its temporaries (~150 MB at 360p) stay small enough to be reused rather than
# page-faulted in afresh for every chunk.
CPU_FRAME_CHUNK = 1
# Below this many parameters a model encodes a frame fastest on one thread (see `AvisVideoSegmenter.stream_threads`).
SMALL_MODEL_PARAMETERS = 10_000_000
# Mask features held in memory before the store spills to disk: 256 MiB is 17 frames at 360p (15.7 MB a frame).
# The spilled frames are read back twice, at disk or page-cache speed: a few ms a frame, against ~1 s to encode one.
DEFAULT_MEMORY_BUDGET = 1 << 28
# Mask features written to disk before the rest are computed again when read (twice: to score, then to draw): 1 GiB
# is 68 more frames at 360p; a video of any length needs no more than that of temporary disk.
DEFAULT_DISK_BUDGET = 1 << 30
# Frames per block of `AvisFrameBlocks`: 16 frames of mask features at 360p are 250 MB.
MASK_FEATURE_BLOCK_FRAMES = 16


class AvisMaskFeatureStore:
    """The clip-level mask features of a video's frames between the two inference passes.

    Frames are appended in order: the first ones are kept in memory up to `memory_budget` bytes, the next ones are
    written to a temporary file in `directory` (the system's default when None) up to `disk_budget` bytes, and the
    rest are not kept: `recompute(start, stop)` makes their features again when they are read (without `recompute`,
    or with `disk_budget` None, the file has no bound). It reads as a frame sequence: `len(store)` frames, `store[start:stop]` -> (t, C, h, w) on the device
    and in the dtype they came in, the same values whichever way each frame was kept.
    """

    def __init__(
        self,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        disk_budget: int | None = DEFAULT_DISK_BUDGET,
        directory: str | Path | None = None,
        recompute: Callable[[int, int], torch.Tensor] | None = None,
    ):
        self.memory_budget = memory_budget
        self.disk_budget = disk_budget
        self.directory = directory
        self.recompute = recompute
        self._in_memory: AvisFrameBlocks | None = None  # the first frames
        self._spill_file = None
        self._spilled_frames = 0
        self._dropped_frames = 0
        self._disk_capacity: int | None = None  # frames the file may hold (None: any number)
        self._frame_shape: tuple[int, ...] | None = None
        self._dtype: torch.dtype | None = None
        self._device: torch.device | None = None

    def __len__(self) -> int:
        return self._memory_frames + self._spilled_frames + self._dropped_frames

    @property
    def _memory_frames(self) -> int:
        return 0 if self._in_memory is None else len(self._in_memory)

    @property
    def bytes_in_memory(self) -> int:
        return self._memory_frames * self._frame_bytes

    @property
    def bytes_on_disk(self) -> int:
        return self._spilled_frames * self._frame_bytes

    @property
    def spilled_frames(self) -> int:
        """Frames kept in the temporary file."""
        return self._spilled_frames

    @property
    def dropped_frames(self) -> int:
        """Frames not kept, whose features are computed again when read."""
        return self._dropped_frames

    @property
    def _frame_bytes(self) -> int:
        return self._frame_shape.numel() * self._dtype.itemsize if self._frame_shape else 0

    def append(self, mask_features: torch.Tensor) -> None:
        """Stores the mask features (t, C, h, w) of the next t frames."""
        if self._frame_shape is None:
            self._frame_shape, self._dtype, self._device = (
                mask_features.shape[1:],
                mask_features.dtype,
                mask_features.device,
            )
            self._in_memory = AvisFrameBlocks(
                MASK_FEATURE_BLOCK_FRAMES, max(self.memory_budget // self._frame_bytes, 0)
            )
            if self.recompute is not None and self.disk_budget is not None:
                self._disk_capacity = max(self.disk_budget // self._frame_bytes, 0)
        elif mask_features.shape[1:] != self._frame_shape or mask_features.dtype != self._dtype:
            raise ValueError(
                f"mask features of shape {tuple(mask_features.shape[1:])} {mask_features.dtype} after "
                f"{tuple(self._frame_shape)} {self._dtype}"
            )
        kept = 0 if self._spilled_frames or self._dropped_frames else min(len(mask_features), self._in_memory.room)
        if kept:
            self._in_memory.append(mask_features[:kept])
        rest = mask_features[kept:]
        room_on_disk = len(rest) if self._disk_capacity is None else self._disk_capacity - self._spilled_frames
        spilled = 0 if self._dropped_frames else min(len(rest), room_on_disk)
        if spilled:
            self._spill(rest[:spilled])
        self._dropped_frames += len(rest) - spilled

    def __getitem__(self, frames: slice) -> torch.Tensor:
        if not isinstance(frames, slice) or frames.step not in (None, 1):
            raise TypeError("an AvisMaskFeatureStore is read in contiguous slices of frames")
        start, stop, _ = frames.indices(len(self))
        stop = max(start, stop)
        in_file = self._memory_frames + self._spilled_frames
        pieces = []
        if start < self._memory_frames:
            pieces.append(self._in_memory[start : min(stop, self._memory_frames)])
        if max(start, self._memory_frames) < min(stop, in_file):
            pieces.append(self._read_spilled(max(start, self._memory_frames), min(stop, in_file)))
        if stop > in_file:
            pieces.append(self.recompute(max(start, in_file), stop))
        if not pieces:
            return torch.empty(0, *(self._frame_shape or ()), dtype=self._dtype, device=self._device)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def close(self) -> None:
        """Frees the memory and deletes the temporary file."""
        self._in_memory, self._spilled_frames, self._dropped_frames = None, 0, 0
        if self._spill_file is not None:
            self._spill_file.close()
            self._spill_file = None

    def __enter__(self) -> "AvisMaskFeatureStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _spill(self, mask_features: torch.Tensor) -> None:
        if self._spill_file is None:
            self._spill_file = tempfile.TemporaryFile(prefix="avis_mask_features_", dir=self.directory)
        raw = mask_features.detach().cpu().contiguous().view(torch.uint8)  # as bytes: numpy has no bfloat16
        self._spill_file.seek(0, 2)
        self._spill_file.write(memoryview(raw.numpy()))
        self._spilled_frames += len(mask_features)

    def _read_spilled(self, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) of the video, all in the file."""
        frames = torch.empty(stop - start, *self._frame_shape, dtype=self._dtype)
        self._spill_file.seek((start - self._memory_frames) * self._frame_bytes)
        self._spill_file.readinto(memoryview(frames.view(torch.uint8).numpy()))
        return frames.to(self._device)


def model_frame_chunks(
    chunks: Iterable[Mapping[str, torch.Tensor]], chunk_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """The model inputs of `chunks`, of any sizes, regrouped into chunks of exactly `chunk_size` frames (the last
    may be shorter): the groups `AvisModel.forward` runs its frames in."""
    names = ("pixel_values", "audio_features", "audio_log_mel")
    pending: dict[str, list[torch.Tensor]] = {}
    pending_frames = 0
    for chunk in chunks:
        for name in names:
            if name in chunk:
                pending.setdefault(name, []).append(chunk[name])
        pending_frames += len(chunk["pixel_values"])
        while pending_frames >= chunk_size:
            joined = {name: _join(values) for name, values in pending.items()}
            yield {name: values[:chunk_size] for name, values in joined.items()}
            pending = {name: [values[chunk_size:]] for name, values in joined.items()}
            pending_frames -= chunk_size
    if pending_frames:
        yield {name: _join(values) for name, values in pending.items()}


def _join(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def encode_video(
    model: AvisModel,
    chunks: Iterable[Mapping[str, torch.Tensor]],
    session: AvisInferenceSession,
    progress: Callable[[int], None] | None = None,
    frame_chunk_size: int | None = None,
    workers: "int | AvisEncodingWorkers" = 1,
) -> AvisInferenceSession:
    """The first pass: every frame of a video through the per-frame part of `model` (in inference mode), in chunks,
    into an offline inference session (as `model(**chunk, inference_session=session)` keeps them, on several cores).

    chunks: the video's frames in order, in chunks of any sizes, each with `pixel_values` (t, 3, Hp, Wp) and
        `audio_features` (t, audio_feature_size) or `audio_log_mel` (t, 96, 64) (as `AvisProcessor.iter_chunks`
        gives them), on the model's device.
    session: an empty offline session, whose store receives the clip-level mask features.
    progress: called with the number of frames encoded so far.
    frame_chunk_size: frames per pass (default: the config's); `AvisModel.forward` gives the same results when its
        config's `frame_chunk_size` is the same (and torch has as many threads).
    workers: chunks encoded at once, each in a thread of its own (or the `AvisEncodingWorkers` to encode them on).
        With more than one, torch runs one thread per worker during the pass (`torch.set_num_threads(1)`):
        `workers` cores encode their own frames instead of splitting every operation between them, so no core waits
        for the other at the end of each of the model's thousand operations per chunk: as fast on an idle machine,
        and several times faster when other processes load its cores. The video's last chunks, fewer than the
        workers, share the cores between them (`AvisEncodingWorkers.map`). The autocast state of the calling thread
        carries over.
    """
    device_type = next(model.parameters()).device.type
    autocast = torch.autocast(
        device_type, dtype=torch.get_autocast_dtype(device_type), enabled=torch.is_autocast_enabled(device_type)
    )

    def encode(chunk: dict[str, torch.Tensor]):
        with torch.inference_mode(), autocast:
            if "audio_features" in chunk:
                audio = chunk["audio_features"]
            else:
                audio = model.encode_audio(chunk["audio_log_mel"])
            return chunk["pixel_values"].shape[-2:], audio, model.encode_frames(chunk["pixel_values"], audio)

    def keep(encoded) -> None:
        padded_size, audio, encoding = encoded
        session.add_frames(encoding.frame_queries[-1], audio, encoding.mask_features, padded_size)
        if progress is not None:
            progress(session.num_frames)

    with contextlib.ExitStack() as stack:
        if isinstance(workers, int):
            workers = stack.enter_context(AvisEncodingWorkers(workers))
        for encoded in workers.map(
            encode, model_frame_chunks(chunks, frame_chunk_size or model.config.frame_chunk_size)
        ):
            keep(encoded)
    if not session.num_frames:
        raise ValueError("the video has no frames")
    return session


class AvisEncodingWorkers:
    """`count` threads that encode chunks of frames side by side, with one torch thread each while more than one run
    (see `encode_video`). One set serves both passes over a video: the frames computed again in the second run in
    the same threads' malloc arenas, rather than in new threads' new ones."""

    def __init__(self, count: int):
        self.count = count
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="avis-encode")

    def map(self, function: Callable, items: Iterable, first_index: int = 0, num_items: int | None = None) -> Iterator:
        """function(item) for each item, in order: `items` are the items `first_index`, `first_index + 1`, ... of a
        video's `num_items` chunks (None: the video's chunks end with `items`).

        A video's last `num_items % count` chunks, fewer than the workers, would each run on one core while the
        others idle (3 frames on 2 cores: two frames' time, not one and a half): they run after all the others,
        side by side, on `tail_threads` torch threads each. An item's thread count depends only on its index and
        `num_items`, so an item computed again in a later map gets the same bits (the thread count changes float
        sums in their last bits).
        """
        with _torch_threads(1) if self.count > 1 else contextlib.nullcontext():
            # one item more per worker than run at once, so that a worker that finishes early (its core less busy)
            # starts on the next item rather than wait for the oldest one
            running, tail = deque(), []
            index = first_index
            for item in items:
                if num_items is None:
                    # the tail is known only at the end: an item waits until its group of `count` is complete
                    tail.append(item)
                    if (index + 1) % self.count == 0:
                        running.extend(self._pool.submit(function, waiting) for waiting in tail)
                        tail = []
                elif index < self.tail_start(num_items):
                    running.append(self._pool.submit(function, item))
                else:
                    tail.append(item)
                index += 1
                while len(running) >= 2 * self.count:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
            threads = self.tail_threads(index if num_items is None else num_items)
            running.extend(self._pool.submit(self._run_on, threads, function, item) for item in tail)
            while running:
                yield running.popleft().result()

    def tail_start(self, num_items: int) -> int:
        """The index of a video's first chunk that runs in its tail, on `tail_threads` threads."""
        return num_items - num_items % self.count

    def tail_threads(self, num_items: int) -> int:
        """The torch threads of each chunk of a video's tail."""
        return max(1, self.count // max(1, num_items % self.count))

    @staticmethod
    def _run_on(threads: int, function: Callable, item):
        with _torch_threads(threads):
            return function(item)

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> "AvisEncodingWorkers":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AvisMaskFeatureReplay:
    """The mask features of frames the store did not keep, made again from the video's inputs: its `recompute`.

    chunks: the model inputs of the first pass, iterable again (a video's `AvisVideoChunks`, a list); each read that
    goes back iterates them once more from the start, skipping the frames before it. The frames meet the model in
    the first pass's chunks, on as many workers and threads (`num_frames`, the video's length, set after the first
    pass, tells which chunks ran in its tail), so their features are the same to the bit.
    """

    def __init__(
        self,
        model: AvisModel,
        chunks: Iterable[Mapping[str, torch.Tensor]],
        frame_chunk_size: int,
        workers: AvisEncodingWorkers,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ):
        self.model = model
        self.chunks = chunks
        self.frame_chunk_size = frame_chunk_size
        self.workers = workers
        self.autocast = autocast
        self._inputs: Iterator[dict[str, torch.Tensor]] | None = None
        self._next_frame = 0  # the first frame of the next chunk of `_inputs`
        self._computed: torch.Tensor | None = None  # the features of the latest chunks computed
        self._computed_first = 0
        self.num_frames: int | None = None

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        """The mask features (stop - start, C, h, w) of frames [start, stop)."""
        pieces, frame = [], start
        while frame < stop:
            computed_stop = self._computed_first + (0 if self._computed is None else len(self._computed))
            if self._computed_first <= frame < computed_stop:
                pieces.append(self._computed[frame - self._computed_first : stop - self._computed_first])
                frame += len(pieces[-1])
            else:
                self._compute(frame, stop)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _compute(self, start: int, stop: int) -> None:
        if self._inputs is None or start < self._next_frame:
            device = next(self.model.parameters()).device
            self._inputs = model_frame_chunks(_on_device(self.chunks, device), self.frame_chunk_size)
            self._next_frame = 0
        needed, first = [], None
        for chunk in self._inputs:
            chunk_first, self._next_frame = self._next_frame, self._next_frame + len(chunk["pixel_values"])
            if self._next_frame <= start:
                continue  # before the frames asked for
            first = chunk_first if first is None else first
            needed.append(chunk["pixel_values"])
            # whole rounds of the workers: a read of 5 frames on 2 workers would leave one idle for the 5th; the
            # frames read ahead are kept for the next read
            if self._next_frame >= stop and len(needed) % self.workers.count == 0:
                break
        if not needed:
            raise AvisInputError("the video gave fewer frames when read again: was it changed during the analysis?")

        def encode(pixel_values: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), self.autocast():
                return self.model.encode_mask_features(pixel_values)

        self._computed = None  # freed before the next ones are made
        computed, filled = None, 0
        num_chunks = -(-self.num_frames // self.frame_chunk_size)
        for features in self.workers.map(encode, needed, first // self.frame_chunk_size, num_chunks):
            if computed is None:
                computed = features.new_empty(sum(len(chunk) for chunk in needed), *features.shape[1:])
            computed[filled : filled + len(features)] = features
            filled += len(features)
        self._computed, self._computed_first = computed, first


def _on_device(
    chunks: Iterable[Mapping[str, torch.Tensor]], device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """The chunks of model inputs, each moved to `device` as it is read."""
    return ({name: value.to(device) for name, value in chunk.items()} for chunk in chunks)


def decode_video(model: AvisModel, session: AvisInferenceSession) -> AvisModelOutput:
    """The second pass: the clip module over all frame queries of an offline session whose frames are all in (as
    `model(inference_session=session, end_of_video=True)` answers). The output reads as `AvisModel.forward`'s (batch
    of one) for the post-processing, with the session's mask-feature store as the video's mask features; it leaves
    out the frame queries and the clip module's other outputs (four (T, fQ, C) tensors: 245 MB at T=600), which
    would otherwise stay in memory while a long video's masks are drawn."""
    (window,) = session.due_windows(end_of_video=True)
    return answer_window(model.clip_module, session, window)


class AvisVideoSegmenter:
    """A model and its processor, loaded once: `segmenter(video) -> AvisVideoResult`.

    model (`AvisModel`): in eval mode, on its device.
    processor (`AvisProcessor`): the processor the model was trained with.
    autocast_dtype (`torch.dtype`, *optional*): run the model under autocast in this dtype (torch.bfloat16 on CPU or
        CUDA, torch.float16 on CUDA): about 1.6x as fast on a 2-core CPU, results no longer the original's to 1e-4; the
        post-processing stays in float32. None runs in float32, as the parity tests.
    memory_budget (`int`): bytes of mask features kept in memory; a long video's next ones go to a temporary file.
    disk_budget (`int`): bytes of mask features that file may hold; the rest are computed again, from the video read
        once more, when the post-processing reads them (twice): the temporary disk of any video stays within it, at
        the cost of its backbone and pixel decoder run three times for those frames. None: no bound on the file.
    spill_directory: where that file goes (the system's temporary folder when None).
    cpu_threads (`int`, *optional*): CPU cores to use (default: torch's thread count). On the CPU, the frames are
        encoded `cpu_threads` at a time, one torch thread each (see `encode_video`); the rest runs on `cpu_threads`
        torch threads. torch's thread count is set for the call and restored after it. The online mode runs on
        `stream_threads`: one for a small model (`SMALL_MODEL_PARAMETERS`), else `cpu_threads`.
    frame_chunk_size (`int`, *optional*): frames per pass of the per-frame part: by default one per thread on the
        CPU (`CPU_FRAME_CHUNK`), the config's on CUDA.
    """

    def __init__(
        self,
        model: AvisModel,
        processor: AvisProcessor,
        autocast_dtype: torch.dtype | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        disk_budget: int | None = DEFAULT_DISK_BUDGET,
        spill_directory: str | Path | None = None,
        cpu_threads: int | None = None,
        frame_chunk_size: int | None = None,
    ):
        self.model = model.eval()
        self.processor = processor
        self.autocast_dtype = autocast_dtype
        self.memory_budget = memory_budget
        self.disk_budget = disk_budget
        self.spill_directory = spill_directory
        self.cpu_threads = cpu_threads or torch.get_num_threads()
        # The online mode encodes one frame at a time: a small model's operations are too short to split between
        # threads (the shipped default, 1.7 M parameters: 0.04-0.06 s a frame on one thread, 0.27 s on two of an
        # idle 2-core CPU), a full-size one's are not (R50: see the README's online benchmark).
        small = sum(parameter.numel() for parameter in model.parameters()) < SMALL_MODEL_PARAMETERS
        self.stream_threads = 1 if small else self.cpu_threads
        on_cpu = next(model.parameters()).device.type == "cpu"
        self.frame_chunk_size = frame_chunk_size or (CPU_FRAME_CHUNK if on_cpu else model.config.frame_chunk_size)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | Path,
        device: str | torch.device | None = None,
        autocast_dtype: torch.dtype | None = None,
        **kwargs,
    ) -> "AvisVideoSegmenter":
        """Loads a model folder written by `save_pretrained` (AvisModel or AvisForAudioVisualInstanceSegmentation),
        or a Hub id, on `device` (CUDA when available if None), with its processor (see `loading`). Other keyword
        arguments go to `AvisVideoSegmenter`. Raises AvisCheckpointError, in one line, for a model it cannot load.
        """
        device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(model_name_or_path, AvisModel, device)
        return cls(model, load_processor(model_name_or_path, model.config), autocast_dtype=autocast_dtype, **kwargs)

    @torch.inference_mode()
    def __call__(
        self,
        video: str | Path,
        fps: float | str | None = None,
        score_threshold: float | None = None,
        max_instances: int | None = None,
        audio_features: str | Path | np.ndarray | None = None,
        progress: ProgressFn | None = None,
        **sampling,
    ) -> AvisVideoResult:
        """The sounding instances of one video (a media file or an AVISeg frame folder) as tracks.

        fps: frames sampled per second (default: the processor's, 1 as AVISM was trained); "native" takes every frame.
        score_threshold, max_instances: instances scoring at or below the threshold (default: the processor's) are
            dropped, and at most `max_instances` of the others are kept, highest scores first.
        audio_features: precomputed VGGish features (T x 128) instead of the video's sound.
        progress: called as progress(fraction, description) through the passes.
        sampling: `AvisSampling`'s other fields by name: max_duration (analyse only the frames and sound before
            this many seconds, by their decoded times), timestamps, max_frames, mute_audio (give every frame
            silence: how much a model listens); the audio input is the model's.
        Raises AvisInputError for media it cannot use, and AvisCheckpointError when the model cannot hear the video
        (no audio encoder) and no features are given.
        """
        hears = self.model.audio_encoder is not None
        if not hears and audio_features is None and not Path(video).is_dir():
            raise AvisCheckpointError(
                "this model reads precomputed VGGish features (its config has no audio_config): give audio_features, "
                "or convert it with --vggish so that it hears the video's sound"
            )
        report = progress or (lambda fraction, description: None)
        report(0.0, "Reading the audio")
        chunks = self.processor.iter_chunks(
            video, self.frame_chunk_size, audio_features=audio_features, fps=fps,
            audio_input="audio_log_mel" if hears else "audio_features", **sampling,
        )  # fmt: skip
        expected = chunks.expected_frames or 1
        report(0.0, "Decoding and encoding frames")
        with self.outputs(
            chunks, lambda done: report(0.9 * min(done / expected, 1.0), "Decoding and encoding frames")
        ) as outputs:
            report(0.9, "Drawing masks")
            # the post-processing reads the features twice (to score, then to draw), a few frames at a time
            outputs.mask_features = [
                _ReadProgress(outputs.mask_features[0], lambda fraction: report(0.9 + 0.1 * fraction, "Drawing masks"))
            ]
            (result,) = self.processor.post_process_video_instance_segmentation(
                outputs, [chunks.metadata()], self.model.config.id2label, score_threshold, max_instances
            )
        report(1.0, "Done")
        return result

    @contextlib.contextmanager
    def outputs(
        self, chunks: Iterable[Mapping[str, torch.Tensor]], progress: Callable[[int], None] | None = None
    ) -> Iterator[AvisModelOutput]:
        """Both passes of the model over a video given as model inputs in chunks (`AvisProcessor.iter_chunks`), with
        this segmenter's threads, precision and mask-feature store: `with segmenter.outputs(chunks) as outputs:`
        post-process inside the block (the mask features are read from the store, which is closed after it).

        The output reads as `AvisModel.forward`'s on the whole video (batch of one): the frames meet the model in
        the chunks the one-shot forward uses for the same `frame_chunk_size`, so both give the same results.
        chunks that can be iterated again (a video's `AvisVideoChunks`, a list) let the store keep its disk budget
        (see `AvisMaskFeatureReplay`); the features of a one-time iterator all go to disk beyond the memory budget.
        """
        device = next(self.model.parameters()).device
        on_cpu = device.type == "cpu"
        workers = self.cpu_threads if on_cpu else 1

        def autocast() -> contextlib.AbstractContextManager:
            if self.autocast_dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(device.type, dtype=self.autocast_dtype)

        pool = AvisEncodingWorkers(workers)
        replay = None
        if self.disk_budget is not None and iter(chunks) is not chunks:
            replay = AvisMaskFeatureReplay(self.model, chunks, self.frame_chunk_size, pool, autocast)
        inputs = _on_device(chunks, device)
        with (
            pool,
            torch.inference_mode(),
            AvisMaskFeatureStore(self.memory_budget, self.disk_budget, self.spill_directory, replay) as store,
            _torch_threads(self.cpu_threads) if on_cpu else contextlib.nullcontext(),
        ):
            with autocast():
                session = AvisInferenceSession("offline", store)
                encode_video(self.model, inputs, session, progress, self.frame_chunk_size, pool)
                if replay is not None:
                    replay.num_frames = session.num_frames
                release_freed_memory()
                outputs = decode_video(self.model, session)
            release_freed_memory()
            yield outputs

    def stream(
        self,
        video: str | Path,
        fps: float | str | None = None,
        score_threshold: float | None = None,
        max_instances: int | None = None,
        online: AvisOnlineSettings | None = None,
        audio_features: str | Path | np.ndarray | None = None,
        **sampling,
    ) -> Iterator[AvisStreamUpdate]:
        """The online mode over a video (a media file or an AVISeg frame folder), read frame by frame: an
        `AvisStreamUpdate` as soon as each window is answered (see `stream_chunks`; the arguments as `__call__`'s).
        """
        hears = self.model.audio_encoder is not None
        chunks = self.processor.iter_chunks(
            video, 1, audio_features=audio_features, fps=fps,
            audio_input="audio_log_mel" if hears else "audio_features", **sampling,
        )  # fmt: skip
        return self.stream_chunks(chunks, score_threshold, max_instances, online)

    def stream_chunks(
        self,
        chunks: "AvisVideoChunks | AvisLiveChunks",
        score_threshold: float | None = None,
        max_instances: int | None = None,
        online: AvisOnlineSettings | None = None,
    ) -> Iterator[AvisStreamUpdate]:
        """The online mode (`session_avis`) over model inputs that arrive chunk by chunk (a file's `iter_chunks`, a
        live source's `AvisLiveChunks`; any iterable of chunks with a `metadata()`): each frame is encoded as it
        comes (on `stream_threads` threads), and each window it completes is answered before the next frame is
        read. Memory does not grow with the stream: only the window's frames and the alive tracks are kept."""
        session = self.processor.init_video_session("online", online=online)
        for chunk in itertools.chain(chunks, [None]):
            yield from self.stream_step(session, chunk, chunks.metadata(), score_threshold, max_instances)

    def stream_step(
        self,
        session: AvisInferenceSession,
        chunk: Mapping[str, torch.Tensor] | None,
        metadata: AvisVideoMetadata,
        score_threshold: float | None = None,
        max_instances: int | None = None,
    ) -> list[AvisStreamUpdate]:
        """One step of the online mode, for inputs pushed as they arrive (`AvisLiveInputs.ready()`): the windows
        `chunk` (a frame's model inputs) completes in an online `session`, answered; None ends the video and answers
        its last window. `stream_chunks` is these steps over an iterable of chunks.
        metadata: the stream's, its timestamps known up to `chunk`'s frames."""
        with self._running():
            if chunk is None:
                outputs = self.model(inference_session=session, end_of_video=True)
            else:
                device = next(self.model.parameters()).device
                outputs = self.model(**{name: value.to(device) for name, value in chunk.items()},
                                     inference_session=session)  # fmt: skip
            return self.processor.post_process_online_windows(
                outputs, session, metadata, self.model.config.id2label, score_threshold, max_instances
            )

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Inference mode, the online mode's threads on the CPU (`stream_threads`) and this segmenter's precision."""
        device = next(self.model.parameters()).device
        with (
            torch.inference_mode(),
            _torch_threads(self.stream_threads) if device.type == "cpu" else contextlib.nullcontext(),
            torch.autocast(device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext(),
        ):
            yield


class _ReadProgress:
    """A video's mask features, read as the store is (`len`, `[start:stop]`), reporting the fraction of the two reads
    of the post-processing done: `progress(fraction)` before each read (and a cancelled analysis stops there)."""

    def __init__(self, frames: AvisMaskFeatureStore, progress: Callable[[float], None]):
        self.frames, self.progress = frames, progress
        self._read = 0

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, frames: slice) -> torch.Tensor:
        self.progress(min(self._read / max(2 * len(self.frames), 1), 1.0))
        chunk = self.frames[frames]
        self._read += len(chunk)
        return chunk


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's CPU thread count set to `count`, and restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


__all__ = [
    "DEFAULT_DISK_BUDGET",
    "DEFAULT_MEMORY_BUDGET",
    "AvisEncodingWorkers",
    "AvisMaskFeatureReplay",
    "CPU_FRAME_CHUNK",
    "AvisMaskFeatureStore",
    "AvisVideoSegmenter",
    "decode_video",
    "encode_video",
    "model_frame_chunks",
]
