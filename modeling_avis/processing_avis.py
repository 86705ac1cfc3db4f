"""AvisProcessor: a video file (or an AVISeg frame folder) to the model's inputs, and the model's outputs to tracks.

    processor = AvisProcessor.from_pretrained("path/to/model")
    inputs = processor("concert.mp4")      # pixel_values (1, T, 3, Hp, Wp), audio_log_mel (1, T, 96, 64)
    outputs = model(**inputs)              # the inputs are the model's, exactly
    result = processor.post_process_video_instance_segmentation(outputs, inputs.video_metadata, model.config.id2label)[0]

`inputs.video_metadata` (one `AvisVideoMetadata` per video) carries what post-processing needs besides the
outputs: the sampled frames' timestamps, the frame sizes before and after resizing and padding, whether the video
had sound, and notes on what was assumed. `iter_chunks` gives the same inputs a few frames at a time, for videos of
any length (`AvisVideoSegmenter` streams them through the model that way).

The processor's config holds the pre- and post-processing settings: the sampling rate (`fps`), the frame size
and normalisation (`image_processor`), the log-mel (`feature_extractor`), and the top-k, score threshold and mask
chunking of post-processing. Silence has one meaning here (`AvisFeatureExtractor.silence`, the log-mel of a silent
waveform): what every frame of a video without sound gets, and every frame with `mute_audio=True`.
"""

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .config_ranges import PROCESSOR_RANGES, check_ranges
from .configuration_avis import AvisConfig
from .errors import AvisInputError, printable
from .feature_extraction_avis import AvisFeatureExtractor
from .image_processing_avis import AvisImageProcessor
from .input_files import read_npy
from .post_processing_avis import AvisVideoInstances, instance_mask_chunks, score_instances
from .session_avis import AvisInferenceSession, AvisOnlineSettings
from .tracks import AvisMaskStore, AvisStreamTrack, AvisStreamUpdate, AvisTrack, AvisTrackMasks, AvisVideoResult
from .video_io import (
    TIME_TOLERANCE,
    AudioReader,
    AvisegVideoFiles,
    LiveMedia,
    MonoAudioBuffer,
    frame_to_rgb,
    probe_video,
    read_frame_folder,
    read_frames,
    read_image,
)

# The audio inputs a model takes: log-mel examples for its own audio encoder, or precomputed VGGish features.
AUDIO_INPUTS = ("audio_log_mel", "audio_features")


@dataclass
class AvisVideoMetadata:
    """What the processor knows of one video besides its model inputs.

    timestamps: seconds of each sampled frame from the video's start (complete once its chunks are iterated).
    original_size: (H, W) of the source frames (upright), the size of the masks.
    image_size: (h, w) of the resized frames before padding.
    padded_size: (Hp, Wp) of `pixel_values`.
    has_audio: False when the video had no sound (every frame was given silence).
    fps: the source's native frame rate (None when unknown, and for frame folders).
    notes: what was assumed about the input, worded for the user.
    """

    timestamps: list[float]
    original_size: tuple[int, int]
    image_size: tuple[int, int]
    padded_size: tuple[int, int]
    has_audio: bool = True
    fps: float | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of_frames(
        cls, image_processor: AvisImageProcessor, original_size, has_audio: bool, fps: float | None, notes: list[str]
    ) -> "AvisVideoMetadata":
        """The metadata of a video whose frames are `original_size` (H, W), before any frame is read (`notes`: the
        list the notes go to)."""
        image_size = image_processor.output_size(*original_size)
        return cls(
            timestamps=[],
            original_size=tuple(int(side) for side in original_size),
            image_size=image_size,
            padded_size=image_processor.padded_size(*image_size),
            has_audio=has_audio,
            fps=fps,
            notes=notes,
        )


class AvisVideoInputs(BatchFeature):
    """The model's inputs as keys, so that `model(**inputs)` works, and `video_metadata` (a list of one
    `AvisVideoMetadata` per video) as an attribute beside them."""

    def __init__(self, data: dict, video_metadata: list[AvisVideoMetadata], tensor_type=None):
        super().__init__(data, tensor_type=tensor_type)
        self.video_metadata = video_metadata


