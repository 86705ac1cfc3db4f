"""AvisProcessor: a video file (or an AVISeg frame folder) to the model's inputs, and the model's detections to tracks.

    processor = AvisProcessor()                  # 1 fps, shortest edge 360: the R50 models as published
    inputs = processor("concert.mp4")            # pixel_values (1, T, 3, Hp, Wp), audio_log_mel (1, T, 96, 64)
    for chunk in processor.iter_chunks("concert.mp4", 18):  # the same, 18 frames at a time: any video length
        ...                                      # pixel_values (t, 3, Hp, Wp), audio_log_mel (t, 96, 64), timestamps
    ...                                          # the model's post-processing gives scores, labels, masks
    result = processor.post_process_tracks(scores, labels, masks, inputs, model.config.id2label)

Besides the model's inputs, the returned BatchFeature holds, per video (lists of one): `timestamps` (seconds of each
sampled frame), `image_size` (h, w) of the resized frames before padding, `original_size` (H, W) of the source frames,
`has_audio`, `fps` (the source's native frame rate) and `notes` (what was assumed about the input). Pass only the
model inputs to the model: `{k: inputs[k] for k in processor.model_input_names if k in inputs}`.
"""

import itertools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoProcessor
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_avis import AvisConfig
from .errors import AvisInputError
from .feature_extraction_avis import AvisFeatureExtractor
from .image_processing_avis import AvisImageProcessor
from .results import build_video_result
from .tracks import AvisVideoResult
from .video_io import probe_video, read_audio, read_frame_folder, read_frames, read_image

METADATA_KEYS = ["timestamps", "image_size", "original_size", "has_audio", "fps", "notes"]


