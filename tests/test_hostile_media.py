"""The media a crafted or unusual upload can be, through every entry point that reads media: sound of any number of
channels (8 and more crashed PyAV's planar reading), headers that under-declare a video's length, frames over the
size limit anywhere in a video or a frame folder, streams that change size part-way or have no timestamps, a pipe
among the frames. Each case ends in its results, or in one `error:` line with exit status 2, within its bound.
"""

import json
import os
import shutil
from pathlib import Path

import av
import pytest
import torch

from app.models import DEFAULT_CHOICE
from app.pipeline import AnalysisService
from app.settings import AppSettings
from modeling_avis import AvisImageProcessor, AvisModel, AvisProcessor, save_model_folder
from modeling_avis.tracks import decode_mask

from . import media_corpus
from .app_media import stream_summary
from .conftest import TINY_VGGISH, tiny_config
from .entry_cases import Case, fresh_accelerate_state, out, run_case  # noqa: F401 (the fixture applies here)
from .synthetic_aviseg import EVAL_VIDEOS, write_split

# (codec, layout, container): every one of these crashed the process while its sound was decoded, but 5.1
SURROUND = [
    ("aac", "5.1", ".mp4"),
    ("aac", "7.1", ".mp4"),
    ("aac", "7.1", ".mkv"),
    ("flac", "7.1", ".mkv"),
    ("libopus", "7.1", ".mkv"),
    ("pcm_s16le", "7.1", ".mov"),
    ("pcm_f32le", "7.1", ".mkv"),
    ("pcm_s16le", "hexadecagonal", ".mkv"),
    ("pcm_s16le", "22.2", ".mkv"),
    ("pcm_s24le", "7.1(wide)", ".mkv"),
]


def predict(make_video, *extra: str, overlay: bool = True):
    def make(folder: Path) -> list[str]:
        video = make_video(folder)
        outputs = ["--json", str(out(folder) / "results.json")]
        if overlay:
            outputs += ["--out", str(out(folder) / "overlay.mp4")]
        return ["predict", str(video), *outputs, *extra]

    return make


def results_in(frames: int, seconds: float | None = None, heard: bool = True):
    """`frames` sampled frames in the results; with `seconds`, an overlay that long with stereo sound as long; the
    sound heard in every frame (no frame given silence) when `heard`."""

    def check(folder: Path, stdout: str, stderr: str) -> None:
        assert f" in {frames} frames" in stdout
        entries = json.loads((folder / "out" / "results.json").read_text())
        assert all(len(entry["segmentations"]) == frames for entry in entries)
        if heard:
            assert "silence" not in stderr and "all-zero example" not in stderr
        if seconds is not None:
            summary = stream_summary(folder / "out" / "overlay.mp4")
            assert summary["video"]["duration"] == pytest.approx(seconds, abs=0.51)
            assert summary["audio"]["duration"] == pytest.approx(seconds, abs=0.51)
            with av.open(str(folder / "out" / "overlay.mp4")) as container:
                assert container.streams.audio[0].layout.name == "stereo"

    return check


def cut_at(seconds: float, frames: int):
    def check(folder: Path, stdout: str, stderr: str) -> None:
        assert f"note: the video runs past {seconds:g} s: only its first {seconds:g} s were analysed" in stderr
        results_in(frames, seconds)(folder, stdout, stderr.replace("note: the video runs past", ""))

    return check


def one_frame_size(width: int, height: int, frames: int):
    def check(folder: Path, stdout: str, stderr: str) -> None:
        assert f" in {frames // 4} frames" in stdout
        summary = stream_summary(folder / "out" / "overlay.mp4")
        assert summary["video"]["size"] == (width, height) and summary["video"]["frames"] == frames
        for entry in json.loads((folder / "out" / "results.json").read_text()):
            assert decode_mask(entry["segmentations"][0]).shape == (height, width)

    return check


def raw_stream_drawn_at_its_rate(folder: Path, stdout: str, stderr: str) -> None:
    with av.open(str(folder / "out" / "overlay.mp4")) as container:
        times = [frame.time for frame in container.decode(video=0)]
    assert len(times) == 24 and times == sorted(set(times)) and times[-1] < 1.0
    assert stdout.startswith("camera.h264: ")


def folder_with(replace: str, content: bytes | None):
    """An AVISeg frame folder whose frame `replace` is `content` (None: a pipe)."""

    def make(folder: Path) -> list[str]:
        frames = media_corpus.aviseg_frames(folder)
        (frames / "00001.jpg").unlink()
        if content is None:
            os.mkfifo(frames / replace)
        else:
            (frames / replace).write_bytes(content)
        return ["predict", str(frames), "--json", str(out(folder) / "results.json")]

    return make


def frames_with_surround_wav(folder: Path) -> list[str]:
    frames = media_corpus.aviseg_frames(folder, frames=3, wav_layout="7.1")
    return ["predict", str(frames), "--json", str(out(folder) / "results.json")]


