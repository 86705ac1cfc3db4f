"""Every entry point on the inputs users have: each case ends in its results, or in one line on stderr with exit
status 2, within a bounded time (a hang guard, not a speed test), with no traceback and no partial file left.

The media are written at test time (`media_corpus`); model folders, datasets, results files and checkpoints are
broken copies of good ones. The app is given the same media in `test_the_app_answers_every_video_with_results_or_one_line`.
"""

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from app.models import DEFAULT_CHOICE
from app.pipeline import AnalysisService
from app.settings import AppSettings
from modeling_avis import AvisImageProcessor, AvisModel, AvisProcessor, save_model_folder
from modeling_avis.errors import AvisError
from modeling_avis.tracks import decode_mask
from training.build_default_model import DEFAULT_MODEL
from training.evaluation import evaluate_predictions

from . import media_corpus
from .app_media import stream_summary
from .conftest import tiny_config
from .entry_cases import BOUND, Case, fresh_accelerate_state, out, run_case  # noqa: F401 (the fixture applies here)
from .fixture_data import ORIGINAL
from .synthetic_aviseg import EVAL_VIDEOS, TRAIN_VIDEOS, write_split

EXAMPLES = Path(__file__).parents[1] / "app" / "examples"


# --- the command line on media ----------------------------------------------------------------------------------