class AvisProcessor(ProcessorMixin):
    r"""
    Decodes a video, samples its frames and prepares frames and sound for AVISM; turns the model's outputs into
    tracks.

    image_processor (`AvisImageProcessor`): resizing, normalisation and padding of the frames.
    feature_extractor (`AvisFeatureExtractor`): VGGish log-mel examples of the audio, one per frame.
    fps (`float`): frames sampled per second of video (AVISeg: 1). For a frame folder, the rate its frames were
        sampled at.
    num_detections (`int`): top-k (clip query, class) pairs considered per video (`TEST.DETECTIONS_PER_IMAGE`).
    score_threshold (`float`): instances scoring at or below it are dropped (the original's 0.3).
    mask_chunk_size (`int`): frames per mask upsampling pass in post-processing (`TEST_INTERPOLATE_CHUNK_SIZE`).

    Each setting has a range (`config_ranges.PROCESSOR_RANGES`); a value outside it is a ValueError.
    """

    def __init__(
        self,
        image_processor: AvisImageProcessor | None = None,
        feature_extractor: AvisFeatureExtractor | None = None,
        fps: float = 1.0,
        num_detections: int = 100,
        score_threshold: float = 0.3,
        mask_chunk_size: int = 5,
    ):
        super().__init__(
            AvisImageProcessor() if image_processor is None else image_processor,
            AvisFeatureExtractor() if feature_extractor is None else feature_extractor,
        )
        self.fps = fps
        self.num_detections = num_detections
        self.score_threshold = score_threshold
        self.mask_chunk_size = mask_chunk_size
        check_ranges(self, PROCESSOR_RANGES)

    @classmethod
    def for_model(cls, config: AvisConfig, **kwargs) -> "AvisProcessor":
        """The processor the original tested such a model with: frames of 448 pixels for Swin-L, 360 for ResNet-50.

        Folders saved before the processor held its settings kept them in the model's config: they are read there.
        """
        legacy = {key: getattr(config, key) for key in LEGACY_CONFIG_FIELDS if hasattr(config, key)}
        image_processor = AvisImageProcessor(
            shortest_edge=448 if config.backbone_config.model_type == "swin" else 360,
            **{key: legacy[name] for name, key in LEGACY_IMAGE_FIELDS.items() if name in legacy},
        )
        settings = {key: legacy[key] for key in LEGACY_PROCESSOR_FIELDS if key in legacy}
        return cls(image_processor, AvisFeatureExtractor(), **{**settings, **kwargs})

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # The frame and audio processors are saved inside processor_config.json, and built from it here rather than
        # through AutoImageProcessor / AutoFeatureExtractor, whose backends need torchvision.
        processor_dict = processor_dict or {}
        image, audio = processor_dict.get("image_processor", {}), processor_dict.get("feature_extractor", {})
        return [
            AvisImageProcessor(**{key: value for key, value in image.items() if key != "image_processor_type"}),
            AvisFeatureExtractor(**{key: value for key, value in audio.items() if key != "feature_extractor_type"}),
        ]

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", *AUDIO_INPUTS]

    def __call__(
        self,
        videos: str | Path,
        audio_features: str | Path | np.ndarray | torch.Tensor | None = None,
        **sampling,
    ) -> AvisVideoInputs:
        """Prepares one video: a media file, or a folder of numbered JPEG frames (AVISeg's `JPEGImages/<video>/`).

        audio_features: precomputed VGGish embeddings (T x 128, an array or an .npy file, like AVISeg's
            `FEATAudios/<video>.npy`) given to the model as `audio_features` instead of `audio_log_mel`.
        sampling: which frames, and what sound (`AvisSampling`'s fields by name: fps, timestamps, max_frames,
            max_duration, audio_input, mute_audio).

        The whole video at once: the chunks of `iter_chunks` put together (batch of one).
        """
        chunks = self.iter_chunks(videos, audio_features=audio_features, **sampling)
        parts = list(chunks)
        data = {name: torch.cat([part[name] for part in parts])[None] for name in parts[0]}
        return AvisVideoInputs(data, [chunks.metadata()])

    def iter_chunks(
        self,
        video: str | Path,
        chunk_frames: int = 18,
        audio_features: str | Path | np.ndarray | torch.Tensor | None = None,
        **sampling,
    ) -> "AvisVideoChunks":
        """The same inputs as `__call__`, `chunk_frames` sampled frames at a time, decoded only as they are iterated:
        a video of any length is prepared in the memory of one chunk. See `AvisVideoChunks`."""
        sampling = AvisSampling(**sampling)
        fps = sampling.rate(self.fps)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, not {chunk_frames}")
        path = Path(video)
        if path.is_dir():
            frames, sizes, audio, notes = self._frame_folder(path, fps, sampling, audio_features)
        else:
            frames, sizes, audio, notes = self._video_file(path, fps, sampling, audio_features)
        if sampling.mute_audio:
            if sampling.audio_input == "audio_features":
                raise AvisInputError("muting the sound needs a model with an audio encoder: silence has no features")
            audio = _LogMelAudio(self.feature_extractor, None)
            notes = [*notes, "the sound was muted: every frame was given silence"]
        return AvisVideoChunks(frames, audio, self.image_processor, chunk_frames, notes, **sizes)

    def audio_log_mel(self, media: str | Path | None, timestamps: Sequence[float]) -> torch.Tensor:
        """(T, 96, 64): the log-mel examples of the sound of `media` (a video or a sound file; None: silence) at
        `timestamps` (increasing), as `iter_chunks` gives them."""
        audio = _LogMelAudio(self.feature_extractor, None if media is None else Path(media))
        with audio.reading():
            return audio.inputs(list(timestamps), 0)["audio_log_mel"]

    def post_process_video_instance_segmentation(
        self,
        outputs,
        video_metadata: Sequence[AvisVideoMetadata],
        id2label: Mapping[int, str] | None = None,
        threshold: float | None = None,
        max_instances: int | None = None,
    ) -> list[AvisVideoResult]:
        """The sounding instances of each video of `outputs` (an `AvisModelOutput`) as tracks, one RLE mask per
        sampled frame at the source's size.

        As the original's inference: the top `num_detections` (clip query, class) pairs by class probability, each
        scored by class probability x mask score (the mean probability inside the mask over all frames); those
        scoring above `threshold` (default: the processor's `score_threshold`) are kept, highest first, at most
        `max_instances` of them. Always in float32, under any autocast.

        outputs.mask_features: per video (T, mask_dim, h, w), a tensor or any frame sequence sliced as one (the
            segmenter's mask-feature store): the masks are drawn a few frames at a time and encoded as they come.
        id2label: the model's class names (`model.config.id2label`); tracks are named by class id without it.
        """
        threshold = self.score_threshold if threshold is None else threshold
        results = []
        for index, metadata in enumerate(video_metadata):
            class_logits, mask_embeddings = outputs.class_logits[index], outputs.mask_embeddings[index]
            mask_features = outputs.mask_features[index]
            with torch.autocast(class_logits.device.type, enabled=False):
                instances = score_instances(
                    class_logits.float(), mask_embeddings.float(), mask_features, metadata.image_size,
                    self.num_detections, threshold, self.mask_chunk_size,
                )  # fmt: skip
                if max_instances is not None:
                    instances = instances.select(slice(0, max_instances))
                masks = instance_mask_chunks(
                    instances, mask_features, metadata.image_size, metadata.original_size, self.mask_chunk_size,
                )  # fmt: skip
                results.append(video_result(instances, masks, metadata, id2label))
        return results

    def init_video_session(
        self, mode: str = "online", mask_features=None, online: AvisOnlineSettings | None = None
    ) -> AvisInferenceSession:
        """A new inference session for one video (see `session_avis`): "online" (causal windows, `online` its
        settings) or "offline" (AVISM as published; `mask_features` the store of its frames' mask features)."""
        return AvisInferenceSession(mode, mask_features, online or AvisOnlineSettings())

    def post_process_online_windows(
        self,
        outputs,
        session: AvisInferenceSession,
        metadata: AvisVideoMetadata,
        id2label: Mapping[int, str] | None = None,
        threshold: float | None = None,
        max_instances: int | None = None,
    ) -> list[AvisStreamUpdate]:
        """The online mode's answer for each window of `outputs` (an `AvisSessionOutput`): its instances linked to
        the session's tracks (`AvisOnlineTracks.link`) and their masks in the frames it finalises, at the source's
        size. Always in float32, under any autocast.

        Each window is scored as a video of its own frames (`score_instances`), one instance per clip query: those
        above `threshold` (default: the processor's `score_threshold`) start tracks, at most `max_instances` at
        once; tracks go on above the session's `keep_threshold` (or `threshold`, where lower).
        metadata: the video's (its timestamps known up to the frames of these windows).
        """
        threshold = self.score_threshold if threshold is None else threshold
        keep_threshold = min(session.online.keep_threshold, threshold)
        updates = []
        for window, output in zip(outputs.windows, outputs.outputs):
            mask_features = output.mask_features[0]
            with torch.autocast(mask_features.device.type, enabled=False):
                instances = score_instances(
                    output.class_logits[0].float(), output.mask_embeddings[0].float(), mask_features,
                    metadata.image_size, self.num_detections, keep_threshold, self.mask_chunk_size,
                ).best_per_query()  # fmt: skip
                links = session.tracks.link(
                    instances,
                    mask_features,
                    window.emit_start - window.start,
                    threshold,
                    session.online,
                    max_instances,
                )
                tracks = [track for track, _ in links]
                finalised = mask_features[window.emit_start - window.start :]
                masks = instance_mask_chunks(
                    instances.select(torch.tensor([index for _, index in links], dtype=torch.long)),
                    finalised, metadata.image_size, metadata.original_size, self.mask_chunk_size,
                )  # fmt: skip
                masks = torch.cat(list(masks), dim=1).cpu().numpy() if tracks else None
            updates.append(
                AvisStreamUpdate(
                    frames=list(window.emitted),
                    timestamps=[float(metadata.timestamps[frame]) for frame in window.emitted],
                    tracks=[
                        AvisStreamTrack(
                            track.track_id,
                            track.label,
                            id2label[track.label] if id2label is not None else str(track.label),
                            track.score,
                            masks[row],
                        )
                        for row, track in enumerate(tracks)
                    ],  # fmt: skip
                )
            )
        return updates

    def _video_file(self, path, fps, sampling, audio_features):
        info = probe_video(path)
        notes = []
        max_duration, timestamps = sampling.max_duration, sampling.timestamps
        if timestamps is None and fps is not None and info.base_fps is not None and fps > info.base_fps:
            notes.append(f"sampled at the video's native {info.base_fps:g} fps ({fps:g} fps was asked)")
        rate = info.fps if fps is None else min(fps, info.base_fps or fps)
        # for progress only: the container's header says how long the video is, and it may lie
        expected = max(1, math.ceil(info.duration * rate - 1e-6)) if rate else None
        if expected is not None and max_duration is not None:
            expected = min(expected, max(0, math.ceil(max_duration * rate - 1e-9)))
        if expected is not None and sampling.max_frames is not None:
            expected = min(expected, sampling.max_frames)
        if timestamps is not None:
            expected = len(sampling.wanted(timestamps))

        def frames():
            taken = 0
            for frame in read_frames(path, fps, sampling.max_frames, timestamps=timestamps):
                taken += 1
                yield frame.time, frame.image
            if timestamps is not None and taken < len(sampling.wanted(timestamps)):
                raise AvisInputError(
                    f"{printable(path.name)}: no frame at {timestamps[taken]:g} s, past the end of the video"
                )

        if audio_features is not None:
            audio = _PrecomputedAudio(audio_features)
        elif sampling.audio_input == "audio_features":
            raise AvisInputError(f"{path.name}: this model reads precomputed audio features; give audio_features")
        else:
            if not info.has_audio:
                notes.append(f"{path.name} has no audio track: every frame was given silence")
            audio = _LogMelAudio(self.feature_extractor, path if info.has_audio else None)
        sizes = {
            "original_size": (info.height, info.width),
            "fps": info.fps,
            "expected_frames": expected,
            "max_duration": max_duration,
        }
        return frames, sizes, audio, notes

    def _frame_folder(self, folder, fps, sampling, audio_features):
        if fps is None:
            raise AvisInputError(f"{folder.name}: a frame folder has no native rate; give the rate it was sampled at")
        paths = read_frame_folder(folder)
        notes = []
        max_duration = sampling.max_duration
        if sampling.timestamps is not None:
            # frame k is on screen from k / fps
            shown = [math.floor(time * fps + TIME_TOLERANCE) for time in sampling.wanted(sampling.timestamps)]
            if shown and shown[-1] >= len(paths):
                raise AvisInputError(
                    f"{printable(folder.name)}: no frame at {shown[-1] / fps:g} s: the folder's {len(paths)} frames "
                    f"at {fps:g} fps end before it"
                )
            times, paths = list(sampling.wanted(sampling.timestamps)), [paths[index] for index in shown]
        else:
            if max_duration is not None and len(paths) > max_duration * fps + 1e-9:
                paths = paths[: max(0, math.ceil(max_duration * fps - 1e-9))]
                notes.append(_cut_note(max_duration))
            times = [k / fps for k in range(len(paths))]
        paths, times = paths[: sampling.max_frames], times[: sampling.max_frames]
        if not paths:
            raise AvisInputError(f"{folder.name}: no frames to process within the given limits")
        original_size = read_image(paths[0]).shape[:2]

        def frames():
            return ((time, read_image(frame)) for time, frame in zip(times, paths))

        # AVISeg keeps a video's sound beside its frames
        files = AvisegVideoFiles.of_frame_folder(folder)
        audio_input = sampling.audio_input
        reads_features = audio_input == "audio_features" or (audio_input is None and files.features.is_file())
        if audio_features is None and reads_features:
            audio_features = files.features
        if audio_features is not None:
            audio = _PrecomputedAudio(audio_features)
            audio.check_covers(len(paths))
        else:
            if not files.wav.is_file():
                notes.append(
                    f"{folder.name} has no WAVAudios/{folder.name}.wav beside it: every frame was given silence"
                )
            audio = _LogMelAudio(self.feature_extractor, files.wav if files.wav.is_file() else None)
        sizes = {"original_size": tuple(original_size), "fps": None, "expected_frames": len(paths)}
        return frames, sizes, audio, notes


