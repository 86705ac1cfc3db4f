"""AVISeg training data (training/data.py, training/augmentation.py) on a tiny synthetic split in tmp_path."""

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from modeling_avis.configuration_avis import AvisConfig
from modeling_avis.errors import AvisDatasetError
from modeling_avis.image_processing_avis import AvisImageProcessor
from modeling_avis.loss_avis import AvisLoss
from training.augmentation import ClipAugmentation, Crop, HorizontalFlip, Resize
from training.data import (
    AvisegClipDataset,
    collate_clips,
    load_aviseg_split,
    normalize_segmentation,
    sample_frame_indices,
)

HEIGHT, WIDTH = 48, 64
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def red_box(frame: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the red rectangle, which moves right by a pixel every 3 frames."""
    return 10, 4 + frame // 3, 30, 20 + frame // 3


BLUE_BOX = (20, 40, 40, 58)  # frames 10..29 only
GREEN_BOX = (2, 26, 12, 38)  # frames 0..4 only


def box_mask(box) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[box[0] : box[2], box[1] : box[3]] = True
    return mask


def box_polygon(box) -> list[float]:
    top, left, bottom, right = box
    return [left, top, right, top, right, bottom, left, bottom]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    pixels = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], pixels, [1 - pixels[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def write_frames(folder, name: str, length: int, boxes_of_frame):
    (folder / name).mkdir(parents=True)
    for frame in range(length):
        pixels = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
        for colour, box in boxes_of_frame(frame):
            pixels[box[0] : box[2], box[1] : box[3]] = COLOURS[colour]
        Image.fromarray(pixels).save(folder / name / f"{frame:05d}.jpg", quality=95)


@pytest.fixture(scope="module")
def aviseg_root(tmp_path_factory):
    """A split of four videos: 'rects' (30 frames; a moving red polygon, a blue uncompressed RLE in frames 10..29,
    a green list of compressed RLEs in frames 0..4), 'silent' (annotations all null), 'crowd' (a crowd annotation
    only) and 'single' (one frame). Audio row i of video v is filled with 1000 * v + i."""
    root = tmp_path_factory.mktemp("aviseg")
    frames_dir, audio_dir = root / "train" / "JPEGImages", root / "train" / "FEATAudios"
    audio_dir.mkdir(parents=True)
    lengths = {1: ("rects", 30), 2: ("silent", 6), 3: ("crowd", 4), 4: ("single", 1)}

    def rects(frame):
        boxes = [("red", red_box(frame))]
        boxes += [("blue", BLUE_BOX)] if frame >= 10 else []
        return boxes + ([("green", GREEN_BOX)] if frame < 5 else [])

    write_frames(frames_dir, "rects", 30, rects)
    write_frames(frames_dir, "silent", 6, lambda frame: [])
    write_frames(frames_dir, "crowd", 4, lambda frame: [("red", red_box(0))])
    write_frames(frames_dir, "single", 1, lambda frame: [("red", red_box(0))])
    for video_id, (name, length) in lengths.items():
        features = 1000.0 * video_id + np.arange(length)[:, None] * np.ones((1, 128))
        np.save(audio_dir / f"{name}.npy", features.astype(np.float32))

    def annotation(annotation_id, video_id, category_id, segmentations, iscrowd=0):
        return {"id": annotation_id, "video_id": video_id, "category_id": category_id, "iscrowd": iscrowd,
                "segmentations": segmentations}  # fmt: skip

    green = mask_utils.encode(np.asfortranarray(box_mask(GREEN_BOX).astype(np.uint8)))
    green = {"size": green["size"], "counts": green["counts"].decode()}
    dataset = {
        "categories": [{"id": 7, "name": "accordion"}, {"id": 1, "name": "person"}, {"id": 3, "name": "guitar"}],
        "videos": [
            {
                "id": video_id,
                "file_names": [f"{name}/{frame:05d}.jpg" for frame in range(length)],
                "height": HEIGHT,
                "width": WIDTH,
                "length": length,
            }
            for video_id, (name, length) in lengths.items()
        ],  # fmt: skip
        "annotations": [
            annotation(11, 1, 3, [[box_polygon(red_box(frame))] for frame in range(30)]),
            annotation(12, 1, 7, [uncompressed_rle(box_mask(BLUE_BOX)) if f >= 10 else None for f in range(30)]),
            annotation(13, 1, 1, [[green] if frame < 5 else None for frame in range(30)]),
            annotation(21, 2, 1, [None] * 6),
            annotation(31, 3, 1, [[box_polygon(red_box(0))]] * 4, iscrowd=1),
            annotation(41, 4, 3, [[box_polygon(red_box(0))]]),
        ],
    }
    (root / "train.json").write_text(json.dumps(dataset))
    return root


def colour_pixels(frame: torch.Tensor, colour: str) -> torch.Tensor:
    """(H, W) bool: pixels of a (3, H, W) uint8 frame close to one of the drawn colours."""
    return (frame.int() - torch.tensor(COLOURS[colour])[:, None, None]).abs().max(0).values < 60


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a & b).sum() / (a | b).sum()).item()


LABELS = {"red": 1, "blue": 2, "green": 0}  # categories 3, 7, 1 in id order


def test_categories_map_to_labels_in_id_order_and_segmentations_are_normalised(aviseg_root):
    videos = {video.name: video for video in load_aviseg_split(aviseg_root, "train")}
    assert [instance.label for instance in videos["rects"].instances] == [1, 2, 0]
    red, blue, green = videos["rects"].instances
    assert red.segmentations[3] == [[float(v) for v in box_polygon(red_box(3))]]
    assert blue.segmentations[0] is None and green.segmentations[5] is None
    for segmentation, box in ((blue.segmentations[12], BLUE_BOX), (green.segmentations[0], GREEN_BOX)):
        np.testing.assert_array_equal(mask_utils.decode(segmentation).astype(bool), box_mask(box))
    assert videos["crowd"].instances == ()


def test_polygons_with_fewer_than_three_points_are_dropped():
    assert normalize_segmentation([[1, 2, 3, 4], [1, 2, 3]], HEIGHT, WIDTH) is None
    assert normalize_segmentation([[1, 2, 3, 4], [0, 0, 5, 0, 5, 5]], HEIGHT, WIDTH) == [[0, 0, 5, 0, 5, 5]]
    assert normalize_segmentation(None, HEIGHT, WIDTH) is None


def test_unusable_annotations_raise_a_dataset_error(tmp_path):
    with pytest.raises(AvisDatasetError, match="train.json: no such AVISeg annotations file"):
        load_aviseg_split(tmp_path, "train")
    with pytest.raises(ValueError, match="does not fit"):
        normalize_segmentation({"size": [HEIGHT + 1, WIDTH], "counts": [0, 10]}, HEIGHT, WIDTH)


def test_videos_without_annotations_are_filtered(aviseg_root):
    dataset = AvisegClipDataset(aviseg_root)
    assert [video.name for video in dataset.videos] == ["rects", "single"]
    assert len(dataset) == 2


def test_a_clip_has_the_documented_shapes_and_the_audio_rows_of_its_frames(aviseg_root):
    torch.manual_seed(0)
    clip = AvisegClipDataset(aviseg_root)[0]
    num_instances = len(clip.class_labels)
    assert clip.frames.shape == (5, 3, HEIGHT, WIDTH) and clip.frames.dtype == torch.uint8
    assert clip.audio.shape == (5, 128) and clip.audio.dtype == torch.float32
    assert clip.mask_labels.shape == (num_instances, 5, HEIGHT, WIDTH) and clip.mask_labels.dtype == torch.bool
    assert clip.class_labels.dtype == torch.long and num_instances >= 1
    assert clip.frame_indices.tolist() == sorted(clip.frame_indices.tolist())
    np.testing.assert_array_equal(clip.audio[:, 0].numpy(), 1000.0 + clip.frame_indices.numpy())


def test_masks_cover_their_rectangles_and_are_empty_where_the_instance_is_absent(aviseg_root):
    dataset = AvisegClipDataset(aviseg_root)
    seen, absent_first = set(), 0
    for seed in range(8):
        torch.manual_seed(seed)
        clip = dataset[0]
        colour_of = {label: colour for colour, label in LABELS.items()}
        for masks, label in zip(clip.mask_labels, clip.class_labels.tolist(), strict=True):
            colour = colour_of[label]
            seen.add(colour)
            for mask, frame, frame_index in zip(masks, clip.frames, clip.frame_indices.tolist(), strict=True):
                present = {"red": True, "blue": frame_index >= 10, "green": frame_index < 5}[colour]
                if present:
                    assert iou(mask, colour_pixels(frame, colour)) > 0.9
                else:
                    assert not mask.any()
            absent_first += not masks[0].any()
    assert seen == {"red", "blue", "green"}
    assert absent_first > 0  # instances absent from a clip's first frame keep their class (the original's did not)


def test_frame_sampling_takes_the_reference_and_others_within_the_range():
    generator = torch.Generator().manual_seed(0)
    spans = []
    for _ in range(300):
        indices = sample_frame_indices(100, 5, 20, generator)
        assert len(indices) == 5 and indices == sorted(indices)
        assert all(0 <= index < 100 for index in indices)
        # some sampled frame is the reference: every other frame lies within 20 of it
        assert any(all(abs(index - reference) <= 20 for index in indices) for reference in indices)
        spans.append(indices[-1] - indices[0])
    assert max(spans) > 30  # frames on both sides of the reference
    # drawn with replacement, as np.random.choice's default: a 3-frame video still gives 5 frames
    short = sample_frame_indices(3, 5, 20, generator)
    assert len(short) == 5 and set(short) <= {0, 1, 2}
    assert sample_frame_indices(1, 5, 20, generator) == [0] * 5


def test_a_one_frame_video_repeats_its_frame(aviseg_root):
    clip = AvisegClipDataset(aviseg_root)[1]
    assert clip.frame_indices.tolist() == [0] * 5
    assert clip.mask_labels.shape == (1, 5, HEIGHT, WIDTH) and clip.mask_labels.any()
    assert torch.equal(clip.mask_labels, clip.mask_labels[:, :1].expand(-1, 5, -1, -1))


@pytest.mark.parametrize("crop_and_flip", [1.0, 0.0], ids=["cropped-flipped", "resized"])
def test_augmentation_keeps_masks_on_their_rectangles(aviseg_root, crop_and_flip):
    augmentation = ClipAugmentation(crop_probability=crop_and_flip, flip_probability=crop_and_flip)
    dataset = AvisegClipDataset(aviseg_root, augmentation=augmentation)
    colour_of = {label: colour for colour, label in LABELS.items()}
    checked = 0
    for seed in range(3):
        torch.manual_seed(seed)
        clip = dataset[0]
        height, width = clip.frames.shape[-2:]
        assert min(height, width) in range(288, 513, 32) or max(height, width) == 768
        for masks, label in zip(clip.mask_labels, clip.class_labels.tolist(), strict=True):
            for mask, frame in zip(masks, clip.frames, strict=True):
                if mask.sum() > 400:  # a crop may leave a sliver of an instance; its edge dominates its IoU
                    assert iou(mask, colour_pixels(frame, colour_of[label])) > 0.9
                    checked += 1
    assert checked >= 15


def test_flip_mirrors_frames_and_masks(aviseg_root):
    keep_size = {"min_sizes": (HEIGHT,), "max_size": 1000, "crop_probability": 0.0}
    clips = []
    for flip_probability in (0.0, 1.0):
        augmentation = ClipAugmentation(**keep_size, flip_probability=flip_probability)
        dataset = AvisegClipDataset(aviseg_root, augmentation=augmentation)
        torch.manual_seed(4)
        clips.append(dataset[0])
    plain, flipped = clips
    assert torch.equal(flipped.frame_indices, plain.frame_indices)
    assert torch.equal(flipped.frames, plain.frames.flip(-1))
    assert torch.equal(flipped.mask_labels, plain.mask_labels.flip(-1))
    assert not torch.equal(plain.frames, flipped.frames)


@pytest.mark.parametrize("size", [(720, 1280), (48, 64), (1080, 608)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_crops_respect_the_size_range_and_move_in_a_line(size):
    augmentation = ClipAugmentation()
    generator = torch.Generator().manual_seed(0)
    cropped = flipped = moving = 0
    for _ in range(300):
        transforms = augmentation.sample(5, *size, generator)
        steps = [transform.steps for transform in transforms]
        if len(steps[0]) > 1 and isinstance(steps[0][1], Crop):
            cropped += 1
            first_resize = steps[0][0]
            assert min(first_resize.height, first_resize.width) in (400, 500, 600) or (
                max(first_resize.height, first_resize.width) == 1333
            )
            crops = [frame_steps[1] for frame_steps in steps]
            low = [min(first_resize.height, 384), min(first_resize.width, 384)]
            high = [min(first_resize.height, 600), min(first_resize.width, 600)]
            assert low[0] <= crops[0].height <= high[0] and low[1] <= crops[0].width <= high[1]
            assert len({(crop.height, crop.width) for crop in crops}) == 1  # one size per clip
            for crop in crops:
                assert 0 <= crop.top <= first_resize.height - crop.height
                assert 0 <= crop.left <= first_resize.width - crop.width
            for offsets in ([crop.top for crop in crops], [crop.left for crop in crops]):
                assert offsets == sorted(offsets) or offsets == sorted(offsets, reverse=True)
                moving += len(set(offsets)) > 1
        final = steps[0][-1] if not isinstance(steps[0][-1], HorizontalFlip) else steps[0][-2]
        assert isinstance(final, Resize)
        assert min(final.height, final.width) in range(288, 513, 32) or max(final.height, final.width) == 768
        assert max(final.height, final.width) <= 768
        assert len({(t.height, t.width) for t in transforms}) == 1
        flipped += isinstance(steps[0][-1], HorizontalFlip)
    assert 100 < cropped < 200 and 100 < flipped < 200  # each with probability 1/2
    assert moving > 0.5 * cropped


def test_collate_pads_frames_and_masks_to_a_multiple_of_32(aviseg_root):
    dataset = AvisegClipDataset(aviseg_root)
    torch.manual_seed(0)
    clips = [dataset[0], dataset[1]]
    clips[1].frames = clips[1].frames[..., :40, :50]
    clips[1].mask_labels = clips[1].mask_labels[..., :40, :50]
    image_processor = AvisImageProcessor()
    batch = collate_clips(clips, image_processor)
    assert batch["pixel_values"].shape == (2, 5, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32
    # the processor's normalisation, and zeros in the padding
    assert torch.equal(batch["pixel_values"][1, :, :, :40, :50], image_processor.normalize(clips[1].frames))
    assert batch["pixel_values"][1, :, :, 40:].abs().max() == 0 and batch["pixel_values"][1, ..., 50:].abs().max() == 0
    assert batch["audio"].shape == (2, 5, 128)
    assert batch["frame_indices"].shape == (2, 5) and batch["video_ids"] == [1, 4]
    for index, clip in enumerate(clips):
        padded = batch["mask_labels"][index]
        assert padded.shape == (len(clip.class_labels), 5, 64, 64)
        assert padded.sum() == clip.mask_labels.sum()
        assert torch.equal(padded[..., : clip.frames.shape[-2], : clip.frames.shape[-1]], clip.mask_labels)
        assert torch.equal(batch["class_labels"][index], clip.class_labels)


def test_a_batch_feeds_the_loss_at_a_quarter_of_the_padded_size(aviseg_root):
    config = AvisConfig(decoder_layers=1, num_frame_query_layers=1, clip_decoder_layers=1, train_num_points=64)
    dataset = AvisegClipDataset(aviseg_root, augmentation=ClipAugmentation(min_sizes=(48,), max_size=96))
    torch.manual_seed(0)
    batch = collate_clips([dataset[0], dataset[1]], AvisImageProcessor())
    batch_size, num_frames, _, height, width = batch["pixel_values"].shape
    size = (height // 4, width // 4)
    outputs = (
        [torch.randn(batch_size * num_frames, 4, 27) for _ in range(2)],
        [torch.randn(batch_size * num_frames, 4, *size) for _ in range(2)],
        torch.randn(1, 1, batch_size, 3, 27),
        torch.randn(1, 1, batch_size, 3, num_frames, *size),
        torch.randn(1, 1, batch_size, 3, 8),
        torch.randn(1, batch_size, num_frames, 4, 8),
    )
    losses = AvisLoss(config)(*outputs, batch["mask_labels"], batch["class_labels"])
    assert torch.isfinite(losses["loss"]) and losses["loss_avism_mask"].item() > 0
