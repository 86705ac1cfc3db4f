"""Sounding shapes: a seeded AVISeg-format dataset whose sounding objects can only be told apart by listening.

    python -m training.sounding_shapes DATA_DIR [--seed 0] [--train 400] [--val 40] [--test 60]
    python -m training.sounding_shapes DATA_DIR --seed 1 --train 40 --val 10 --test 60 --star --video-files

Each video (1 frame per second, like AVISeg) shows coloured shapes moving over a textured background. Every shape
class has its own sound. A shape is *sounding* while it is on screen and its sound is in the audio track; only
sounding shapes are annotated, frame by frame. The rest are silent distractors: shapes of a class whose sound is
not playing, which look exactly like the sounding shapes of other videos. So the pixels say where the shapes are,
and only the sound says which of them to segment. Some videos are silent (distractors only), some have two sources,
and some sources enter or leave the frame (silent or single-source frames in between).

Colours are drawn at random for every shape, so a class is its shape, not its colour. Two shapes of the same class
never share a video: with one sound for both, nothing could tell the sounding one from a silent one.

Written per split (as AVISeg's `datasets/`): `<split>.json` (YouTube-VIS style; each frame's segmentation a list of
one uncompressed RLE, or null), `<split>/JPEGImages/<video>/<frame>.jpg`, `<split>/WAVAudios/<video>.wav` (16 kHz
mono, 16-bit) and `<split>/FEATAudios/<video>.npy`. There are no VGGish weights offline, so the features are a
documented stand-in: per frame, the mean and standard deviation over time of the 64 VGGish log-mel bands of its
one-second window (128 values).

With --video-files, each split is instead one mp4 a video (H.264 and AAC, its sound in it) beside one annotations
file, `<split>.json`, whose videos name their file and the rate of their annotated frames: what one's own videos
look like to `training.train`. With --star, a fifth class, the star (a 4.5 kHz whistle), is the first source of half
the videos with a sound and drawn as any other shape in the rest (a source in about 55 % of the videos, on screen
and silent in about 15 %): the fine-tuning example's data. Without it, the same seed
writes the same videos as before the star existed (the default model's data).
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from modeling_avis.feature_extraction_avis import AvisFeatureExtractor
from modeling_avis.video_io import AvisegVideoFiles

SAMPLE_RATE = 16000
HEIGHT, WIDTH = 96, 128


@dataclass(frozen=True)
class ShapeClass:
    name: str
    sound: str  # what the class sounds like, for the model card


CLASSES = (
    ShapeClass("circle", "a 440 Hz sine tone"),
    ShapeClass("square", "a C-major chord (262, 330, 392 Hz)"),
    ShapeClass("triangle", "noise band-limited to 2-3 kHz"),
    ShapeClass("diamond", "a 150 Hz sawtooth buzz"),
)
# A fifth class, which the default model (trained on CLASSES) does not know: what the fine-tuning example teaches it.
STAR = ShapeClass("star", "a 4.5 kHz whistle")
CLASSES_WITH_STAR = (*CLASSES, STAR)


def class_sound(label: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of class `label`'s sound at SAMPLE_RATE, peak about 1."""
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = rng.uniform(0, 2 * np.pi)
    if label == 0:
        return np.sin(2 * np.pi * 440 * time + phase)
    if label == 1:
        return sum(np.sin(2 * np.pi * f * time + phase * k) for k, f in enumerate((262, 330, 392), 1)) / 2.2
    if label == 2:
        spectrum = np.fft.rfft(rng.standard_normal(time.size))
        frequencies = np.fft.rfftfreq(time.size, 1 / SAMPLE_RATE)
        spectrum[(frequencies < 2000) | (frequencies > 3000)] = 0
        band = np.fft.irfft(spectrum, n=time.size)
        return band / (np.abs(band).max() + 1e-9)
    if label == 3:
        return 2 * ((150 * time + phase / (2 * np.pi)) % 1.0) - 1
    return np.sin(2 * np.pi * 4500 * time + phase)


