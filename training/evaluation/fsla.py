"""FSLA, the paper's frame-level sound localization accuracy, computed exactly as the original evaluator does.

A frame is correctly localized when the predictions present in it name the same classes as the sounding objects
(the ground-truth instances present in it), count as many non-empty masks, and overlap them by IoU > alpha. Frames
are typed by how many objects sound in them: none (n), a single one (s) or multiple (m). FSLA is the fraction of
correct frames over all frames of all videos, averaged over the alphas 0.05, 0.10, ..., 0.95; FSLAn / FSLAs /
FSLAm are the same over frames of one type.

The original (`avism/data/aviseval/metrics/av_loc.py`) has quirks that change the numbers; each is kept, for
parity with published results, where it happens below. Where the original raises IndexError (predictions with
null frames, see `_prediction_at`), this module gives the outcome documented there instead.
"""

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from .inputs import GroundTruth, GroundTruthTrack, PredictedTrack

# Same float values as the original's np.arange (0.15000000000000002, ...): a frame's IoU is compared to them.
ALPHAS = np.arange(0.05, 0.99, 0.05)
# The compressed RLE of an empty 720x1280 mask, AVISeg's frame size. The original hard-codes it as the only
# "no mask" prediction: at any other frame size an empty predicted mask counts as a mask.
EMPTY_MASK_720P = "PPTl0"
FRAME_TYPES = ("n", "s", "m")  # no, single, multiple sound sources


@dataclass
class FslaCounts:
    """frames: (3,) frames of each type; correct: (3, len(ALPHAS)) of those, correctly localized per alpha."""

    frames: np.ndarray
    correct: np.ndarray

    @classmethod
    def zeros(cls) -> "FslaCounts":
        return cls(np.zeros(len(FRAME_TYPES), dtype=int), np.zeros((len(FRAME_TYPES), len(ALPHAS)), dtype=int))

    def __add__(self, other: "FslaCounts") -> "FslaCounts":
        return FslaCounts(self.frames + other.frames, self.correct + other.correct)


def fsla(ground_truth: GroundTruth, predictions: list[PredictedTrack]) -> dict[str, float]:
    """FSLA over every video of the ground truth (see `fsla_from_counts` for the keys)."""
    gt_by_video = {video_id: [] for video_id in ground_truth.videos}
    pred_by_video = {video_id: [] for video_id in ground_truth.videos}
    for track in ground_truth.tracks:
        gt_by_video[track.video_id].append(track)
    for track in predictions:
        pred_by_video[track.video_id].append(track)
    counts = FslaCounts.zeros()
    for video in ground_truth.videos.values():
        counts += video_fsla_counts(gt_by_video[video.video_id], pred_by_video[video.video_id], video.num_frames)
    return fsla_from_counts(counts)


