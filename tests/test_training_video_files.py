"""Fine-tuning on one's own videos: video files with sound and one annotations file in, a model of one's classes out.

The datasets are sounding-shapes videos written at test time (`training.sounding_shapes`: mp4 files with AAC sound,
or lossless ones beside the same videos as AVISeg frame folders); the model is the shipped default (4 shapes), taught
a fifth class, the star. Bad datasets are table-driven cases (`entry_cases`): one line, status 2, before any step.
"""

import json
import math
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from modeling_avis import AvisImageProcessor, AvisProcessor
from modeling_avis.errors import AvisDatasetError, AvisEvaluationError, AvisInputError
from modeling_avis.feature_extraction_avis import AvisFeatureExtractor
from modeling_avis.loading import load_model, load_processor
from modeling_avis.modeling_avis import AvisForAudioVisualInstanceSegmentation
from modeling_avis.video_io import read_frames
from training import train
from training.annotations import segmentation_rle
from training.augmentation import ClipAugmentation
from training.build_default_model import DEFAULT_MODEL
from training.data import AvisegClipDataset, collate_clips, load_aviseg_split
from training.evaluation import class_average_precisions, evaluate_predictions
from training.evaluation.inputs import load_ground_truth
from training.sampling import SeededDataset
from training.sounding_shapes import (
    CLASSES_WITH_STAR,
    FOUR_SHAPES,
    LOSSLESS,
    WITH_STAR,
    ShapeSet,
    sample_video,
    write_split,
    write_video_split,
)

from .app_media import write_video
from .conftest import tiny_config
from .entry_cases import Case, fresh_accelerate_state, out, run_case  # noqa: F401 (the fixture applies here)
from .fixture_data import MEDIA
from .synthetic_aviseg import EVAL_VIDEOS, HEIGHT, WIDTH
from .synthetic_aviseg import write_split as write_squares

LABELS = ",".join(shape.name for shape in CLASSES_WITH_STAR)
STAR = len(CLASSES_WITH_STAR) - 1


# --- the data ------------------------------------------------------------------------------------------------------


def video_files(folder: Path, train: int = 3, val: int = 2, shape_set: ShapeSet = WITH_STAR) -> Path:
    """Sounding-shapes mp4 files (by default with a star in each): `<folder>/data/{train,val}.json` and their
    videos."""
    data = folder / "data"
    write_video_split(data, "train", train, seed=1, shape_set=shape_set)
    write_video_split(data, "val", val, seed=1, shape_set=shape_set)
    return data


def edited(path: Path, edit) -> None:
    dataset = json.loads(path.read_text())
    edit(dataset)
    path.write_text(json.dumps(dataset))


def test_the_star_videos_carry_their_frames_sound_and_annotations(tmp_path):
    data = video_files(tmp_path, train=4, val=0)
    dataset = json.loads((data / "train.json").read_text())
    assert [category["name"] for category in dataset["categories"]] == [shape.name for shape in CLASSES_WITH_STAR]
    for video in dataset["videos"]:
        assert set(video) == {"id", "video", "fps", "length", "height", "width"}
        assert (data / video["video"]).suffix == ".mp4" and video["fps"] == 1
    videos = load_aviseg_split(data / "train.json")
    assert [video.num_frames for video in videos] == [entry["length"] for entry in dataset["videos"]]
    assert all(video.times == tuple(float(k) for k in range(video.num_frames)) for video in videos)
    # the star is a source in about half the videos, and on screen silent in some others: its sound tells which
    draws = [sample_video(np.random.default_rng([1, 0, k]), CLASSES_WITH_STAR, STAR)[1] for k in range(400)]
    assert 0.45 < np.mean([any(s.label == STAR and s.sounding for s in shapes) for shapes in draws]) < 0.65
    assert 0.1 < np.mean([any(s.label == STAR and not s.sounding for s in shapes) for shapes in draws]) < 0.2


