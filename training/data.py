"""AVISeg-format datasets for training: a split's videos and annotations, clips sampled as the original, and
padded batches.

A split is one annotations file in YouTube-VIS's format (`categories`, `videos`, `annotations`; its rules are
`training.annotations`'). A video entry names either
- its frame files (`file_names`), in AVISeg's layout (as the original's `datasets/`): `<root>/<split>.json`,
  `<root>/<split>/JPEGImages/<video>/<frame>.jpg`, the sound beside them in `<root>/<split>/WAVAudios/<video>.wav`
  and/or `<root>/<split>/FEATAudios/<video>.npy` (one 128-d VGGish feature per frame); or
- one video file with its sound (`video`, relative to the annotations file) and the times of its annotated frames
  (`fps` or `timestamps`): an annotations file anywhere, `--data clips/train.json`.

Frames and sound are read through the model's processor (`AvisProcessor`, its saved settings): a video file's
frames decoded and sampled as inference samples them, every log-mel example the one inference computes at that
time. A batch (`collate_clips`) holds the frames as the model takes them, normalised and padded by the image
processor that prepares them at test.
"""

from collections.abc import Sequence
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
from modeling_avis.errors import AvisDatasetError, AvisInputError, one_line, printable
from modeling_avis.image_processing_avis import AvisImageProcessor
from modeling_avis.input_files import InvalidInputFile, read_json, read_npy_header
from modeling_avis.processing_avis import AvisProcessor
from modeling_avis.video_io import TIME_TOLERANCE, AvisegVideoFiles, probe_video, read_image

from .annotations import (
    AVISEG_FPS,
    Segmentation,
    VideoSource,
    check_frame_size,
    normalize_segmentation,
    read_video_source,
)
from .augmentation import ClipAugmentation, FrameTransform


@dataclass(frozen=True)
class AvisegInstance:
    """One annotated sounding object of a video: its 0-based class and a segmentation per frame."""

    track_id: int
    label: int
    segmentations: tuple[Segmentation, ...]


@dataclass(frozen=True)
class AvisegVideo:
    """A video of the split: its size, the seconds of its annotated frames, where its frames and sound are (frame
    files with a WAV and/or features file beside them, or one video file), and its annotated instances."""

    video_id: int
    name: str
    height: int
    width: int
    times: tuple[float, ...]
    frame_paths: tuple[Path, ...]  # () for a video file
    video_path: Path | None  # None for frame files
    audio_features_path: Path | None
    wav_path: Path | None
    instances: tuple[AvisegInstance, ...]

    @property
    def num_frames(self) -> int:
        return len(self.times)

    @property
    def source(self) -> Path:
        """What the processor reads: the video file, or the folder of the frame files."""
        return self.video_path if self.video_path is not None else self.frame_paths[0].parent

    @property
    def sampling(self) -> dict:
        """The processor's sampling (`AvisSampling`) of exactly the annotated frames."""
        return {"fps": AVISEG_FPS} if self.video_path is None else {"timestamps": self.times}


@dataclass
class AvisegClip:
    """A training clip of T frames and its N instances (visible in at least one of the frames)."""

    video_id: int
    frame_indices: Tensor  # (T,) long, sorted, may repeat
    frames: Tensor  # (T, 3, H, W) uint8 RGB
    audio: Tensor  # (T, 128) float32 features, or (T, 96, 64) log-mel examples (see `load_audio`)
    class_labels: Tensor  # (N,) long in [0, K)
    mask_labels: Tensor  # (N, T, H, W) bool, all False where the instance is absent


def rasterize_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask covered by any of the polygons; parts outside the frame are clipped."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


def annotations_path(data: str | Path, split: str) -> Path:
    """The annotations file of a split: `split` itself when it names a .json file, else `data` itself when it is
    an annotations file, else `<data>/<split>.json` (an AVISeg root)."""
    if split.endswith(".json"):
        return Path(split)
    return Path(data) if is_annotations_file(data) else Path(data) / f"{split}.json"


def is_annotations_file(data: str | Path) -> bool:
    """Whether `--data` names an annotations file (a split of its own) rather than an AVISeg root."""
    return Path(data).suffix == ".json" or Path(data).is_file()


