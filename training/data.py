"""AVISeg for training: a split's videos and annotations, clips sampled as the original, and padded batches.

Layout (as the original's `datasets/`): `<root>/<split>.json` (YouTube-VIS style instances),
`<root>/<split>/JPEGImages/<video>/<frame>.jpg` and `<root>/<split>/FEATAudios/<video>.npy` (one 128-d VGGish
feature per frame).

A batch (`collate_clips`) holds the frames as the model takes them, normalised and padded by the image processor
that prepares them at test.
"""

from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch import Tensor
from torch.utils.data import Dataset

from modeling_avis.config_ranges import shown
from modeling_avis.configuration_avis import AvisConfig
from modeling_avis.errors import AvisDatasetError, AvisInputError, one_line
from modeling_avis.feature_extraction_avis import AvisFeatureExtractor
from modeling_avis.image_processing_avis import AvisImageProcessor
from modeling_avis.input_files import InvalidInputFile, read_json, read_npy_header
from modeling_avis.tracks import check_rle
from modeling_avis.video_io import AvisegVideoFiles, read_audio, read_image

from .annotations import check_frame_size, check_polygon, check_run_lengths, is_area_polygon
from .augmentation import ClipAugmentation, FrameTransform

# A frame's segmentation: polygons (flat [x0, y0, x1, y1, ...] lists), a compressed RLE, or None where absent.
Segmentation = list[list[float]] | dict | None


@dataclass(frozen=True)
class AvisegInstance:
    """One annotated sounding object of a video: its 0-based class and a segmentation per frame."""

    track_id: int
    label: int
    segmentations: tuple[Segmentation, ...]


@dataclass(frozen=True)
class AvisegVideo:
    """A video of the split: its frame files, size, audio features file and annotated instances."""

    video_id: int
    name: str
    frame_paths: tuple[Path, ...]
    height: int
    width: int
    audio_features_path: Path
    wav_path: Path
    instances: tuple[AvisegInstance, ...]


@dataclass
class AvisegClip:
    """A training clip of T frames and its N instances (visible in at least one of the frames)."""

    video_id: int
    frame_indices: Tensor  # (T,) long, sorted, may repeat
    frames: Tensor  # (T, 3, H, W) uint8 RGB
    audio: Tensor  # (T, 128) float32 features, or (T, 96, 64) log-mel examples (see `load_audio`)
    class_labels: Tensor  # (N,) long in [0, K)
    mask_labels: Tensor  # (N, T, H, W) bool, all False where the instance is absent


def normalize_segmentation(segmentation, height: int, width: int) -> Segmentation:
    """A frame's JSON segmentation (polygons, an RLE dict, a list of RLE dicts, or null) as polygons, one
    compressed RLE, or None, once its geometry is checked (`training.annotations`; ValueError otherwise). Polygons
    with fewer than 3 points are dropped, as in the original."""
    if not segmentation:
        return None
    if isinstance(segmentation, dict):
        segmentation = [segmentation]
    if not isinstance(segmentation, list):
        raise ValueError(f"a segmentation must be a list of polygons or RLEs, not {shown(segmentation)}")
    if isinstance(segmentation[0], dict):
        return mask_utils.merge([_compressed_rle(rle, height, width) for rle in segmentation])
    polygons = [check_polygon(polygon, height, width) for polygon in segmentation]
    return [polygon for polygon in polygons if is_area_polygon(polygon)] or None


