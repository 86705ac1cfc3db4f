"""What the online mode costs a live user: `avis stream`'s latency, throughput and memory.

    python benchmarks/bench_stream.py                                     # all three, the defaults below
    python benchmarks/bench_stream.py --only latency --windows 5,1 5,2 --latency-seconds 30

Every run is `python -m modeling_avis stream VIDEO ...` as a user runs it, in a fresh process (its JSON lines read
as they come, its resident memory read at each: VmRSS, and its peak VmHWM), with its temporary folder (TMPDIR) a new
empty one.

- latency: the default model on the shipped duet example (two shapes sounding, 384x288, 1 fps, with sound) looped
  to `--latency-seconds`, paced in real time (`--realtime`: each frame arrives at its time after the start by the
  wall clock and goes to the model once the second of sound after it is in, as from a live source), one sampled
  frame per second. Per sampled frame, the line's `latency`: from the frame's arrival to its masks printed. The bar:
  every frame within 1.5 s at the default window and stride. A frame waits, in the worst case, for the S-1 sampled
  frames after it that complete its window, then for 0.975 s of sound after the newest (the model pairs frame k with
  [t_k, t_k + 0.975 s]), then for the model: `model s` is what remains, latency - (S-1-j)/fps - 0.975 s for the j-th
  of a window's S frames.
- throughput: full-size R50 with weights drawn as `bench_inference.py` draws them (instances kept: every one above
  the threshold, `kept` counts the tracks in a line), on a generated 360x640 video with sound sampled at 1 fps,
  as fast as it goes, bfloat16 and float32: sampled frames/s from the first line to the last (model loading and
  the first window excluded). The bar: at least 1 sampled frame/s in bfloat16, a live source's pace.
- stages: where a frame's time goes in that throughput run (in this process, the same model and video): the
  model's parts (forward hooks), the post-processing, and the rest (decoding, log-mel, the session).
- memory: the default model on the duet example looped to each of `--memory-minutes`, as fast as it goes: peak RSS
  (the bar: the longest within 1.1x of the shortest) and temporary disk (the peak of the files the run holds open
  in its temporary folder, sampled every 0.2 s, and what is left in it at the end: both must be zero).

The CPU (model, cores, AMX) is printed first, and the load average beside each row: other processes may share
the cores.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_inference import IMAGE_SIZE, TemporaryDiskWatch, make_model_folder, make_video

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "app" / "examples" / "shapes_duet.mp4"
DEFAULT_MODEL = ROOT / "models" / "avis-sounding-shapes"
SOUND_LEAD = 0.975  # seconds of sound after a sampled frame that the model pairs with it
LATENCY_BAR, THROUGHPUT_BAR, MEMORY_BAR = 1.5, 1.0, 1.1


def cpu_line() -> str:
    """The CPU as /proc/cpuinfo names it, the cores this process may use, its matrix extensions, the load."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in info.splitlines())}
    name = fields.get("model name", "unknown")
    flags = set(fields.get("flags", "").split())
    amx = sorted(flag for flag in flags if flag.startswith("amx"))
    bf16 = "avx512_bf16" if "avx512_bf16" in flags else "no avx512_bf16"
    return (
        f"CPU: {name}, {len(os.sched_getaffinity(0))} cores, {'AMX (' + ', '.join(amx) + ')' if amx else 'no AMX'}, "
        f"{bf16}; load average {load()}"
    )


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def looped_example(path: Path, seconds: int) -> Path:
    """The duet example's frames and sound repeated to `seconds` (its 13 s over and over), as an mp4 at 1 fps."""
    if path.is_file():
        return path
    import av
    import numpy as np

    with av.open(str(EXAMPLE)) as source:
        frames = [frame.to_ndarray(format="rgb24") for frame in source.decode(video=0)]
    with av.open(str(EXAMPLE)) as source:
        rate = source.streams.audio[0].rate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        sound = np.concatenate(
            [out.to_ndarray()[0] for frame in source.decode(audio=0) for out in resampler.resample(frame)]
        )
    sound = np.pad(sound, (0, max(0, len(frames) * rate - len(sound))))[: len(frames) * rate]
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        video = container.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        for index in range(seconds):
            picture = av.VideoFrame.from_ndarray(frames[index % len(frames)], format="rgb24")
            picture.pts = index
            container.mux(video.encode(picture))
        container.mux(video.encode())
        for start in range(0, seconds * rate, 1024):  # AAC encodes 1024 samples a frame
            first = start % len(sound)
            piece = np.take(sound, range(first, first + min(1024, seconds * rate - start)), mode="wrap")
            frame = av.AudioFrame.from_ndarray(piece[None].astype(np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    partial.rename(path)
    return path


def run_stream(video: Path, options: list[str]) -> dict:
    """One `avis stream VIDEO options...` in a fresh process with an empty TMPDIR: its lines (each with the wall
    time it was read), peak RSS, and the temporary disk it held (peak) and left (at the end)."""
    work = Path(tempfile.mkdtemp(prefix="avis_bench_stream_"))
    temporary = work / "tmp"
    temporary.mkdir()
    command = [sys.executable, "-m", "modeling_avis", "stream", str(video), *options]
    load_before = load()
    try:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TMPDIR": str(temporary)},
        )  # fmt: skip
        watch = TemporaryDiskWatch(process.pid, temporary)
        lines = []
        for line in process.stdout:
            read = time.monotonic()
            entry = json.loads(line)
            # the masks are read no further: a line's RLE strings are its size, not its meaning here
            lines.append(
                {
                    "read": read,
                    "frames": entry["frames"],
                    "tracks": [track["id"] for track in entry["tracks"]],
                    "rss": resident_bytes(process.pid),
                    "peak": resident_bytes(process.pid, "VmHWM"),
                }
            )
        stderr = process.stderr.read()
        _, status, _ = os.wait4(process.pid, 0)
        temporary_peak = watch.stop()
        left = sum(path.stat().st_size for path in temporary.rglob("*") if path.is_file())
        left_files = sum(1 for path in temporary.rglob("*") if path.is_file())
        # torch makes an empty cache folder (torchinductor_<user>) in TMPDIR on import: named, not counted as disk
        left_folders = sorted(str(path.relative_to(temporary)) for path in temporary.rglob("*") if path.is_dir())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed (status {status}):\n{stderr}")
    return {
        "lines": lines,
        # the child's own peak (VmHWM: model loading included) at its last line: wait4's ru_maxrss would also count
        # what this process held when it forked the child (Linux keeps the larger across exec), and the stages
        # section holds a full-size R50
        "rss_gb": lines[-1]["peak"] / 1e9,
        "temporary_peak": temporary_peak,
        "temporary_left": left,
        "temporary_left_files": left_files,
        "temporary_left_folders": left_folders,
        "load": (load_before, load()),
    }


def resident_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory now (VmRSS) or its peak so far (VmHWM), 0 once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith(f"{field}:")), 0)


