"""The benchmark: FSLA, HOTA and mAP of predicted tracks against AVISeg ground truth, as the paper reports them."""

from dataclasses import replace
from pathlib import Path

from .fsla import fsla
from .inputs import load_ground_truth, load_predictions
from .track_metrics import hota_and_track_map

# Report order: the paper's three headline numbers, then their components.
METRIC_KEYS = (
    "FSLA", "HOTA", "mAP",
    "FSLAn", "FSLAs", "FSLAm",
    "FSLAn_count", "FSLAn_all", "FSLAs_count", "FSLAs_all", "FSLAm_count", "FSLAm_all",
    "DetA", "DetRe", "DetPr", "AssA", "AssRe", "AssPr", "LocA",
    "AP_s", "AP_m", "AP_l", "AR", "AP50", "AP75",
)  # fmt: skip


def evaluate_predictions(gt: str | Path | dict, predictions: str | Path | list) -> dict[str, float]:
    """Every metric of the original AVIS evaluator, in percent at full precision (counts are ints).

    gt: an AVISeg-format ground-truth JSON, as a path or the parsed dict.
    predictions: AVIS results (a list of {video_id, score, category_id (dataset id), segmentations: one
        compressed RLE or null per frame}), as a path or the parsed list.
    Raises AvisEvaluationError naming the file and entry when an input cannot be scored.
    """
    ground_truth = load_ground_truth(gt)
    tracks = load_predictions(predictions, ground_truth)
    metrics = {**fsla(ground_truth, tracks), **hota_and_track_map(ground_truth, tracks)}
    return {key: metrics[key] if isinstance(metrics[key], int) else float(metrics[key]) for key in METRIC_KEYS}


def class_average_precisions(gt: str | Path | dict, predictions: str | Path | list) -> dict[str, float]:
    """TrackMAP's AP (IoU 0.5:0.95, in percent) of each class with ground truth, by name: what mAP averages. Each is
    the mAP of the class's ground truth and predictions alone."""
    ground_truth = load_ground_truth(gt)
    tracks = load_predictions(predictions, ground_truth)
    precisions = {}
    for category_id, name in ground_truth.categories.items():
        class_truth = replace(ground_truth, tracks=[t for t in ground_truth.tracks if t.category_id == category_id])
        if class_truth.tracks:
            class_tracks = [track for track in tracks if track.category_id == category_id]
            precisions[name] = float(hota_and_track_map(class_truth, class_tracks)["mAP"])
    return precisions


def format_metrics_table(metrics: dict[str, float]) -> str:
    """One metric per line, in the given order; percentages to 2 decimals as the original prints them."""
    width = max(len(key) for key in metrics)
    lines = []
    for key, value in metrics.items():
        shown = str(value) if isinstance(value, int) else f"{value:.2f}"
        lines.append(f"{key:<{width}}  {shown:>7}")
    return "\n".join(lines)