class AvisProcessor(ProcessorMixin):
    r"""
    Decodes a video, samples its frames and prepares frames and sound for `AvisForAudioVisualInstanceSegmentation`.

    image_processor (`AvisImageProcessor`): resizing, normalisation and padding of the frames.
    feature_extractor (`AvisFeatureExtractor`): VGGish log-mel examples of the audio, one per frame.
    fps (`float`): frames sampled per second of video (AVISeg: 1). For a frame folder, the rate its frames were
        sampled at.
    """

    def __init__(
        self,
        image_processor: AvisImageProcessor | None = None,
        feature_extractor: AvisFeatureExtractor | None = None,
        fps: float = 1.0,
    ):
        super().__init__(
            AvisImageProcessor() if image_processor is None else image_processor,
            AvisFeatureExtractor() if feature_extractor is None else feature_extractor,
        )
        self.fps = fps

    @classmethod
    def from_model_config(cls, config: AvisConfig, **kwargs) -> "AvisProcessor":
        """The processor a model was trained with: frames of 448 pixels for Swin-L, 360 for ResNet-50."""
        image_processor = AvisImageProcessor(
            shortest_edge=448 if config.backbone_config.model_type == "swin" else 360,
            image_mean=config.pixel_mean,
            image_std=config.pixel_std,
            size_divisibility=config.size_divisibility,
        )
        return cls(image_processor, AvisFeatureExtractor(), **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "audio_log_mel", "audio_features"]

    def __call__(
        self,
        video: str | Path,
        audio_features: str | Path | np.ndarray | torch.Tensor | None = None,
        fps: float | str | None = None,
        max_frames: int | None = None,
        max_duration: float | None = None,
    ) -> BatchFeature:
        """Prepares one video: a media file, or a folder of numbered JPEG frames (AVISeg's `JPEGImages/<video>/`).

        audio_features: precomputed VGGish embeddings (T x 128, an array or an .npy file, like AVISeg's
            `FEATAudios/<video>.npy`) given to the model as `audio_features` instead of `audio_log_mel`.
        fps: sampling rate for this call (default: the processor's); "native" takes every frame of a file.
        max_frames, max_duration: keep at most this many frames, or the frames before this many seconds.

        The whole video at once: the chunks of `iter_chunks` put together, with the video's metadata.
        """
        chunks = self.iter_chunks(video, audio_features=audio_features, fps=fps, max_frames=max_frames,
                                  max_duration=max_duration)  # fmt: skip
        parts = list(chunks)
        data = {name: torch.cat([part[name] for part in parts])[None] for name in parts[0] if name != "timestamps"}
        data.update(chunks.metadata())
        return BatchFeature(data, skip_tensor_conversion=METADATA_KEYS)

    def iter_chunks(
        self,
        video: str | Path,
        chunk_frames: int = 18,
        audio_features: str | Path | np.ndarray | torch.Tensor | None = None,
        fps: float | str | None = None,
        max_frames: int | None = None,
        max_duration: float | None = None,
    ) -> "AvisVideoChunks":
        """The same inputs as `__call__`, `chunk_frames` sampled frames at a time, decoded only as they are iterated:
        a video of any length is prepared in the memory of one chunk. See `AvisVideoChunks`."""
        fps = self.fps if fps is None else None if fps == "native" else float(fps)
        if fps is not None and fps <= 0:
            raise AvisInputError(f"fps must be positive, not {fps}")
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, not {chunk_frames}")
        path = Path(video)
        if path.is_dir():
            return self._frame_folder_chunks(path, chunk_frames, audio_features, fps, max_frames, max_duration)
        return self._video_file_chunks(path, chunk_frames, audio_features, fps, max_frames, max_duration)

    def post_process_tracks(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor | Iterable[torch.Tensor],
        inputs: BatchFeature,
        id2label: dict[int, str],
    ) -> AvisVideoResult:
        """The model's detections for the video of `inputs` as tracks (see `results.build_video_result`).

        masks: (N, T, H, W) bool at the original frame size, or an iterable of frame chunks (N, t, H, W).
        """
        height, width = inputs["original_size"][0]
        return build_video_result(
            scores,
            labels,
            masks,
            timestamps=inputs["timestamps"][0],
            height=height,
            width=width,
            id2label=id2label,
            has_audio=inputs["has_audio"][0],
            fps=inputs["fps"][0],
            notes=inputs["notes"][0],
        )

    def _video_file_chunks(self, path, chunk_frames, audio_features, fps, max_frames, max_duration):
        info = probe_video(path)
        notes = []
        if fps is not None and info.base_fps is not None and fps > info.base_fps:
            notes.append(f"sampled at the video's native {info.base_fps:g} fps ({fps:g} fps was asked)")
        rate = info.fps if fps is None else min(fps, info.base_fps or fps)
        expected = max(1, math.ceil(info.duration * rate - 1e-6)) if rate else None
        if expected is not None and max_duration is not None:
            expected = min(expected, max(0, math.ceil(max_duration * rate - 1e-9)))
        if expected is not None and max_frames is not None:
            expected = min(expected, max_frames)
        frames = ((frame.time, frame.image) for frame in read_frames(path, fps, max_frames, max_duration))
        if audio_features is not None:
            audio = _PrecomputedAudio(audio_features)
        else:
            # Frame k needs the second of sound after it, and frames are sampled within the picture: the sound is
            # read (16 kHz mono float32: 4 MB a minute) to a second past the last frame, however long its track.
            limit = min(info.duration, math.inf if max_duration is None else max_duration)
            if max_frames is not None and fps is not None:
                limit = min(limit, max_frames / fps)
            track = read_audio(path, self.feature_extractor.sampling_rate, limit + 1.0)
            if track is None:
                notes.append(
                    f"{path.name} has no audio track: every frame was given the silent (all-zero) audio example"
                )
            audio = _LogMelAudio(self.feature_extractor, track)
        return AvisVideoChunks(
            frames, audio, self.image_processor, chunk_frames, (info.height, info.width), audio.has_audio, info.fps,
            notes, expected,
        )  # fmt: skip

    def _frame_folder_chunks(self, folder, chunk_frames, audio_features, fps, max_frames, max_duration):
        if fps is None:
            raise AvisInputError(f"{folder.name}: a frame folder has no native rate; give the rate it was sampled at")
        paths = read_frame_folder(folder)
        if max_duration is not None:
            paths = paths[: max(0, int(np.ceil(max_duration * fps - 1e-9)))]
        paths = paths[:max_frames]
        if not paths:
            raise AvisInputError(f"{folder.name}: no frames to process within the given limits")
        original_size = read_image(paths[0]).shape[:2]
        frames = ((k / fps, read_image(frame)) for k, frame in enumerate(paths))
        notes = []
        # AVISeg keeps a video's sound beside its frames: <split>/FEATAudios/<video>.npy and <split>/WAVAudios/<video>.wav
        split = folder.parent.parent
        if audio_features is None and (split / "FEATAudios" / f"{folder.name}.npy").is_file():
            audio_features = split / "FEATAudios" / f"{folder.name}.npy"
        if audio_features is not None:
            audio = _PrecomputedAudio(audio_features)
            audio.check_covers(len(paths))
        else:
            wav = split / "WAVAudios" / f"{folder.name}.wav"
            seconds = len(paths) / fps + 1.0
            track = read_audio(wav, self.feature_extractor.sampling_rate, seconds) if wav.is_file() else None
            if track is None:
                notes.append(
                    f"{folder.name} has no FEATAudios/{folder.name}.npy or WAVAudios/{folder.name}.wav beside it: "
                    "every frame was given the silent (all-zero) audio example"
                )
            audio = _LogMelAudio(self.feature_extractor, track)
        return AvisVideoChunks(
            frames, audio, self.image_processor, chunk_frames, tuple(original_size), audio.has_audio, fps, notes,
            len(paths),
        )  # fmt: skip