@dataclass(frozen=True)
class AvisSampling:
    """Which frames of a video the model is given, and what it hears with them: the options of every reading of a
    video (the processor's `__call__` and `iter_chunks`, `AvisVideoSegmenter`, training's and evaluation's reading
    of a dataset), declared here once and passed by name.

    fps: frames sampled per second (None: the processor's); "native" takes every frame of a file. For a frame
        folder, the rate its frames were sampled at.
    timestamps: the seconds to sample at instead of a rate (increasing): the frame on screen at each (a frame
        folder's frame k is on screen from k / fps); a time past the video's end is an error.
    max_frames, max_duration: keep at most this many frames, or the frames before this many seconds.
    audio_input: the model's audio input, `audio_log_mel` or `audio_features` (None: what the video has, an AVISeg
        folder's features first).
    mute_audio: give every frame silence instead of the video's sound.
    """

    fps: float | str | None = None
    timestamps: Sequence[float] | None = None
    max_frames: int | None = None
    max_duration: float | None = None
    audio_input: str | None = None
    mute_audio: bool = False

    def __post_init__(self):
        if self.audio_input not in (None, *AUDIO_INPUTS):
            raise ValueError(f"audio_input must be one of {AUDIO_INPUTS}, not {self.audio_input!r}")
        if self.timestamps is not None:
            times = [float(time) for time in self.timestamps]
            if not times or not all(math.isfinite(time) and time >= 0 for time in times):
                raise AvisInputError("timestamps must be a non-empty list of seconds from 0")
            if any(later <= earlier for earlier, later in itertools.pairwise(times)):
                raise AvisInputError("timestamps must increase")
            object.__setattr__(self, "timestamps", tuple(times))

    def rate(self, default: float) -> float | None:
        """The sampling rate in frames per second (`default` when not given; None: every frame)."""
        fps = default if self.fps is None else None if self.fps == "native" else float(self.fps)
        if fps is not None and not fps > 0:
            raise AvisInputError(f"fps must be positive, not {fps}")
        return fps

    def wanted(self, timestamps: Sequence[float]) -> list[float]:
        """The timestamps within max_duration and max_frames."""
        limit = math.inf if self.max_duration is None else self.max_duration - TIME_TOLERANCE
        return [time for time in timestamps if time < limit][: self.max_frames]


