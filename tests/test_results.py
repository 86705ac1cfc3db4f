import json

import numpy as np
import pytest
import torch

from modeling_avis.configuration_avis import AVISEG_LABELS
from modeling_avis.post_processing_avis import AvisVideoInstances
from modeling_avis.processing_avis import AvisVideoMetadata, video_result
from modeling_avis.results import results_json_entries, track_summary, write_results_json, write_track_summary
from modeling_avis.tracks import decode_mask

ID2LABEL = dict(enumerate(AVISEG_LABELS))
TIMESTAMPS = [0.0, 1.0, 2.0, 3.0]


def synthetic_detections(height=24, width=32):
    """Three instances over 4 frames, in descending score order: random masks, one absent in frames 0 and 3, one
    never present."""
    rng = np.random.default_rng(0)
    masks = rng.random((3, 4, height, width)) > 0.7
    masks[0, [0, 3]] = False
    masks[2] = False
    instances = AvisVideoInstances(
        scores=torch.tensor([0.9, 0.5, 0.35]),
        labels=torch.tensor([13, 0, 25]),
        query_indices=torch.tensor([4, 0, 7]),
        topk_indices=torch.tensor([4 * 26 + 13, 0, 7 * 26 + 25]),
        mask_embeddings=torch.zeros(3, 8),
    )
    return instances, torch.from_numpy(masks)


def build(instances, masks, timestamps=TIMESTAMPS, height=24, width=32, **metadata):
    return video_result(
        instances, masks, AvisVideoMetadata(timestamps, (height, width), (height, width), (height, width), **metadata),
        ID2LABEL,
    )  # fmt: skip


def test_tracks_keep_the_instances_order_with_their_masks_and_clip_queries():
    instances, masks = synthetic_detections()
    result = build(instances, [masks], fps=24.0)
    assert [(t.track_id, t.label, t.label_name, t.query_index) for t in result.tracks] == [
        (1, 13, "dog", 4),
        (2, 0, "person", 0),
        (3, 25, "horse", 7),
    ]
    assert [t.score for t in result.tracks] == pytest.approx([0.9, 0.5, 0.35])
    for track, detection in zip(result.tracks, [0, 1, 2], strict=True):
        assert len(track.segmentations) == 4
        for t in range(4):
            np.testing.assert_array_equal(track.mask(t), masks[detection, t].numpy())
    assert (result.height, result.width, result.num_frames, result.fps) == (24, 32, 4, 24.0)


def test_masks_streamed_in_frame_chunks_give_the_same_tracks():
    instances, masks = synthetic_detections()
    whole = build(instances, [masks])
    streamed = build(instances, (masks[:, start : start + 3] for start in range(0, 4, 3)))
    assert [t.segmentations for t in streamed.tracks] == [t.segmentations for t in whole.tracks]


def test_masks_of_the_wrong_size_or_length_are_refused():
    instances, masks = synthetic_detections()
    with pytest.raises(ValueError, match=r"masks must be \(N=3, frames, 20, 32\), got \(3, 4, 24, 32\)"):
        build(instances, [masks], height=20)
    with pytest.raises(ValueError, match="masks cover 4 frames, but the video has 5"):
        build(instances, [masks], [*TIMESTAMPS, 4.0])


def test_results_json_decodes_back_to_the_masks(tmp_path):
    instances, masks = synthetic_detections()
    first = build(instances, [masks])
    second = build(instances.select(slice(1, 2)), [masks[1:2, :2]], TIMESTAMPS[:2])
    write_results_json({7: first, 3: second}, tmp_path / "results.json")
    entries = json.loads((tmp_path / "results.json").read_text())
    assert [(e["video_id"], e["category_id"]) for e in entries] == [(7, 14), (7, 1), (7, 26), (3, 1)]
    for entry in entries:
        # The benchmark's prediction format, as the original's instances_to_coco_json_video writes it.
        assert set(entry) == {"video_id", "score", "category_id", "segmentations"}
        assert isinstance(entry["score"], float) and 1 <= entry["category_id"] <= 26
        assert all(
            s is not None and s["size"] == [24, 32] and isinstance(s["counts"], str) for s in entry["segmentations"]
        )
    decoded = np.stack([np.stack([decode_mask(s) for s in e["segmentations"]]) for e in entries[:3]])
    np.testing.assert_array_equal(decoded, masks.numpy())
    assert len(entries[3]["segmentations"]) == 2


def test_results_json_is_streamed_as_the_text_json_dumps_gives_its_entries(tmp_path):
    instances, masks = synthetic_detections()
    results = {7: build(instances, [masks]), 3: build(instances.select(slice(1, 2)), [masks[1:2]])}
    write_results_json(results, tmp_path / "results.json")
    entries = [entry for video_id, result in results.items() for entry in results_json_entries(result, video_id)]
    assert (tmp_path / "results.json").read_text() == json.dumps(entries)
    write_results_json({}, tmp_path / "empty.json")
    assert json.loads((tmp_path / "empty.json").read_text()) == []


def test_results_json_entries_keep_empty_masks_as_rle():
    instances, masks = synthetic_detections()
    result = build(instances, [masks])
    never_present = results_json_entries(result, 1)[2]["segmentations"]
    assert len(never_present) == 4 and not any(decode_mask(s).any() for s in never_present)


def test_track_summary_lists_where_each_track_is_present(tmp_path):
    instances, masks = synthetic_detections()
    result = build(instances, [masks], [0.0, 1.0, 2.5, 3.5], has_audio=False)
    summary = track_summary(result)
    assert summary[0] == {
        "id": 1,
        "class": "dog",
        "score": pytest.approx(0.9),
        "first_second": 1.0,
        "last_second": 2.5,
        "frames": [1, 2],
    }
    assert (summary[2]["first_second"], summary[2]["last_second"], summary[2]["frames"]) == (None, None, [])
    write_track_summary(result, tmp_path / "summary.json")
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["has_audio"] is False and written["timestamps"] == [0.0, 1.0, 2.5, 3.5]
    assert [t["id"] for t in written["tracks"]] == [1, 2, 3] and written["tracks"][1]["frames"] == [0, 1, 2, 3]