def test_a_video_file_is_decoded_at_its_annotated_times_with_the_processors_log_mel(tmp_path):
    data = video_files(tmp_path, train=1, val=0)
    processor = load_processor(DEFAULT_MODEL, load_model(DEFAULT_MODEL).config)
    dataset = AvisegClipDataset(
        data / "train.json", audio_input="audio_log_mel", labels=LABELS.split(","), processor=processor
    )
    torch.manual_seed(0)
    clip = dataset[0]
    (video,) = dataset.videos
    times = [video.times[index] for index in clip.frame_indices.tolist()]
    # what inference gives for those frames: the same decoding, and the log-mel of the processor's settings
    inputs = processor(video.video_path, timestamps=sorted(set(times)), audio_input="audio_log_mel")
    rows = [sorted(set(times)).index(time) for time in times]
    assert torch.equal(clip.audio, inputs["audio_log_mel"][0, rows])
    whole = processor(video.video_path, fps=1.0)
    assert torch.equal(inputs["pixel_values"][0], whole["pixel_values"][0, sorted(set(clip.frame_indices.tolist()))])


def test_frame_folders_log_mel_is_the_processors_with_its_saved_settings(tmp_path):
    write_split(tmp_path, "train", 2, seed=1, shape_set=WITH_STAR)
    settings = AvisProcessor(feature_extractor=AvisFeatureExtractor(log_offset=0.5, max_frequency=4000.0))
    clips = []
    for processor in (settings, AvisProcessor()):
        dataset = AvisegClipDataset(tmp_path, audio_input="audio_log_mel", processor=processor)
        torch.manual_seed(3)
        clips.append(dataset[0])
    (video, *_) = dataset.videos
    times = [video.times[index] for index in clips[0].frame_indices.tolist()]
    assert torch.equal(clips[0].audio, settings.audio_log_mel(video.wav_path, times))
    assert clips[0].audio.min() >= math.log(0.5) and clips[1].audio.min() < math.log(0.5)


CLIP = MEDIA / "dogs_640x360.mp4"


def test_given_times_are_sampled_as_a_rate_samples_them():
    processor = AvisProcessor()
    by_rate = processor(CLIP, fps=2.0, max_duration=3.0)
    by_times = processor(CLIP, timestamps=[0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert by_times.video_metadata[0].timestamps == by_rate.video_metadata[0].timestamps
    for name in ("pixel_values", "audio_log_mel"):
        assert torch.equal(by_times[name], by_rate[name])


def test_each_given_time_takes_the_frame_on_screen_then():
    times = [0.3, 1.71, 1.72, 3.99]
    every = list(read_frames(CLIP, fps=None))
    sampled = list(read_frames(CLIP, timestamps=times))
    assert [frame.time for frame in sampled] == times
    for time, frame in zip(times, sampled, strict=True):
        on_screen = [candidate for candidate in every if candidate.time <= time + 1e-4][-1]
        assert np.array_equal(frame.image, on_screen.image)


def test_a_time_past_the_end_or_out_of_order_is_refused(tmp_path):
    with pytest.raises(AvisInputError, match="no frame at 9 s, past the end of the video"):
        AvisProcessor()(CLIP, timestamps=[1.0, 9.0])
    with pytest.raises(AvisInputError, match="timestamps must increase"):
        AvisProcessor()(CLIP, timestamps=[2.0, 1.0])
    with pytest.raises(TypeError, match="unexpected keyword argument 'fsp'"):
        AvisProcessor()(CLIP, fsp=2.0)
    write_squares(tmp_path, "val", EVAL_VIDEOS)
    folder = tmp_path / "val" / "JPEGImages" / EVAL_VIDEOS[0].name
    inputs = AvisProcessor(AvisImageProcessor(shortest_edge=HEIGHT))(folder, timestamps=[0.5, 2.0, 2.9])
    whole = AvisProcessor(AvisImageProcessor(shortest_edge=HEIGHT))(folder)
    assert torch.equal(inputs["pixel_values"][0], whole["pixel_values"][0, [0, 2, 2]])
    with pytest.raises(AvisInputError, match="the folder's 6 frames at 1 fps end before it"):
        AvisProcessor()(folder, timestamps=[6.0])


# --- the same dataset as AVISeg frame folders ----------------------------------------------------------------------


def test_frame_folders_and_video_files_of_the_same_videos_give_the_same_batches(tmp_path):
    # PNG frames and a WAV beside them, and the same videos as lossless files (RGB H.264 and PCM sound)
    write_split(tmp_path / "folders", "train", 4, seed=1, shape_set=WITH_STAR, frame_suffix=".png")
    write_video_split(tmp_path / "files", "train", 4, seed=1, shape_set=WITH_STAR, encoding=LOSSLESS)
    processor = load_processor(DEFAULT_MODEL, load_model(DEFAULT_MODEL).config)
    augmentation = ClipAugmentation(min_sizes=(80, 96), max_size=128, crop_probability=0.5)
    datasets = [
        SeededDataset(
            AvisegClipDataset(root, "train", 5, 20, augmentation, "audio_log_mel", LABELS.split(","), processor), 7
        )
        for root in (tmp_path / "folders", tmp_path / "files" / "train.json")
    ]
    assert len(datasets[0]) == len(datasets[1]) >= 3
    for epoch in (0, 1):
        for index in range(len(datasets[0])):
            folders, files = (
                collate_clips([dataset[(epoch, index)]], processor.image_processor) for dataset in datasets
            )
            assert torch.equal(folders["frame_indices"], files["frame_indices"])
            assert (folders["pixel_values"] - files["pixel_values"]).abs().max() <= 1 / 57.12  # a grey level
            assert torch.equal(folders["audio"], files["audio"])  # the log-mel, to the bit
            assert all(torch.equal(a, b) for a, b in zip(folders["class_labels"], files["class_labels"], strict=True))
            assert all(torch.equal(a, b) for a, b in zip(folders["mask_labels"], files["mask_labels"], strict=True))


# --- one set of annotation rules -----------------------------------------------------------------------------------

BOX = (10, 8, 26, 24)  # top, left, bottom, right


def box_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[BOX[0] : BOX[2], BOX[1] : BOX[3]] = True
    return mask


def run_lengths() -> dict:
    pixels = box_mask().flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], pixels, [1 - pixels[-1]]])))
    return {"size": [HEIGHT, WIDTH], "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def compressed() -> dict:
    rle = mask_utils.encode(np.asfortranarray(box_mask().astype(np.uint8)))
    return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode()}


