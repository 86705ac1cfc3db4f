"""Benchmark metrics of AVIS: FSLA, HOTA and mAP, equal to the original evaluator's numbers."""

from .evaluate import METRIC_KEYS, evaluate_predictions, format_metrics_table
from .inputs import AvisEvaluationError

__all__ = ["METRIC_KEYS", "AvisEvaluationError", "evaluate_predictions", "format_metrics_table"]