class AvisVideoChunks:
    r"""
    One video's model inputs, `chunk_frames` sampled frames at a time, decoded as they are iterated (once).

    Each chunk is a BatchFeature with `pixel_values` (t, 3, Hp, Wp), `audio_log_mel` (t, 96, 64) or `audio_features`
    (t, 128), and `timestamps` (t seconds from the video's start).

    Known before iterating: `original_size` (H, W) of the source frames, `image_size` (h, w) of the resized frames
    before padding, `padded_size` (Hp, Wp), `has_audio`, `fps` (the source's native frame rate) and
    `expected_frames` (an estimate from the container, for progress; None when it cannot tell). Complete once
    iterated: `timestamps` and `notes` (what was assumed about the input).
    """

    def __init__(
        self, frames, audio, image_processor, chunk_frames, original_size, has_audio, fps, notes, expected_frames
    ):
        self._frames = frames
        self._audio = audio
        self._image_processor = image_processor
        self.chunk_frames = chunk_frames
        self.original_size = tuple(int(side) for side in original_size)
        self.image_size = image_processor.output_size(*self.original_size)
        divisor = image_processor.size_divisibility
        self.padded_size = tuple(-(-side // divisor) * divisor for side in self.image_size)
        self.has_audio = has_audio
        self.fps = fps
        self.expected_frames = expected_frames
        self.timestamps: list[float] = []
        self.notes: list[str] = list(notes)

    def __iter__(self) -> Iterator[BatchFeature]:
        while batch := list(itertools.islice(self._frames, self.chunk_frames)):
            times = [time for time, _ in batch]
            first = len(self.timestamps)
            self.timestamps.extend(times)
            if self._audio.frames_covered is not None and len(self.timestamps) > self._audio.frames_covered:
                # count the frames the features miss, for a message that says how many the video has
                self._audio.check_covers(len(self.timestamps) + sum(1 for _ in self._frames))
            video_inputs = self._image_processor(image for _, image in batch)
            if tuple(video_inputs["original_size"]) != self.original_size:
                raise AvisInputError(
                    f"every frame of a video must have one size: {tuple(video_inputs['original_size'])} after "
                    f"{self.original_size}"
                )
            data = {"pixel_values": video_inputs["pixel_values"], **self._audio.inputs(times, first)}
            data["timestamps"] = times
            yield BatchFeature(data, skip_tensor_conversion=["timestamps"])
        if not self.timestamps:
            raise AvisInputError("no frames to process")
        self.notes.extend(self._audio.notes(self.timestamps))

    def metadata(self) -> dict:
        """The video's metadata as `AvisProcessor.__call__` returns it (lists of one), once iterated."""
        return {
            "timestamps": [list(self.timestamps)],
            "image_size": [list(self.image_size)],
            "original_size": [list(self.original_size)],
            "has_audio": [self.has_audio],
            "fps": [self.fps],
            "notes": [list(self.notes)],
        }


class _LogMelAudio:
    """VGGish log-mel examples at the frames' timestamps; without a track, the all-zero example for every frame."""

    def __init__(self, feature_extractor: AvisFeatureExtractor, track):
        self.feature_extractor = feature_extractor
        self.track = track
        self.has_audio = track is not None
        self.frames_covered = None  # any number of frames: those past the track get the silent example

    def inputs(self, timestamps: list[float], first: int) -> dict:
        rate = self.feature_extractor.sampling_rate
        samples, start = (
            (np.zeros(0, np.float32), 0.0) if self.track is None else (self.track.samples, self.track.start)
        )
        return {"audio_log_mel": self.feature_extractor(samples, timestamps, rate, start=start)["audio_log_mel"]}

    def notes(self, timestamps: list[float]) -> list[str]:
        if self.track is None:
            return []
        needed = self.feature_extractor.example_length / self.feature_extractor.sampling_rate
        silent = sum(1 for t in timestamps if t < self.track.start or t + needed > self.track.end)
        if not silent:
            return []
        return [
            f"the audio covers {self.track.start:.2f}-{self.track.end:.2f} s only: {silent} of {len(timestamps)} "
            "frames were given the silent (all-zero) audio example"
        ]


class _PrecomputedAudio:
    """Precomputed audio features, one row per frame (an array or an .npy file)."""

    has_audio = True

    def __init__(self, audio_features):
        if isinstance(audio_features, (str, Path)):
            try:
                audio_features = np.load(audio_features)
            except (OSError, ValueError) as error:
                raise AvisInputError(f"{Path(audio_features).name}: not a readable .npy array ({error})") from None
        self.features = torch.as_tensor(np.asarray(audio_features), dtype=torch.float32)
        if self.features.ndim != 2:
            raise AvisInputError(f"audio features must be (frames, 128), got shape {tuple(self.features.shape)}")
        self.frames_covered = len(self.features)

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


def register_auto_classes() -> None:
    """Lets AutoProcessor / AutoImageProcessor / AutoFeatureExtractor load AVIS processor folders."""
    # One implementation serves both image-processor backends (it needs neither torchvision nor PIL to resize).
    AutoImageProcessor.register(
        AvisConfig,
        image_processor_classes={"torchvision": AvisImageProcessor, "pil": AvisImageProcessor},
        exist_ok=True,
    )
    AutoFeatureExtractor.register(AvisConfig, AvisFeatureExtractor, exist_ok=True)
    AutoProcessor.register(AvisConfig, AvisProcessor, exist_ok=True)


register_auto_classes()

__all__ = ["AvisProcessor", "AvisVideoChunks", "register_auto_classes"]
