"""What a user's run of a long video costs: the command line's path, from a video file to its overlay and results.

    python benchmarks/bench_inference.py                                   # T = 60 and 600, 10 and all kept
    python benchmarks/bench_inference.py --frames 36 --kept 10 --dtype float32 bfloat16

Each run is `python -m modeling_avis predict VIDEO --out overlay.mp4 --json results.json --threads 2` as the command
line runs it (glibc's malloc tuned, one frame per worker thread), in a fresh process whose peak RSS is its own
(`ru_maxrss` from wait4), on a generated 360x640 video of T seconds (5 fps, with sound) sampled at 1 fps: T frames
through both passes, the masks of the kept instances to RLE, the overlay of every source frame, the results JSON.

The model is the full-size R50 preset (with its VGGish audio encoder) with random weights drawn by the reference
fixtures' rules (`draw_weights`): its scores spread as a trained model's do, so that it keeps instances (about 95
of the 100 candidates above 0.3 on these videos). `--kept 10` keeps the CLI's usual 10 (`--max-instances 10`),
`--kept all` every instance above the threshold. Their masks are widened to objects' sizes (`widen_masks`).
`--disk-budget` bounds the mask-feature spill as the CLI's does (frames beyond it are computed again): `none` gives
the other side of that trade.

Printed per run: instances kept, frames/s over the whole command (model loading excluded), the time of each stage
(both passes with the post-processing, the overlay, the JSON), peak RSS, the RLE bytes of the results, and the peak
of temporary disk (every file the run holds open in its own temporary folder, sampled every 0.2 s: the mask-feature
spill and the RLE store). No figure of the original is here: `../shared/tools/original-harness` runs it beside us.
The machine's load average is printed with each row: other processes may share its cores.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = (360, 640)
SOURCE_FPS = 5
# Added to the drawn weights' clip mask logits: kept masks then cover 13 % of these frames (0.002 % without).
MASK_LOGIT_SHIFT = 8.0
HEADER = (
    "| T | dtype | kept | mask area | frames/s | segment s | overlay s | JSON s | peak RSS GB | RLE MB | temp disk GB "
    "| load |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def draw_weights(model, seed: int = 0) -> None:
    """Every float tensor of `model`'s state dict drawn from one generator, in state-dict order, by the reference
    fixtures' rules (`../shared/fixtures/README.md`): frozen batch-norm weight and variance U(0.6, 1.4), bias and mean
    N(0, 0.1); layer/group-norm weight 1 + N(0, 0.1), bias N(0, 0.1); embeddings and the pixel decoder's level
    embedding N(0, 1); other tensors of 2+ dimensions N(0, 1/sqrt(fan_in)), class heads x4; other 1-d N(0, 0.05)."""
    import torch
    from torch import nn

    from modeling_avis.backbone_avis import AvisFrozenBatchNorm2d

    generator = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            owner_name, _, attribute = key.rpartition(".")
            owner, shape = modules[owner_name], tensor.shape
            if not tensor.is_floating_point():
                continue
            if isinstance(owner, AvisFrozenBatchNorm2d):
                if attribute in ("weight", "running_var"):
                    value = torch.rand(shape, generator=generator) * 0.8 + 0.6
                else:
                    value = torch.randn(shape, generator=generator) * 0.1
            elif isinstance(owner, nn.LayerNorm | nn.GroupNorm):
                value = torch.randn(shape, generator=generator) * 0.1 + (1.0 if attribute == "weight" else 0.0)
            elif isinstance(owner, nn.Embedding) or key == "pixel_decoder.level_embed":
                value = torch.randn(shape, generator=generator)
            elif tensor.dim() >= 2:
                value = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
                if owner_name.endswith("class_predictor") and attribute == "weight":
                    value = value * 4.0
            else:
                value = torch.randn(shape, generator=generator) * 0.05
            tensor.copy_(value)


def widen_masks(model, shift: float = MASK_LOGIT_SHIFT) -> None:
    """Drawn weights keep instances but give them masks of a few pixels, where a trained model's cover objects:
    one mask-feature channel made a constant 1 and its embedding bias `shift` add `shift` to every clip-level mask
    logit, so that the masks the RLE encoder and the renderer get cover a share of the frame as objects do."""
    import torch

    clip = model.clip_module
    with torch.no_grad():
        clip.mask_features_projection.weight[0].zero_()
        clip.mask_features_projection.bias[0] = 1.0
        clip.mask_embedder.layers[-1].weight[0].zero_()
        clip.mask_embedder.layers[-1].bias[0] = shift


def make_model_folder(folder: Path) -> Path:
    """The full-size R50 preset with a VGGish audio encoder and drawn weights, saved as the command line loads it."""
    if (folder / "config.json").is_file():
        return folder
    sys.path.insert(0, str(ROOT))
    from modeling_avis import AvisConfig, AvisModel, AvisProcessor, AvisVggishConfig
    from modeling_avis.pipeline_avis import save_model_folder

    model = AvisModel(AvisConfig.from_preset("r50_imagenet", audio_config=AvisVggishConfig())).eval()
    draw_weights(model)
    widen_masks(model)
    save_model_folder(folder, model, AvisProcessor.for_model(model.config))
    return folder


def make_video(path: Path, seconds: int, fps: int = SOURCE_FPS) -> Path:
    """A 360x640 video of `seconds` at `fps` with stereo sound: smooth random colour fields that drift from one
    second's to the next (as the harness's frames, but moving), and noise for sound."""
    if path.is_file():
        return path
    import av
    import numpy as np
    import torch
    from torch.nn import functional as F

    generator = torch.Generator().manual_seed(seconds)
    height, width = IMAGE_SIZE

    def field() -> torch.Tensor:
        coarse = torch.rand(1, 3, height // 40 + 2, width // 40 + 2, generator=generator) * 255
        return F.interpolate(coarse, size=IMAGE_SIZE, mode="bicubic", align_corners=False)[0]

    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=44100, layout="stereo")
        current, following = field(), field()
        for index in range(seconds * fps):
            step = index % fps
            if index and not step:
                current, following = following, field()
            image = current + (following - current) * (step / fps)
            rgb = image.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(video.encode())
        samples = np.random.default_rng(seconds).normal(0, 0.1, (2, 44100)).astype(np.float32)
        for second in range(seconds):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 44100, second * 44100
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    partial.rename(path)
    return path


def child(args: argparse.Namespace) -> dict:
    """One run of the command line's predict, stage by stage as `modeling_avis.__main__.predict` calls them."""
    sys.path.insert(0, str(ROOT))
    from transformers.utils import logging as transformers_logging

    from modeling_avis.__main__ import DTYPES
    from modeling_avis.inference_avis import AvisVideoSegmenter
    from modeling_avis.results import write_results_json
    from modeling_avis.runtime import configure_runtime
    from modeling_avis.video_io import probe_video
    from modeling_avis.visualization import render_overlay

    transformers_logging.disable_progress_bar()
    configure_runtime(args.threads)
    disk_budget = None if args.disk_budget == "none" else int(float(args.disk_budget) * 2**30)
    segmenter = AvisVideoSegmenter.from_pretrained(args.model, "cpu", DTYPES[args.dtype], disk_budget=disk_budget)
    out = Path(args.out)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = segmenter(args.video, fps=1.0, max_instances=None if args.kept == "all" else int(args.kept))
    segmented = time.perf_counter()
    render_overlay(probe_video(args.video), result, out / "overlay.mp4")
    rendered = time.perf_counter()
    write_results_json({1: result}, out / "results.json")
    written = time.perf_counter()
    stores = {id(track.segmentations.store): track.segmentations.store for track in result.tracks}
    areas = [area for track in result.tracks for area in track.areas()]
    return {
        "frames": result.num_frames,
        "dtype": args.dtype,
        "kept": len(result.tracks),
        "mask_area": sum(areas) / max(len(areas), 1) / (result.height * result.width),
        "seconds": written - start,
        "segment_seconds": segmented - start,
        "overlay_seconds": rendered - segmented,
        "json_seconds": written - rendered,
        "rle_bytes": sum(store.nbytes for store in stores.values()),
        "json_bytes": (out / "results.json").stat().st_size,
        "load": (load_before, os.getloadavg()[0]),
    }


