"""The inference session: the offline mode is AvisModel.forward to the bit; the online mode's windows, memory and
tracks; its updates put together as a result."""

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from modeling_avis import AvisModel, AvisProcessor
from modeling_avis.inference_avis import AvisVideoSegmenter
from modeling_avis.post_processing_avis import AvisVideoInstances
from modeling_avis.processing_avis import AvisLiveChunks, AvisLiveInputs
from modeling_avis.results import results_json_entries
from modeling_avis.session_avis import AvisInferenceSession, AvisOnlineSettings, AvisWindow
from modeling_avis.tracking_avis import AvisOnlineTracks
from modeling_avis.tracks import AvisStreamRecorder, AvisStreamTrack, AvisStreamUpdate
from modeling_avis.video_io import probe_video
from training.build_default_model import DEFAULT_MODEL
from training.evaluation import evaluate_predictions

from .conftest import tiny_config

EXAMPLES = Path(__file__).parents[1] / "app" / "examples"


def test_the_offline_session_answers_as_forward_on_the_whole_video_to_the_bit(tiny_inputs):
    torch.manual_seed(0)
    model = AvisModel(tiny_config(frame_chunk_size=3)).eval()
    pixel_values, audio = tiny_inputs  # 7 frames
    with torch.inference_mode():
        expected = model(pixel_values, audio)
        session = AvisProcessor().init_video_session("offline", mask_features=[])
        for start in range(0, 7, 3):  # the model's own chunks
            answer = model(pixel_values[0, start : start + 3], audio[0, start : start + 3], inference_session=session)
            assert answer.windows == []
        answer = model(inference_session=session, end_of_video=True)
    assert answer.windows == [AvisWindow(0, 7, 0)]
    (output,) = answer.outputs
    assert torch.equal(output.class_logits, expected.class_logits)
    assert torch.equal(output.mask_embeddings, expected.mask_embeddings)
    assert torch.equal(torch.cat(output.mask_features[0]), expected.mask_features[0])
    with pytest.raises(ValueError, match="has ended"):
        model(pixel_values[0, :1], audio[0, :1], inference_session=session)


@pytest.mark.parametrize(
    ("frames", "size", "stride", "expected"),
    [
        (7, 5, 1, [(0, 1, 0), (0, 2, 1), (0, 3, 2), (0, 4, 3), (0, 5, 4), (1, 6, 5), (2, 7, 6)]),
        (7, 5, 2, [(0, 2, 0), (0, 4, 2), (1, 6, 4), (2, 7, 6)]),
        (6, 4, 3, [(0, 3, 0), (2, 6, 3)]),
    ],
)
def test_online_windows_end_every_stride_and_finalise_each_frame_once(frames, size, stride, expected):
    session = AvisInferenceSession("online", online=AvisOnlineSettings(window_size=size, stride=stride))
    windows = []
    for frame in range(frames):
        session.add_frames(torch.zeros(1, 2, 3), torch.zeros(1, 4), torch.full((1, 2, 2, 2), float(frame)), (8, 8))
        for window in session.due_windows():
            windows.append(window)
            inputs, _ = session.clip_inputs(window)
            assert inputs.shape[2] == window.end - window.start
            assert session.mask_features[window.start : window.end][:, 0, 0, 0].tolist() == list(
                range(window.start, window.end)
            )
    for window in session.due_windows(end_of_video=True):  # the last, fewer than a stride
        windows.append(window)
        assert session.clip_inputs(window)[0].shape[2] == window.end - window.start
    assert [(w.start, w.end, w.emit_start) for w in windows] == expected
    assert [frame for window in windows for frame in window.emitted] == list(range(frames))


def test_an_online_session_holds_the_frames_of_one_window_however_long_the_stream():
    session = AvisInferenceSession("online", online=AvisOnlineSettings(window_size=5, stride=2))
    held = []
    for _ in range(1000):
        session.add_frames(torch.zeros(1, 2, 3), torch.zeros(1, 4), torch.zeros(1, 2, 2, 2), (8, 8))
        list(session.due_windows())
        held.append(len(session.mask_features._frames))
    assert session.num_frames == 1000 and max(held) <= 5 + 2 - 1


def instances(boxes: list[tuple[int, int]], scores: list[float], labels: list[int]) -> tuple:
    """Instances whose masks are squares at given (row, column) on an 8x8 stride-4 map of 3 frames: the features
    are one-hot per pixel, so an embedding is its mask."""
    features = torch.eye(64).view(64, 8, 8)[None].expand(3, -1, -1, -1)  # (t, 64, 8, 8)
    embeddings = torch.full((len(boxes), 64), -1.0)
    for index, (row, column) in enumerate(boxes):
        mask = torch.zeros(8, 8, dtype=torch.bool)
        mask[row : row + 3, column : column + 3] = True
        embeddings[index, mask.flatten()] = 1.0
    found = AvisVideoInstances(
        scores=torch.tensor(scores),
        labels=torch.tensor(labels),
        query_indices=torch.arange(len(boxes)),
        topk_indices=torch.arange(len(boxes)),
        mask_embeddings=embeddings,
    )
    return found, features