@dataclass
class Shape:
    label: int
    sounding: bool
    size: float
    colour: tuple[int, int, int]
    start: np.ndarray  # (x, y) centre at frame 0
    velocity: np.ndarray  # pixels per frame
    first: int  # first frame on screen
    last: int  # last frame on screen

    def centre(self, frame: int) -> np.ndarray:
        """Moves at constant speed and bounces off the borders (the whole shape stays inside the frame)."""
        low = np.array([self.size, self.size])
        high = np.array([WIDTH - self.size, HEIGHT - self.size])
        span = high - low
        position = self.start - low + self.velocity * frame
        folded = np.mod(position, 2 * span)
        return low + np.where(folded > span, 2 * span - folded, folded)

    def polygon(self, frame: int) -> list[tuple[float, float]]:
        x, y = self.centre(frame)
        r = self.size
        if self.label == 0:
            angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            return [(x + r * np.cos(a), y + r * np.sin(a)) for a in angles]
        if self.label == 1:
            s = r * 0.85
            return [(x - s, y - s), (x + s, y - s), (x + s, y + s), (x - s, y + s)]
        if self.label == 2:
            return [(x, y - r), (x + r * 0.95, y + r * 0.8), (x - r * 0.95, y + r * 0.8)]
        if self.label == 3:
            return [(x, y - r), (x + r * 0.8, y), (x, y + r), (x - r * 0.8, y)]
        points = np.arange(10) * np.pi / 5 - np.pi / 2  # five tips, five inner corners
        radii = np.where(np.arange(10) % 2, 0.55 * r, r)
        return [(x + radius * np.cos(a), y + radius * np.sin(a)) for radius, a in zip(radii, points)]