def _compressed_rle(rle: dict, height: int, width: int) -> dict:
    """An RLE of the annotations (run lengths, or compressed counts) as pycocotools' compressed RLE, once checked to
    cover the video's frame exactly (ValueError otherwise)."""
    if not isinstance(rle, dict):
        raise ValueError(f"an RLE must be an object {{size, counts}}, not {shown(rle)}")
    if rle.get("size") != [height, width]:
        raise ValueError(f"an RLE mask of size {shown(rle.get('size'))} does not fit its {height}x{width} video")
    counts = rle.get("counts")
    if isinstance(counts, list):
        check_run_lengths(counts, height, width)
        return mask_utils.frPyObjects(rle, height, width)
    counts = counts.decode("latin-1") if isinstance(counts, bytes) else counts
    check_rle({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": counts.encode("latin-1")}


def rasterize_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask covered by any of the polygons; parts outside the frame are clipped."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


def load_aviseg_split(root: str | Path, split: str) -> list[AvisegVideo]:
    """The videos of `<root>/<split>.json`, sorted by id, with categories mapped to [0, K) in id order.

    The annotations are checked, and every frame file is looked for, before anything is trained on: a missing or
    malformed piece is an AvisDatasetError naming the file and the video.
    """
    root = Path(root)
    annotation_path = root / f"{split}.json"
    dataset = _read_dataset_json(annotation_path)
    label_of = {
        category["id"]: index for index, category in enumerate(sorted(dataset["categories"], key=itemgetter("id")))
    }
    annotations_of = {}
    for annotation in dataset["annotations"]:
        annotations_of.setdefault(annotation["video_id"], []).append(annotation)
    videos = []
    for video in sorted(dataset["videos"], key=itemgetter("id")):
        height, width, length = video["height"], video["width"], video["length"]
        name = video["file_names"][0].split("/")[0]
        try:
            check_frame_size(height, width)
        except ValueError as error:
            raise AvisDatasetError(f"{annotation_path}: video {name!r}: {error}") from None
        annotations = [a for a in annotations_of.get(video["id"], []) if not a.get("iscrowd", 0)]
        if len(video["file_names"]) != length:
            raise AvisDatasetError(
                f"{annotation_path}: video {name!r} has {len(video['file_names'])} frames, not its length {length}"
            )
        if any(len(annotation["segmentations"]) != length for annotation in annotations):
            raise AvisDatasetError(
                f"{annotation_path}: an annotation of video {name!r} does not have one segmentation per frame"
            )
        if any(annotation["category_id"] not in label_of for annotation in annotations):
            raise AvisDatasetError(
                f"{annotation_path}: an annotation of video {name!r} has a category it does not list"
            )
        files = AvisegVideoFiles.of(root / split, name)
        frame_paths = tuple(files.frames.parent / file_name for file_name in video["file_names"])
        missing = next((path for path in frame_paths if not path.is_file()), None)
        if missing is not None:
            raise AvisDatasetError(f"{missing}: no such frame (video {name!r} of {annotation_path.name})")
        try:
            instances = tuple(
                AvisegInstance(
                    track_id=annotation["id"],
                    label=label_of[annotation["category_id"]],
                    segmentations=tuple(
                        normalize_segmentation(segmentation, height, width)
                        for segmentation in annotation["segmentations"]
                    ),
                )
                for annotation in annotations
            )
        except (ValueError, TypeError) as error:
            raise AvisDatasetError(
                f"{annotation_path}: an annotation of video {name!r} is unusable ({error})"
            ) from None
        videos.append(
            AvisegVideo(
                video_id=video["id"],
                name=name,
                frame_paths=frame_paths,
                height=height,
                width=width,
                audio_features_path=files.features,
                wav_path=files.wav,
                instances=instances,
            )
        )
    return videos


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_file_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(name, str) and name for name in value)


# The fields every entry of an AVISeg annotations file needs, by list: what each must be, and its description.
REQUIRED_FIELDS = {
    "categories": {"id": (_is_id, "an integer")},
    "videos": {
        "id": (_is_id, "an integer"),
        "file_names": (_is_file_list, "a non-empty list of frame file names"),
        "height": (_is_id, "an integer"),
        "width": (_is_id, "an integer"),
        "length": (_is_id, "an integer"),
    },
    "annotations": {
        "id": (_is_id, "an integer"),
        "video_id": (_is_id, "an integer"),
        "category_id": (_is_id, "an integer"),
        "segmentations": (lambda value: isinstance(value, list), "a list with one entry per frame"),
    },
}


def _read_dataset_json(path: Path) -> dict:
    """An AVISeg annotations file, checked to have the lists and fields `load_aviseg_split` reads."""
    if not path.is_file():
        raise AvisDatasetError(f"{path}: no such AVISeg annotations file")
    try:
        dataset = read_json(path)
    except InvalidInputFile as error:
        raise AvisDatasetError(f"{path}: {error}") from None
    if not isinstance(dataset, dict):
        raise AvisDatasetError(f"{path}: expected a JSON object with categories, videos and annotations")
    for key, fields in REQUIRED_FIELDS.items():
        entries = dataset.get(key)
        if not isinstance(entries, list):
            raise AvisDatasetError(f"{path}: no '{key}' list")
        for index, entry in enumerate(entries):
            absent = [field for field in fields if not isinstance(entry, dict) or field not in entry]
            if absent:
                raise AvisDatasetError(f"{path}: {key}[{index}] has no '{absent[0]}'")
            for field, (is_valid, expected) in fields.items():
                if not is_valid(entry[field]):
                    raise AvisDatasetError(
                        f"{path}: {key}[{index}]'s '{field}' must be {expected}, not {shown(entry[field])}"
                    )
    return dataset


def is_annotated(video: AvisegVideo) -> bool:
    """Whether any frame of the video has a segmentation (the original's FILTER_EMPTY_ANNOTATIONS)."""
    return any(segmentation is not None for instance in video.instances for segmentation in instance.segmentations)


def sample_frame_indices(
    length: int, num_frames: int, frame_range: int, generator: torch.Generator | None = None
) -> list[int]:
    """The original's training clip: a random reference frame plus `num_frames - 1` frames drawn with replacement
    from the others within `frame_range` of it, sorted. A one-frame video repeats its frame (the original fails)."""
    reference = int(torch.randint(length, (1,), generator=generator))
    candidates = [
        index
        for index in range(max(0, reference - frame_range), min(length, reference + frame_range + 1))
        if index != reference
    ]
    if not candidates:
        return [reference] * num_frames
    picks = torch.randint(len(candidates), (num_frames - 1,), generator=generator).tolist()
    return sorted([candidates[pick] for pick in picks] + [reference])


def read_frame(path: Path) -> Tensor:
    """An image file as (3, H, W) uint8 RGB, EXIF orientation applied, read as inference reads frames (within the
    same size limit)."""
    try:
        rgb = read_image(path)
    except AvisInputError as error:
        raise AvisDatasetError(f"cannot read the frame {path}: {one_line(error)}") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def check_audio_features(video: AvisegVideo) -> None:
    """AvisDatasetError unless the video's FEATAudios file is a sound .npy array (its header read, not its data)
    with one row of features per frame."""
    path = video.audio_features_path
    if not path.is_file():
        raise AvisDatasetError(f"no audio features for video {video.name!r} at {path}")
    try:
        shape, _ = read_npy_header(path)
    except InvalidInputFile as error:
        raise AvisDatasetError(f"{path}: {error}") from None
    if len(shape) != 2 or shape[0] < len(video.frame_paths):
        raise AvisDatasetError(f"{path} has shape {shape}; expected one row per frame ({len(video.frame_paths)})")


def load_audio_features(video: AvisegVideo, frame_indices: list[int]) -> Tensor:
    """The (T, 128) float32 audio features of the given frames, from the video's FEATAudios file."""
    check_audio_features(video)
    features = np.load(video.audio_features_path, allow_pickle=False)
    return torch.from_numpy(features[frame_indices].astype(np.float32))


def load_audio_log_mel(video: AvisegVideo, frame_indices: list[int]) -> Tensor:
    """The (T, 96, 64) VGGish log-mel examples of the given frames, from the video's WAVAudios file.

    AVISeg samples one frame per second: frame i goes with second [i, i + 1) of the sound, as in the original's
    feature extraction (`wavfile_to_examples`).
    """
    if not video.wav_path.is_file():
        raise AvisDatasetError(f"no audio for video {video.name!r} at {video.wav_path}")
    extractor = AvisFeatureExtractor()
    audio = read_audio(video.wav_path, extractor.sampling_rate)
    samples, start = (np.zeros(0, np.float32), 0.0) if audio is None else (audio.samples, audio.start)
    timestamps = [float(index) for index in frame_indices]
    return extractor(samples, timestamps, extractor.sampling_rate, start=start)["audio_log_mel"]


# The model input each kind of audio becomes, and where it is read from.
AUDIO_LOADERS = {"audio_features": load_audio_features, "audio_log_mel": load_audio_log_mel}


def audio_input_name(config: AvisConfig) -> str:
    """A model with an audio encoder reads log-mel examples; the published ones read VGGish features."""
    return "audio_features" if config.audio_config is None else "audio_log_mel"


def load_audio(video: AvisegVideo, frame_indices: list[int], audio_input: str) -> Tensor:
    """Every model input's audio enters here, in training and in evaluation (`audio_input`: see AUDIO_LOADERS)."""
    return AUDIO_LOADERS[audio_input](video, frame_indices)


class AvisegClipDataset(Dataset):
    """Training clips of an AVISeg split: one random clip of each annotated video per epoch.

    augmentation: the random resize / crop / flip (`ClipAugmentation()` is the published recipe); None keeps the
    frames at their size. Random draws use torch's generator, which DataLoader seeds per worker.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        num_frames: int = 5,
        frame_range: int = 20,
        augmentation: ClipAugmentation | None = None,
        audio_input: str = "audio_features",
    ):
        self.videos = [video for video in load_aviseg_split(root, split) if is_annotated(video)]
        for video in self.videos:  # looked for now, not in a data-loading worker hours into training
            audio_path = video.audio_features_path if audio_input == "audio_features" else video.wav_path
            if not audio_path.is_file():
                raise AvisDatasetError(
                    f"{audio_path}: no such audio file (video {video.name!r}; the model reads {audio_input})"
                )
            if audio_input == "audio_features":
                check_audio_features(video)
        self.audio_input = audio_input
        self.num_frames = num_frames
        self.frame_range = frame_range
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> AvisegClip:
        video = self.videos[index]
        frame_indices = sample_frame_indices(len(video.frame_paths), self.num_frames, self.frame_range)
        if self.augmentation is None:
            transforms = [FrameTransform((), video.height, video.width)] * self.num_frames
        else:
            transforms = self.augmentation.sample(self.num_frames, video.height, video.width)
        frames = torch.stack(
            [
                transform.image(self._frame(video, frame_index))
                for frame_index, transform in zip(frame_indices, transforms, strict=True)
            ]
        )
        instances = [
            instance
            for instance in video.instances
            if any(instance.segmentations[frame_index] is not None for frame_index in frame_indices)
        ]
        masks = torch.stack(
            [
                self._instance_masks(instances, frame_index, transform)
                for frame_index, transform in zip(frame_indices, transforms, strict=True)
            ],
            dim=1,
        )  # (N, T, H, W)
        # A crop can push an instance out of every frame: it is then not part of the clip, as in the original.
        # Each instance keeps its annotated class. The original takes a clip's classes from its first frame, so an
        # instance absent there got the no-object class (its placeholder annotation's category, K).
        visible = masks.flatten(1).any(1)
        return AvisegClip(
            video_id=video.video_id,
            frame_indices=torch.tensor(frame_indices),
            frames=frames,
            audio=load_audio(video, frame_indices, self.audio_input),
            class_labels=torch.tensor([instance.label for instance in instances], dtype=torch.long)[visible],
            mask_labels=masks[visible],
        )

    @staticmethod
    def _frame(video: AvisegVideo, frame_index: int) -> Tensor:
        frame = read_frame(video.frame_paths[frame_index])
        if tuple(frame.shape[1:]) != (video.height, video.width):
            raise AvisDatasetError(
                f"frame {video.frame_paths[frame_index]} is {frame.shape[2]}x{frame.shape[1]}, "
                f"its video says {video.width}x{video.height}"
            )
        return frame

    @staticmethod
    def _instance_masks(instances: list[AvisegInstance], frame_index: int, transform: FrameTransform) -> Tensor:
        """(N, H, W) bool masks of the instances in one frame, after the frame's transform."""
        masks = torch.zeros(len(instances), transform.height, transform.width, dtype=torch.bool)
        for index, instance in enumerate(instances):
            segmentation = instance.segmentations[frame_index]
            if isinstance(segmentation, list):
                polygons = [transform.polygon(polygon) for polygon in segmentation]
                masks[index] = torch.from_numpy(rasterize_polygons(polygons, transform.height, transform.width))
            elif segmentation is not None:
                mask = torch.from_numpy(mask_utils.decode(segmentation).astype(bool))
                masks[index] = transform.masks(mask[None])[0]
        return masks


def collate_clips(clips: list[AvisegClip], image_processor: AvisImageProcessor) -> dict:
    """A batch of B clips of T frames: normalised and zero-padded at the bottom and right to a multiple of the
    processor's `size_divisibility` (the largest clip's), by the processor that prepares the frames at test.

    Returns pixel_values (B, T, 3, Hp, Wp) float32, audio (B, T, 128) features or (B, T, 96, 64) log-mel,
    mask_labels: B x (N_b, T, Hp, Wp) bool, class_labels: B x (N_b,) long, video_ids: B ids, frame_indices (B, T).
    """
    size = image_processor.padded_size(
        max(clip.frames.shape[-2] for clip in clips), max(clip.frames.shape[-1] for clip in clips)
    )
    return {
        "pixel_values": torch.stack(
            [image_processor.pad(image_processor.normalize(clip.frames), size) for clip in clips]
        ),
        "audio": torch.stack([clip.audio for clip in clips]),
        "mask_labels": [image_processor.pad(clip.mask_labels, size) for clip in clips],
        "class_labels": [clip.class_labels for clip in clips],
        "video_ids": [clip.video_id for clip in clips],
        "frame_indices": torch.stack([clip.frame_indices for clip in clips]),
    }


__all__ = [
    "AvisegClip",
    "AvisegClipDataset",
    "AvisegInstance",
    "AvisegVideo",
    "collate_clips",
    "audio_input_name",
    "load_audio",
    "load_audio_features",
    "load_audio_log_mel",
    "load_aviseg_split",
    "read_frame",
    "sample_frame_indices",
]
