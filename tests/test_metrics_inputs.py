"""Inputs the evaluator refuses, each with one line naming the file and the entry; and its command line."""

import json
import math
from pathlib import Path

import pytest

from modeling_avis.errors import AvisError, AvisInputError
from training.evaluation import AvisEvaluationError, evaluate_predictions
from training.evaluation.__main__ import main

from .fixture_data import EVAL_FIXTURES

# 01_perfect_null: categories 1 (person), 3 (guitar), 14 (dog); videos 1 (8 frames), 2 (6), 3 (10), all 24x32.
CASE = EVAL_FIXTURES / "01_perfect_null"


def _gt() -> dict:
    return json.loads((CASE / "gt.json").read_text())


def _predictions() -> list:
    return json.loads((CASE / "pred.json").read_text())


def _with(data, edit):
    edit(data)
    return data


def _set_first_frame(track: dict, value) -> None:
    track["segmentations"][0] = value


# (test id, gt.json content, pred.json content, the message)
BAD_INPUTS = [
    (
        "malformed_predictions_json",
        _gt(),
        '[{"video_id": 1,',
        "pred.json: not valid JSON (Expecting property name enclosed in double quotes at line 1)",
    ),
    (
        "malformed_gt_json",
        "{",
        [],
        "gt.json: not valid JSON (Expecting property name enclosed in double quotes at line 1)",
    ),
    ("predictions_not_a_list", _gt(), {"results": []}, "pred.json: expected a list of predicted tracks, got a dict"),
    ("gt_not_an_object", [], [], "gt.json: expected a JSON object with categories, videos and annotations"),
    (
        "gt_without_videos",
        _with(_gt(), lambda gt: gt.pop("videos")),
        [],
        "gt.json: 'videos' must be a list",
    ),
    (
        "unknown_video_id",
        _gt(),
        _with(_predictions(), lambda p: p[3].update(video_id=17)),
        "pred.json entry 3: video_id 17 is not in gt.json",
    ),
    (
        "unknown_category",
        _gt(),
        _with(_predictions(), lambda p: p[0].update(category_id=0)),
        "pred.json entry 0: category_id 0 is not a category of gt.json (ids 1..14)",
    ),
    (
        "segmentations_longer_than_video",
        _gt(),
        _with(_predictions(), lambda p: p[0]["segmentations"].append(None)),
        "pred.json entry 0: 9 segmentations for video 1, which has 8 frames",
    ),
    (
        "segmentations_shorter_than_video",
        _gt(),
        _with(_predictions(), lambda p: p[0]["segmentations"].pop()),
        "pred.json entry 0: 7 segmentations for video 1, which has 8 frames",
    ),
    (
        "bare_rle_instead_of_frame_list",
        _gt(),
        _with(_predictions(), lambda p: p[0].update(segmentations=p[0]["segmentations"][0])),
        "pred.json entry 0: 'segmentations' must be a list with one entry per frame, got a dict",
    ),
    (
        "uncompressed_predicted_rle",
        _gt(),
        _with(_predictions(), lambda p: _set_first_frame(p[0], [{"size": [24, 32], "counts": [768]}])),
        "pred.json entry 0 frame 0: expected a compressed RLE {size, counts: str} or null, got a list",
    ),
    (
        "predicted_mask_of_another_size",
        _gt(),
        _with(_predictions(), lambda p: _set_first_frame(p[0], {"size": [720, 1280], "counts": "PPTl0"})),
        "pred.json entry 0 frame 0: mask size [720, 1280] is not video 1's 24x32",
    ),
    (
        "missing_score",
        _gt(),
        _with(_predictions(), lambda p: p[1].pop("score")),
        "pred.json entry 1: missing 'score'",
    ),
    (
        "prediction_not_an_object",
        _gt(),
        _with(_predictions(), lambda p: p.append([1, 0.5])),
        "pred.json entry 6: expected a JSON object, got a list",
    ),
    (
        "gt_compressed_rle_of_another_length",
        _with(_gt(), lambda gt: _set_first_frame(gt["annotations"][0], [{"size": [24, 32], "counts": "PPTl0"}])),
        [],
        "gt.json annotations[0] frame 0: its counts cover 921600 pixels, not 24x32",
    ),
    (
        "gt_rle_of_another_length",
        _with(_gt(), lambda gt: _set_first_frame(gt["annotations"][0], [{"size": [24, 32], "counts": [700, 60]}])),
        [],
        "gt.json annotations[0] frame 0: RLE run lengths add up to 760 pixels, not 24x32",
    ),
    (
        "gt_frame_of_a_number",
        _with(_gt(), lambda gt: _set_first_frame(gt["annotations"][0], 3)),
        [],
        "gt.json annotations[0] frame 0: expected a list of polygons or of RLEs, an RLE, or null where the object "
        "is absent, not 3",
    ),
    (
        "gt_annotation_of_unknown_video",
        _with(_gt(), lambda gt: gt["annotations"][2].update(video_id=9)),
        [],
        "gt.json annotations[2]: video_id 9 is not in gt.json",
    ),
    (
        "gt_areas_shorter_than_video",
        _with(_gt(), lambda gt: gt["annotations"][0]["areas"].pop()),
        [],
        "gt.json annotations[0]: 7 areas for video 1, which has 8 frames",
    ),
    (
        "gt_duplicate_annotation_id",
        _with(_gt(), lambda gt: gt["annotations"][1].update(id=1)),
        [],
        "gt.json annotations[1]: id 1 is used twice",
    ),
]