def load_aviseg_split(
    data: str | Path, split: str = "train", labels: Sequence[str] | None = None
) -> list[AvisegVideo]:
    """The videos of a split (`annotations_path(data, split)`), sorted by id.

    labels: the classes to learn, by name: an annotation's class is the index of its category's name there, and a
    category annotated but not among them is an error; None: the categories in id order.
    The annotations are checked, and every frame file and video file is looked at, before anything is trained on:
    a missing or malformed piece is an AvisDatasetError naming the file and the video.
    """
    annotation_path = annotations_path(data, split)
    dataset = _read_dataset_json(annotation_path)
    categories = sorted(dataset["categories"], key=itemgetter("id"))
    name_of = {category["id"]: category["name"] for category in categories}
    if len(name_of) != len(categories) or len(set(name_of.values())) != len(categories):
        raise AvisDatasetError(f"{annotation_path}: a category id or name is listed twice")
    if len({video["id"] for video in dataset["videos"]}) != len(dataset["videos"]):
        raise AvisDatasetError(f"{annotation_path}: a video id is used twice")
    annotations_of = {}
    seen = set()
    for index, annotation in enumerate(dataset["annotations"]):
        if annotation["id"] in seen:
            raise AvisDatasetError(f"{annotation_path}: annotations[{index}]: id {annotation['id']} is used twice")
        seen.add(annotation["id"])
        annotations_of.setdefault(annotation["video_id"], []).append(annotation)
    unknown = set(annotations_of) - {video["id"] for video in dataset["videos"]}
    if unknown:
        raise AvisDatasetError(f"{annotation_path}: annotations of video_id {min(unknown)}, which it does not list")
    label_of = _class_labels(annotation_path, categories, dataset["annotations"], labels)
    videos = []
    for index, video in enumerate(sorted(dataset["videos"], key=itemgetter("id"))):
        try:
            source = read_video_source(video)
        except ValueError as error:
            raise AvisDatasetError(f"{annotation_path}: videos[{index}] {error}") from None
        name, height, width = printable(source.name), video["height"], video["width"]
        try:
            check_frame_size(height, width)
        except ValueError as error:
            raise AvisDatasetError(f"{annotation_path}: video '{name}': {error}") from None
        annotations = [a for a in annotations_of.get(video["id"], []) if not a.get("iscrowd", 0)]
        if any(len(annotation["segmentations"]) != len(source.times) for annotation in annotations):
            raise AvisDatasetError(
                f"{annotation_path}: an annotation of video '{name}' does not have one segmentation per frame"
            )
        if any(annotation["category_id"] not in name_of for annotation in annotations):
            raise AvisDatasetError(
                f"{annotation_path}: an annotation of video '{name}' has a category it does not list"
            )
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
                f"{annotation_path}: an annotation of video '{name}' is unusable ({error})"
            ) from None
        files = _located(annotation_path, split, source, video, name)
        videos.append(AvisegVideo(video["id"], source.name, height, width, source.times, *files, instances))
    return videos


def category_names(annotations: Path) -> list[str]:
    """The names of an annotations file's categories, in id order: its classes when none are given."""
    return [
        category["name"] for category in sorted(_read_dataset_json(annotations)["categories"], key=itemgetter("id"))
    ]


def to_dataset_categories(results: list[dict], config: AvisConfig | None, annotations: Path) -> list[dict]:
    """AVIS results whose `category_id` is the model's class + 1 (`results_json_entries`) with the categories of an
    annotations file instead: each class is the category of its name there, and the tracks of a class it does not
    list are left out. A model none of whose class names it lists (one whose classes are numbered, not named) keeps
    class + 1, AVISeg's ids of its classes."""
    if config is None:
        return results
    category_of = {category["name"]: category["id"] for category in _read_dataset_json(annotations)["categories"]}
    ids = {label + 1: category_of[name] for label, name in config.id2label.items() if name in category_of}
    if not ids:
        return results
    return [{**entry, "category_id": ids[entry["category_id"]]} for entry in results if entry["category_id"] in ids]


def _class_labels(
    path: Path, categories: list[dict], annotations: list[dict], labels: Sequence[str] | None
) -> dict[int, int]:
    """{category id: class index}: by name among `labels`, or the categories in id order."""
    if labels is None:
        return {category["id"]: index for index, category in enumerate(categories)}
    index_of = {name: index for index, name in enumerate(labels)}
    used = {annotation["category_id"] for annotation in annotations if not annotation.get("iscrowd", 0)}
    unknown = [
        category["name"] for category in categories if category["id"] in used and category["name"] not in index_of
    ]
    if unknown:
        raise AvisDatasetError(
            f"{path}: annotated classes that are not among the classes to learn ({', '.join(labels)}): "
            f"{', '.join(map(repr, unknown))}; name every class in --labels"
        )
    return {category["id"]: index_of.get(category["name"], -1) for category in categories}


