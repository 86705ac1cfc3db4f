"""Benchmark metrics of AVIS: FSLA, HOTA and mAP, equal to the original evaluator's numbers."""

from modeling_avis.errors import AvisEvaluationError

from .evaluate import METRIC_KEYS, class_average_precisions, evaluate_predictions, format_metrics_table

__all__ = [
    "METRIC_KEYS",
    "AvisEvaluationError",
    "class_average_precisions",
    "evaluate_predictions",
    "format_metrics_table",
]