# Settings that folders saved before the processor held them keep in the model's config.json.
LEGACY_IMAGE_FIELDS = {"pixel_mean": "image_mean", "pixel_std": "image_std", "size_divisibility": "size_divisibility"}
LEGACY_PROCESSOR_FIELDS = ("num_detections", "score_threshold", "mask_chunk_size")
LEGACY_CONFIG_FIELDS = (*LEGACY_IMAGE_FIELDS, *LEGACY_PROCESSOR_FIELDS)


def video_result(
    instances: AvisVideoInstances,
    masks: Iterable[torch.Tensor],
    metadata: AvisVideoMetadata,
    id2label: Mapping[int, str] | None = None,
) -> AvisVideoResult:
    """One video's instances (in descending score order) as tracks with ids 1, 2, ...

    masks: the instances' masks (N, t, H, W) bool, chunk after chunk of frames, whose t add up to the video's
    frames: each chunk is encoded as it comes into the tracks' `AvisMaskStore`, so that neither the masks nor their
    RLEs of a long video are ever held in memory at once.
    """
    height, width = metadata.original_size
    num_instances, num_frames = len(instances.scores), len(metadata.timestamps)
    store = AvisMaskStore(height, width)
    spans = np.zeros((num_instances, num_frames, 2), dtype=np.int64)  # (offset, length) per instance and frame
    done = 0
    for chunk in masks:
        if chunk.ndim != 4 or chunk.shape[0] != num_instances or tuple(chunk.shape[2:]) != (height, width):
            raise ValueError(f"masks must be (N={num_instances}, frames, {height}, {width}), got {tuple(chunk.shape)}")
        if done + chunk.shape[1] > num_frames:
            raise ValueError(f"masks cover more frames than the video's {num_frames}")
        for instance, frames in enumerate(chunk.cpu().numpy()):
            for offset, frame in enumerate(frames):
                spans[instance, done + offset] = store.append(frame)
        done += chunk.shape[1]
    if num_instances and done != num_frames:
        raise ValueError(f"masks cover {done} frames, but the video has {num_frames}")
    segmentations = [AvisTrackMasks(store, spans[instance]) for instance in range(num_instances)]
    tracks = [
        AvisTrack(
            track_id=rank + 1,
            label=label,
            label_name=id2label[label] if id2label is not None else str(label),
            score=score,
            segmentations=segmentation,
            query_index=query,
        )
        for rank, (label, score, query, segmentation) in enumerate(
            zip(instances.labels.tolist(), instances.scores.tolist(), instances.query_indices.tolist(), segmentations)
        )
    ]
    return AvisVideoResult(
        tracks=tracks,
        timestamps=np.asarray(metadata.timestamps, dtype=np.float64),
        height=height,
        width=width,
        has_audio=metadata.has_audio,
        fps=metadata.fps,
        notes=list(metadata.notes),
    )


