"""One analysis without the page: the model seam, the results JSON, the table, the timeline (a tiny random AVISM)."""

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.layout import REAL_EXAMPLES, SHAPE_EXAMPLES
from app.models import DEFAULT_CHOICE, UNAVAILABLE, ModelCatalog, ModelStillLoading, ModelUnavailable
from app.pipeline import AnalysisCancelled, AnalysisService
from app.settings import AppSettings
from app.summary import instance_table, sounding_intervals, timeline_figure
from modeling_avis.inference_avis import AvisVideoSegmenter
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


def test_by_default_a_visitor_gets_the_default_model_and_one_answer_for_anything_else(tmp_path):
    catalog = ModelCatalog(AppSettings(work_folder=tmp_path / "runs"))
    assert catalog.choices() == [DEFAULT_CHOICE] and not catalog.accepts_typed_hub_ids()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "avis"}')
    for choice in (str(tmp_path / "model"), str(tmp_path / "missing"), "/etc", "owner/avism-r50", "Local folder"):
        with pytest.raises(ModelUnavailable) as refused:
            catalog.location(choice)
        assert str(refused.value) == UNAVAILABLE == "This model is not available on this server."


def test_the_operator_may_offer_model_folders_by_name_and_hub_ids(tmp_path, tiny_model_folder):
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_model_folder)
    (models / "not-a-model").mkdir()
    settings = AppSettings(local_models=models, hub_models=("owner/avism-r50",), work_folder=tmp_path / "runs")
    catalog = ModelCatalog(settings)
    assert catalog.choices() == [DEFAULT_CHOICE, "tiny", "owner/avism-r50"]
    assert (
        catalog.location("tiny") == str(models / "tiny") and catalog.location("owner/avism-r50") == "owner/avism-r50"
    )
    for choice in (str(models / "tiny"), "not-a-model", "../models/tiny", "owner/other"):
        with pytest.raises(ModelUnavailable):
            catalog.location(choice)
    # any Hub id, when the operator says "*", but never a path of the server's that looks like one
    anything = ModelCatalog(AppSettings(hub_models=("*",), work_folder=tmp_path / "runs"))
    assert anything.location("owner/other") == "owner/other" and anything.accepts_typed_hub_ids()
    with pytest.raises(ModelUnavailable):
        anything.location("app/examples")


def test_a_hub_model_over_the_size_limit_is_refused_before_any_download(tmp_path, monkeypatch):
    loads = []
    info = SimpleNamespace(siblings=[SimpleNamespace(size=1_500_000_000), SimpleNamespace(size=600_000_000)])
    monkeypatch.setattr("app.models.HfApi.model_info", lambda self, repo, **kwargs: info)
    monkeypatch.setattr("app.models.AvisVideoSegmenter.from_pretrained", lambda *args, **kwargs: loads.append(args))
    catalog = ModelCatalog(AppSettings(hub_models=("owner/huge",), work_folder=tmp_path / "runs"))
    with pytest.raises(ModelUnavailable):
        catalog.load("owner/huge")
    assert loads == []


def test_a_slow_first_load_answers_in_bounded_time_and_holds_up_no_other_model(
    tmp_path, tiny_model_folder, monkeypatch
):
    models = tmp_path / "models"
    models.mkdir()
    (models / "slow").symlink_to(tiny_model_folder)
    (models / "quick").symlink_to(tiny_model_folder)
    real, release = AvisVideoSegmenter.from_pretrained, threading.Event()

    def from_pretrained(location, *args, **kwargs):
        if Path(location).name == "slow":
            release.wait(30)
        return real(location, *args, **kwargs)

    monkeypatch.setattr("app.models.AvisVideoSegmenter.from_pretrained", from_pretrained)
    catalog = ModelCatalog(AppSettings(local_models=models, model_load_seconds=0.5, work_folder=tmp_path / "runs"))
    start = time.monotonic()
    with pytest.raises(ModelStillLoading, match="The model is still loading"):
        catalog.load("slow")
    assert time.monotonic() - start < 2
    quick = None
    for _ in range(60):  # a busy machine may take more than 0.5 s for the first load too; "slow" still waits
        try:
            quick = catalog.load("quick")
            break
        except ModelStillLoading:
            continue
    assert quick is not None and not release.is_set()
    assert catalog.load("quick").segmenter is quick.segmenter  # loaded once, while "slow" loads
    release.set()
    for _ in range(60):  # the first load went on, and is kept: a later request gets it
        try:
            assert catalog.load("slow").summary
            break
        except ModelStillLoading:
            continue
    else:
        pytest.fail("the slow model never finished loading")