POLYGON = [BOX[1], BOX[0], BOX[3], BOX[0], BOX[3], BOX[2], BOX[1], BOX[2]]
# Cases training read one way and the evaluator another before (training accepted them, the evaluator refused), and
# the mask both read now.
ONE_OUTCOME = {
    "bare_run_lengths": (run_lengths(), box_mask()),
    "compressed_counts_in_a_list": ([compressed()], box_mask()),
    "bare_compressed_counts": (compressed(), box_mask()),
    "empty_list_is_absent": ([], None),
    "polygon_of_two_points_is_dropped": ([[4, 4, 20, 4], POLYGON], box_mask()),
    "only_a_polygon_of_two_points_is_absent": ([[4, 4, 20, 4]], None),
}


@pytest.mark.parametrize("name", list(ONE_OUTCOME), ids=list(ONE_OUTCOME))
def test_training_and_evaluation_read_a_segmentation_alike(name, tmp_path):
    segmentation, expected = ONE_OUTCOME[name]
    write_squares(tmp_path, "val", EVAL_VIDEOS)
    edited(
        tmp_path / "val.json", lambda dataset: dataset["annotations"][0]["segmentations"].__setitem__(0, segmentation)
    )
    (video, *_) = load_aviseg_split(tmp_path, "val")
    trained = segmentation_rle(video.instances[0].segmentations[0], HEIGHT, WIDTH)
    evaluated = load_ground_truth(tmp_path / "val.json").tracks[0].masks[0]
    for mask in (trained, evaluated):
        if expected is None:
            assert mask is None
        else:
            np.testing.assert_array_equal(mask_utils.decode(mask).astype(bool), expected)