def fsla_from_counts(counts: FslaCounts) -> dict[str, float]:
    """FSLA, FSLAn/s/m in percent, and each type's correct-frame count and frame count.

    The counts are summed over all frames of all videos before dividing (frame-weighted, not a mean of videos).
    A frame type absent from the whole dataset gives NaN (0/0 in the original). `*_count` is the mean over alphas
    of the correct frames, truncated by int() as the original reports it.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        per_type = counts.correct / counts.frames[:, None]
    metrics = {"FSLA": 100 * np.mean(counts.correct.sum(0) / counts.frames.sum())}
    for i, frame_type in enumerate(FRAME_TYPES):
        metrics[f"FSLA{frame_type}"] = 100 * np.mean(per_type[i])
        metrics[f"FSLA{frame_type}_count"] = int(np.mean(counts.correct[i]))
        metrics[f"FSLA{frame_type}_all"] = int(counts.frames[i])
    return metrics


def video_fsla_counts(
    gt_tracks: list[GroundTruthTrack], pred_tracks: list[PredictedTrack], num_frames: int
) -> FslaCounts:
    """Frame counts of one video; both track lists in file order, all classes together."""
    matches = _match_tracks(gt_tracks, pred_tracks, num_frames)
    counts = FslaCounts.zeros()
    for t in range(num_frames):
        frame_type = min(sum(track.masks[t] is not None for track in gt_tracks), 2)
        counts.frames[frame_type] += 1
        counts.correct[frame_type] += _frame_correct(t, gt_tracks, pred_tracks, matches)
    return counts


def _match_tracks(
    gt_tracks: list[GroundTruthTrack], pred_tracks: list[PredictedTrack], num_frames: int
) -> list[tuple[int, int]]:
    """One class-agnostic Hungarian assignment per video on HOTA's global alignment score.

    Returns (gt index, prediction index) pairs. The indices number only tracks present in at least one frame:
    ground truth by ascending annotation id, predictions in file order (trackeval's id relabelling).
    """
    gt_ids = sorted(track.annotation_id for track in gt_tracks if any(m is not None for m in track.masks))
    gt_index = {annotation_id: i for i, annotation_id in enumerate(gt_ids)}
    pred_positions = [i for i, track in enumerate(pred_tracks) if any(m is not None for m in track.masks)]
    pred_index = {position: j for j, position in enumerate(pred_positions)}

    matches = np.zeros((len(gt_ids), len(pred_index)))
    gt_frames = np.zeros((len(gt_ids), 1))
    pred_frames = np.zeros((1, len(pred_index)))
    for t in range(num_frames):
        gts = [(gt_index[track.annotation_id], track.masks[t]) for track in gt_tracks if track.masks[t] is not None]
        preds = [(pred_index[i], track.masks[t]) for i, track in enumerate(pred_tracks) if track.masks[t] is not None]
        rows = [i for i, _ in gts]
        cols = [j for j, _ in preds]
        gt_frames[rows] += 1
        pred_frames[0, cols] += 1
        if not gts or not preds:
            continue
        similarity = mask_utils.iou([m for _, m in gts], [m for _, m in preds], [False] * len(preds))
        # Each pair's IoU, normalised by the other IoUs of its row and column (HOTA's potential matches).
        denominator = similarity.sum(0)[np.newaxis, :] + similarity.sum(1)[:, np.newaxis] - similarity
        normalised = np.zeros_like(similarity)
        valid = denominator > np.finfo("float").eps
        normalised[valid] = similarity[valid] / denominator[valid]
        matches[np.ix_(rows, cols)] += normalised
    alignment = matches / (gt_frames + pred_frames - matches)
    gt_rows, pred_cols = linear_sum_assignment(-alignment)
    return list(zip(gt_rows.tolist(), pred_cols.tolist(), strict=True))


def _frame_correct(
    t: int, gt_tracks: list[GroundTruthTrack], pred_tracks: list[PredictedTrack], matches: list[tuple[int, int]]
) -> np.ndarray:
    """(len(ALPHAS),) bool: whether frame t is correctly localized at each alpha."""
    sounding = [track for track in gt_tracks if track.masks[t] is not None]
    # The predictions of this frame, in file order. The original indexes this list with track indices (below).
    predicted = [track for track in pred_tracks if track.masks[t] is not None]
    non_empty = [track for track in predicted if track.masks[t]["counts"] != EMPTY_MASK_720P]
    # Gate: the same set of classes (empty-mask predictions included) and as many non-empty masks as objects.
    same_classes = {track.category_id for track in sounding} == {track.category_id for track in predicted}
    if not same_classes or len(sounding) != len(non_empty):
        return np.zeros(len(ALPHAS), dtype=bool)
    if not sounding:
        return np.ones(len(ALPHAS), dtype=bool)
    if len(sounding) == 1:
        return _single_source_correct(t, gt_tracks, predicted, matches)
    return _multi_source_correct(t, gt_tracks, predicted, matches)


def _single_source_correct(
    t: int, gt_tracks: list[GroundTruthTrack], predicted: list[PredictedTrack], matches: list[tuple[int, int]]
) -> np.ndarray:
    # Quirk kept (the index mix-up): the original takes the sounding object's position among the video's GT
    # tracks in file order, finds the first match whose *prediction* index equals it, and uses that match's
    # position in the match list as the index into this frame's predictions. It picks the matched prediction only
    # when the assignment is an identity or a symmetric swap.
    gt_position = next(i for i, track in enumerate(gt_tracks) if track.masks[t] is not None)
    position = next((k for k, (_, pred) in enumerate(matches) if pred == gt_position), None)
    if position is None:
        return np.zeros(len(ALPHAS), dtype=bool)
    prediction = _prediction_at(predicted, position)
    # A null prediction has no mask, so IoU 0 with the sounding object.
    iou = 0.0 if prediction is None else _iou(gt_tracks[gt_position].masks[t], prediction.masks[t])
    return iou > ALPHAS  # strict, unlike HOTA's IoU >= alpha - eps


def _multi_source_correct(
    t: int, gt_tracks: list[GroundTruthTrack], predicted: list[PredictedTrack], matches: list[tuple[int, int]]
) -> np.ndarray:
    # Every matched pair must agree. Quirk kept: the match's GT index (which numbers GT tracks by annotation id,
    # present ones only) indexes the video's GT tracks in file order, and its prediction index indexes this
    # frame's predictions; both are the intended tracks only when nothing is absent and ids follow file order.
    correct = np.ones(len(ALPHAS), dtype=bool)
    for gt_index, pred_index in matches:
        gt_track = gt_tracks[gt_index]
        prediction = _prediction_at(predicted, pred_index)
        if prediction is None:
            # A null prediction has no mask: right for an absent object, as an empty mask is (its class, which
            # the slot does not name, is not compared), wrong for a present one.
            correct &= gt_track.masks[t] is None
        elif gt_track.category_id != prediction.category_id:
            return np.zeros(len(ALPHAS), dtype=bool)
        elif gt_track.masks[t] is None:
            correct &= prediction.masks[t]["counts"] == EMPTY_MASK_720P
        else:
            correct &= _iou(gt_track.masks[t], prediction.masks[t]) > ALPHAS
    return correct


def _prediction_at(predicted: list[PredictedTrack], index: int) -> PredictedTrack | None:
    """This frame's `index`-th prediction, or None where the frame has fewer.

    The original indexes the frame's list of non-null predictions with a track index; with null-style
    predictions (a track that skips frames) the list can be shorter than the index and the original raises
    IndexError. The model always writes a mask, so this never happens for its output; for hand-made or other
    predictions the missing slot is read as "no prediction in this frame", i.e. no mask.
    """
    return predicted[index] if index < len(predicted) else None


def _iou(gt_mask: dict, pred_mask: dict) -> float:
    return mask_utils.iou([gt_mask], [pred_mask], [False])[0, 0]