def evaluation_hearing_surround_wavs(folder: Path) -> list[str]:
    """training.evaluate_model of a tiny AVISM with an audio encoder on a split whose sound is 7.1 WAV files."""
    root = folder / "aviseg"
    write_split(root, "val", EVAL_VIDEOS)
    shutil.rmtree(root / "val" / "FEATAudios")
    (root / "val" / "WAVAudios").mkdir()
    for video in EVAL_VIDEOS:
        media_corpus.surround_wav(root / "val" / "WAVAudios" / f"{video.name}.wav", "7.1", seconds=7.0)
    torch.manual_seed(0)
    model = AvisModel(tiny_config(id2label={0: "red", 1: "blue"}, audio_config=TINY_VGGISH))
    save_model_folder(folder / "model", model, AvisProcessor(AvisImageProcessor(shortest_edge=64)))
    return ["--model", str(folder / "model"), "--data", str(root), "--split", "val",
            "--json", str(out(folder) / "results.json")]  # fmt: skip


def scored(folder: Path, stdout: str, stderr: str) -> None:
    assert len({entry["video_id"] for entry in json.loads((folder / "out" / "results.json").read_text())}) <= 4
    assert "FSLA" in stdout


CASES = {
    **{
        f"sound_{layout}_{codec}{suffix}": Case(
            "predict", predict(media_corpus.surround(codec, layout, suffix)), check=results_in(2, 2.0)
        )
        for codec, layout, suffix in SURROUND
    },
    "frame_folder_with_a_7_1_wav": Case("predict", frames_with_surround_wav, check=results_in(3)),
    "evaluation_of_7_1_wavs": Case("evaluate_model", evaluation_hearing_surround_wavs, check=scored),
    "mp4_header_says_1_s_of_20_capped_at_8": Case(
        "predict", predict(media_corpus.under_declared_mp4(20, 1.0), "--max-seconds", "8"), check=cut_at(8, 8)
    ),
    "mkv_header_says_1_s_of_20_capped_at_8": Case(
        "predict", predict(media_corpus.under_declared_mkv(20, 1.0), "--max-seconds", "8"), check=cut_at(8, 8)
    ),
    "mp4_header_says_1_s_of_12_read_whole": Case(
        "predict", predict(media_corpus.under_declared_mp4(12, 1.0)), check=results_in(12, 12.0)
    ),
    "mkv_header_says_1_s_of_12_read_whole": Case(
        "predict", predict(media_corpus.under_declared_mkv(12, 1.0)), check=results_in(12, 12.0)
    ),
    "mp4_header_says_500_s_of_6": Case(
        "predict", predict(media_corpus.under_declared_mp4(6, 500.0)), check=results_in(6, 6.0)
    ),
    "two_frames_ten_hours_apart_capped_at_5": Case(
        "predict",
        predict(media_corpus.frames_hours_apart, "--max-seconds", "5", overlay=False),
        check=results_in(5, heard=False),
        bound=30.0,
    ),
    "later_frames_of_81_megapixels": Case(
        "predict",
        predict(media_corpus.oversized_later_frames),
        "grows.mkv: frame 5 could not be decoded (Invalid argument): it is either over the limit of 35.4 million pixels",
        bound=30.0,
    ),
    "frames_of_another_size_between_samples": Case(
        "predict", predict(media_corpus.size_changing_frames), check=one_frame_size(64, 48, 12)
    ),
    "raw_h264_without_timestamps": Case("predict", predict(media_corpus.raw_h264), check=raw_stream_drawn_at_its_rate),
    "frame_folder_png_declaring_81_megapixels": Case(
        "predict",
        folder_with("00001.png", media_corpus.png_header(9000, 9000)),
        "00001.png: frames of 9000x9000 are over the limit of 35.4 million pixels",
        bound=10.0,
    ),
    "frame_folder_png_declaring_100_megapixels": Case(
        "predict",
        folder_with("00001.png", media_corpus.png_header(10000, 10000)),
        "00001.png: the image is over the limit of 35.4 million pixels",
        bound=10.0,
    ),
    "frame_folder_png_declaring_400_megapixels": Case(
        "predict",
        folder_with("00001.png", media_corpus.png_header(20000, 20000)),
        "00001.png: the image is over the limit of 35.4 million pixels",
        bound=10.0,
    ),
    "frame_folder_with_a_pipe": Case(
        "predict", folder_with("00001.jpg", None), "'00001.jpg' is not a regular file", bound=10.0
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_every_hostile_file_ends_in_its_results_or_one_line_with_status_2(name, tmp_path, capsys):
    run_case(CASES[name], tmp_path, capsys)


APP_CASES = {
    "7_1_sound": (media_corpus.surround("aac", "7.1", ".mp4"), 2, None),
    "header_under_declares": (media_corpus.under_declared_mp4(20, 1.0), 8, "the video runs past 8 s"),
    "header_over_declares": (media_corpus.under_declared_mp4(6, 500.0), 6, None),
    "frames_ten_hours_apart": (media_corpus.frames_hours_apart, 8, "the video runs past 8 s"),
}


@pytest.mark.parametrize("name", list(APP_CASES), ids=list(APP_CASES))
def test_the_app_cuts_at_decoded_times_and_hears_any_sound(name, tmp_path):
    make, frames, note = APP_CASES[name]
    service = AnalysisService(AppSettings(max_video_seconds=8.0, work_folder=tmp_path / "runs"))
    analysis = service.analyse(str(make(tmp_path)), DEFAULT_CHOICE, 1.0, 0.6, 10, lambda fraction, stage: None)
    assert f"({frames} frames sampled at 1 per second)" in analysis.status
    assert (note is None) == ("runs past" not in analysis.status) and (note is None or note in analysis.status)
    summary = stream_summary(analysis.overlay_path)
    assert summary["video"]["duration"] <= 8.0 + 1e-3