def test_training_and_evaluation_refuse_a_mask_of_another_size_for_one_reason(tmp_path):
    write_squares(tmp_path, "val", EVAL_VIDEOS)
    other = {"size": [HEIGHT, WIDTH + 1], "counts": [HEIGHT * (WIDTH + 1)]}
    edited(tmp_path / "val.json", lambda dataset: dataset["annotations"][0]["segmentations"].__setitem__(0, other))
    reason = f"an RLE mask of size [{HEIGHT}, {WIDTH + 1}] does not fit its {HEIGHT}x{WIDTH} video"
    with pytest.raises(AvisDatasetError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        load_aviseg_split(tmp_path, "val")
    with pytest.raises(AvisEvaluationError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        load_ground_truth(tmp_path / "val.json")


def perfect_predictions(truth: dict) -> list[dict]:
    """Every annotated track of an annotations file predicted exactly, one compressed RLE a frame."""
    height, width = truth["videos"][0]["height"], truth["videos"][0]["width"]
    empty = np.zeros((height, width), dtype=np.uint8)
    predictions = []
    for index, annotation in enumerate(truth["annotations"]):
        masks = [
            mask_utils.merge(mask_utils.frPyObjects(s, height, width))
            if s is not None
            else mask_utils.encode(np.asfortranarray(empty))
            for s in annotation["segmentations"]
        ]
        segmentations = [{"size": rle["size"], "counts": rle["counts"].decode()} for rle in masks]
        predictions.append(
            {"video_id": annotation["video_id"], "score": 0.5 + 0.01 * index,
             "category_id": annotation["category_id"], "segmentations": segmentations}
        )  # fmt: skip
    return predictions


def test_an_annotations_file_without_areas_or_crowd_flags_is_scored_by_its_masks(tmp_path):
    data = video_files(tmp_path, train=0, val=2)
    truth = json.loads((data / "val.json").read_text())
    bare = json.loads(json.dumps(truth))
    for annotation in bare["annotations"]:
        for key in ("areas", "bboxes", "iscrowd", "height", "width"):
            annotation.pop(key)
    predictions = perfect_predictions(truth)
    # NaN (no frame of a kind) where the full file has NaN too
    assert evaluate_predictions(bare, predictions) == pytest.approx(
        evaluate_predictions(truth, predictions), nan_ok=True
    )
    assert evaluate_predictions(bare, predictions)["mAP"] == pytest.approx(100.0)


def test_the_readmes_annotations_example_is_read_by_the_rules_it_explains(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Fine-tune on your own videos") :]
    example = json.loads(section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)])
    truth = load_ground_truth(example)
    (track,) = truth.tracks
    assert truth.categories[track.category_id] == "star" and truth.videos[1].num_frames == 3
    assert [None if mask is None else int(mask_utils.area(mask)) for mask in track.masks][1:] == [None, 40]
    assert track.masks[0] is not None and 100 < mask_utils.area(track.masks[0]) < 400
    # and as training finds it, its video written where it says
    video = example["videos"][0]
    (tmp_path / "train").mkdir()
    write_video(tmp_path / video["video"], width=128, height=96, fps=1, num_frames=3)
    (tmp_path / "train.json").write_text(json.dumps(example))
    (trained,) = load_aviseg_split(tmp_path / "train.json", labels=["circle", "square", "triangle", "diamond", "star"])
    assert trained.times == (0.0, 1.0, 2.0) and trained.instances[0].label == 4


# --- your classes --------------------------------------------------------------------------------------------------


def test_new_labels_keep_the_rows_of_known_classes_and_every_other_weight():
    model = load_model(DEFAULT_MODEL)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.set_labels({0: "star", 1: "square", 2: "circle"})
    after = model.state_dict()
    for head in ("model.frame_decoder.class_predictor", "model.clip_module.class_predictor"):
        for part in ("weight", "bias"):
            old, new = before[f"{head}.{part}"], after[f"{head}.{part}"]
            assert new.shape[0] == 4  # 3 classes and no-object
            assert torch.equal(new[1], old[1]) and torch.equal(new[2], old[0]) and torch.equal(new[3], old[4])
        assert not torch.equal(after[f"{head}.weight"][0], before[f"{head}.weight"][3])  # star: a new row
    changed = [key for key in before if "class_predictor" not in key and not torch.equal(before[key], after[key])]
    assert changed == []
    assert model.config.id2label == {0: "star", 1: "square", 2: "circle"} and model.config.num_labels == 3
    assert model.criterion.clip_empty_weight.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])