class TemporaryDiskWatch:
    """The peak bytes of the files a process holds open under `folder` (anonymous temporary files included),
    sampled from /proc every 0.2 s until stopped."""

    def __init__(self, pid: int, folder: Path):
        self.pid, self.folder, self.peak = pid, str(folder), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        fds = Path(f"/proc/{self.pid}/fd")
        while not self._stop.wait(0.2):
            total = 0
            try:
                for fd in fds.iterdir():
                    try:
                        if os.readlink(fd).startswith(self.folder):
                            total += os.stat(fd).st_blocks * 512
                    except OSError:
                        continue
            except OSError:
                return
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_child(video: Path, model: Path, frames: int, dtype: str, kept: str, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="avis_bench_"))
    temporary = work / "tmp"
    temporary.mkdir()
    command = [sys.executable, __file__, "--child", "--video", str(video), "--model", str(model), "--out", str(work),
               "--dtype", dtype, "--kept", kept, "--threads", str(args.threads), "--disk-budget", args.disk_budget]  # fmt: skip
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(temporary)}
        )
        watch = TemporaryDiskWatch(process.pid, temporary)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        temporary_peak = watch.stop()
        if status != 0:
            raise SystemExit(f"the run of T={frames} ({dtype}, kept {kept}) failed (status {status})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = json.loads(output.strip().splitlines()[-1])
    row.update(rss_gb=usage.ru_maxrss * 1024 / 1e9, temporary_disk_bytes=temporary_peak, asked_kept=kept)
    return row


def format_row(row: dict) -> str:
    return (
        f"| {row['frames']} | {row['dtype']} | {row['kept']} | {row['mask_area']:.1%} | "
        f"{row['frames'] / row['seconds']:.3f} | "
        f"{row['segment_seconds']:.1f} | {row['overlay_seconds']:.1f} | {row['json_seconds']:.1f} | "
        f"{row['rss_gb']:.2f} | {row['rle_bytes'] / 1e6:.1f} | {row['temporary_disk_bytes'] / 1e9:.2f} | "
        f"{row['load'][0]:.2f} / {row['load'][1]:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 600], help="video lengths in seconds (= frames)")
    parser.add_argument("--kept", nargs="+", default=["10", "all"], help="instances kept: a number, or all")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--disk-budget", default="1", help="GB of temporary disk for mask features, as the CLI's "
                        "--disk-budget (default 1), or none: no bound")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "avis_bench_cache",
                        help="where the generated model folder and videos are kept between runs")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.kept, args.dtype = args.kept[0], args.dtype[0]
        print(json.dumps(child(args)))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    model = make_model_folder(args.cache / "r50_drawn_weights_objects")
    print(
        f"full-size R50 (drawn weights), {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} video at {SOURCE_FPS} fps sampled at 1 fps, "
        f"{args.threads} threads, {os.cpu_count()} CPUs, disk budget {args.disk_budget} GB, {time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    print(HEADER, flush=True)
    rows = []
    for frames in args.frames:
        video = make_video(args.cache / f"video_{frames}s.mp4", frames)
        for dtype in args.dtype:
            for kept in args.kept:
                rows.append(run_child(video, model, frames, dtype, kept, args))
                print(format_row(rows[-1]), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