def predict(make_video, *extra: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        video = make_video(folder)
        results, overlay = out(folder) / "results.json", out(folder) / "overlay.mp4"
        return ["predict", str(video), "--summary", "--json", str(results), "--out", str(overlay), *extra]

    return make


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return [frame for frame in container.decode(video=0)]


def overlay_of(width: int, height: int, frames: int, audio: bool = True):
    """The overlay has the source's frames at the source's (even-padded) size, sound as the source; the results
    JSON one mask per sampled frame at the source's size."""

    def check(folder: Path, stdout: str, stderr: str) -> None:
        summary = stream_summary(folder / "out" / "overlay.mp4")
        assert summary["video"]["size"] == (width + width % 2, height + height % 2)
        assert len(decoded_frames(folder / "out" / "overlay.mp4")) == frames
        assert ("audio" in summary) == audio
        for entry in json.loads((folder / "out" / "results.json").read_text()):
            assert decode_mask(entry["segmentations"][0]).shape == (height, width)

    return check


def phone_video_keeps_its_clock(folder: Path, stdout: str, stderr: str) -> None:
    source, overlay = decoded_frames(folder / "phone.mp4"), decoded_frames(folder / "out" / "overlay.mp4")
    assert abs(len(overlay) - len(source)) <= 1
    source_times = np.array([frame.time for frame in source]) - source[0].time
    overlay_times = np.array([frame.time for frame in overlay])
    assert np.abs(overlay_times - source_times).max() < 1e-3 and (np.diff(overlay_times) > 0).all()


def sound_stops_with_the_picture(folder: Path, stdout: str, stderr: str) -> None:
    summary = stream_summary(folder / "out" / "overlay.mp4")
    assert summary["video"]["duration"] == pytest.approx(2.0, abs=0.01)
    assert summary["audio"]["duration"] <= 2.1  # the source's sound lasts an hour
    assert stdout.startswith("long_sound.mp4: ") and " in 2 frames" in stdout


def one_track_through_the_long_video(folder: Path, stdout: str, stderr: str) -> None:
    assert "[1] triangle" in stdout and "322 frames" in stdout
    long_video_results(folder / "out" / "overlay.mp4", folder / "out" / "results.json")


def long_video_results(overlay: Path, results: Path) -> None:
    """One track, the triangle, with a mask in 300+ of the 322 sampled frames; a playable overlay of them all; a
    results JSON that the evaluator scores against the looped ground truth."""
    entries = json.loads(results.read_text())
    assert [entry["category_id"] for entry in entries] == [3]
    areas = [decode_mask(rle).sum() for rle in entries[0]["segmentations"]]
    assert len(areas) == 322 and sum(area > 0 for area in areas) >= 300
    assert len(decoded_frames(overlay)) == 322
    assert evaluate_predictions(looped_ground_truth(23), results)["LocA"] >= 85


def looped_ground_truth(repeats: int) -> dict:
    """The solo example's ground truth repeated as `media_corpus.long_shapes` repeats its frames."""
    truth = json.loads((EXAMPLES / "shapes_solo.json").read_text())
    video = truth["videos"][0]
    length = video["length"] * repeats
    video.update(length=length, file_names=[f"long_solo/{k:05d}.jpg" for k in range(length)])
    for annotation in truth["annotations"]:
        for key in ("segmentations", "areas", "bboxes"):
            annotation[key] = annotation[key] * repeats
    return truth


def silent_video_is_said(folder: Path, stdout: str, stderr: str) -> None:
    assert stderr.splitlines() == ["note: silent.mp4 has no audio track: every frame was given silence"]
    overlay_of(64, 48, 24, audio=False)(folder, stdout, stderr)


MEDIA_CASES = {
    "zero_bytes": Case("predict", predict(media_corpus.zero_bytes), "zero.mp4: the file is empty (0 bytes)"),
    "truncated": Case("predict", predict(media_corpus.truncated), "cut.mp4: the video is truncated or corrupt"),
    "text_renamed_mp4": Case("predict", predict(media_corpus.text_renamed), "notes.mp4: not a video FFmpeg can read"),
    "audio_only": Case("predict", predict(media_corpus.audio_only), "song.m4a: the file has no video stream"),
    "png_image": Case("predict", predict(media_corpus.png_image), "photo.png: an image, not a video"),
    "jpeg_image": Case("predict", predict(media_corpus.jpeg_image), "photo.jpg: an image, not a video"),
    "zero_frames": Case(
        "predict", predict(media_corpus.zero_frames), "empty.mkv: the file is empty or holds no media"
    ),
    "no_audio": Case("predict", predict(media_corpus.no_audio), check=silent_video_is_said),
    "1x1": Case("predict", predict(media_corpus.sized(1, 1)), check=overlay_of(1, 1, 8)),
    "17x3": Case("predict", predict(media_corpus.sized(17, 3)), check=overlay_of(17, 3, 8)),
    "4096x2": Case("predict", predict(media_corpus.sized(4096, 2)), check=overlay_of(4096, 2, 8)),
    "4k": Case("predict", predict(media_corpus.sized(3840, 2160, 2.0, 1)), check=overlay_of(3840, 2160, 2)),
    "phone_vfr": Case("predict", predict(media_corpus.phone_vfr, "--fps", "10"), check=phone_video_keeps_its_clock),
    "rotated": Case("predict", predict(media_corpus.rotated), check=overlay_of(48, 64, 24)),
    "hour_of_audio": Case("predict", predict(media_corpus.hour_of_audio), check=sound_stops_with_the_picture),
    "long_sounding_shape": Case("predict", predict(media_corpus.long_shapes), check=one_track_through_the_long_video),
    "output_is_a_folder": Case(
        "predict",
        lambda folder: ["predict", str(media_corpus.no_audio(folder)), "--out", str(out(folder))],
        "out: is a folder; give the name of the file to write",
    ),
}


# --- the command line on model folders ---------------------------------------------------------------------------


class RunsCode:
    """A pickle whose loading would create a file: the proof that loading a checkpoint ran nothing."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def model_folder(mutate: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        model = folder / "model"
        shutil.copytree(DEFAULT_MODEL, model)
        mutate(model)
        video = media_corpus.sized(64, 48)(folder)
        return ["predict", str(video), "--model", str(model), "--json", str(out(folder) / "results.json")]

    return make


def edit_config(**fields) -> Callable[[Path], None]:
    def mutate(model: Path) -> None:
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, **fields}))

    return mutate


def unsafe_pickle(model: Path) -> None:
    (model / "model.safetensors").unlink()
    torch.save({"weights": RunsCode(model / "code_ran")}, model / "pytorch_model.bin")


MODEL_CASES = {
    "missing_model": Case(
        "predict",
        lambda folder: ["predict", str(media_corpus.no_audio(folder)), "--model", str(folder / "nowhere")],
        "nowhere: there is no such model folder, and it is not a Hub id",
    ),
    "model_without_config": Case(
        "predict", model_folder(lambda m: (m / "config.json").unlink()), "no config.json there"
    ),
    "another_model_type": Case(
        "predict", model_folder(edit_config(model_type="bert")), "a 'bert' model, not an AVISM"
    ),
    "truncated_config": Case(
        "predict",
        model_folder(lambda m: (m / "config.json").write_text((m / "config.json").read_text()[:80])),
        "model: the model's config could not be read",
    ),
    "invalid_config": Case(
        "predict", model_folder(edit_config(num_attention_heads=7)), "config.json is not a valid AVISM config"
    ),
    "corrupt_safetensors": Case(
        "predict",
        model_folder(lambda m: (m / "model.safetensors").write_bytes(b"\x00" * 64)),
        "its safetensors weights are corrupt or truncated",
    ),
    "truncated_safetensors": Case(
        "predict",
        model_folder(lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:5000])),
        "its safetensors weights are corrupt or truncated",
    ),
    "unsafe_pickle": Case(
        "predict",
        model_folder(unsafe_pickle),
        "its pytorch_model.bin holds more than tensors (loading it would run code)",
        bound=BOUND,
    ),
    "weights_of_another_size": Case(
        "predict",
        model_folder(edit_config(hidden_dim=32, clip_hidden_dim=32)),
        "its weights do not fit its config.json",
    ),
}


# --- training, evaluation and conversion -------------------------------------------------------------------------


def dataset(mutate: Callable[[Path], None] = lambda root: None, *extra: str) -> Callable[[Path], list[str]]:
    """training.train on a tiny synthetic split (broken by `mutate`) with a tiny config, 1 step."""

    def make(folder: Path) -> list[str]:
        root = folder / "aviseg"
        write_split(root, "train", TRAIN_VIDEOS)
        tiny_config(id2label={0: "red", 1: "blue"}).to_json_file(folder / "config.json")
        mutate(root)
        return [
            "--config", str(folder / "config.json"), "--data", str(root), "--output-dir", str(out(folder) / "run"),
            "--num-frames", "2", "--min-sizes", "64", "--max-size", "64", "--num-workers", "0",
            "--max-train-steps", "1", "--checkpointing-steps", "0", "--report-to", "none", *extra,
        ]  # fmt: skip

    return make


def edit_annotations(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        annotations = json.loads((root / "train.json").read_text())
        edit(annotations)
        (root / "train.json").write_text(json.dumps(annotations))

    return mutate


def model_option(folder_name: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        arguments = dataset()(folder)
        position = arguments.index("--config")
        return [*arguments[:position], "--model", str(folder / folder_name), *arguments[position + 2 :]]

    return make


def evaluation_of(mutate: Callable[[Path], None] = lambda folder: None) -> Callable[[Path], list[str]]:
    """training.evaluate_model of a tiny saved model on a tiny synthetic val split."""

    def make(folder: Path) -> list[str]:
        root = folder / "aviseg"
        write_split(root, "val", EVAL_VIDEOS)
        torch.manual_seed(0)
        model = AvisModel(tiny_config(id2label={0: "red", 1: "blue"}))
        save_model_folder(folder / "model", model, AvisProcessor(AvisImageProcessor(shortest_edge=64)))
        mutate(folder)
        return ["--model", str(folder / "model"), "--data", str(root), "--split", "val",
                "--json", str(out(folder) / "results.json")]  # fmt: skip

    return make


def scoring(predictions: Callable[[Path], str]) -> Callable[[Path], list[str]]:
    """python -m training.evaluation of the solo example's ground truth and a results file."""

    def make(folder: Path) -> list[str]:
        results = folder / "results.json"
        results.write_text(predictions(folder))
        return [str(EXAMPLES / "shapes_solo.json"), str(results), "--json", str(out(folder) / "metrics.json")]

    return make


def garbage_rle(folder: Path) -> str:
    frames = [{"size": [288, 384], "counts": "zz!!garbage"}] * 14
    return json.dumps([{"video_id": 1, "score": 0.9, "category_id": 3, "segmentations": frames}])


def conversion(checkpoint: Callable[[Path], Path], output: str = "converted") -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        return [
            str(checkpoint(folder)),
            str(out(folder) / output),
            "--config",
            str(ORIGINAL / "r50_tiny" / "config.yaml"),
        ]

    return make


def written(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    return make


def unsafe_checkpoint(folder: Path) -> Path:
    torch.save({"model": RunsCode(folder / "code_ran")}, folder / "evil.pth")
    return folder / "evil.pth"


def occupied_output(folder: Path) -> list[str]:
    (out(folder) / "converted").mkdir()
    (out(folder) / "converted" / "mine.txt").write_text("a file of the user's")
    return conversion(lambda f: ORIGINAL / "r50_tiny" / "model_final.pth")(folder)


PIPELINE_CASES = {
    "train_without_annotations": Case(
        "train", dataset(lambda root: (root / "train.json").unlink()), "train.json: no such AVISeg annotations file"
    ),
    "train_on_truncated_json": Case(
        "train",
        dataset(lambda root: (root / "train.json").write_text((root / "train.json").read_text()[:100])),
        "train.json: not valid JSON",
    ),
    "train_without_videos": Case(
        "train", dataset(edit_annotations(lambda a: a.pop("videos"))), "train.json: no 'videos' list"
    ),
    "train_video_without_length": Case(
        "train", dataset(edit_annotations(lambda a: a["videos"][0].pop("length"))), "videos[0] has no 'length'"
    ),
    "train_missing_frame": Case(
        "train",
        dataset(lambda root: (root / "train" / "JPEGImages" / "both" / "00003.png").unlink()),
        "both/00003.png: no such frame (video 'both' of train.json)",
    ),
    "train_missing_audio": Case(
        "train",
        dataset(lambda root: (root / "train" / "FEATAudios" / "red_only.npy").unlink()),
        "red_only.npy: no such audio file",
    ),
    "train_missing_model": Case("train", model_option("nowhere"), "nowhere: there is no such model folder"),
    "train_config_not_json": Case(
        "train",
        dataset(lambda root: (root.parent / "config.json").write_text("{nope")),
        "config.json: not a readable AvisConfig JSON",
    ),
    "resume_from_no_checkpoint": Case(
        "train",
        dataset(lambda root: None, "--resume-from-checkpoint", "/"),
        "/: not a complete training checkpoint",
    ),
    "evaluate_truncated_split": Case(
        "evaluate_model",
        evaluation_of(lambda f: (f / "aviseg" / "val.json").write_text((f / "aviseg" / "val.json").read_text()[:60])),
        "val.json: not valid JSON",
    ),
    "evaluate_missing_model": Case(
        "evaluate_model", evaluation_of(lambda f: shutil.rmtree(f / "model")), "model: there is no such model folder"
    ),
    "score_truncated_results": Case(
        "evaluation", scoring(lambda f: '[{"video_id": 1, "sco'), "results.json: not valid JSON"
    ),
    "score_garbage_rle": Case(
        "evaluation",
        scoring(garbage_rle),
        "results.json entry 0 frame 0: its counts are not a compressed RLE",
        bound=1.0,
    ),
    "convert_missing_checkpoint": Case(
        "convert_avism", conversion(lambda f: f / "nowhere.pth"), "nowhere.pth: no such file"
    ),
    "convert_text_as_checkpoint": Case(
        "convert_avism",
        conversion(written("notes.pth", b"not a checkpoint\n" * 10)),
        "notes.pth is not a readable PyTorch file",
    ),
    "convert_unsafe_checkpoint": Case(
        "convert_avism", conversion(unsafe_checkpoint), "evil.pth holds more than tensors (loading it would run code)"
    ),
    "convert_into_a_folder_with_files": Case("convert_avism", occupied_output, "the folder already holds files"),
    "convert_with_a_bad_yaml": Case(
        "convert_avism",
        lambda folder: [
            str(ORIGINAL / "r50_tiny" / "model_final.pth"),
            str(out(folder) / "converted"),
            "--config",
            str(written("config.yaml", b"MODEL: [unclosed")(folder)),
        ],  # fmt: skip
        "config.yaml: not a YAML file",
    ),
    "convert_vggish_from_text": Case(
        "convert_vggish",
        lambda folder: [str(written("vggish.pth", b"text")(folder)), str(out(folder) / "vggish")],
        "vggish.pth is not a readable PyTorch file",
    ),
}

CASES = {**MEDIA_CASES, **MODEL_CASES, **PIPELINE_CASES}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_every_input_ends_in_its_results_or_one_line_with_status_2(name, tmp_path, capsys):
    run_case(CASES[name], tmp_path, capsys)


# The app takes mp4, webm, mov and mkv uploads only: other files get one answer before they are opened.
APP_ERRORS = {
    name: "is not a video the app takes: upload an mp4, webm, mov or mkv file"
    for name in ("audio_only", "png_image", "jpeg_image")
}
APP_CASES = [name for name in MEDIA_CASES if name != "output_is_a_folder"]
APP_SETTINGS_SECONDS = 400.0  # the 322 s video goes through whole


@pytest.mark.parametrize("name", APP_CASES, ids=APP_CASES)
def test_the_app_answers_every_video_with_results_or_one_line(name, tmp_path):
    case = MEDIA_CASES[name]
    error = APP_ERRORS.get(name, case.error)
    video = case.make(tmp_path)[1]
    service = AnalysisService(AppSettings(max_video_seconds=APP_SETTINGS_SECONDS, work_folder=tmp_path / "runs"))
    start = time.monotonic()
    try:
        analysis = service.analyse(video, DEFAULT_CHOICE, 1.0, 0.6, 10, lambda fraction, stage: None)
    except AvisError as raised:
        assert error is not None and error in str(raised) and "\n" not in str(raised)
        assert not list((tmp_path / "runs").rglob("*"))  # a failed run leaves nothing
    else:
        assert error is None
        assert sorted(path.name for path in analysis.overlay_path.parent.iterdir()) == sorted(
            [*(Path(path).name for path in analysis.downloads.paths()), "frames"]  # the frame viewer's JPEGs
        )
        assert len(decoded_frames(analysis.overlay_path)) > 0
        if name == "long_sounding_shape":
            long_video_results(analysis.overlay_path, analysis.results_path)
    assert time.monotonic() - start < case.bound