def test_a_converted_avism_fine_tunes_on_new_classes_the_same_way(tmp_path):
    from .conftest import converted_model

    model = converted_model("r50_tiny")
    before = model.model.clip_module.class_predictor.weight.detach().clone()
    (guitar,) = [index for index, name in model.config.id2label.items() if name == "guitar"]
    model.save_pretrained(tmp_path / "converted")
    write_squares(tmp_path / "aviseg", "train", EVAL_VIDEOS)
    arguments = [
        "--model", str(tmp_path / "converted"), "--labels", "guitar,red,blue", "--data", str(tmp_path / "aviseg"),
        "--output-dir", str(tmp_path / "run"), "--num-frames", "2", "--min-sizes", "64", "--max-size", "64",
        "--num-workers", "0", "--max-train-steps", "1", "--report-to", "none", "--learning-rate", "1e-12",
    ]  # fmt: skip
    train.train(arguments)
    tuned = AvisForAudioVisualInstanceSegmentation.from_pretrained(tmp_path / "run")
    assert tuned.config.id2label == {0: "guitar", 1: "red", 2: "blue"}
    kept = tuned.model.clip_module.class_predictor.weight.detach()
    torch.testing.assert_close(kept[0], before[guitar], atol=1e-6, rtol=0)  # one step at a negligible rate
    torch.testing.assert_close(kept[-1], before[-1], atol=1e-6, rtol=0)


# --- the command line: training, evaluation, the dataset check ----------------------------------------------------


def training(*extra: str, edit=None, labels: str = LABELS):
    """training.train from the default model on 3 star videos (2 for val: `{data}` in `extra`), 2 steps."""

    def make(folder: Path) -> list[str]:
        data = video_files(folder)
        if edit is not None:
            edit(data)
        return [
            "--model", str(DEFAULT_MODEL), "--labels", labels, "--data", str(data / "train.json"),
            "--output-dir", str(out(folder) / "run"), "--num-workers", "0", "--threads", "1",
            "--max-train-steps", "2", "--report-to", "none", *(e.replace("{data}", str(data)) for e in extra),
        ]  # fmt: skip

    return make


def features_model_on_video_files(folder: Path) -> list[str]:
    """A model without an audio encoder (it reads VGGish features) given video files."""
    data = video_files(folder)
    tiny_config(id2label=dict(enumerate(LABELS.split(",")))).to_json_file(folder / "config.json")
    return [
        "--config", str(folder / "config.json"), "--data", str(data / "train.json"), "--output-dir",
        str(out(folder) / "run"), "--num-workers", "0", "--max-train-steps", "1", "--report-to", "none",
    ]  # fmt: skip


def evaluating(edit=None):
    """training.evaluate_model of the default model on 2 videos of the shapes it knows, as video files."""

    def make(folder: Path) -> list[str]:
        data = video_files(folder, train=0, shape_set=FOUR_SHAPES)
        if edit is not None:
            edit(data)
        return ["--model", str(DEFAULT_MODEL), "--data", str(data / "val.json"), "--json", str(out(folder) / "r.json")]

    return make


def checking(edit=None, *extra: str):
    def make(folder: Path) -> list[str]:
        data = video_files(folder)
        if edit is not None:
            edit(data)
        return [str(data / "train.json"), *extra]

    return make


def first_video(edit):
    return lambda data: edited(data / "train.json", lambda dataset: edit(dataset["videos"][0]))


def soundless(data: Path) -> None:
    video = json.loads((data / "train.json").read_text())["videos"][0]
    write_video(data / video["video"], width=128, height=96, fps=1, num_frames=video["length"], audio=False)


def resized(data: Path) -> None:
    video = json.loads((data / "train.json").read_text())["videos"][0]
    write_video(data / video["video"], width=64, height=48, fps=1, num_frames=video["length"])


