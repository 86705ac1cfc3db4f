"""One analysis without the page: the model seam, the results JSON, the table, the timeline (a tiny random AVISM)."""

import json

import numpy as np
import pytest

from app.inference import ModelSource, inference_service
from app.layout import REAL_EXAMPLES
from app.pipeline import AppSettings, analyse_video
from app.summary import instance_table, sounding_intervals, timeline_figure
from modeling_avis.errors import AvisCheckpointError
from modeling_avis.results import results_json_entries
from modeling_avis.tracks import AvisTrack, AvisVideoResult, decode_mask, encode_mask

from .app_media import stream_summary, write_video


def no_progress(fraction, description):
    pass


def two_track_result():
    """Track 1 sounds in sampled frames 0 and 1, track 2 only in frame 2; timestamps 0, 1, 2 s."""
    empty, full = np.zeros((4, 6), dtype=bool), np.ones((4, 6), dtype=bool)
    tracks = [
        AvisTrack(1, 2, "guitar", 0.8, [encode_mask(full), encode_mask(full), encode_mask(empty)]),
        AvisTrack(2, 25, "horse", 0.45, [encode_mask(empty), encode_mask(empty), encode_mask(full)]),
    ]
    return AvisVideoResult(tracks, np.array([0.0, 1.0, 2.0]), 4, 6, fps=24.0)


def test_results_json_has_one_entry_per_instance_with_the_dataset_category_id():
    entries = json.loads(json.dumps(results_json_entries(two_track_result(), video_id=7)))
    assert [sorted(entry) for entry in entries] == [["category_id", "score", "segmentations", "video_id"]] * 2
    assert [(e["video_id"], e["category_id"], e["score"]) for e in entries] == [(7, 3, 0.8), (7, 26, 0.45)]
    assert [len(e["segmentations"]) for e in entries] == [3, 3]
    assert decode_mask(entries[1]["segmentations"][2]).sum() == 24


def test_instance_table_gives_first_and_last_sounding_second_and_frame_count():
    assert instance_table(two_track_result()) == [
        [1, "guitar", 0.8, 0.0, 1.0, 2],
        [2, "horse", 0.45, 2.0, 2.0, 1],
    ]


def test_timeline_bars_last_until_the_next_sampled_frame_or_the_end():
    result = two_track_result()
    assert sounding_intervals(result.tracks[0], result.timestamps, 2.5) == [(0.0, 1.0), (1.0, 1.0)]
    assert sounding_intervals(result.tracks[1], result.timestamps, 2.5) == [(2.0, 0.5)]
    axes = timeline_figure(result, 2.5).axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["[1] guitar", "[2] horse"]
    assert axes.get_xlim() == (0.0, 2.5)


def test_model_setting_becomes_a_source_or_a_one_line_checkpoint_error(tmp_path):
    assert ModelSource.from_setting("Embedded default", "ignored") == ModelSource("embedded")
    assert ModelSource.from_setting("Hub id", " owner/avism-r50 ") == ModelSource("hub", "owner/avism-r50")
    (tmp_path / "config.json").write_text("{}")
    assert ModelSource.from_setting("Local folder", str(tmp_path)) == ModelSource("folder", str(tmp_path.resolve()))
    bad = [
        ("Local folder", str(tmp_path / "missing"), "there is no model folder"),
        ("Local folder", str(tmp_path.parent), "has no config.json"),
        ("Hub id", "not a hub id", "not a Hub id"),
        ("Hub id", "", "type the model's Hub id"),
    ]
    for choice, location, message in bad:
        with pytest.raises(AvisCheckpointError, match=message):
            ModelSource.from_setting(choice, location)


def test_inference_service_is_loaded_once_per_model_setting(monkeypatch):
    loads = []
    monkeypatch.setattr("app.inference.load_service", lambda source: loads.append(source) or object())
    first, second = ModelSource("hub", "test/cache-first"), ModelSource("hub", "test/cache-second")
    service = inference_service(first)
    assert inference_service(first) is service and inference_service(second) is not service
    assert loads == [first, second]


@pytest.fixture
def tiny(tiny_model_folder):
    """The setting of a tiny random AVISM that keeps every instance, loaded as a user's local folder."""
    return ModelSource.from_setting("Local folder", str(tiny_model_folder))


@pytest.mark.parametrize("example", REAL_EXAMPLES, ids=[path.stem for path in REAL_EXAMPLES])
def test_service_returns_tracks_at_the_video_size_highest_scores_first(example, tiny):
    service = inference_service(tiny)
    result = service(str(example), fps=2.0, score_threshold=0.0, max_instances=3, progress=no_progress)
    np.testing.assert_allclose(result.timestamps, np.arange(10) / 2)
    assert [t.track_id for t in result.tracks] == [1, 2, 3]
    assert sorted((t.score for t in result.tracks), reverse=True) == [t.score for t in result.tracks]
    assert all(rle["size"] == [360, result.width] for t in result.tracks for rle in t.segmentations)
    assert all(len(t.segmentations) == 10 for t in result.tracks)
    again = service(str(example), fps=2.0, score_threshold=0.0, max_instances=3, progress=no_progress)
    assert [t.segmentations for t in again.tracks] == [t.segmentations for t in result.tracks]


def test_embedded_default_is_the_shipped_model_folder():
    from training.build_default_model import DEFAULT_MODEL

    service = inference_service(ModelSource.from_setting("Embedded default", ""))
    assert service.model.name_or_path == str(DEFAULT_MODEL)
    assert service.processor.image_processor.shortest_edge == 96


def test_long_video_is_trimmed_with_a_message(tmp_path, tiny):
    source = write_video(tmp_path / "long.mp4", num_frames=36, fps=12)
    settings = AppSettings(max_video_seconds=1.0, work_folder=tmp_path / "runs")
    stages = []
    analysis = analyse_video(str(source), tiny, 2.0, 0.0, 5, settings, lambda f, d: stages.append(d))
    assert "The video is 3.0 s long: only its first 1 s were analysed." in analysis.status
    summary = stream_summary(analysis.overlay_path)
    assert summary["video"]["frames"] == 12 and abs(summary["audio"]["duration"] - 1.0) <= 0.05
    assert [len(e["segmentations"]) for e in json.loads(analysis.results_path.read_text())] == [2] * len(
        analysis.table
    )
    assert stages[0] == "Reading the video" and stages[-1] == "Rendering"
    assert ["Trimming", "Loading the model", "Reading the audio", "Decoding and encoding frames", "Drawing masks"] == [
        stage for stage in dict.fromkeys(stages) if stage not in ("Reading the video", "Rendering", "Done")
    ]


def test_video_without_audio_is_analysed_and_the_page_says_so(tmp_path, tiny):
    source = write_video(tmp_path / "silent.mp4", audio=False)
    settings = AppSettings(work_folder=tmp_path / "runs")
    analysis = analyse_video(str(source), tiny, 1.0, 0.0, 5, settings, no_progress)
    assert "The video has no audio track, so the overlay video has none either." in analysis.status
    assert "audio" not in stream_summary(analysis.overlay_path)