def sample_video(
    rng: np.random.Generator, classes: tuple[ShapeClass, ...] = CLASSES, featured: int | None = None
) -> tuple[int, list[Shape]]:
    """A video's length and shapes: 15 % silent, else one or two sources, plus up to two distractors.

    featured: a class made the first source of half the videos that have one, and drawn as any other class in the
    rest (a source or a silent distractor by chance): a class to be learnt from a few videos gets its examples, and
    the other classes keep theirs. None keeps every class's chances equal.
    """
    num_frames = int(rng.integers(8, 17))
    labels = rng.permutation(len(classes))
    num_sources = 0 if rng.random() < 0.15 else 1 + int(rng.random() < 0.4)
    num_distractors = int(rng.integers(1 if num_sources == 0 else 0, 3))
    if featured is not None and num_sources and rng.random() < 0.5:
        labels = np.insert(labels[labels != featured], 0, featured)
    shapes = []
    for index, label in enumerate(labels[: num_sources + num_distractors]):
        size = float(rng.uniform(10, 17))
        first, last = 0, num_frames - 1
        if rng.random() < 0.2:  # enters late or leaves early
            cut = int(rng.integers(2, num_frames // 2 + 1))
            first, last = (cut, last) if rng.random() < 0.5 else (first, num_frames - 1 - cut)
        shapes.append(
            Shape(
                label=int(label),
                sounding=index < num_sources,
                size=size,
                colour=tuple(int(c) for c in rng.integers(60, 256, 3)),
                start=rng.uniform([size, size], [WIDTH - size, HEIGHT - size]),
                velocity=rng.uniform(-6, 6, 2),
                first=first,
                last=last,
            )
        )
    return num_frames, shapes


def render_frames(num_frames: int, shapes: list[Shape], rng: np.random.Generator):
    """RGB frames (T, H, W, 3) uint8 and each shape's visible mask (S, T, H, W) bool (later shapes occlude)."""
    gradient = np.linspace(0, 1, WIDTH)[None, :, None] * rng.uniform(-60, 60, 3) + rng.uniform(20, 110, 3)
    background = np.clip(gradient + rng.normal(0, 12, (HEIGHT, WIDTH, 3)), 0, 255)
    frames = np.empty((num_frames, HEIGHT, WIDTH, 3), dtype=np.uint8)
    masks = np.zeros((len(shapes), num_frames, HEIGHT, WIDTH), dtype=bool)
    for t in range(num_frames):
        image = Image.fromarray(np.clip(background + rng.normal(0, 4, background.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for index, shape in enumerate(shapes):
            if not shape.first <= t <= shape.last:
                continue
            polygon = shape.polygon(t)
            draw.polygon(polygon, fill=shape.colour)
            silhouette = Image.new("1", (WIDTH, HEIGHT))
            ImageDraw.Draw(silhouette).polygon(polygon, fill=1)
            silhouette = np.array(silhouette)
            masks[:index, t] &= ~silhouette
            masks[index, t] = silhouette
        frames[t] = np.array(image)
    return frames, masks


def render_audio(num_frames: int, shapes: list[Shape], rng: np.random.Generator) -> np.ndarray:
    """The sound track: each source's sound during the seconds it is on screen, over faint noise."""
    audio = rng.normal(0, 0.003, num_frames * SAMPLE_RATE)
    ramp = np.minimum(1, np.arange(SAMPLE_RATE) / (0.01 * SAMPLE_RATE))  # 10 ms fade-in per second
    for shape in shapes:
        if not shape.sounding:
            continue
        sound = class_sound(shape.label, num_frames, rng) * rng.uniform(0.15, 0.3)
        for t in range(shape.first, shape.last + 1):
            second = slice(t * SAMPLE_RATE, (t + 1) * SAMPLE_RATE)
            audio[second] += sound[second] * ramp * ramp[::-1]
    return np.clip(audio, -1, 1)


def pooled_log_mel(audio: np.ndarray, num_frames: int, extractor: AvisFeatureExtractor) -> np.ndarray:
    """(T, 128): mean and standard deviation over time of each log-mel band, per one-second window."""
    log_mel = extractor(audio.astype(np.float32), [float(t) for t in range(num_frames)], SAMPLE_RATE)
    log_mel = torch.as_tensor(log_mel["audio_log_mel"])  # (T, 96, 64)
    return torch.cat([log_mel.mean(1), log_mel.std(1)], dim=-1).numpy().astype(np.float32)


def write_wav(path: Path, audio: np.ndarray) -> None:
    samples = (audio * 32767).astype(np.int16)[None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths, starting with background)."""
    flat = mask.T.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes]))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ShapeSet:
    """The classes a dataset's shapes are drawn from, and the class shown in every video (see `sample_video`)."""

    classes: tuple[ShapeClass, ...] = CLASSES
    featured: int | None = None


# The default model's data.
FOUR_SHAPES = ShapeSet()
# The fine-tuning example's: the four shapes and a star in every video.
WITH_STAR = ShapeSet(CLASSES_WITH_STAR, featured=len(CLASSES))


@dataclass(frozen=True)
class Encoding:
    """How a video file is written: its container (and options), video codec, pixel format and audio codec."""

    format: str
    suffix: str
    options: dict
    video_codec: str
    video_options: dict
    pixel_format: str
    audio_codec: str


# What phones and browsers play: H.264 and AAC in an mp4.
MP4 = Encoding(
    "mp4", ".mp4", {"movflags": "+faststart"}, "libx264", {"crf": "23", "preset": "medium"}, "yuv420p", "aac"
)
# Every pixel and sample kept: the same video as PNG frames and a WAV decodes to the same frames and sound.
LOSSLESS = Encoding("matroska", ".mkv", {}, "libx264rgb", {"crf": "0", "preset": "ultrafast"}, "rgb24", "pcm_s16le")


def render_video(
    seed: int, split: str, video_index: int, shape_set: ShapeSet = FOUR_SHAPES
) -> tuple[list[Shape], np.ndarray, np.ndarray, np.ndarray]:
    """Video `video_index` of a split: its shapes, frames (T, H, W, 3), shape masks (S, T, H, W) and sound."""
    rng = np.random.default_rng([seed, SPLITS.index(split), video_index])
    num_frames, shapes = sample_video(rng, shape_set.classes, shape_set.featured)
    frames, masks = render_frames(num_frames, shapes, rng)
    return shapes, frames, masks, render_audio(num_frames, shapes, rng)


def sounding_annotations(shapes: list[Shape], masks: np.ndarray, video_id: int, first_id: int) -> list[dict]:
    """The AVISeg annotations of a video's sounding shapes (ids from `first_id`), masks as uncompressed RLE."""
    annotations = []
    height, width = masks.shape[-2:]
    for shape, shape_masks in zip(shapes, masks, strict=True):
        if not shape.sounding:
            continue
        present = [bool(m.any()) for m in shape_masks]
        annotations.append(
            {
                "id": first_id + len(annotations),
                "video_id": video_id,
                "category_id": shape.label + 1,
                "iscrowd": 0,
                "height": height,
                "width": width,
                "segmentations": [[uncompressed_rle(m)] if p else None for m, p in zip(shape_masks, present)],
                "areas": [float(m.sum()) if p else None for m, p in zip(shape_masks, present)],
                "bboxes": [
                    [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.astype(np.uint8))))]
                    if p
                    else None
                    for m, p in zip(shape_masks, present)
                ],
            }
        )
    return annotations


def categories(classes: tuple[ShapeClass, ...] = CLASSES) -> list[dict]:
    return [{"id": index + 1, "name": shape.name} for index, shape in enumerate(classes)]


def write_split(
    root: Path, split: str, num_videos: int, seed: int, shape_set: ShapeSet = FOUR_SHAPES, frame_suffix: str = ".jpg"
) -> dict:
    """The split in AVISeg's layout: frame folders (JPEG, or PNG with `frame_suffix=".png"`), WAVs, features."""
    extractor = AvisFeatureExtractor()
    videos, annotations = [], []
    for video_index in range(num_videos):
        shapes, frames, masks, audio = render_video(seed, split, video_index, shape_set)
        num_frames = len(frames)
        name = f"{split}_{video_index:04d}"
        files = AvisegVideoFiles.of(root / split, name)
        files.frames.mkdir(parents=True, exist_ok=True)
        file_names = []
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(files.frames / f"{t:05d}{frame_suffix}", quality=95)
            file_names.append(f"{name}/{t:05d}{frame_suffix}")
        for path in (files.wav, files.features):
            path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(files.wav, audio)
        np.save(files.features, pooled_log_mel(audio, num_frames, extractor))
        video_id = video_index + 1
        videos.append(
            {"id": video_id, "file_names": file_names, "height": HEIGHT, "width": WIDTH, "length": num_frames}
        )
        annotations += sounding_annotations(shapes, masks, video_id, len(annotations) + 1)
    root.mkdir(parents=True, exist_ok=True)
    dataset = {"categories": categories(shape_set.classes), "videos": videos, "annotations": annotations}
    (root / f"{split}.json").write_text(json.dumps(dataset))
    return dataset


def write_video_split(
    root: Path, split: str, num_videos: int, seed: int, shape_set: ShapeSet = WITH_STAR, encoding: Encoding = MP4
) -> dict:
    """The split as video files with their sound (`<root>/<split>/<name>.mp4`, one frame per second) and one
    annotations file, `<root>/<split>.json`, whose videos name their file and the rate of their annotated frames."""
    videos, annotations = [], []
    (root / split).mkdir(parents=True, exist_ok=True)
    for video_index in range(num_videos):
        shapes, frames, masks, audio = render_video(seed, split, video_index, shape_set)
        file_name = f"{split}/{split}_{video_index:04d}{encoding.suffix}"
        write_video_file(root / file_name, frames, audio, encoding)
        video_id = video_index + 1
        videos.append(
            {"id": video_id, "video": file_name, "fps": 1, "length": len(frames), "height": HEIGHT, "width": WIDTH}
        )
        annotations += sounding_annotations(shapes, masks, video_id, len(annotations) + 1)
    dataset = {"categories": categories(shape_set.classes), "videos": videos, "annotations": annotations}
    (root / f"{split}.json").write_text(json.dumps(dataset))
    return dataset


def write_video_file(path: Path, frames: np.ndarray, audio: np.ndarray, encoding: Encoding = MP4) -> None:
    """Frames (T, H, W, 3) at one a second and their sound (SAMPLE_RATE mono) as a video file."""
    height, width = frames.shape[1:3]
    with av.open(str(path), "w", format=encoding.format, options=encoding.options) as container:
        video = container.add_stream(encoding.video_codec, rate=1, options=encoding.video_options)
        video.width, video.height, video.pix_fmt = width, height, encoding.pixel_format
        sound = container.add_stream(encoding.audio_codec, rate=SAMPLE_RATE, layout="mono")
        for t, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = t
            container.mux(video.encode(picture))
        container.mux(video.encode())
        samples = (audio * 32767).astype(np.int16)[None]
        chunk = 1024  # AAC encodes 1024 samples a frame
        for start in range(0, samples.shape[1], chunk):
            piece = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + chunk]), format="s16", layout="mono"
            )
            piece.sample_rate, piece.pts = SAMPLE_RATE, start
            container.mux(sound.encode(piece))
        container.mux(sound.encode())