def mask_of_another_size(data: Path) -> None:
    def edit(dataset):
        annotation = dataset["annotations"][0]
        frame = next(t for t, s in enumerate(annotation["segmentations"]) if s is not None)
        annotation["segmentations"][frame] = [{"size": [48, 64], "counts": [48 * 64]}]

    edited(data / "train.json", edit)


def trained_a_star(folder: Path, stdout: str, stderr: str) -> None:
    run = folder / "out" / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {str(k): name for k, name in enumerate(LABELS.split(","))}
    best = json.loads((run / "best" / "metrics.json").read_text())
    evaluated = {
        int(p.name.removeprefix("step_")): json.loads((p / "metrics.json").read_text())
        for p in (run / "eval").iterdir()
    }
    assert sorted(evaluated) == [1, 2] and best["step"] == max(
        evaluated, key=lambda s: train.best_score(evaluated[s], "mean")
    )
    # the kept model's processor keeps the instances above the threshold that was best on val
    processor = json.loads((run / "best" / "processor_config.json").read_text())
    assert best["threshold"] in train.THRESHOLDS and processor["score_threshold"] == best["threshold"]
    frames = sum(video["length"] for video in json.loads((folder / "data" / "val.json").read_text())["videos"])
    assert all(sum(m[f"FSLA{kind}_all"] for kind in "nsm") == frames for m in evaluated.values())  # val's frames
    assert stdout.startswith("plan: ") and "star (new: rows of the class heads that start untrained)" in stdout
    assert "to go" in stdout and "best so far" in stdout


def evaluated_videos(folder: Path, stdout: str, stderr: str) -> None:
    results = json.loads((folder / "out" / "r.json").read_text())
    truth = json.loads((folder / "data" / "val.json").read_text())
    lengths = {video["id"]: video["length"] for video in truth["videos"]}
    assert results and all(len(entry["segmentations"]) == lengths[entry["video_id"]] for entry in results)
    assert "FSLA" in stdout


def described(folder: Path, stdout: str, stderr: str) -> None:
    lines = stdout.splitlines()
    assert lines[0].endswith("3 videos (3 video files), " + lines[0].split("), ")[1])
    assert lines[1] == "classes:" and [line.split()[0] for line in lines[2:7]] == LABELS.split(",")


