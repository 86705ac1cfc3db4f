"""Tracked sounding objects: what the model's post-processing hands to renderers, writers and metrics.

Masks are kept as compressed COCO RLE, one per sampled frame; `mask(t)` decodes one frame when a renderer needs it.
The model's tracks keep their RLEs in an `AvisMaskStore`, a temporary file beyond a few MB, so that memory does not
grow with a video's length times its instances. The RLE helpers here are the one home of that format: encoding,
decoding, areas, storing, and checking RLEs that come from files.
"""

import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

# RLEs per pycocotools `area` call (see `mask_areas`).
AREA_BATCH = 255
# RLE bytes an AvisMaskStore keeps in memory before it moves them to a temporary file: at 360p, 1-5 KB a mask.
MASK_STORE_MEMORY = 16 << 20
# The span length of a frame a track is not in (the online mode's tracks start and end within a video).
NOT_IN_FRAME = -1


def encode_mask(mask: np.ndarray) -> dict:
    """A (H, W) bool mask as compressed COCO RLE `{"size": [H, W], "counts": str}`."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    """The (H, W) bool mask of a compressed COCO RLE."""
    return mask_utils.decode(_as_bytes(rle)).astype(bool)


def mask_areas(rles: list[dict]) -> np.ndarray:
    """Pixels of each compressed RLE's mask, (N,) int64.

    pycocotools 2.0.11's `area` counts its inputs in a uint8 and fails on 256 or more (a track over 255 sampled
    frames), so it is called on batches below that.
    """
    areas = [
        mask_utils.area([_as_bytes(rle) for rle in rles[start : start + AREA_BATCH]])
        for start in range(0, len(rles), AREA_BATCH)
    ]
    return np.concatenate(areas).astype(np.int64) if areas else np.zeros(0, dtype=np.int64)


def run_lengths(counts: str | bytes) -> np.ndarray:
    """The run lengths (int64) that a compressed COCO RLE string encodes, read as pycocotools' `rleFrString` reads
    them; ValueError for a string it would misread (characters outside its alphabet, a number cut off or over 32
    bits, a negative run).

    Each run is a little-endian number of 5-bit groups, one per character ('0' + group, with 0x20 set on every
    character but a number's last, whose 0x10 bit is its sign); from the third run on, each is stored as the
    difference from the run two before it.
    """
    codes = np.frombuffer(counts.encode("latin-1") if isinstance(counts, str) else counts, dtype=np.uint8)
    codes = codes.astype(np.int64) - ord("0")
    if not len(codes):
        return np.zeros(0, dtype=np.int64)
    if codes.min() < 0 or codes.max() > 63:
        raise ValueError("it has characters outside the RLE alphabet ('0' to 'o')")
    last = (codes & 0x20) == 0  # the character that ends a number
    if not last[-1]:
        raise ValueError("its last number is cut off")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    digits = ends - starts + 1
    if digits.max() > 7:
        raise ValueError("it has a number over 32 bits")
    shifts = 5 * (np.arange(len(codes)) - np.repeat(starts, digits))
    values = np.add.reduceat((codes & 0x1F) << shifts, starts)
    values -= np.where(codes[ends] & 0x10, 1 << (5 * digits), 0)  # the sign bit: x |= -1 << 5k
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0:
        raise ValueError("it has a negative run")
    return runs


def check_rle(rle: object, height: int, width: int) -> None:
    """ValueError, worded for a message, unless `rle` is a compressed COCO RLE `{size: [height, width], counts:
    str}` whose runs cover exactly height x width pixels (pycocotools would read garbage counts as huge masks)."""
    if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str)):
        raise ValueError("expected a compressed RLE {size, counts: str}")
    size = rle.get("size")
    if not (isinstance(size, list | tuple) and list(size) == [height, width]):
        raise ValueError(f"mask size {size} is not {height}x{width}")
    try:
        covered = int(run_lengths(rle["counts"]).sum())
    except (ValueError, UnicodeEncodeError) as error:
        raise ValueError(f"its counts are not a compressed RLE: {error}") from None
    if covered != height * width:
        raise ValueError(f"its counts cover {covered} pixels, not {height}x{width}")


class AvisMaskStore:
    """The compressed RLEs of one video's masks, all of one size, in memory up to `memory_budget` bytes of counts and
    in an anonymous temporary file beyond (gone with the store). `append` returns where a mask went; `AvisTrackMasks`
    reads a track's masks back."""

    def __init__(self, height: int, width: int, memory_budget: int = MASK_STORE_MEMORY):
        self.size = [int(height), int(width)]
        self._file = tempfile.SpooledTemporaryFile(max_size=memory_budget, prefix="avis_masks_")
        self._end = 0
        self._lock = threading.Lock()  # a renderer may read one track while another thread reads the next

    @property
    def nbytes(self) -> int:
        """Bytes of RLE counts stored."""
        return self._end

    def append(self, mask: np.ndarray) -> tuple[int, int]:
        """Encodes a (H, W) bool mask; returns its (offset, length) in the store."""
        counts = encode_mask(mask)["counts"].encode("ascii")
        with self._lock:
            self._file.seek(self._end)
            self._file.write(counts)
            offset, self._end = self._end, self._end + len(counts)
        return offset, len(counts)

    def read(self, offset: int, length: int) -> dict:
        """The compressed RLE stored at (offset, length)."""
        with self._lock:
            self._file.seek(offset)
            counts = self._file.read(length)
        return {"size": list(self.size), "counts": counts.decode("ascii")}


class AvisTrackMasks(Sequence):
    """One track's masks as a sequence of compressed RLEs, one per sampled frame, read from its video's
    `AvisMaskStore` when asked for (None for a frame the track is not in: `NOT_IN_FRAME`). It compares equal to a
    list of the same RLEs and pickles as one."""

    def __init__(self, store: AvisMaskStore, spans: np.ndarray):
        self.store = store
        self.spans = spans  # (T, 2) int64: offset and length of each frame's RLE

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        offset, length = self.spans[index]
        return None if length == NOT_IN_FRAME else self.store.read(int(offset), int(length))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __reduce__(self):
        return list, (list(self),)


@dataclass
class AvisTrack:
    """One sounding object through the video.

    track_id: 1-based, in order of descending score.
    label / label_name: 0-based AVISeg class id and its name.
    score: the clip-level score (class probability x mask score).
    segmentations: one compressed RLE per sampled frame, at the video's original size (empty masks included), or
        None where the track is not (the online mode's tracks start and end within the video): a list, or the
        model's `AvisTrackMasks`.
    query_index: the clip query it comes from (None for a track not made by one query).
    """

    track_id: int
    label: int
    label_name: str
    score: float
    segmentations: Sequence[dict | None]
    query_index: int | None = None

    def mask(self, frame_index: int) -> np.ndarray:
        """The (H, W) bool mask in a sampled frame (empty where the track is not)."""
        rle = self.segmentations[frame_index]
        if rle is None:
            size = next(rle["size"] for rle in self.segmentations if rle is not None)
            return np.zeros(size, dtype=bool)
        return decode_mask(rle)

    def areas(self) -> np.ndarray:
        """Pixels of the mask in each sampled frame, (T,) int64 (0 where the track is not)."""
        rles = list(self.segmentations)
        present = [index for index, rle in enumerate(rles) if rle is not None]
        areas = np.zeros(len(rles), dtype=np.int64)
        areas[present] = mask_areas([rles[index] for index in present])
        return areas


@dataclass
class AvisVideoResult:
    """Everything predicted for one video.

    timestamps: (T,) seconds of each sampled frame in the source video.
    height / width: the source video's frame size, which every mask has.
    has_audio: False when the video had no audio track and silence was used instead.
    fps: the source video's frame rate (for renderers that hold masks between sampled frames).
    """

    tracks: list[AvisTrack]
    timestamps: np.ndarray
    height: int
    width: int
    has_audio: bool = True
    fps: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.timestamps)


