"""AvisProcessor: a video file (or an AVISeg frame folder) to the model's inputs, and the model's detections to tracks.

    processor = AvisProcessor()                  # 1 fps, shortest edge 360: the R50 models as published
    inputs = processor("concert.mp4")            # pixel_values (1, T, 3, Hp, Wp), audio_log_mel (1, T, 96, 64)
    ...                                          # the model's post-processing gives scores, labels, masks
    result = processor.post_process_tracks(scores, labels, masks, inputs, model.config.id2label)

Besides the model's inputs, the returned BatchFeature holds, per video (lists of one): `timestamps` (seconds of each
sampled frame), `image_size` (h, w) of the resized frames before padding, `original_size` (H, W) of the source frames,
`has_audio`, `fps` (the source's native frame rate) and `notes` (what was assumed about the input). Pass only the
model inputs to the model: `{k: inputs[k] for k in processor.model_input_names if k in inputs}`.
"""

from collections.abc import Iterable
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
        """
        fps = self.fps if fps is None else None if fps == "native" else float(fps)
        if fps is not None and fps <= 0:
            raise AvisInputError(f"fps must be positive, not {fps}")
        path = Path(video)
        if path.is_dir():
            return self._prepare_frame_folder(path, audio_features, fps, max_frames, max_duration)
        return self._prepare_video_file(path, audio_features, fps, max_frames, max_duration)

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

    def _prepare_video_file(self, path, audio_features, fps, max_frames, max_duration) -> BatchFeature:
        info = probe_video(path)
        notes = []
        if fps is not None and info.base_fps is not None and fps > info.base_fps:
            notes.append(f"sampled at the video's native {info.base_fps:g} fps ({fps:g} fps was asked)")
        timestamps = []

        def images():
            for frame in read_frames(path, fps, max_frames, max_duration):
                timestamps.append(frame.time)
                yield frame.image

        video_inputs = self.image_processor(images())
        if audio_features is not None:
            audio_inputs = self._precomputed_audio(audio_features, len(timestamps), notes)
            has_audio = True
        else:
            audio = read_audio(path, self.feature_extractor.sampling_rate, max_duration=timestamps[-1] + 1.0)
            has_audio = audio is not None
            if not has_audio:
                notes.append(
                    f"{path.name} has no audio track: every frame was given the silent (all-zero) audio example"
                )
            audio_inputs = self._log_mel(audio, timestamps, notes)
        return self._batch(video_inputs, audio_inputs, timestamps, has_audio, info.fps, notes)

    def _prepare_frame_folder(self, folder, audio_features, fps, max_frames, max_duration) -> BatchFeature:
        if fps is None:
            raise AvisInputError(f"{folder.name}: a frame folder has no native rate; give the rate it was sampled at")
        frames = read_frame_folder(folder)
        if max_duration is not None:
            frames = frames[: max(0, int(np.ceil(max_duration * fps - 1e-9)))]
        frames = frames[:max_frames]
        timestamps = [k / fps for k in range(len(frames))]
        video_inputs = self.image_processor(read_image(frame) for frame in frames)
        notes, has_audio = [], True
        # AVISeg keeps a video's sound beside its frames: <split>/FEATAudios/<video>.npy and <split>/WAVAudios/<video>.wav
        split = folder.parent.parent
        if audio_features is None and (split / "FEATAudios" / f"{folder.name}.npy").is_file():
            audio_features = split / "FEATAudios" / f"{folder.name}.npy"
        if audio_features is not None:
            audio_inputs = self._precomputed_audio(audio_features, len(timestamps), notes)
        else:
            wav = split / "WAVAudios" / f"{folder.name}.wav"
            audio = read_audio(wav, self.feature_extractor.sampling_rate) if wav.is_file() else None
            has_audio = audio is not None
            if not has_audio:
                notes.append(
                    f"{folder.name} has no FEATAudios/{folder.name}.npy or WAVAudios/{folder.name}.wav beside it: "
                    "every frame was given the silent (all-zero) audio example"
                )
            audio_inputs = self._log_mel(audio, timestamps, notes)
        return self._batch(video_inputs, audio_inputs, timestamps, has_audio, fps, notes)

    def _log_mel(self, audio, timestamps, notes) -> dict:
        """Log-mel examples at the timestamps; without audio, the all-zero example for every frame."""
        sampling_rate = self.feature_extractor.sampling_rate
        if audio is None:
            samples, start = np.zeros(0, dtype=np.float32), 0.0
        else:
            samples, start = audio.samples, audio.start
            needed = self.feature_extractor.example_length / sampling_rate
            silent = sum(1 for t in timestamps if t < start or t + needed > audio.end)
            if silent:
                notes.append(
                    f"the audio covers {start:.2f}-{audio.end:.2f} s only: {silent} of {len(timestamps)} frames were "
                    "given the silent (all-zero) audio example"
                )
        return self.feature_extractor(samples, timestamps, sampling_rate, start=start)

    @staticmethod
    def _precomputed_audio(audio_features, num_frames: int, notes: list[str]) -> dict:
        if isinstance(audio_features, (str, Path)):
            try:
                audio_features = np.load(audio_features)
            except (OSError, ValueError) as error:
                raise AvisInputError(f"{Path(audio_features).name}: not a readable .npy array ({error})") from None
        features = torch.as_tensor(np.asarray(audio_features), dtype=torch.float32)
        if features.ndim != 2:
            raise AvisInputError(f"audio features must be (frames, 128), got shape {tuple(features.shape)}")
        if len(features) < num_frames:
            raise AvisInputError(f"the audio features cover {len(features)} frames but the video has {num_frames}")
        if len(features) > num_frames:
            notes.append(f"the audio features have {len(features)} rows: the first {num_frames} were used")
        return {"audio_features": features[:num_frames]}

    @staticmethod
    def _batch(video_inputs, audio_inputs, timestamps, has_audio, fps, notes) -> BatchFeature:
        data = {name: value.unsqueeze(0) for name, value in audio_inputs.items()}
        data["pixel_values"] = video_inputs["pixel_values"].unsqueeze(0)
        data["timestamps"] = [list(timestamps)]
        data["image_size"] = [video_inputs["image_size"]]
        data["original_size"] = [video_inputs["original_size"]]
        data["has_audio"] = [has_audio]
        data["fps"] = [fps]
        data["notes"] = [notes]
        return BatchFeature(data, skip_tensor_conversion=METADATA_KEYS)


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

__all__ = ["AvisProcessor", "register_auto_classes"]