def write_example_video(destination: str | Path, seed: int, split: str, video_index: int, scale: int = 3) -> dict:
    """Video `video_index` of a split as an mp4 (H.264 + AAC, one frame per second, `scale` times the size) and
    its ground truth at that size (an AVISeg JSON of the one video, id 1), which is returned and written beside
    the mp4 as `<name>.json`: an example the app and the CLI can run and be scored on.
    """
    destination = Path(destination)
    shapes, frames, masks, audio = render_video(seed, split, video_index)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    masks = masks.repeat(scale, axis=2).repeat(scale, axis=3)
    height, width = frames.shape[1:3]
    write_video_file(destination, frames, audio)
    name = destination.stem
    ground_truth = {
        "categories": categories(),
        "videos": [
            {
                "id": 1,
                "file_names": [f"{name}/{t:05d}.jpg" for t in range(len(frames))],
                "height": height,
                "width": width,
                "length": len(frames),
            }
        ],
        "annotations": sounding_annotations(shapes, masks, 1, 1),
    }
    destination.with_suffix(".json").write_text(json.dumps(ground_truth))
    return ground_truth


def generate(
    root: str | Path,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    shape_set: ShapeSet = FOUR_SHAPES,
    encoding: Encoding | None = None,
) -> dict[str, dict]:
    """Writes every split under `root`, in AVISeg's layout, or as video files of `encoding`; the same seed writes
    the same files."""
    root = Path(root)
    sizes = sizes or {"train": 400, "val": 40, "test": 60}
    if encoding is None:
        return {split: write_split(root, split, count, seed, shape_set) for split, count in sizes.items()}
    return {split: write_video_split(root, split, count, seed, shape_set, encoding) for split, count in sizes.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder to write the dataset into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--star", action="store_true", help="add a fifth class, the star, shown in every video")
    parser.add_argument(
        "--video-files", action="store_true", help="write mp4 files with sound and one JSON per split, not frames"
    )
    args = parser.parse_args(argv)
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    datasets = generate(
        args.root, args.seed, sizes, WITH_STAR if args.star else FOUR_SHAPES, MP4 if args.video_files else None
    )
    for split, dataset in datasets.items():
        print(f"{split}: {len(dataset['videos'])} videos, {len(dataset['annotations'])} sounding shapes")


if __name__ == "__main__":
    main()