class AvisVideoChunks:
    r"""
    One video's model inputs, `chunk_frames` sampled frames at a time, decoded as they are iterated.

    Each chunk is a dict of `pixel_values` (t, 3, Hp, Wp) and `audio_log_mel` (t, 96, 64) or `audio_features`
    (t, 128). `expected_frames` is known before iterating (an estimate from the container, for progress; None when
    it cannot tell); `metadata()` is complete once iterated. Each iteration decodes the video again, with the same
    frames: inference reads a long video twice more for the features it did not keep. Frames from `max_duration`
    seconds on are left out (by their decoded times: a container's header may lie about its length), and a note
    says so.
    """

    def __init__(
        self, frames, audio, image_processor, chunk_frames, notes, original_size, fps, expected_frames,
        max_duration=None,
    ):  # fmt: skip
        self._frames = frames  # () -> a new iterator of (seconds, (H, W, 3) uint8 RGB)
        self._audio = audio
        self._image_processor = image_processor
        self.chunk_frames = chunk_frames
        self.expected_frames = expected_frames
        self.max_duration = max_duration
        self._metadata = AvisVideoMetadata.of_frames(image_processor, original_size, audio.has_audio, fps, list(notes))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _, images, audio in self.decoded():
            frames = self._image_processor(images)
            if tuple(frames["original_size"]) != self._metadata.original_size:
                raise AvisInputError(
                    f"every frame of a video must have one size: {tuple(frames['original_size'])} after "
                    f"{self._metadata.original_size}"
                )
            yield {"pixel_values": frames["pixel_values"], **audio}

    def decoded(self) -> Iterator[tuple[list[float], list[np.ndarray], dict[str, torch.Tensor]]]:
        """The chunks before the image processor: each chunk's times, its frames as decoded ((H, W, 3) uint8 RGB,
        upright) and its audio input. Training augments these frames, then normalises them as `__iter__` does."""
        timestamps = self._metadata.timestamps
        first_reading = not timestamps
        frames_read = 0
        cut = []
        decoded = self._within_duration(self._frames(), cut)
        with self._audio.reading() as audio:
            while batch := list(itertools.islice(decoded, self.chunk_frames)):
                times = [time for time, _ in batch]
                first, frames_read = frames_read, frames_read + len(batch)
                if first_reading:
                    timestamps.extend(times)
                if audio.frames_covered is not None and frames_read > audio.frames_covered:
                    # count the frames the features miss, for a message that says how many the video has
                    audio.check_covers(frames_read + sum(1 for _ in decoded))
                yield times, [image for _, image in batch], audio.inputs(times, first)
            if not timestamps:
                raise AvisInputError("no frames to process")
            if first_reading:
                self._metadata.notes.extend(
                    [*(_cut_note(self.max_duration) for _ in cut[:1]), *audio.notes(timestamps)]
                )

    def _within_duration(self, frames: Iterator, cut: list) -> Iterator:
        """`frames` up to `max_duration`; `cut` gets an entry when a frame at or past it was decoded."""
        for time, image in frames:
            if self.max_duration is not None and time >= self.max_duration - TIME_TOLERANCE:
                cut.append(time)
                return
            yield time, image

    def metadata(self) -> AvisVideoMetadata:
        """The video's metadata (its timestamps and notes complete once the chunks are iterated)."""
        return self._metadata


