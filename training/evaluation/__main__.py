"""python -m training.evaluation GT_JSON PRED_JSON [--json OUT.json]: the benchmark's metrics table."""

import json
import sys

from modeling_avis.entry_point import OneLineArgumentParser, run_command
from modeling_avis.outputs import check_output_file, check_outputs_apart, write_text_atomically

from .evaluate import class_average_precisions, evaluate_predictions, format_metrics_table


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m training.evaluation",
        description="FSLA, HOTA and mAP of AVIS predictions against AVISeg ground truth (the original evaluator's numbers).",
    )
    parser.add_argument("gt_json", help="AVISeg-format ground truth (YouTube-VIS style JSON)")
    parser.add_argument("pred_json", help="predictions: a list of {video_id, score, category_id, segmentations}")
    parser.add_argument("--json", metavar="OUT.json", help="also write the metrics, at full precision, to this file")
    parser.add_argument("--per-class", action="store_true", help="also each class's AP (what mAP averages)")

    def evaluate() -> None:
        args = parser.parse_args(argv)
        if args.json:
            check_output_file(args.json)
            check_outputs_apart([("--json", args.json)], [args.gt_json, args.pred_json])
        metrics = evaluate_predictions(args.gt_json, args.pred_json)
        if args.per_class:
            precisions = class_average_precisions(args.gt_json, args.pred_json)
            metrics |= {f"AP/{name}": value for name, value in precisions.items()}
        print(format_metrics_table(metrics))
        if args.json:  # NaN (a frame type absent from the data) is written as NaN
            write_text_atomically(args.json, json.dumps(metrics, indent=1))

    return run_command(evaluate)


if __name__ == "__main__":
    sys.exit(main())
