"""The sounding-shapes generator: deterministic, annotated exactly where a shape sounds, audible classes."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from modeling_avis.feature_extraction_avis import AvisFeatureExtractor
from modeling_avis.video_io import read_audio
from training.data import AvisegClipDataset
from training.sounding_shapes import HEIGHT, SAMPLE_RATE, WIDTH, generate, sample_video


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return root, generate(root, seed=3, sizes={"train": 6, "val": 0, "test": 12})


def _digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_same_seed_writes_the_same_files(dataset, tmp_path):
    root, _ = dataset
    generate(tmp_path, seed=3, sizes={"train": 6, "val": 0, "test": 12})
    assert _digest(tmp_path) == _digest(root)


def test_annotations_cover_exactly_the_sounding_shapes_pixels(dataset):
    root, splits = dataset
    test = splits["test"]
    assert {c["name"] for c in test["categories"]} == {"circle", "square", "triangle", "diamond"}
    checked = 0
    for annotation in test["annotations"]:
        video = test["videos"][annotation["video_id"] - 1]
        assert len(annotation["segmentations"]) == video["length"]
        for frame, segmentation in zip(video["file_names"], annotation["segmentations"]):
            if segmentation is None:
                continue
            mask = mask_utils.decode(mask_utils.frPyObjects(segmentation, HEIGHT, WIDTH))[..., 0].astype(bool)
            pixels = np.asarray(Image.open(root / "test" / "JPEGImages" / frame), dtype=float)
            inside, outside = pixels[mask], pixels[~mask]
            assert mask.any()
            if mask.sum() > 50:  # (occluded slivers aside) a flat-coloured shape on a textured background
                assert inside.std(0).mean() < outside.std(0).mean()
                checked += 1
    assert checked > 20


def test_each_annotated_class_is_heard_while_it_is_on_screen(dataset):
    root, splits = dataset
    test = splits["test"]
    expected_peak = {1: 440, 2: None, 3: None, 4: 150}
    checked = 0
    for annotation in test["annotations"]:
        peak = expected_peak[annotation["category_id"]]
        if peak is None:
            continue
        name = test["videos"][annotation["video_id"] - 1]["file_names"][0].split("/")[0]
        audio = read_audio(root / "test" / "WAVAudios" / f"{name}.wav", SAMPLE_RATE).samples
        second = next(t for t, s in enumerate(annotation["segmentations"]) if s is not None)
        window = audio[second * SAMPLE_RATE : (second + 1) * SAMPLE_RATE]
        spectrum = np.abs(np.fft.rfft(window))
        band = spectrum[peak - 5 : peak + 6].max()
        assert band > 20 * np.median(spectrum)
        checked += 1
    assert checked >= 3


def test_the_mix_has_silent_single_and_two_source_videos():
    kinds = set()
    for index in range(200):
        _, shapes = sample_video(np.random.default_rng([0, 0, index]))
        sources = [s for s in shapes if s.sounding]
        kinds.add(len(sources))
        assert len({s.label for s in shapes}) == len(shapes)  # never two shapes of a class in a video
        assert len(shapes) > len(sources) or sources  # silent videos still show distractors
    assert kinds == {0, 1, 2}


def test_the_training_reader_takes_the_generated_split(dataset):
    root, splits = dataset
    clip = AvisegClipDataset(root, "train")[0]
    assert clip.frames.shape[1:] == (3, HEIGHT, WIDTH)
    assert clip.audio.shape == (5, 128)
    assert clip.mask_labels.shape[0] == len(clip.class_labels)
    assert json.loads((root / "train.json").read_text()) == splits["train"]


def test_log_mel_clips_come_from_the_wav_second_by_second(dataset):
    root, _ = dataset
    clip = AvisegClipDataset(root, "train", audio_input="audio_log_mel")[0]
    assert clip.audio.shape == (5, 96, 64)
    video = next(v for v in AvisegClipDataset(root, "train").videos if v.video_id == clip.video_id)
    extractor = AvisFeatureExtractor()
    samples = read_audio(video.wav_path, SAMPLE_RATE).samples
    for row, index in enumerate(clip.frame_indices.tolist()):
        second = samples[index * SAMPLE_RATE : (index + 1) * SAMPLE_RATE]
        expected = extractor(second, [0.0], SAMPLE_RATE)["audio_log_mel"][0]
        assert (clip.audio[row] - expected).abs().max() < 1e-4
