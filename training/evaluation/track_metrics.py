"""HOTA and TrackMAP (the paper's mAP) from PyPI `trackeval`, computed as the original AVIS evaluator does.

The original evaluator is a TrackEval fork whose HOTA and TrackMAP code is upstream's; its AVIS dataset is
upstream's YouTube-VIS dataset plus a `merge` of each ground-truth frame's polygons. So this module feeds
`trackeval.datasets.YouTubeVIS` from memory, hands it ground truth already merged to one mask per frame (as an
uncompressed RLE, which its loader reads as one mask, where a polygon list would give one mask per polygon), and
combines the results the same way: per class over videos, then the average over every category of the GT.
"""

import warnings

import numpy as np
from pycocotools import mask as mask_utils
from trackeval.datasets import YouTubeVIS
from trackeval.datasets._base_dataset import _BaseDataset
from trackeval.metrics import HOTA, TrackMAP

from .inputs import GroundTruth, GroundTruthTrack, PredictedTrack

# The original's TrackMAP settings (avism/data/avis_eval.py::eval_track): no time ranges, area ranges of
# 128^2 and 256^2 pixels (not COCO's 32^2 / 96^2), unlimited detections per video.
TRACK_MAP_CONFIG = {
    "USE_TIME_RANGES": False,
    "AREA_RANGES": [[0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]],
    "PRINT_CONFIG": False,
}
HOTA_KEYS = ("HOTA", "DetA", "DetRe", "DetPr", "AssA", "AssRe", "AssPr", "LocA")
# Our key -> TrackMAP's field. AP_s/m/l are -100 when no GT track falls in the area range (TrackMAP's -1
# sentinel), as the original reports them.
TRACK_MAP_KEYS = {"mAP": "AP_all", "AP_s": "AP_area_s", "AP_m": "AP_area_m", "AP_l": "AP_area_l", "AR": "AR_all"}
# Positions of IoU 0.5 and 0.75 in TrackMAP's thresholds np.arange(0.5, 0.96, 0.05).
AP50_INDEX, AP75_INDEX = 0, 5
_TRACKER = "predictions"


def hota_and_track_map(ground_truth: GroundTruth, predictions: list[PredictedTrack]) -> dict[str, float]:
    """HOTA (and its components) and TrackMAP in percent, class-averaged over all ground-truth categories."""
    dataset = _InMemoryYouTubeVIS(ground_truth, predictions)
    hota, track_map = HOTA(), TrackMAP(dict(TRACK_MAP_CONFIG))
    # Per class, per video: each metric's result for that class in that video.
    hota_results = {cls: {} for cls in dataset.class_list}
    track_map_results = {cls: {} for cls in dataset.class_list}
    # Sorted by name like the original: predicted tracks are numbered in this order, and TrackMAP treats the
    # track numbered 0 specially (its `gt_m > 0` test lets a GT matched by track 0 be matched again).
    for name in sorted(dataset.seq_list):
        raw = dataset.get_raw_seq_data(_TRACKER, name)
        for cls in dataset.class_list:
            data = dataset.get_preprocessed_seq_data(raw, cls)
            hota_results[cls][name] = hota.eval_sequence(data)
            track_map_results[cls][name] = track_map.eval_sequence(data)
    # Every listed category counts in HOTA, including ones without GT or predictions (they add HOTA 0, LocA 1);
    # TrackMAP leaves out categories without GT tracks (its -1 sentinel), as upstream does.
    h = hota.combine_classes_class_averaged({c: hota.combine_sequences(r) for c, r in hota_results.items()})
    m = track_map.combine_classes_class_averaged(
        {c: track_map.combine_sequences(r) for c, r in track_map_results.items()}
    )
    metrics = {key: 100 * np.mean(h[key]) for key in HOTA_KEYS}
    metrics |= {key: 100 * np.mean(m[field]) for key, field in TRACK_MAP_KEYS.items()}
    metrics["AP50"] = 100 * m["AP_all"][AP50_INDEX]
    metrics["AP75"] = 100 * m["AP_all"][AP75_INDEX]
    return metrics


class _InMemoryYouTubeVIS(YouTubeVIS):
    """trackeval's YouTube-VIS dataset given Python objects instead of its folder layout.

    Only the constructor is replaced (upstream's reads its JSON files from fixed sub-folders); reading tracks,
    numbering them, mask IoUs and per-class preprocessing are upstream's.
    """

    def __init__(self, ground_truth: GroundTruth, predictions: list[PredictedTrack]):
        _BaseDataset.__init__(self)
        self.class_list = list(ground_truth.categories.values())
        self.class_name_to_class_id = {name: i for i, name in ground_truth.categories.items()}
        self.seq_list = [video.name for video in ground_truth.videos.values()]
        self.seq_name_to_seq_id = {video.name: video.video_id for video in ground_truth.videos.values()}
        self.seq_lengths = {video.video_id: video.num_frames for video in ground_truth.videos.values()}
        self.gt_data = {"annotations": [_youtube_vis_annotation(track, ground_truth) for track in ground_truth.tracks]}
        self._prepare_gt_annotations()
        self.tracker_list = [_TRACKER]
        self.tracker_data = {_TRACKER: [_youtube_vis_result(track) for track in predictions]}
        self.global_tid_counter = 0


def _youtube_vis_annotation(track: GroundTruthTrack, ground_truth: GroundTruth) -> dict:
    video = ground_truth.videos[track.video_id]
    return {
        "id": track.annotation_id,
        "video_id": track.video_id,
        "category_id": track.category_id,
        "iscrowd": track.iscrowd,
        "height": video.height,
        "width": video.width,
        "segmentations": [None if rle is None else _uncompressed_rle(rle) for rle in track.masks],
        "areas": track.areas,
    }


def _youtube_vis_result(track: PredictedTrack) -> dict:
    # A fresh dict: trackeval writes the track's id and areas into it.
    return {
        "video_id": track.video_id,
        "category_id": track.category_id,
        "score": track.score,
        "segmentations": track.masks,
    }


def _uncompressed_rle(rle: dict) -> dict:
    """The same mask with `counts` as plain run lengths, which upstream's `frPyObjects` turns back into one RLE.

    Upstream does not merge a frame's polygons (a multi-part object would fail there), so the adapter hands
    it the merged mask; the round trip is lossless, so IoUs and areas are the original's bit for bit.
    """
    with warnings.catch_warnings():
        # pycocotools 2.0.11 calls np.array(copy=False) in decode, which numpy 2 flags; the mask is unaffected.
        warnings.simplefilter("ignore", DeprecationWarning)
        pixels = mask_utils.decode(rle).ravel(order="F")  # COCO RLE runs go down the columns
    edges = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [pixels.size])))
    if pixels[0]:
        runs = np.concatenate(([0], runs))  # COCO RLE always starts with a run of zeros
    # A uint32 array rather than a list: pycocotools reads either, and a dataset's worth of GT stays small.
    return {"size": list(rle["size"]), "counts": runs.astype(np.uint32)}
