"""The online mode's tracks: each window's instances linked to the tracks of the windows before it.

A window's clip queries know nothing of the previous window's, so identity comes from the frames two consecutive
windows share (all but `stride` of them): an instance continues the track whose latest mask embedding, applied to
those frames, overlaps its own masks there the most (a Hungarian assignment on 1 - mask IoU, at least `match_iou`).
Classes are not part of the cost: a window sometimes names an object's class differently, and a track's class is the
one its windows' scores vote for.

What sounds is what the model scores: a window's instance is an object it finds sounding (its class probability,
against "no object", times its mask score). A track goes on while its object keeps scoring above `keep_threshold`
and ends when it has not for `patience` windows: an object that falls silent ends its track. An instance that no
track takes starts one when it scores above the processor's score threshold and is not an object already kept in
this window (masks overlapping by more than `duplicate_iou`): a new sound starts a track.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .post_processing_avis import AvisVideoInstances, frame_mask_logits

# Above any cost of an allowed match (1 - IoU is at most 1).
NO_MATCH = 2.0


@dataclass
class AvisOnlineTrack:
    """One track of the online mode.

    track_id: 1-based, in order of birth.
    mask_embedding: (mask_dim,) of its latest window: with a frame's mask features it gives the object's mask.
    scores: its object's score in each window that continued it.
    label_scores: per class, the sum of those scores of the windows that named it.
    missed: windows since one last continued it.
    """

    track_id: int
    mask_embedding: torch.Tensor
    scores: list[float] = field(default_factory=list)
    label_scores: dict[int, float] = field(default_factory=dict)
    missed: int = 0

    @property
    def label(self) -> int:
        """The class its windows' scores vote for."""
        return max(self.label_scores, key=self.label_scores.get)

    @property
    def score(self) -> float:
        """The mean score of its object over its windows."""
        return float(np.mean(self.scores))

    def continue_with(self, label: int, score: float, mask_embedding: torch.Tensor) -> None:
        self.scores.append(score)
        self.label_scores[label] = self.label_scores.get(label, 0.0) + score
        self.mask_embedding = mask_embedding
        self.missed = 0


class AvisOnlineTracks:
    """The tracks alive in an online session (ended ones are let go: memory does not grow with the stream)."""

    def __init__(self):
        self.alive: list[AvisOnlineTrack] = []
        self.started = 0  # tracks started so far: the next one's id is this plus one

    def link(
        self,
        instances: AvisVideoInstances,
        mask_features: torch.Tensor,
        shared_frames: int,
        start_threshold: float,
        settings,
        max_tracks: int | None = None,
    ) -> list[tuple[AvisOnlineTrack, int]]:
        """Links a window's instances to the tracks; returns (track, instance index) for every track its window
        continues or starts, the instances in descending score order.

        instances: the window's instances scoring above `settings.keep_threshold`, one per clip query, best first.
        mask_features: (t, mask_dim, h, w) of the window's frames; the first `shared_frames` of them were in the
            previous window.
        start_threshold: the score above which an instance no track takes starts one.
        max_tracks: at most this many tracks alive at once (None: no bound).
        """
        masks = frame_mask_logits(instances.mask_embeddings, mask_features) > 0  # (t, n, h, w)
        matches = self._match(masks, mask_features, shared_frames, settings.match_iou)
        for track in self.alive:
            if not any(track is matched for matched, _ in matches):
                track.missed += 1
        self.alive = [track for track in self.alive if track.missed <= settings.patience]
        kept = [index for _, index in matches]
        for index, score in enumerate(instances.scores.tolist()):
            if index in kept or score <= start_threshold:
                continue
            if max_tracks is not None and len(self.alive) >= max_tracks:
                break
            if kept and _mask_iou(masks[:, [index]], masks[:, kept]).max() > settings.duplicate_iou:
                continue
            self.started += 1
            track = AvisOnlineTrack(self.started, instances.mask_embeddings[index])
            self.alive.append(track)
            matches.append((track, index))
            kept.append(index)
        for track, index in matches:
            track.continue_with(
                int(instances.labels[index]), float(instances.scores[index]), instances.mask_embeddings[index]
            )
        return sorted(matches, key=lambda match: match[1])

    def _match(
        self, masks: torch.Tensor, mask_features: torch.Tensor, shared_frames: int, match_iou: float
    ) -> list[tuple[AvisOnlineTrack, int]]:
        """The alive tracks continued by the window's instances: a Hungarian assignment on 1 - the IoU of their
        masks on the shared frames, where it is at least `match_iou`."""
        if not self.alive or not masks.shape[1] or not shared_frames:
            return []
        embeddings = torch.stack([track.mask_embedding for track in self.alive])
        track_masks = frame_mask_logits(embeddings, mask_features[:shared_frames]) > 0
        iou = _mask_iou(track_masks, masks[:shared_frames])
        cost = np.where(iou >= match_iou, 1.0 - iou, NO_MATCH)
        rows, columns = linear_sum_assignment(cost)
        return [(self.alive[row], column) for row, column in zip(rows, columns) if cost[row, column] < NO_MATCH]


def _mask_iou(first: torch.Tensor, second: torch.Tensor) -> np.ndarray:
    """(n, m) IoU of n and m objects' masks (t, n, h, w) and (t, m, h, w) over all t frames together."""
    first, second = first.flatten(2).transpose(0, 1).flatten(1), second.flatten(2).transpose(0, 1).flatten(1)
    first, second = first.float(), second.float()
    intersection = first @ second.T
    union = first.sum(1)[:, None] + second.sum(1)[None] - intersection
    return (intersection / union.clamp(min=1)).numpy()


__all__ = ["AvisOnlineTrack", "AvisOnlineTracks"]