def test_tracks_follow_their_objects_through_windows_and_a_silent_object_ends_its_track():
    tracks, settings = AvisOnlineTracks(), AvisOnlineSettings(patience=1)
    ids = []
    # two objects, the second named another class in one window; then the first falls silent for two windows
    steps = [
        ([(0, 0), (4, 4)], [0.9, 0.8], [1, 2]),
        ([(0, 1), (4, 5)], [0.9, 0.7], [1, 3]),
        ([(1, 1), (5, 5)], [0.8, 0.7], [1, 2]),
        ([(5, 5)], [0.7], [2]),
        ([(5, 4)], [0.7], [2]),
        ([(0, 0), (5, 4)], [0.9, 0.7], [1, 2]),
    ]
    for boxes, scores, labels in steps:
        found, features = instances(boxes, scores, labels)
        links = tracks.link(found, features, 2, 0.6, settings)
        ids.append([track.track_id for track, _ in links])
    assert ids == [[1, 2], [1, 2], [1, 2], [2], [2], [3, 2]]
    second = next(track for track in tracks.alive if track.track_id == 2)
    assert second.label == 2 and second.score == pytest.approx(np.mean([0.8, 0.7, 0.7, 0.7, 0.7, 0.7]))


def test_a_new_object_starts_a_track_above_the_start_threshold_and_a_duplicate_does_not():
    tracks, settings = AvisOnlineTracks(), AvisOnlineSettings()
    found, features = instances([(0, 0), (0, 0), (4, 4)], [0.9, 0.8, 0.5], [1, 1, 0])
    links = tracks.link(found, features, 0, 0.6, settings)
    assert [(track.track_id, index) for track, index in links] == [(1, 0)]
    found, features = instances([(0, 0), (4, 4)], [0.9, 0.65], [1, 0])
    links = tracks.link(found, features, 2, 0.6, settings, max_tracks=2)
    assert [(track.track_id, index) for track, index in links] == [(1, 0), (2, 1)]


def test_the_recorder_gives_null_where_a_track_is_not_and_its_last_class_and_score():
    recorder = AvisStreamRecorder(4, 6)
    mask = np.zeros((1, 4, 6), dtype=bool)
    mask[0, 1:3, 2:5] = True
    recorder.add(AvisStreamUpdate([0], [0.0], [AvisStreamTrack(1, 0, "a", 0.9, mask)]))
    recorder.add(AvisStreamUpdate([1, 2], [1.0, 2.0], [AvisStreamTrack(2, 1, "b", 0.7, np.repeat(mask, 2, 0))]))
    recorder.add(AvisStreamUpdate([3], [3.0], [AvisStreamTrack(1, 2, "c", 0.8, mask)]))
    result = recorder.result()
    first, second = result.tracks
    assert (first.label_name, first.score, second.label_name) == ("c", 0.8, "b")
    assert [rle is None for rle in first.segmentations] == [False, True, True, False]
    assert [rle is None for rle in second.segmentations] == [True, False, False, True]
    assert first.areas().tolist() == [6, 0, 0, 6] and not first.mask(1).any() and first.mask(3)[1, 2]
    entries = json.loads(json.dumps(results_json_entries(result, 1)))
    assert entries[0]["segmentations"][1] is None and entries[0]["category_id"] == 3


@pytest.fixture(scope="module")
def default_segmenter():
    return AvisVideoSegmenter.from_pretrained(DEFAULT_MODEL)


@pytest.mark.parametrize(("example", "expected_ids"), [("shapes_duet", 2), ("shapes_solo", 1), ("shapes_silent", 0)])
def test_the_online_mode_keeps_one_id_per_sounding_shape_of_the_examples(default_segmenter, example, expected_ids):
    video = EXAMPLES / f"{example}.mp4"
    info = probe_video(video)
    recorder = AvisStreamRecorder(info.height, info.width)
    for update in default_segmenter.stream(video):
        recorder.add(update)
    result = recorder.result()
    assert len(result.tracks) == expected_ids and result.num_frames == round(info.duration)
    if expected_ids:
        online = evaluate_predictions(EXAMPLES / f"{example}.json", results_json_entries(result, 1))
        offline = evaluate_predictions(EXAMPLES / f"{example}.json", results_json_entries(default_segmenter(video), 1))
        assert online["FSLA"] >= offline["FSLA"] and online["AssA"] >= offline["AssA"]


@pytest.mark.parametrize("clip", ["shapes_duet.mp4", "dogs_640x360.mp4"])
def test_a_live_source_gives_the_inputs_a_file_gives_to_the_bit(default_segmenter, clip):
    processor = default_segmenter.processor
    path = EXAMPLES / clip
    expected = list(processor.iter_chunks(path, 1, audio_input="audio_log_mel"))
    with open(path, "rb") as pipe:
        live = AvisLiveChunks(processor, pipe)
        chunks = list(live)
    assert len(chunks) == len(expected) and live.metadata().timestamps == [float(k) for k in range(len(chunks))]
    for chunk, reference in zip(chunks, expected, strict=True):
        assert torch.equal(chunk["pixel_values"], reference["pixel_values"])
        assert torch.equal(chunk["audio_log_mel"], reference["audio_log_mel"])


def test_pushed_frames_wait_for_the_second_of_sound_after_them_and_stop_at_the_cap(default_segmenter):
    processor = default_segmenter.processor
    inputs = AvisLiveInputs(processor, fps=1.0, max_duration=3.0)
    rate = 16000
    ready_at = []
    for second in range(6):  # a frame at each second, its sound pushed half a second later
        inputs.add_video_frame(np.full((48, 64, 3), 40 * second, np.uint8), float(second))
        for half in (0, 1):
            samples = np.zeros((1, rate // 2), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, (2 * second + half) * rate // 2, Fraction(1, rate)
            inputs.add_audio_frame(frame)
            ready_at += [second + half / 2] * len(inputs.ready())
    inputs.end()
    ready_at += [6.0] * len(inputs.ready())
    # frame k is sampled when frame k + 1 arrives, and ready once the sound reaches k + 0.975 s
    assert ready_at == [1.0, 2.0, 3.0] and inputs.ended
    assert inputs.metadata().timestamps == [0.0, 1.0, 2.0]
    assert inputs.notes == ["the video runs past 3 s: only its first 3 s were analysed"]