class AvisLiveInputs:
    r"""
    A live source's model inputs, one sampled frame at a time, made as its frames and its sound arrive: frames and
    audio frames are added (`add_video_frame`, `add_audio_frame`) in any interleaving, and `ready()` gives each
    sampled frame's inputs (a chunk as `iter_chunks` gives them) once the sound its audio example needs is in (the
    second after it), or once the sound has ended. The frames are sampled as a file's (the frame on screen at each
    time k / fps, see `video_io`), on the clock of the first video frame. Only the frames and sound that are still
    to be given are held.

    processor: the model's processor; fps: sampling rate; has_audio: whether sound will come (False, or
    `mute_audio`: silence for every frame); max_duration: frames from this many seconds on are left out (`ended`
    then turns True and a note says so).
    """

    def __init__(
        self,
        processor: "AvisProcessor",
        fps: float | None = None,
        has_audio: bool = True,
        mute_audio: bool = False,
        max_duration: float | None = None,
    ):
        self.processor = processor
        self.fps = processor.fps if fps is None else fps
        self.max_duration = max_duration
        self.hears = has_audio and not mute_audio
        extractor = processor.feature_extractor
        self._audio = MonoAudioBuffer(extractor.sampling_rate, 0.0, 0.0) if self.hears else None
        self._audio_ended = not self.hears
        self._start: float | None = None  # the source time of the first video frame
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame, before rotation
        self._on_screen = None  # (source time, frame) of the latest frame
        self._sampled: list[tuple[float, np.ndarray]] = []  # sampled frames waiting for their sound
        self._next_sample = 0
        self._metadata: AvisVideoMetadata | None = None
        self.ended = False
        self.notes: list[str] = []
        if not has_audio:
            self.notes.append("the source has no audio track: every frame was given silence")

    def metadata(self) -> AvisVideoMetadata | None:
        """The stream's metadata once its first frame is in (its timestamps grow as frames are given)."""
        return self._metadata

    def add_video_frame(self, frame: "av.VideoFrame | np.ndarray", time: float | None = None) -> None:
        """A decoded frame (or an (H, W, 3) uint8 RGB image) shown from `time` seconds (default: its own time)."""
        if self.ended:
            return
        time = frame.time if time is None else time
        if time is None:
            return
        if self._start is None:
            self._start = time
            image = self._rgb(frame)
            self._size = (
                (image.shape[1], image.shape[0]) if isinstance(frame, np.ndarray) else (frame.width, frame.height)
            )
            self._metadata = AvisVideoMetadata.of_frames(
                self.processor.image_processor, image.shape[:2], self.hears, None, self.notes
            )
        time -= self._start
        self._sample_until(time)
        self._on_screen = (time, frame)

    def add_audio_frame(self, frame: "av.AudioFrame | None") -> None:
        """A decoded audio frame (its time on the source's clock); None: the sound has ended."""
        if self._audio is None or self._audio_ended:
            return
        self._audio.add(frame)
        self._audio_ended = frame is None

    def end(self) -> None:
        """The source has ended: its last frame is sampled up to where it was shown, and the sound is complete."""
        if self._on_screen is not None and not self.ended:
            time, frame = self._on_screen
            duration = float(frame.duration * frame.time_base) if getattr(frame, "duration", None) else 0.0
            self._sample_until(time + max(duration, TIME_TOLERANCE * 2))
        self.add_audio_frame(None)
        self.ended = True

    def ready(self) -> list[dict[str, torch.Tensor]]:
        """The inputs of every sampled frame whose sound is in, in order, each a chunk of one frame."""
        chunks = []
        extractor = self.processor.feature_extractor
        needed = extractor.example_length / extractor.sampling_rate
        while self._sampled:
            time, image = self._sampled[0]
            if self._audio is not None and not self._audio_ended and self._audio.end - self._start < time + needed:
                break
            self._sampled.pop(0)
            self._metadata.timestamps.append(time)
            frames = self.processor.image_processor([image])
            if self._audio is None:
                audio = extractor.silence(1)
            else:
                track = self._audio.track()
                audio = extractor(
                    track.samples, [time], extractor.sampling_rate, track.start - self._start, track.first
                )["audio_log_mel"]
                self._audio.forget_before(self._start + time)
            chunks.append({"pixel_values": frames["pixel_values"], "audio_log_mel": audio})
        return chunks

    def _sample_until(self, time: float) -> None:
        """Samples the frame on screen at each sampling time before `time` (a new frame shows from `time`)."""
        while self._on_screen is not None and self._next_sample / self.fps < time - TIME_TOLERANCE:
            sample_time = self._next_sample / self.fps
            if self.max_duration is not None and sample_time >= self.max_duration - TIME_TOLERANCE:
                self.notes.append(_cut_note(self.max_duration))
                self.ended = True
                self._on_screen = None
                return
            self._sampled.append((sample_time, self._rgb(self._on_screen[1])))
            self._next_sample += 1

    def _rgb(self, frame) -> np.ndarray:
        if isinstance(frame, np.ndarray):
            if self._size is not None and (frame.shape[1], frame.shape[0]) != self._size:
                frame = np.asarray(Image.fromarray(frame).resize(self._size, Image.BILINEAR))
            return frame
        return frame_to_rgb(frame, self._size)