def _located(annotation_path: Path, split: str, source: VideoSource, video: dict, name: str) -> tuple:
    """(frame_paths, video_path, audio_features_path, wav_path) of a video entry, each looked for: frame files in
    AVISeg's layout beside the annotations file, or a video file relative to it, probed for its size, its sound and
    its length."""
    if source.file_names is not None:
        files = AvisegVideoFiles.of(annotation_path.parent / annotation_path.stem, source.name)
        frame_paths = tuple(files.frames.parent / file_name for file_name in source.file_names)
        missing = next((path for path in frame_paths if not path.is_file()), None)
        if missing is not None:
            raise AvisDatasetError(f"{missing}: no such frame (video '{name}' of {annotation_path.name})")
        return frame_paths, None, files.features, files.wav
    path = annotation_path.parent / source.video
    where = f"video {video['id']} of {annotation_path.name}"
    if not path.is_file():
        raise AvisDatasetError(f"{printable(path)}: no such video file ({where})")
    try:
        info = probe_video(path)
    except AvisInputError as error:
        raise AvisDatasetError(f"{one_line(error)} ({where})") from None
    if (info.height, info.width) != (video["height"], video["width"]):
        raise AvisDatasetError(
            f"{printable(path)}: its frames are {info.width}x{info.height}, its entry says "
            f"{video['width']}x{video['height']} ({where})"
        )
    if not info.has_audio:
        raise AvisDatasetError(f"{printable(path)}: the video has no sound ({where})")
    if source.times[-1] >= info.duration - TIME_TOLERANCE:
        raise AvisDatasetError(
            f"{printable(path)}: an annotated frame at {source.times[-1]:g} s is past the video's end at "
            f"{info.duration:g} s ({where})"
        )
    return (), path, None, None


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The fields every entry of an annotations file needs, by list: what each must be, and its description (a video's
# frames are `read_video_source`'s).
REQUIRED_FIELDS = {
    "categories": {"id": (_is_id, "an integer"), "name": (lambda value: isinstance(value, str), "a string")},
    "videos": {
        "id": (_is_id, "an integer"),
        "height": (_is_id, "an integer"),
        "width": (_is_id, "an integer"),
    },
    "annotations": {
        "id": (_is_id, "an integer"),
        "video_id": (_is_id, "an integer"),
        "category_id": (_is_id, "an integer"),
        "segmentations": (lambda value: isinstance(value, list), "a list with one entry per frame"),
    },
}


def _read_dataset_json(path: Path) -> dict:
    """An annotations file, checked to have the lists and fields `load_aviseg_split` reads."""
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
    if path is None:
        raise AvisDatasetError(
            f"{printable(video.name)}: a video file has its sound, not VGGish features; give this model an audio "
            "encoder (conversion.convert_avism --vggish) to train it on video files"
        )
    if not path.is_file():
        raise AvisDatasetError(f"no audio features for video {video.name!r} at {path}")
    try:
        shape, _ = read_npy_header(path)
    except InvalidInputFile as error:
        raise AvisDatasetError(f"{path}: {error}") from None
    if len(shape) != 2 or shape[0] < video.num_frames:
        raise AvisDatasetError(f"{path} has shape {shape}; expected one row per frame ({video.num_frames})")


def read_clip(
    video: AvisegVideo, frame_indices: list[int], audio_input: str, processor: AvisProcessor
) -> tuple[Tensor, Tensor]:
    """The frames (T, 3, H, W) uint8 and the audio input of the given frames of a video, through `processor` as
    inference reads them: frame files by name (the processor's image reader) or a video file decoded at the
    frames' times; log-mel examples of the sound (the WAV beside frame files, or the video's own) at those times,
    with the processor's settings, or the rows of the features file."""
    times = [video.times[index] for index in frame_indices]
    if video.video_path is None:
        frames = torch.stack([_frame(video, index) for index in frame_indices])
        if audio_input == "audio_features":
            return frames, load_audio_features(video, frame_indices)
        return frames, processor.audio_log_mel(video.wav_path, times)
    if audio_input == "audio_features":
        check_audio_features(video)
    distinct = sorted(set(times))
    chunks = processor.iter_chunks(video.video_path, len(distinct), timestamps=distinct, audio_input=audio_input)
    try:
        ((_, images, audio),) = list(chunks.decoded())
    except AvisInputError as error:
        raise AvisDatasetError(f"cannot read video {video.name!r}: {one_line(error)}") from None
    rows = [distinct.index(time) for time in times]
    frames = torch.from_numpy(np.stack([images[row] for row in rows])).permute(0, 3, 1, 2).contiguous()
    return frames, audio[audio_input][rows]


def _frame(video: AvisegVideo, frame_index: int) -> Tensor:
    frame = read_frame(video.frame_paths[frame_index])
    if tuple(frame.shape[1:]) != (video.height, video.width):
        raise AvisDatasetError(
            f"frame {video.frame_paths[frame_index]} is {frame.shape[2]}x{frame.shape[1]}, "
            f"its video says {video.width}x{video.height}"
        )
    return frame


def load_audio_features(video: AvisegVideo, frame_indices: list[int]) -> Tensor:
    """The (T, 128) float32 audio features of the given frames, from the video's FEATAudios file."""
    check_audio_features(video)
    features = np.load(video.audio_features_path, allow_pickle=False)
    return torch.from_numpy(features[frame_indices].astype(np.float32))


def audio_input_name(config: AvisConfig) -> str:
    """A model with an audio encoder reads log-mel examples; the published ones read VGGish features."""
    return "audio_features" if config.audio_config is None else "audio_log_mel"


class AvisegClipDataset(Dataset):
    """Training clips of a split: one random clip of each annotated video per epoch.

    augmentation: the random resize / crop / flip (`ClipAugmentation()` is the published recipe); None keeps the
    frames at their size. Random draws use torch's generator, which DataLoader seeds per worker.
    labels: the classes to learn, by name (see `load_aviseg_split`); processor: the model's, which reads the frames
    and the sound (default: `AvisProcessor()`'s settings).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        num_frames: int = 5,
        frame_range: int = 20,
        augmentation: ClipAugmentation | None = None,
        audio_input: str = "audio_features",
        labels: Sequence[str] | None = None,
        processor: AvisProcessor | None = None,
    ):
        self.videos = [video for video in load_aviseg_split(root, split, labels) if is_annotated(video)]
        for video in self.videos:  # looked for now, not in a data-loading worker hours into training
            if audio_input == "audio_features":
                if video.audio_features_path is not None and not video.audio_features_path.is_file():
                    raise AvisDatasetError(
                        f"{video.audio_features_path}: no such audio file (video {video.name!r}; the model reads "
                        f"{audio_input})"
                    )
                check_audio_features(video)
            elif video.wav_path is not None and not video.wav_path.is_file():
                raise AvisDatasetError(
                    f"{video.wav_path}: no such audio file (video {video.name!r}; the model reads {audio_input})"
                )
        self.audio_input = audio_input
        self.num_frames = num_frames
        self.frame_range = frame_range
        self.augmentation = augmentation
        self.processor = AvisProcessor() if processor is None else processor

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> AvisegClip:
        video = self.videos[index]
        frame_indices = sample_frame_indices(video.num_frames, self.num_frames, self.frame_range)
        if self.augmentation is None:
            transforms = [FrameTransform((), video.height, video.width)] * self.num_frames
        else:
            transforms = self.augmentation.sample(self.num_frames, video.height, video.width)
        frames, audio = read_clip(video, frame_indices, self.audio_input, self.processor)
        frames = torch.stack([transform.image(frame) for frame, transform in zip(frames, transforms, strict=True)])
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
            audio=audio,
            class_labels=torch.tensor([instance.label for instance in instances], dtype=torch.long)[visible],
            mask_labels=masks[visible],
        )

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
    "annotations_path",
    "category_names",
    "is_annotations_file",
    "audio_input_name",
    "collate_clips",
    "load_audio_features",
    "load_aviseg_split",
    "normalize_segmentation",
    "rasterize_polygons",
    "read_clip",
    "read_frame",
    "sample_frame_indices",
    "to_dataset_categories",
]
