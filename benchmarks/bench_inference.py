"""Throughput and peak memory of AVISM inference on long videos: the full-size R50 preset with random weights.

    python benchmarks/bench_inference.py                       # T = 18, 36, 60, 120, 600, streaming
    python benchmarks/bench_inference.py --frames 18 36 --one-shot

Each video length runs in a fresh process (so each peak RSS is its own: `ru_maxrss` of that child, from wait4) on 2
CPU threads, with glibc's malloc tuned as the command line tunes it (`--plain-malloc` leaves it). A video is 360x640
frames, padded to 384x640 as the processor pads them, with 128-d audio features; the frames are made chunk by chunk,
so no video is ever held whole. The time covers everything after the model is built: both passes of
`AvisVideoSegmenter.outputs` (frames encoded one per thread, see `encode_video`) and the processor's
post-processing with the RLE encoding of the masks, as the command line runs them. `--one-shot` also times the
straightforward path (`AvisModel.forward` on the whole video with 2 torch threads in the config's 18-frame chunks,
then the same post-processing). The machine's load average is printed with each row: other processes
may share its cores.

The original's numbers are issue 8's: AVISM's own code on this kind of machine, 2 threads, the same model and frames.
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
HEADER = (
    "| T    | path      | fps    | vs orig. | RSS GB | vs orig. | seconds | CPU s   | sys s  | kept | load before / after |\n"
    "|------|-----------|--------|----------|--------|----------|---------|---------|--------|------|---------------------|"
)


def child(frames: int, one_shot: bool, threads: int, tune_allocator: bool) -> dict:
    """Runs one video length in this process and returns its measurements."""
    import torch

    sys.path.insert(0, str(ROOT))
    from modeling_avis import AvisConfig, AvisModel, AvisProcessor, AvisVideoMetadata
    from modeling_avis.__main__ import reuse_freed_memory
    from modeling_avis.inference_avis import AvisVideoSegmenter

    if tune_allocator:
        reuse_freed_memory()  # as the command line does
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AvisModel(AvisConfig.from_preset("r50_imagenet")).eval()
    config = model.config
    processor = AvisProcessor.for_model(config)
    segmenter = AvisVideoSegmenter(model, processor, cpu_threads=threads)
    chunk = config.frame_chunk_size if one_shot else segmenter.frame_chunk_size

    def video_chunks():
        generator = torch.Generator().manual_seed(1)
        for start in range(0, frames, chunk):
            count = min(chunk, frames - start)
            pixel_values = torch.zeros(count, 3, *PADDED_SIZE)
            pixel_values[:, :, : IMAGE_SIZE[0], : IMAGE_SIZE[1]] = torch.randn(
                count, 3, *IMAGE_SIZE, generator=generator
            )
            yield {"pixel_values": pixel_values, "audio_features": torch.randn(count, 128, generator=generator)}

    metadata = AvisVideoMetadata([float(k) for k in range(frames)], IMAGE_SIZE, IMAGE_SIZE, PADDED_SIZE)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    if one_shot:
        with torch.inference_mode():
            parts = list(video_chunks())
            pixel_values = torch.cat([part["pixel_values"] for part in parts])[None]
            audio = torch.cat([part["audio_features"] for part in parts])[None]
            del parts
            outputs = model(pixel_values, audio)
            (result,) = processor.post_process_video_instance_segmentation(outputs, [metadata], config.id2label)
    else:
        with segmenter.outputs(video_chunks()) as outputs:
            (result,) = processor.post_process_video_instance_segmentation(outputs, [metadata], config.id2label)
    seconds = time.perf_counter() - start
    return {
        "frames": frames,
        "mode": "one-shot" if one_shot else "streaming",
        "seconds": seconds,
        "fps": frames / seconds,
        "kept": len(result.tracks),
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


def format_row(row: dict) -> str:
    frames = row["frames"]
    fps_ratio = f"{row['fps'] / ORIGINAL_FPS[frames]:.2f}x" if frames in ORIGINAL_FPS else "-"
    rss_ratio = f"{row['rss_gb'] / ORIGINAL_RSS_GB[frames]:.2f}x" if frames in ORIGINAL_RSS_GB else "-"
    return (
        f"| {frames:>4} | {row['mode']:<9} | {row['fps']:6.3f} | {fps_ratio:>8} | {row['rss_gb']:6.2f} | "
        f"{rss_ratio:>8} | {row['seconds']:7.1f} | {row['cpu_seconds']:7.1f} | {row['system_seconds']:6.1f} | "
        f"{row['kept']:>4} | {row['load'][0]:.2f} / {row['load'][1]:.2f}         |"
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
    malloc = "plain" if args.plain_malloc else "tuned"
    wait = "passive" if args.passive_wait else "default"
    print(
        f"full-size R50 (random weights), {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} frames padded to {PADDED_SIZE[0]}x"
        f"{PADDED_SIZE[1]}, {args.threads} threads, {os.cpu_count()} CPUs, malloc {malloc}, OMP wait {wait}"
    )
    print(HEADER)
    for frames in args.frames:
        for one_shot in [False, True] if args.one_shot and frames <= 60 else [False]:
            print(format_row(run_child(frames, one_shot, args)), flush=True)


if __name__ == "__main__":
    main()