class AvisLiveChunks:
    """A live source's model inputs, one sampled frame at a time, read as the source gives its frames (see
    `AvisLiveInputs`, `video_io.LiveMedia`): iterable once (a pipe cannot be read again); `metadata()` once its
    first frame is in. `settings`: `AvisLiveInputs`' fps, mute_audio, max_duration.

    on_frame: called with each decoded video and audio frame once it is added, before the inputs it completes are
        given (what else reads the source, such as a live overlay, reads it from the same pass: a pipe is read once;
        a pause there holds the frame back from the model). `media`: the source's `LiveMedia` while it is read.
    """

    def __init__(
        self,
        processor: "AvisProcessor",
        source,
        format=None,
        options=None,
        on_frame: Callable[[av.VideoFrame | av.AudioFrame], None] | None = None,
        **settings,
    ):
        self.processor, self.source, self.format, self.options, self.on_frame, self.settings = (
            processor, source, format, options, on_frame, settings
        )  # fmt: skip
        self.inputs: AvisLiveInputs | None = None
        self.media: LiveMedia | None = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        with LiveMedia(self.source, self.format, self.options) as media:
            self.media = media
            self.inputs = AvisLiveInputs(self.processor, has_audio=media.has_audio, **self.settings)
            for frame in media.frames():
                if isinstance(frame, av.VideoFrame):
                    self.inputs.add_video_frame(frame)
                else:
                    self.inputs.add_audio_frame(frame)
                if self.on_frame is not None:
                    self.on_frame(frame)
                yield from self.inputs.ready()
                if self.inputs.ended:
                    break
        self.inputs.end()
        yield from self.inputs.ready()
        if self.metadata() is None or not self.metadata().timestamps:
            raise AvisInputError(f"{media.name}: the source gave no frames")

    def metadata(self) -> AvisVideoMetadata | None:
        return None if self.inputs is None else self.inputs.metadata()


