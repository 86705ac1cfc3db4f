"""Check a dataset before training on it: what `training.train` would read, and what is wrong with it.

    python -m training.check_dataset clips/train.json [--labels circle,square,star | --model MODEL]
    python -m training.check_dataset AVISeg --split val

Every check training makes before its first step is made here (the annotations' rules, every frame file and video
file looked at: its size, its sound, its length against the annotated times, the classes against the ones to
learn), in the same words: a problem is one line and exit status 2. A dataset that passes is described: its videos,
annotated frames and objects, and its classes, with notes on what training will leave out.
"""

import argparse
import sys
from collections import Counter

from modeling_avis.entry_point import OneLineArgumentParser, run_command
from modeling_avis.errors import printable
from modeling_avis.loading import load_config

from .data import annotations_path, category_names, is_annotated, load_aviseg_split
from .train import class_names, read_labels


def describe(args: argparse.Namespace) -> str:
    """The dataset's summary, once it has passed every check."""
    labels = read_labels(args.labels) if args.labels else class_names(load_config(args.model)) if args.model else None
    path = annotations_path(args.data, args.split)
    videos = load_aviseg_split(args.data, args.split, labels)
    names = labels or category_names(path)
    files = sum(video.video_path is not None for video in videos)
    kinds = [f"{files} video files"] * bool(files) + [f"{len(videos) - files} frame folders"] * (files < len(videos))
    instances = [(video.video_id, instance) for video in videos for instance in video.instances]
    lines = [
        f"{printable(path)}: {len(videos)} videos ({', '.join(kinds)}), "
        f"{sum(video.num_frames for video in videos)} annotated frames, {len(instances)} annotated objects",
        "classes:",
    ]
    objects = Counter(instance.label for _, instance in instances)
    in_videos = Counter(label for _, label in {(video_id, instance.label) for video_id, instance in instances})
    frames = Counter(
        instance.label for _, instance in instances for mask in instance.segmentations if mask is not None
    )
    width = max(len(name) for name in names)
    for label, name in enumerate(names):
        lines.append(
            f"  {name:<{width}}  {objects[label]} objects in {in_videos[label]} videos, {frames[label]} frames"
        )
    notes = []
    unannotated = [video.name for video in videos if not is_annotated(video)]
    if unannotated:
        notes.append(f"{len(unannotated)} videos have no annotated object and are not trained on: {_few(unannotated)}")
    unseen = [name for label, name in enumerate(names) if not objects[label]]
    if unseen:
        notes.append(f"no annotated object of {_few(unseen)}: training cannot learn it")
    lines += [f"note: {note}" for note in notes] or ["no problems found"]
    return "\n".join(lines)


def _few(names: list[str]) -> str:
    shown = ", ".join(printable(name) for name in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m training.check_dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="an annotations file, or an AVISeg root")
    parser.add_argument("--split", default="train", help="the split of an AVISeg root (default: train)")
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--labels", help="the classes to learn, as training.train's --labels")
    classes.add_argument("--model", help="the model to fine-tune: its classes are the ones to learn")
    return run_command(lambda: print(describe(parser.parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