@pytest.fixture
def service(tmp_path, tiny_model_folder):
    """The app's analyses with a tiny random AVISM that keeps every instance, offered as the operator's "tiny"."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_model_folder)
    return AnalysisService(AppSettings(local_models=models, max_video_seconds=1.0, work_folder=tmp_path / "runs"))


@pytest.mark.parametrize("example", REAL_EXAMPLES, ids=[path.stem for path in REAL_EXAMPLES])
def test_the_model_gives_tracks_at_the_video_size_highest_scores_first(example, service):
    segmenter = service.catalog.load("tiny").segmenter
    result = segmenter(str(example), fps=2.0, score_threshold=0.0, max_instances=3, progress=no_progress)
    np.testing.assert_allclose(result.timestamps, np.arange(10) / 2)
    assert [t.track_id for t in result.tracks] == [1, 2, 3]
    assert sorted((t.score for t in result.tracks), reverse=True) == [t.score for t in result.tracks]
    assert all(rle["size"] == [360, result.width] for t in result.tracks for rle in t.segmentations)
    assert all(len(t.segmentations) == 10 for t in result.tracks)
    again = segmenter(str(example), fps=2.0, score_threshold=0.0, max_instances=3, progress=no_progress)
    assert [t.segmentations for t in again.tracks] == [t.segmentations for t in result.tracks]


def test_the_default_is_the_shipped_model_and_the_result_says_what_it_knows(tmp_path):
    from training.build_default_model import DEFAULT_MODEL

    service = AnalysisService(AppSettings(work_folder=tmp_path / "runs"))
    loaded = service.catalog.load(DEFAULT_CHOICE)
    assert loaded.segmenter.model.name_or_path == str(DEFAULT_MODEL)
    assert loaded.segmenter.processor.image_processor.shortest_edge == 96
    analysis = service.analyse(str(SHAPE_EXAMPLES[0]), DEFAULT_CHOICE, 1.0, 0.6, 10, no_progress)
    assert (
        "- Model: avis-sounding-shapes (the default). A small AVISM trained on synthetic sounding shapes: it knows circles, squares, "
        "triangles and diamonds, not real scenes." in analysis.status
    )


def test_a_long_video_is_cut_with_a_message_and_its_run_keeps_only_its_results(tmp_path, service):
    source = write_video(tmp_path / "long.mp4", num_frames=36, fps=12)
    stages = []
    analysis = service.analyse(str(source), "tiny", 2.0, 0.0, 5, lambda f, d: stages.append(d))
    assert "the video runs past 1 s: only its first 1 s were analysed" in analysis.status
    summary = stream_summary(analysis.overlay_path)
    assert summary["video"]["frames"] == 12 and abs(summary["audio"]["duration"] - 1.0) <= 0.05
    assert [len(e["segmentations"]) for e in json.loads(analysis.results_path.read_text())] == [2] * len(
        analysis.table
    )
    assert sorted(path.name for path in analysis.overlay_path.parent.iterdir()) == [
        "long_avis.mp4", "long_avis_results.json"
    ]  # fmt: skip
    assert stages[0] == "Reading the video" and stages[-1] == "Rendering"
    assert ["Loading the model", "Reading the audio", "Decoding and encoding frames", "Drawing masks"] == [
        stage for stage in dict.fromkeys(stages) if stage not in ("Reading the video", "Rendering", "Done")
    ]


def test_a_video_without_audio_is_analysed_and_the_page_says_so(tmp_path, service):
    source = write_video(tmp_path / "silent.mp4", audio=False)
    analysis = service.analyse(str(source), "tiny", 1.0, 0.0, 5, no_progress)
    assert "The video has no audio track, so the overlay video has none either." in analysis.status
    assert "audio" not in stream_summary(analysis.overlay_path)


def test_a_cancelled_analysis_stops_at_its_next_chunk_and_leaves_nothing(tmp_path, service):
    source = write_video(tmp_path / "clip.mp4", num_frames=24, fps=12)
    stages = []

    def cancelled() -> bool:
        return "Decoding and encoding frames" in stages

    with pytest.raises(AnalysisCancelled):
        service.analyse(str(source), "tiny", 2.0, 0.0, 5, lambda f, d: stages.append(d), cancelled)
    assert "Rendering" not in stages and not list(service.runs.root.iterdir())


def test_only_the_newest_results_are_kept(tmp_path, tiny_model_folder):
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_model_folder)
    service = AnalysisService(AppSettings(local_models=models, kept_results=2, work_folder=tmp_path / "runs"))
    source = write_video(tmp_path / "clip.mp4", num_frames=12, fps=12)
    folders = [service.analyse(str(source), "tiny", 1.0, 0.0, 2, no_progress).overlay_path.parent for _ in range(4)]
    assert sorted(service.runs.root.iterdir()) == sorted(folders[2:])