def _write(folder: Path, name: str, content) -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("gt", "predictions", "message"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises_one_line_naming_file_and_entry(tmp_path, gt, predictions, message):
    gt_path, pred_path = _write(tmp_path, "gt.json", gt), _write(tmp_path, "pred.json", predictions)
    with pytest.raises(AvisEvaluationError) as caught:
        evaluate_predictions(gt_path, pred_path)
    assert str(caught.value) == message


def test_evaluation_errors_are_the_errors_every_entry_point_reports_in_one_line():
    assert issubclass(AvisEvaluationError, AvisError) and not issubclass(AvisEvaluationError, AvisInputError)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AvisEvaluationError, match=r"^.*nowhere\.json: no such file$"):
        evaluate_predictions(CASE / "gt.json", tmp_path / "nowhere.json")


def test_in_memory_inputs_are_named_gt_and_predictions():
    with pytest.raises(AvisEvaluationError) as caught:
        evaluate_predictions(_gt(), _with(_predictions(), lambda p: p[3].update(video_id=17)))
    assert str(caught.value) == "predictions entry 3: video_id 17 is not in gt"


def test_command_line_prints_headline_metrics_first_and_writes_full_precision_json(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    folder = CASE.parent / "04_id_switch"
    assert main([str(folder / "gt.json"), str(folder / "pred.json"), "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["FSLA", "HOTA", "mAP"]
    assert lines[0].split()[1] == "52.00"
    written = json.loads(out.read_text())
    expected = evaluate_predictions(folder / "gt.json", folder / "pred.json")
    assert list(written) == list(expected)
    assert math.isnan(written["FSLAn"])  # no silent frame in this case: NaN, written as the NaN literal
    assert {k: v for k, v in written.items() if k != "FSLAn"} == {k: v for k, v in expected.items() if k != "FSLAn"}


def test_command_line_reports_bad_input_on_stderr(tmp_path, capsys):
    pred_path = _write(tmp_path, "pred.json", _with(_predictions(), lambda p: p[3].update(video_id=17)))
    assert main([str(CASE / "gt.json"), str(pred_path)]) == 2
    assert capsys.readouterr().err == "error: pred.json entry 3: video_id 17 is not in gt.json\n"
