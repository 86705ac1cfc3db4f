"""What inference keeps of one video between its frames: `AvisInferenceSession`, as transformers' sam2_video keeps
its `Sam2VideoInferenceSession`. Frames and their sound are added as they arrive; the model answers for what it has.

    session = processor.init_video_session(mode="online")
    for inputs in processor.iter_chunks("concert.mp4", chunk_frames=1):       # or processor.iter_live_chunks(source)
        outputs = model(**inputs, inference_session=session)                  # the windows these frames complete
        for update in processor.post_process_online_windows(outputs, session, model.config.id2label):
            ...                                                               # AvisStreamUpdate: finalised frames' masks
    outputs = model(inference_session=session, end_of_video=True)             # the last frames' window

Two modes of the one session:

- **offline**, AVISM as published: the clip queries attend to every frame, so the session keeps every frame's
  encoding (the frame queries, the audio feature, and the clip-level mask features in an `AvisMaskFeatureStore`
  within its memory and disk budgets) and the model answers once, at the end of the video, with the clip module over
  all of them: the output of `AvisModel.forward` on the whole video, to the bit.
- **online**: causal windows of the last `window_size` frames, one every `stride` frames. Each window's clip queries
  are linked to the session's tracks (`AvisOnlineTracks`) and give the masks of the frames the window finalises (its
  newest `stride`). Nothing is kept of a frame that left the window: memory is constant in the video's length.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .tracking_avis import AvisOnlineTracks

MODES = ("offline", "online")
# Frames per block of `AvisFrameBlocks`: 64 frames of frame queries are 6.5 MB.
QUERY_BLOCK_FRAMES = 64


@dataclass(frozen=True)
class AvisWindow:
    """Frames [start, end) of the video, whose clip queries give the masks of frames [emit_start, end)."""

    start: int
    end: int
    emit_start: int

    @property
    def emitted(self) -> range:
        return range(self.emit_start, self.end)


class AvisFrameBlocks:
    """Per-frame tensors `(t, ...)` appended in frame order, copied into blocks of `block_frames` frames.

    What the first pass keeps of each frame lives until the video's end. Kept as one small tensor per frame, these
    land between the large temporaries of the next frames' encoding and cut the freed memory into holes that glibc's
    malloc does not reuse: at 360p, with every frame's mask features spilled, the peak RSS reached 2.83 GB at 200
    frames (growing ~15 MB a frame from the 120th); kept in a few large blocks, it stays at 1.49 GB from frame 80 on.
    `capacity` bounds the frames held (None: no bound).
    It reads as a frame sequence: `len(blocks)`, `blocks[start:stop]` (a view when inside one block).
    """

    def __init__(self, block_frames: int, capacity: int | None = None):
        self.block_frames = block_frames
        self.capacity = capacity
        self._blocks: list[torch.Tensor] = []
        self._frames = 0
        self._filled = 0  # frames written to the last block

    def __len__(self) -> int:
        return self._frames

    @property
    def room(self) -> int | None:
        """Frames it may still take (None: no bound)."""
        return None if self.capacity is None else self.capacity - self._frames

    def append(self, frames: torch.Tensor) -> None:
        if self.room is not None and len(frames) > self.room:
            raise ValueError(f"{len(frames)} frames do not fit in the {self.room} left")
        written = 0
        while written < len(frames):
            if not self._blocks or self._filled == len(self._blocks[-1]):
                size = self.block_frames if self.room is None else min(self.block_frames, self.room)
                self._blocks.append(frames.new_empty(size, *frames.shape[1:]))
                self._filled = 0
            count = min(len(self._blocks[-1]) - self._filled, len(frames) - written)
            self._blocks[-1][self._filled : self._filled + count] = frames[written : written + count]
            self._filled, self._frames, written = self._filled + count, self._frames + count, written + count

    def __getitem__(self, frames: slice) -> torch.Tensor:
        start, stop, _ = frames.indices(len(self))
        pieces, offset = [], 0
        for block in self._blocks:
            if start < offset + len(block) and stop > offset:
                pieces.append(block[max(start - offset, 0) : stop - offset])
            offset += len(block)
        if not pieces:
            return self._blocks[0][:0]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


class AvisRecentFrames:
    """Per-frame tensors of the last frames of a stream, by their index in the video: frames are appended in order
    and let go from the start (`forget_before`); `frames[start:stop]` reads frames that are still held."""

    def __init__(self):
        self._frames: list[torch.Tensor] = []
        self._first = 0  # the video index of `_frames[0]`

    def __len__(self) -> int:
        return self._first + len(self._frames)

    def append(self, frames: torch.Tensor) -> None:
        self._frames.extend(frames.unbind(0))

    def forget_before(self, index: int) -> None:
        drop = min(max(index - self._first, 0), len(self._frames))
        del self._frames[:drop]
        self._first += drop

    def __getitem__(self, frames: slice) -> torch.Tensor:
        start, stop, _ = frames.indices(len(self))
        if start < self._first:
            raise IndexError(f"frame {start} was let go (frames from {self._first} on are held)")
        return torch.stack(self._frames[start - self._first : stop - self._first])


@dataclass
class AvisOnlineSettings:
    """How the online mode cuts a stream into windows and links their instances into tracks.

    window_size: the frames a window's clip queries attend to (AVISM trained on clips of 5 frames).
    stride: frames between two windows; each window finalises its newest `stride` frames.
    keep_threshold: a track goes on while its object scores above this (the processor's score threshold, above it
        or not, starts a track): hysteresis, so that a score that wavers about the threshold does not cut a track.
    patience: windows a track may go unmatched (no mask in their frames) before it ends.
    match_iou: the least mask IoU, on the frames two windows share, at which a window's instance continues a track.
    duplicate_iou: a new instance whose masks overlap a kept one's by more than this is the same object found twice.
    """

    window_size: int = 5
    stride: int = 1
    keep_threshold: float = 0.4
    patience: int = 1
    match_iou: float = 0.2
    duplicate_iou: float = 0.5

    def __post_init__(self):
        if not 1 <= self.stride <= self.window_size:
            raise ValueError(f"the stride must be from 1 to the window size ({self.window_size}), not {self.stride}")


@dataclass
class AvisInferenceSession:
    """What inference keeps of one video between its frames (see the module docstring).

    mode: "offline" or "online".
    mask_features: offline, the store of every frame's clip-level mask features (`AvisMaskFeatureStore`, any frame
        sequence); online, made by the session (the window's frames only).
    online: the window and the linking of the online mode.
    padded_size: (Hp, Wp) of the frames the model saw (set by the first frames).
    tracks: the online mode's tracks.
    """

    mode: str = "offline"
    mask_features: object = None
    online: AvisOnlineSettings = field(default_factory=AvisOnlineSettings)
    padded_size: tuple[int, int] | None = None
    tracks: AvisOnlineTracks = field(default_factory=AvisOnlineTracks)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.mode == "offline":
            if self.mask_features is None:
                raise ValueError("an offline session needs a store for its mask features")
            self.frame_queries = AvisFrameBlocks(QUERY_BLOCK_FRAMES)
            self.audio_features = AvisFrameBlocks(QUERY_BLOCK_FRAMES)
        else:
            self.mask_features = AvisRecentFrames()
            self.frame_queries = AvisRecentFrames()
            self.audio_features = AvisRecentFrames()
        self._windowed = 0  # frames finalised by the windows given so far
        self._added = 0
        self.ended = False

    @property
    def num_frames(self) -> int:
        """Frames added so far."""
        return self._added

    def add_frames(
        self,
        frame_queries: torch.Tensor,
        audio_features: torch.Tensor,
        mask_features: torch.Tensor,
        padded_size: tuple[int, int],
    ) -> None:
        """Keeps the encoding of the next frames: frame queries (t, fQ, C) of the last frame-decoder layer, audio
        features (t, audio_dim), clip-level mask features (t, mask_dim, h, w)."""
        if self.ended:
            raise ValueError("the video of this session has ended")
        self.padded_size = tuple(padded_size)
        self.frame_queries.append(frame_queries)
        self.audio_features.append(audio_features)
        self.mask_features.append(mask_features)
        self._added += len(frame_queries)

    def due_windows(self, end_of_video: bool = False) -> Iterator[AvisWindow]:
        """The windows the frames added so far complete, each once (in the offline mode, one window of the whole
        video once it has ended); `end_of_video` ends the video (no frame may be added after)."""
        self.ended = self.ended or end_of_video
        if self.mode == "offline":
            if end_of_video and self.num_frames and not self._windowed:
                self._windowed = self.num_frames
                yield AvisWindow(0, self.num_frames, 0)
            return
        size, stride = self.online.window_size, self.online.stride
        while self._windowed < self.num_frames:
            end = self._windowed + stride
            if end > self.num_frames:
                if not self.ended:
                    return
                end = self.num_frames  # the video's last frames, fewer than a stride
            window = AvisWindow(max(0, end - size), end, self._windowed)
            self._windowed = end
            yield window
            # what the next window reads: its frames, from its end minus the window's size; the video's last window
            # may end a frame after this one (fewer than a stride), so from here on
            for frames in (self.frame_queries, self.audio_features, self.mask_features):
                frames.forget_before(end + 1 - size)

    def clip_inputs(self, window: AvisWindow) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's frame queries (1, 1, t, fQ, C) and audio features (1, t, audio_dim), as the clip module
        takes them. The offline mode's are read once: a long video's post-processing then holds only its mask
        features (the frame queries of 600 frames at 100 queries are 61 MB)."""
        inputs = (
            self.frame_queries[window.start : window.end][None, None],
            self.audio_features[window.start : window.end][None],
        )
        if self.mode == "offline":
            self.frame_queries = self.audio_features = None
        return inputs


__all__ = [
    "MODES",
    "AvisFrameBlocks",
    "AvisInferenceSession",
    "AvisOnlineSettings",
    "AvisRecentFrames",
    "AvisWindow",
]