CASES = {
    "train_on_video_files": Case(
        "train", training("--eval-split", "{data}/val.json", "--eval-steps", "1"), check=trained_a_star
    ),
    "evaluate_video_files": Case("evaluate_model", evaluating(), check=evaluated_videos),
    "check_video_files": Case("check_dataset", checking(None, "--labels", LABELS), check=described),
    "train_missing_video": Case(
        "train", training(edit=lambda data: (data / "train" / "train_0000.mp4").unlink()), "no such video file"
    ),
    "train_video_without_sound": Case("train", training(edit=soundless), "train_0000.mp4: the video has no sound"),
    "train_times_past_the_end": Case(
        "train", training(edit=first_video(lambda video: video.update(fps=0.5))), "is past the video's end"
    ),
    "train_timestamps_past_the_end": Case(
        "train",
        training(
            edit=first_video(
                lambda video: [video.pop("fps"), video.update(timestamps=[k * 3.0 for k in range(video["length"])])]
            )
        ),
        "is past the video's end",
    ),
    "train_timestamps_not_increasing": Case(
        "train",
        training(edit=first_video(lambda video: [video.pop("fps"), video.update(timestamps=[1.0] * video["length"])])),
        "'timestamps' must increase",
    ),
    "train_fps_and_timestamps": Case(
        "train",
        training(edit=first_video(lambda video: video.update(timestamps=list(range(video["length"]))))),
        "either 'fps' (from 0 s) or 'timestamps'",
    ),
    "train_frames_and_video": Case(
        "train", training(edit=first_video(lambda video: video.update(file_names=["a/0.jpg"]))), "either 'file_names'"
    ),
    "train_entry_of_another_size": Case(
        "train", training(edit=resized), "its frames are 64x48, its entry says 128x96"
    ),
    "train_mask_of_another_size": Case(
        "train", training(edit=mask_of_another_size), "an RLE mask of size [48, 64] does not fit its 96x128 video"
    ),
    "train_unknown_class": Case(
        "train",
        training(labels="circle,square,triangle,diamond"),
        "annotated classes that are not among the classes to learn (circle, square, triangle, diamond): 'star'",
    ),
    "train_labels_twice": Case("train", training(labels="star,star"), "name each class once"),
    "train_push_to_hub_not_a_repository": Case(
        "train", training("--push-to-hub", "not a repository"), "not a repository: not a Hub repository id"
    ),
    "train_json_data_with_a_split_name": Case(
        "train",
        training("--eval-split", "val"),
        "--data is an annotations file: give --eval-split an annotations file",
    ),
    "train_features_model_on_video_files": Case(
        "train", features_model_on_video_files, "a video file has its sound, not VGGish features"
    ),
    "train_freeze_a_part_the_model_lacks": Case(
        "train",
        lambda folder: [*features_model_on_video_files(folder), "--freeze", "audio_encoder"],
        "--freeze audio_encoder: this model has no audio encoder",
    ),
    "evaluate_missing_video": Case(
        "evaluate_model",
        evaluating(edit=lambda data: (data / "val" / "val_0001.mp4").unlink()),
        "val_0001.mp4: no such video file (video 2 of val.json)",
    ),
    "check_missing_video": Case(
        "check_dataset", checking(lambda data: (data / "train" / "train_0002.mp4").unlink()), "no such video file"
    ),
    "check_unknown_class": Case(
        "check_dataset", checking(None, "--model", str(DEFAULT_MODEL)), "annotated classes that are not among"
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_every_dataset_ends_in_a_model_or_one_line_before_any_step(name, tmp_path, capsys):
    run_case(CASES[name], tmp_path, capsys)


def test_the_push_to_hub_uploads_the_best_model_at_the_end(tmp_path):
    arguments = training("--eval-split", "{data}/val.json", "--push-to-hub", "you/shapes-star")
    with mock.patch.object(train, "push_folder_to_hub") as push:
        train.train(arguments(tmp_path))
    push.assert_called_once_with(out(tmp_path) / "run" / "best", "you/shapes-star")


def test_class_average_precisions_are_what_map_averages(tmp_path):
    data = video_files(tmp_path, train=0, val=4, shape_set=FOUR_SHAPES)
    truth = json.loads((data / "val.json").read_text())
    predictions = perfect_predictions(truth)
    for entry in predictions[::2]:  # every other track a frame short
        entry["segmentations"][-1] = entry["segmentations"][0]
    precisions = class_average_precisions(truth, predictions)
    annotated = {
        c["name"] for c in truth["categories"] if any(a["category_id"] == c["id"] for a in truth["annotations"])
    }
    assert set(precisions) == annotated and len(annotated) >= 2
    assert np.mean(list(precisions.values())) == pytest.approx(evaluate_predictions(truth, predictions)["mAP"])
    assert min(precisions.values()) < 100


def test_the_fine_tuning_benchmark_runs_the_readmes_commands_end_to_end(tmp_path):
    # benchmarks/bench_fine_tune.py on 3 + 2 + 2 videos for 2 steps: data, training.train from the default model
    # with the star, training.evaluate_model on the test videos, each class's AP
    root = Path(__file__).parents[1]
    command = [sys.executable, str(root / "benchmarks" / "bench_fine_tune.py"), "--work-dir", str(tmp_path / "run")]
    command += ["--train", "3", "--val", "2", "--test", "2", "--", "--max-train-steps", "2", "--num-workers", "0"]
    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    trained = json.loads((tmp_path / "run" / "star" / "best" / "config.json").read_text())
    assert list(trained["id2label"].values()) == LABELS.split(",")
    truth = json.loads((tmp_path / "run" / "data" / "test.json").read_text())
    annotated = {
        c["name"] for c in truth["categories"] if any(a["category_id"] == c["id"] for a in truth["annotations"])
    }
    assert {key.removeprefix("AP/") for key in summary if key.startswith("AP/")} == annotated
    assert all(0 <= summary[key] <= 100 for key in ("FSLA", "HOTA", "mAP")) and summary["train_seconds"] > 0
    assert "| AP/star |" in finished.stdout or "star" not in annotated