@dataclass
class AvisStreamTrack:
    """A track's masks in the frames one window of the online mode finalised.

    track_id, label, label_name, score: the track's, as known so far (its class and score are its windows' vote
        and mean, so they may change as the stream goes on).
    masks: (t, H, W) bool, one per finalised frame, at the video's original size.
    """

    track_id: int
    label: int
    label_name: str
    score: float
    masks: np.ndarray


@dataclass
class AvisStreamUpdate:
    """What one window of the online mode finalised: its newest sampled frames (their indices in the video and
    times in seconds) and the tracks in them, each with its masks there. A frame is finalised once and never
    changed."""

    frames: list[int]
    timestamps: list[float]
    tracks: list[AvisStreamTrack]


class AvisStreamRecorder:
    """The updates of a stream, put together as an `AvisVideoResult` (for a results JSON, the metrics, an overlay):
    each mask goes to RLE in an `AvisMaskStore` as it comes. A track is None (`NOT_IN_FRAME`) in the frames it is not
    in; its class and score are its last update's."""

    def __init__(self, height: int, width: int):
        self.store = AvisMaskStore(height, width)
        self.timestamps: list[float] = []
        self._spans: dict[int, list[tuple[int, int]]] = {}  # per track, one span per frame
        self._tracks: dict[int, AvisStreamTrack] = {}

    def add(self, update: AvisStreamUpdate) -> None:
        if update.frames and update.frames[0] != len(self.timestamps):
            raise ValueError(f"frame {update.frames[0]} comes after {len(self.timestamps)} frames")
        self.timestamps.extend(update.timestamps)
        for track in update.tracks:
            spans = self._spans.setdefault(track.track_id, [])
            spans.extend([(0, NOT_IN_FRAME)] * (update.frames[0] - len(spans)))
            spans.extend(self.store.append(mask) for mask in track.masks)
            self._tracks[track.track_id] = track

    def result(
        self, has_audio: bool = True, fps: float | None = None, notes: list[str] | None = None
    ) -> AvisVideoResult:
        frames = len(self.timestamps)
        tracks = []
        for track_id, spans in self._spans.items():
            padded = np.array(spans + [(0, NOT_IN_FRAME)] * (frames - len(spans)), dtype=np.int64).reshape(-1, 2)
            last = self._tracks[track_id]
            tracks.append(
                AvisTrack(track_id, last.label, last.label_name, last.score, AvisTrackMasks(self.store, padded))
            )
        height, width = self.store.size
        return AvisVideoResult(
            tracks=tracks,
            timestamps=np.asarray(self.timestamps, dtype=np.float64),
            height=height,
            width=width,
            has_audio=has_audio,
            fps=fps,
            notes=list(notes or []),
        )


def _as_bytes(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


__all__ = [
    "NOT_IN_FRAME",
    "AvisMaskStore",
    "AvisStreamRecorder",
    "AvisStreamTrack",
    "AvisStreamUpdate",
    "AvisTrack",
    "AvisTrackMasks",
    "AvisVideoResult",
    "check_rle",
    "decode_mask",
    "encode_mask",
    "mask_areas",
    "run_lengths",
]