def _cut_note(max_duration: float) -> str:
    return f"the video runs past {max_duration:g} s: only its first {max_duration:g} s were analysed"


class _LogMelAudio:
    """VGGish log-mel examples at the frames' timestamps, from the sound of `path` (None: no sound, or muted: silence
    for every frame). Each reading of the video reads its sound again, in step with its frames and no further than
    they need (`AudioReader`), holding only the second or so the next frames' windows start in."""

    frames_covered = None  # any number of frames: those past the track get the all-zero example

    def __init__(self, feature_extractor: AvisFeatureExtractor, path: Path | None):
        self.feature_extractor = feature_extractor
        self.path = path
        self.has_audio = path is not None
        self._reader: AudioReader | None = None
        self._uncovered = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator["_LogMelAudio"]:
        self._reader = AudioReader(self.path, self.feature_extractor.sampling_rate) if self.has_audio else None
        self._uncovered = 0
        try:
            yield self
        finally:
            if self._reader is not None:
                self._reader.close()

    def inputs(self, timestamps: list[float], first: int) -> dict:
        extractor = self.feature_extractor
        if self._reader is None:
            return {"audio_log_mel": extractor.silence(len(timestamps))}
        track = self._reader.read_until(max(timestamps) + extractor.example_length / extractor.sampling_rate)
        offsets = extractor.window_offsets(timestamps, track.start, track.first)
        self._uncovered += int((~extractor.covered(offsets, len(track.samples))).sum())
        self._track = track
        examples = extractor(track.samples, timestamps, track.sample_rate, track.start, track.first)
        self._reader.forget_before(timestamps[-1])  # the next frames come later
        return {"audio_log_mel": examples["audio_log_mel"]}

    def notes(self, timestamps: list[float]) -> list[str]:
        if self._reader is None or not self._uncovered:
            return []
        track = self._track
        return [
            f"the audio covers {track.start:.2f}-{track.end:.2f} s only: {self._uncovered} of {len(timestamps)} "
            "frames were given the all-zero example of a too short piece of sound, as in the original's features"
        ]


class _PrecomputedAudio:
    """Precomputed audio features, one row per frame (an array or an .npy file)."""

    has_audio = True

    def __init__(self, audio_features):
        if isinstance(audio_features, (str, Path)):
            if not Path(audio_features).is_file():
                raise AvisInputError(f"{audio_features}: no such audio features file")
            try:
                audio_features = read_npy(audio_features)
            except (OSError, ValueError) as error:
                raise AvisInputError(f"{Path(audio_features).name}: not a readable .npy array ({error})") from None
        self.features = torch.as_tensor(np.asarray(audio_features), dtype=torch.float32)
        if self.features.ndim != 2:
            raise AvisInputError(f"audio features must be (frames, 128), got shape {tuple(self.features.shape)}")
        self.frames_covered = len(self.features)

    @contextlib.contextmanager
    def reading(self) -> Iterator["_PrecomputedAudio"]:
        yield self

    def check_covers(self, num_frames: int) -> None:
        if num_frames > self.frames_covered:
            raise AvisInputError(
                f"the audio features cover {len(self.features)} frames but the video has {num_frames}"
            )

    def inputs(self, timestamps: list[float], first: int) -> dict:
        return {"audio_features": self.features[first : first + len(timestamps)]}

    def notes(self, timestamps: list[float]) -> list[str]:
        if len(self.features) > len(timestamps):
            return [f"the audio features have {len(self.features)} rows: the first {len(timestamps)} were used"]
        return []


__all__ = [
    "AUDIO_INPUTS",
    "AvisSampling",
    "AvisLiveChunks",
    "AvisLiveInputs",
    "AvisProcessor",
    "AvisVideoChunks",
    "AvisVideoInputs",
    "AvisVideoMetadata",
    "video_result",
]
