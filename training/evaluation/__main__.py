"""python -m training.evaluation GT_JSON PRED_JSON [--json OUT.json]: the benchmark's metrics table."""

import argparse
import json
import sys

from modeling_avis.errors import AvisInputError

from .evaluate import evaluate_predictions, format_metrics_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluation",
        description="FSLA, HOTA and mAP of AVIS predictions against AVISeg ground truth (the original evaluator's numbers).",
    )
    parser.add_argument("gt_json", help="AVISeg-format ground truth (YouTube-VIS style JSON)")
    parser.add_argument("pred_json", help="predictions: a list of {video_id, score, category_id, segmentations}")
    parser.add_argument("--json", metavar="OUT.json", help="also write the metrics, at full precision, to this file")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_predictions(args.gt_json, args.pred_json)
    except AvisInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_metrics_table(metrics))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(metrics, f, indent=1)  # NaN (a frame type absent from the data) is written as NaN
    return 0


if __name__ == "__main__":
    sys.exit(main())