def latency(args: argparse.Namespace) -> list[dict]:
    video = looped_example(args.cache / f"duet_{args.latency_seconds}s.mp4", args.latency_seconds)
    print(
        f"\n### Latency: the default model, {EXAMPLE.name} looped to {args.latency_seconds} s, paced in real time at "
        f"1 sampled frame/s (--realtime), {args.threads or 'default'} threads\n"
    )
    print("| W | S | frames | mean s | p95 s | max s | model s (mean / max) | within 1.5 s | load (1, 5, 15 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for pair in args.windows:
        window, stride = (int(value) for value in pair.split(","))
        run = run_stream(
            video, ["--model", str(DEFAULT_MODEL), "--realtime", "--window", str(window), "--stride", str(stride),
                    *(["--threads", str(args.threads)] if args.threads else [])],
        )  # fmt: skip
        latencies, model_seconds = [], []
        for line in run["lines"]:
            newest = line["frames"][-1]["index"]
            for frame in line["frames"]:
                latencies.append(frame["latency"])
                model_seconds.append(frame["latency"] - (newest - frame["index"]) - SOUND_LEAD)
        row = {
            "window": window,
            "stride": stride,
            "frames": len(latencies),
            "mean": statistics.fmean(latencies),
            "p95": statistics.quantiles(latencies, n=20, method="inclusive")[-1],
            "max": max(latencies),
            "model_mean": statistics.fmean(model_seconds),
            "model_max": max(model_seconds),
            "within": sum(value <= LATENCY_BAR for value in latencies) / len(latencies),
            "load": run["load"],
        }
        rows.append(row)
        print(
            f"| {window} | {stride} | {row['frames']} | {row['mean']:.2f} | {row['p95']:.2f} | {row['max']:.2f} | "
            f"{row['model_mean']:.2f} / {row['model_max']:.2f} | {row['within']:.0%} | "
            f"{row['load'][0]} -> {row['load'][1]} |",
            flush=True,
        )
    return rows


def throughput(args: argparse.Namespace) -> list[dict]:
    model = make_model_folder(args.cache / "r50_drawn_weights_objects")
    video = make_video(args.cache / f"video_{args.throughput_seconds}s.mp4", args.throughput_seconds)
    print(
        f"\n### Throughput: full-size R50 (drawn weights, every instance above the threshold kept), "
        f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} video of {args.throughput_seconds} s sampled at 1 fps, online W=5 S=1, as "
        f"fast as it goes, {args.threads or 'default'} threads\n"
    )
    print("| dtype | frames | frames/s | s a frame (median / max) | kept (tracks a line: mean / max) | track ids | "
          "peak RSS GB | load (1, 5, 15 min) |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    rows = []
    for dtype in args.dtypes:
        run = run_stream(
            video,
            ["--model", str(model), "--dtype", dtype, *(["--threads", str(args.threads)] if args.threads else [])],
        )
        lines = run["lines"]
        steps = [later["read"] - earlier["read"] for earlier, later in zip(lines, lines[1:])]
        frames = sum(len(line["frames"]) for line in lines[1:])
        kept = [len(line["tracks"]) for line in lines]
        row = {
            "dtype": dtype,
            "frames": sum(len(line["frames"]) for line in lines),
            "frames_per_second": frames / (lines[-1]["read"] - lines[0]["read"]),
            "step_median": statistics.median(steps),
            "step_max": max(steps),
            "kept_mean": statistics.fmean(kept),
            "kept_max": max(kept),
            "track_ids": len({track for line in lines for track in line["tracks"]}),
            "rss_gb": run["rss_gb"],
            "load": run["load"],
        }
        rows.append(row)
        print(
            f"| {dtype} | {row['frames']} | {row['frames_per_second']:.3f} | {row['step_median']:.2f} / "
            f"{row['step_max']:.2f} | {row['kept_mean']:.1f} / {row['kept_max']} | {row['track_ids']} | "
            f"{row['rss_gb']:.2f} | {row['load'][0]} -> {row['load'][1]} |",
            flush=True,
        )
    return rows


STAGES = ("audio_encoder", "backbone", "pixel_decoder", "frame_decoder", "clip_module")


class StageClock:
    """The seconds a segmenter spends in each of the model's parts (`STAGES`, by forward hooks) and in the online
    post-processing (by its call), since the last `take()`; and the instances each window links to the tracks (those
    above the keep threshold, whose masks are compared with the tracks' and each other's)."""

    def __init__(self, segmenter):
        self.spent = dict.fromkeys((*STAGES, "post-processing"), 0.0)
        self.started: dict[str, float] = {}
        self.linked: list[int] = []
        for name in STAGES:
            module = getattr(segmenter.model, name)
            module.register_forward_pre_hook(self._starter(name))
            module.register_forward_hook(self._stopper(name))
        self.post_process = segmenter.processor.post_process_online_windows
        segmenter.processor.post_process_online_windows = self._timed_post_process

    def _starter(self, name: str):
        return lambda _module, _inputs: self.started.__setitem__(name, time.perf_counter())

    def _stopper(self, name: str):
        return lambda _module, _inputs, _outputs: self._add(name, self.started[name])

    def _add(self, name: str, begun: float) -> None:
        self.spent[name] += time.perf_counter() - begun

    def _timed_post_process(self, outputs, session, *args, **kwargs):
        if not hasattr(session.tracks.link, "counted"):
            link = session.tracks.link

            def counted_link(instances, *link_args, **link_kwargs):
                self.linked.append(len(instances.scores))
                return link(instances, *link_args, **link_kwargs)

            counted_link.counted = True
            session.tracks.link = counted_link
        begun = time.perf_counter()
        try:
            return self.post_process(outputs, session, *args, **kwargs)
        finally:
            self._add("post-processing", begun)

    def take(self) -> dict[str, float]:
        spent, self.spent = self.spent, dict.fromkeys(self.spent, 0.0)
        return spent


def stages(args: argparse.Namespace) -> list[dict]:
    """Where a frame's time goes in the online mode (the throughput run's model and video, in this process): the
    model's parts timed by forward hooks, the post-processing (linking, masks) by its call, the rest (decoding,
    log-mel, the session) is what remains of each frame's step."""
    sys.path.insert(0, str(ROOT))
    import torch

    from modeling_avis.__main__ import DTYPES
    from modeling_avis.inference_avis import AvisVideoSegmenter
    from modeling_avis.runtime import configure_runtime

    model = make_model_folder(args.cache / "r50_drawn_weights_objects")
    video = make_video(args.cache / f"video_{args.throughput_seconds}s.mp4", args.throughput_seconds)
    threads = configure_runtime(args.threads)
    print(
        f"\n### Where the time goes: full-size R50 online (W=5 S=1), {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, "
        f"{min(args.throughput_seconds, args.stage_frames)} frames, {threads} threads, medians of the frames after the "
        "first window (s a frame)\n"
    )
    print(f"| dtype | {' | '.join(STAGES)} | post-processing | rest | step | linked | load (1, 5, 15 min) |")
    print("|---" * (len(STAGES) + 6) + "|")
    rows = []
    for dtype in args.dtypes:
        segmenter = AvisVideoSegmenter.from_pretrained(model, "cpu", DTYPES[dtype])
        clock = StageClock(segmenter)
        load_before = load()
        frames, last = [], time.perf_counter()
        with torch.inference_mode():
            for _ in segmenter.stream(video, fps=1.0, max_instances=None):
                now = time.perf_counter()
                frames.append({**clock.take(), "step": now - last})
                last = now
                if len(frames) >= args.stage_frames:
                    break
        kept = frames[5:] or frames
        parts = (*STAGES, "post-processing")
        row = {name: statistics.median(frame[name] for frame in kept) for name in (*parts, "step")}
        row["rest"] = statistics.median(frame["step"] - sum(frame[name] for name in parts) for frame in kept)
        row.update(dtype=dtype, linked=statistics.fmean(clock.linked), load=(load_before, load()))
        rows.append(row)
        cells = " | ".join(f"{row[name]:.3f}" for name in (*STAGES, "post-processing", "rest", "step"))
        print(f"| {dtype} | {cells} | {row['linked']:.1f} | {row['load'][0]} -> {row['load'][1]} |", flush=True)
    return rows


def memory(args: argparse.Namespace) -> list[dict]:
    print(
        f"\n### Memory: the default model, {EXAMPLE.name} looped, as fast as it goes, W=5 S=1, "
        f"{args.threads or 'default'} threads\n"
    )
    print(
        "| stream | frames | peak RSS GB | vs the shortest | RSS while streaming GB (first line / max / last line) | "
        "vs the shortest's max | temp disk peak | temp disk left (files; empty folders) | s | load (1, 5, 15 min) |"
    )
    print("|---" * 10 + "|")
    rows = []
    for minutes in args.memory_minutes:
        seconds = round(minutes * 60)
        video = looped_example(args.cache / f"duet_{seconds}s.mp4", seconds)
        start = time.monotonic()
        run = run_stream(
            video, ["--model", str(DEFAULT_MODEL), *(["--threads", str(args.threads)] if args.threads else [])]
        )
        row = {
            "minutes": minutes,
            "frames": sum(len(line["frames"]) for line in run["lines"]),
            "rss_gb": run["rss_gb"],
            "streaming_rss_gb": [line["rss"] / 1e9 for line in (run["lines"][0], run["lines"][-1])],
            "streaming_rss_max_gb": max(line["rss"] for line in run["lines"]) / 1e9,
            "temporary_peak": run["temporary_peak"],
            "temporary_left": run["temporary_left"],
            "temporary_left_files": run["temporary_left_files"],
            "temporary_left_folders": run["temporary_left_folders"],
            "seconds": time.monotonic() - start,
            "load": run["load"],
        }
        rows.append(row)
        print(
            f"| {minutes:g} min | {row['frames']} | {row['rss_gb']:.3f} | {row['rss_gb'] / rows[0]['rss_gb']:.3f}x | "
            f"{row['streaming_rss_gb'][0]:.3f} / {row['streaming_rss_max_gb']:.3f} / {row['streaming_rss_gb'][1]:.3f} | "
            f"{row['streaming_rss_max_gb'] / rows[0]['streaming_rss_max_gb']:.3f}x | "
            f"{row['temporary_peak']} B | {row['temporary_left']} B ({row['temporary_left_files']}; "
            f"{', '.join(row['temporary_left_folders']) or 'none'}) | "
            f"{row['seconds']:.0f} | {row['load'][0]} -> {row['load'][1]} |",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["latency", "throughput", "stages", "memory"],
                        default=["latency", "throughput", "stages", "memory"])  # fmt: skip
    parser.add_argument("--windows", nargs="+", default=["5,1"], help="latency: W,S pairs (default: 5,1)")
    parser.add_argument("--latency-seconds", type=int, default=120, help="latency: the paced stream's length")
    parser.add_argument("--throughput-seconds", type=int, default=40, help="throughput: the video's length")
    parser.add_argument("--stage-frames", type=int, default=20, help="stages: frames timed")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"])
    parser.add_argument("--memory-minutes", type=float, nargs="+", default=[10, 60], help="memory: stream lengths")
    parser.add_argument("--threads", type=int, help="the stream command's --threads (default: its own)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "avis_bench_cache",
                        help="where the generated model folder and videos are kept between runs")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(cpu_line(), f"({time.strftime('%Y-%m-%d %H:%M')})", flush=True)
    results = {section: globals()[section](args) for section in args.only}
    summary = []
    if "latency" in results:
        default = next((row for row in results["latency"] if (row["window"], row["stride"]) == (5, 1)), None)
        if default is not None:
            summary.append(f"latency at W=5 S=1: max {default['max']:.2f} s (bar {LATENCY_BAR} s): "
                           f"{'met' if default['max'] <= LATENCY_BAR else 'MISSED'}")  # fmt: skip
    if "throughput" in results:
        for row in results["throughput"]:
            if row["dtype"] == "bfloat16":
                summary.append(f"R50 bfloat16 throughput: {row['frames_per_second']:.2f} frames/s (bar "
                               f"{THROUGHPUT_BAR}): {'met' if row['frames_per_second'] >= THROUGHPUT_BAR else 'MISSED'}")  # fmt: skip
    if "memory" in results and len(results["memory"]) > 1:
        rows = results["memory"]
        ratio = rows[-1]["rss_gb"] / rows[0]["rss_gb"]
        streaming_ratio = rows[-1]["streaming_rss_max_gb"] / rows[0]["streaming_rss_max_gb"]
        disk = max(row["temporary_peak"] + row["temporary_left"] for row in rows)
        disk_files = max(row["temporary_left_files"] for row in rows)
        summary.append(f"peak RSS {rows[-1]['minutes']:g} min / {rows[0]['minutes']:g} min: {ratio:.3f}x (bar "
                       f"{MEMORY_BAR}x): {'met' if ratio <= MEMORY_BAR else 'MISSED'}; the largest RSS at a line "
                       f"{streaming_ratio:.3f}x: {'met' if streaming_ratio <= MEMORY_BAR else 'MISSED'}; "
                       f"temporary disk {disk} B: "
                       f"{'met' if disk == disk_files == 0 else 'MISSED'}")  # fmt: skip
    print("\n" + "\n".join(summary), f"\nload average at the end: {load()}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
