"""The deformable-attention sampling core on the CPU: ours (one embedding_bag per level over a zero-bordered value
table) against Deformable DETR's PyTorch reference (grid_sample per level, as transformers and the original run it).

    python benchmarks/bench_deformable_attention.py [--threads 2]

One frame of the pixel decoder's encoder self-attention (every token a query; 8 heads of 32, 3 levels, 4 points) at
several frame sizes, i.e. sequence lengths. Each (implementation, size) runs in a fresh process: its memory is the
growth of peak RSS during the first call over the inputs alone (the call's temporaries), its time the median of 5
further calls.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAME_SIZES = [(192, 320), (384, 640), (576, 1024), (768, 1280), (1088, 1920)]
HEADS, HEAD_DIM, POINTS = 8, 32, 4
STRIDES = (32, 16, 8)


def child(implementation: str, height: int, width: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from transformers.models.deformable_detr.modeling_deformable_detr import (
        MultiScaleDeformableAttention as GridSampleReference,
    )

    from modeling_avis.deformable_attention import MultiScaleDeformableAttention

    torch.set_num_threads(threads)
    shapes_list = [(height // stride, width // stride) for stride in STRIDES]
    shapes = torch.tensor(shapes_list)
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    length = int(shapes.prod(1).sum())
    generator = torch.Generator().manual_seed(0)
    value = torch.randn(1, length, HEADS, HEAD_DIM, generator=generator)
    # locations around every token, a few of them off the map, as a trained layer's are
    locations = torch.rand(1, length, HEADS, len(STRIDES), POINTS, 2, generator=generator) * 1.1 - 0.05
    weights = torch.rand(1, length, HEADS, len(STRIDES), POINTS, generator=generator).softmax(-1)
    layer = MultiScaleDeformableAttention() if implementation == "ours" else GridSampleReference()
    inputs = (value, shapes, shapes_list, starts, locations, weights, 64)
    with torch.inference_mode():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        layer(*inputs)
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        times = []
        for _ in range(5):
            start = time.perf_counter()
            layer(*inputs)
            times.append(time.perf_counter() - start)
    return {"length": length, "ms": 1000 * statistics.median(times), "peak_mb": peak_mb, "load": os.getloadavg()[0]}


def run_child(implementation: str, height: int, width: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", implementation, str(height), str(width), "--threads", str(threads)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        implementation, height, width = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(child(implementation, height, width, args.threads)))
        return
    print(f"one frame, {HEADS} heads x {HEAD_DIM}, {len(STRIDES)} levels x {POINTS} points, {args.threads} threads")
    print("| frame (padded) | tokens | ours ms | grid_sample ms | speed-up | ours MB | grid_sample MB | load  |")
    print("|----------------|--------|---------|----------------|----------|---------|----------------|-------|")
    for height, width in FRAME_SIZES:
        ours = run_child("ours", height, width, args.threads)
        reference = run_child("grid_sample", height, width, args.threads)
        print(
            f"| {height:>4} x {width:<4}    | {ours['length']:>6} | {ours['ms']:7.1f} | {reference['ms']:14.1f} | "
            f"{reference['ms'] / ours['ms']:7.2f}x | {ours['peak_mb']:7.0f} | {reference['peak_mb']:14.0f} | "
            f"{(ours['load'] + reference['load']) / 2:5.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
