"""A stand-in for the AVISM model, so that the app runs end to end before the real model is wired in.

It is no model of anything: it clusters the colours of the sampled frames, keeps for each colour its largest blob
in every frame, scores each colour by how much its blobs move, and empties the masks of frames where the sound is
quiet. The classes are placeholders. Replace it through `app.inference.load_service`.
"""

import warnings

import av
import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.cluster.vq import kmeans2, vq

from modeling_avis.configuration_avis import AVISEG_LABELS
from modeling_avis.tracks import AvisTrack, AvisVideoResult, encode_mask
from modeling_avis.video_io import ProgressFn, probe_video

STAND_IN_NOTE = (
    "Stand-in inference (moving colour blobs while there is sound), not AVISM: the classes are placeholders and "
    "the model setting ({source}) is not used yet."
)
# Side of the frames the blobs are found in; masks are scaled back to the video's size.
WORKING_SIZE = 160
NUM_COLOURS = 6
# A colour covering more of the picture than this is background, less is noise.
MIN_COVERAGE, MAX_COVERAGE = 0.003, 0.35
# A sampled frame is silent when its loudness is under this fraction of the loudest one.
SILENCE = 0.1


class ColourMotionStandIn:
    """Implements app.inference.InferenceService without a model; `source` (a ModelSource) is only named."""

    def __init__(self, source):
        self.source = source

    def predict(
        self, video_path: str, fps: float, score_threshold: float, max_instances: int, progress: ProgressFn
    ) -> AvisVideoResult:
        video = probe_video(video_path)
        timestamps, frames = _sample_frames(video, fps, progress)
        loudness = _loudness(video_path, timestamps, fps, progress) if video.has_audio else None
        progress(0.8, "Running the model (stand-in)")
        sounding = loudness >= SILENCE if loudness is not None else np.ones(len(timestamps), dtype=bool)
        candidates = [
            (score, blobs) for score, blobs in _moving_colour_blobs(frames, sounding) if score > score_threshold
        ]
        candidates.sort(key=lambda candidate: -candidate[0])
        tracks = [
            AvisTrack(
                track_id=rank + 1,
                label=rank % len(AVISEG_LABELS),
                label_name=AVISEG_LABELS[rank % len(AVISEG_LABELS)],
                score=score,
                segmentations=[encode_mask(_resize_mask(blob, video.width, video.height)) for blob in blobs],
            )
            for rank, (score, blobs) in enumerate(candidates[:max_instances])
        ]
        progress(1.0, "Running the model (stand-in)")
        return AvisVideoResult(
            tracks=tracks,
            timestamps=np.asarray(timestamps),
            height=video.height,
            width=video.width,
            has_audio=video.has_audio,
            fps=video.fps,
            notes=[STAND_IN_NOTE.format(source=" ".join(filter(None, (self.source.kind, self.source.location))))],
        )


def _sample_frames(video, fps: float, progress: ProgressFn) -> tuple[list[float], np.ndarray]:
    """The source frames nearest to every 1/fps seconds, as small RGB images (T, h, w, 3) uint8."""
    scale = WORKING_SIZE / max(video.width, video.height)
    size = {"width": max(2, round(video.width * scale)), "height": max(2, round(video.height * scale))}
    timestamps, frames = [], []
    with av.open(video.path) as container:
        for frame in container.decode(container.streams.video[0]):
            elapsed = frame.time - video.start_time
            if elapsed >= len(timestamps) / fps - 0.5 / (video.fps or fps):
                timestamps.append(elapsed)
                frames.append(frame.to_ndarray(format="rgb24", **size))
                progress(0.7 * min(elapsed / video.duration, 1.0), "Decoding frames")
    return timestamps, np.stack(frames)


def _loudness(video_path: str, timestamps: list[float], fps: float, progress: ProgressFn) -> np.ndarray:
    """RMS of the sound within half a sampling period of each timestamp, divided by the loudest, (T,)."""
    progress(0.7, "Reading the audio")
    rate = 16000
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks = []
    with av.open(video_path) as container:
        for frame in container.decode(container.streams.audio[0]):
            chunks.extend(resampled.to_ndarray().ravel() for resampled in resampler.resample(frame))
    samples = np.concatenate(chunks) if chunks else np.zeros(1, dtype=np.float32)
    half = 0.5 / fps
    rms = np.zeros(len(timestamps))
    for index, time in enumerate(timestamps):
        window = samples[max(int((time - half) * rate), 0) : int((time + half) * rate)]
        rms[index] = np.sqrt(np.mean(np.square(window))) if len(window) else 0.0
    return rms / rms.max() if rms.max() > 0 else rms


def _moving_colour_blobs(frames: np.ndarray, sounding: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(score, blob masks (T, h, w)) per colour cluster that is neither background nor noise."""
    pixels = frames.reshape(-1, 3).astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    sample = pixels[rng.choice(len(pixels), size=min(len(pixels), 20000), replace=False)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty cluster on a video with few colours is expected
        codebook, _ = kmeans2(sample, NUM_COLOURS, minit="++", rng=rng)
    clusters = vq(pixels, codebook)[0].reshape(frames.shape[:3])
    grey = frames.astype(np.float32).mean(axis=-1)
    motion = np.abs(np.diff(grey, axis=0, prepend=grey[:1])) if len(frames) > 1 else np.zeros_like(grey)
    results = []
    for colour in range(NUM_COLOURS):
        coverage = float((clusters == colour).mean())
        if not MIN_COVERAGE <= coverage <= MAX_COVERAGE:
            continue
        blobs = np.stack([_largest_blob(clusters[t] == colour) for t in range(len(frames))])
        if not blobs.any():
            continue
        relative_motion = motion[blobs].mean() / (motion.mean() + 1e-6)
        blobs[~sounding] = False
        results.append((float(relative_motion / (1.0 + relative_motion)), blobs))
    return results


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of `mask` after an opening, holes filled."""
    components, count = ndimage.label(ndimage.binary_opening(mask))
    if count == 0:
        return np.zeros_like(mask)
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(components == largest)


def _resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image) >= 128
