"""Throughput and peak memory of AVISM inference on long videos: the full-size R50 preset with random weights.

    python benchmarks/bench_inference.py                       # T = 18, 36, 60, 120, 600, streaming
    python benchmarks/bench_inference.py --frames 18 36 --one-shot

Each video length runs in a fresh process (so each peak RSS is its own: `ru_maxrss` of that child, from wait4) with
2 torch threads and glibc's malloc tuned as the command line tunes it (`--plain-malloc` leaves it). A video is 360x640 frames, padded to 384x640 as the processor pads them, with 128-d audio features;
the frames are made chunk by chunk, so no video is ever held whole. The time covers everything after the model is
built: both passes of `segment_video` and the RLE encoding of the masks (`build_video_result`), as the CLI runs them.
`--one-shot` also times the straightforward path (`AvisModel.forward` on the whole video, then
`post_process_video_instance_segmentation`) for comparison. The machine's load average is printed with each row:
other processes share its cores.

The original's numbers (issue 8): AVISM's own code on this kind of machine, 2 threads, the same model and frames.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# frames/s and peak RSS (GB) of the original AVISM, as measured for issue 8 (600: +35 MB a frame from 120)
ORIGINAL_FPS = {18: 0.50, 36: 0.47}
ORIGINAL_RSS_GB = {18: 6.05, 60: 7.70, 120: 9.82, 600: 9.82 + 480 * 0.035}
IMAGE_SIZE, PADDED_SIZE = (360, 640), (384, 640)


def child(frames: int, one_shot: bool, threads: int, tune_allocator: bool) -> dict:
    """Runs one video length in this process and returns its measurements."""
    import torch

    sys.path.insert(0, str(ROOT))
    from modeling_avis import AvisConfig, AvisModel
    from modeling_avis.__main__ import reuse_freed_memory
    from modeling_avis.inference_avis import STREAMING_FRAME_CHUNK, AvisMaskFeatureStore, segment_video
    from modeling_avis.post_processing_avis import post_process_video_instance_segmentation
    from modeling_avis.results import build_video_result

    if tune_allocator:
        reuse_freed_memory()  # as the command line does
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AvisModel(AvisConfig.from_preset("r50_imagenet")).eval()
    config = model.config

    # the one-shot path runs the config's 18-frame chunks (the original's); streaming, the segmenter's
    chunk = config.frame_chunk_size if one_shot else STREAMING_FRAME_CHUNK

    def video_chunks():
        generator = torch.Generator().manual_seed(1)
        for start in range(0, frames, chunk):
            count = min(chunk, frames - start)
            pixel_values = torch.zeros(count, 3, *PADDED_SIZE)
            pixel_values[:, :, : IMAGE_SIZE[0], : IMAGE_SIZE[1]] = torch.randn(
                count, 3, *IMAGE_SIZE, generator=generator
            )
            yield {"pixel_values": pixel_values, "audio_features": torch.randn(count, 128, generator=generator)}

    timestamps = [float(k) for k in range(frames)]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with torch.inference_mode():
        if one_shot:
            parts = list(video_chunks())
            pixel_values = torch.cat([part["pixel_values"] for part in parts])[None]
            audio = torch.cat([part["audio_features"] for part in parts])[None]
            del parts
            output = model(pixel_values, audio)
            instances, masks = post_process_video_instance_segmentation(
                output.class_logits[0], output.mask_embeddings[0], output.mask_features[0], PADDED_SIZE, IMAGE_SIZE,
                IMAGE_SIZE, config.num_detections, config.score_threshold, config.mask_chunk_size,
            )  # fmt: skip
            result = build_video_result(
                instances.scores, instances.labels, masks, timestamps, *IMAGE_SIZE, config.id2label
            )
        else:
            with AvisMaskFeatureStore() as store:
                segmentation = segment_video(
                    model, video_chunks(), IMAGE_SIZE, IMAGE_SIZE, store, frame_chunk_size=STREAMING_FRAME_CHUNK
                )
                instances = segmentation.instances
                result = build_video_result(
                    instances.scores, instances.labels, segmentation.masks, timestamps, *IMAGE_SIZE, config.id2label
                )
                spilled = store.spilled_frames
    seconds = time.perf_counter() - start
    return {
        "frames": frames,
        "mode": "one-shot" if one_shot else "streaming",
        "seconds": seconds,
        "fps": frames / seconds,
        "kept": len(result.tracks),
        "spilled": 0 if one_shot else spilled,
        "load": (load_before, os.getloadavg()[0]),
    }


def run_child(frames: int, one_shot: bool, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", "--frames", str(frames), "--threads", str(args.threads)]
    command += (["--one-shot"] if one_shot else []) + (["--plain-malloc"] if args.plain_malloc else [])
    environment = {**os.environ, **({"OMP_WAIT_POLICY": "PASSIVE"} if args.passive_wait else {})}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"the run with {frames} frames failed (status {status})")
    measured = json.loads(output.strip().splitlines()[-1])
    measured["rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    measured["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    measured["system_seconds"] = usage.ru_stime
    return measured


def print_row(row: dict) -> None:
    fps_ratio = f"{row['fps'] / ORIGINAL_FPS[row['frames']]:.2f}x" if row["frames"] in ORIGINAL_FPS else "-"
    rss_ratio = f"{row['rss_gb'] / ORIGINAL_RSS_GB[row['frames']]:.2f}x" if row["frames"] in ORIGINAL_RSS_GB else "-"
    print(
        f"| {row['frames']:>4} | {row['mode']:<9} | {row['fps']:6.3f} | {fps_ratio:>8} | {row['rss_gb']:5.2f} | "
        f"{rss_ratio:>8} | {row['seconds']:7.1f} | {row['system_seconds']:6.1f} | {row['kept']:>4} | "
        f"{row['spilled']:>7} | {row['load'][0]:.2f} / {row['load'][1]:.2f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[18, 36, 60, 120, 600])
    parser.add_argument("--one-shot", action="store_true", help="also time the one-shot path (T <= 60)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plain-malloc", action="store_true", help="leave glibc's malloc settings as they are")
    parser.add_argument(
        "--passive-wait", action="store_true", help="OMP_WAIT_POLICY=PASSIVE: idle threads sleep rather than spin"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.frames[0], args.one_shot, args.threads, not args.plain_malloc)))
        return
    print(f"full-size R50 (random weights), {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} frames padded to "
          f"{PADDED_SIZE[0]}x{PADDED_SIZE[1]}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"malloc {'plain' if args.plain_malloc else 'tuned'}, OMP wait {'passive' if args.passive_wait else 'default'}")  # fmt: skip
    print(
        "| T    | path      | fps    | vs orig. | RSS GB | vs orig. | seconds | sys s  | kept | spilled | load 1-min before / after |"
    )
    print(
        "|------|-----------|--------|----------|--------|----------|---------|--------|------|---------|---------------------------|"
    )
    for frames in args.frames:
        modes = [False, True] if args.one_shot and frames <= 60 else [False]
        for one_shot in modes:
            print_row(run_child(frames, one_shot, args))


if __name__ == "__main__":
    main()
