"""Fine-tuning on your own videos, measured: the default model (4 shapes) taught a fifth, the star, from video files.

    python benchmarks/bench_fine_tune.py [--work-dir /tmp/avis-fine-tune] [--train 40 --val 10 --test 60]

1. writes the sounding-shapes videos with a star in each (`training.sounding_shapes --star --video-files`, seed 1:
   mp4 files with their sound and one annotations JSON a split);
2. runs the README's command, `python -m training.train` from `models/avis-sounding-shapes` with --labels adding
   the star, on the CPU, timed, with the machine's load average sampled through it;
3. scores the model it keeps (the best on val) on the held-out test videos with `python -m training.evaluate_model`
   and each class's AP with `python -m training.evaluation --per-class`.

Prints one table: the training's time and load, FSLA, HOTA, mAP and each class's AP. Extra arguments after `--`
go to `training.train` (a few steps for a smoke test: `-- --max-train-steps 4`).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.build_default_model import DEFAULT_MODEL  # noqa: E402
from training.evaluation import class_average_precisions  # noqa: E402
from training.sounding_shapes import CLASSES_WITH_STAR, MP4, WITH_STAR, generate  # noqa: E402

SEED = 1
LABELS = ",".join(shape.name for shape in CLASSES_WITH_STAR)
# The README's command, with the data and output folders of this run.
TRAINING = ["--model", str(DEFAULT_MODEL), "--labels", LABELS, "--cpu", "--report-to", "none"]


class LoadSampler:
    """The 1-minute load average, sampled every few seconds while a command runs (os.getloadavg)."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def run(module: str, *arguments: str) -> float:
    """Runs `python -m module arguments` from the repository; its seconds. Its output goes to ours."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, *arguments], cwd=ROOT, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/avis-fine-tune"))
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--val", type=int, default=10)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("training", nargs="*", help="more arguments of training.train (after --)")
    args = parser.parse_args(argv)
    data, output = args.work_dir / "data", args.work_dir / "star"
    shutil.rmtree(args.work_dir, ignore_errors=True)
    start = time.perf_counter()
    generate(data, SEED, {"train": args.train, "val": args.val, "test": args.test}, WITH_STAR, MP4)
    data_seconds = time.perf_counter() - start

    training = [*TRAINING, "--data", str(data / "train.json"), "--eval-split", str(data / "val.json")]
    with LoadSampler() as load:
        train_seconds = run("training.train", *training, "--output-dir", str(output), *args.training)
    model = output / "best"
    results, metrics = args.work_dir / "test_results.json", args.work_dir / "test_metrics.json"
    evaluation = ["--model", str(model), "--data", str(data / "test.json"), "--json", str(results)]
    evaluate_seconds = run("training.evaluate_model", *evaluation, "--metrics-json", str(metrics))
    scores = json.loads(metrics.read_text())
    precisions = class_average_precisions(data / "test.json", results)
    summary = {
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "evaluate_seconds": evaluate_seconds,
        "load_average": sum(load.samples) / max(len(load.samples), 1),
        "load_average_max": max(load.samples, default=0.0),
        "cpus": os.cpu_count(),
        **{key: scores[key] for key in ("FSLA", "HOTA", "mAP")},
        **{f"AP/{name}": value for name, value in precisions.items()},
    }
    (args.work_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n| measure | value |\n|---|---|")
    print(f"| data ({args.train} + {args.val} + {args.test} videos) | {data_seconds:.0f} s |")
    print(f"| training (best on val kept) | {train_seconds / 60:.1f} min |")
    print(
        f"| 1-min load average during training | {summary['load_average']:.1f} (max {summary['load_average_max']:.1f}) on {summary['cpus']} CPUs |"
    )
    print(f"| evaluation of {args.test} test videos | {evaluate_seconds:.0f} s |")
    for key in ("FSLA", "HOTA", "mAP", *(f"AP/{name}" for name in precisions)):
        print(f"| {key} | {summary[key]:.1f} |")
    return summary


if __name__ == "__main__":
    main()
