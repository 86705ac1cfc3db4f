"""From clip-level predictions to scored instances with a mask per frame, as the original's inference: the
steps of `AvisProcessor.post_process_video_instance_segmentation`."""

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

# Masks of one frame upsampled together when scoring: 4 x 384 x 640 float32 probabilities are 4 MB, within the cache.
SCORE_GROUP = 4
# Mask pixels (instances x frames x H x W) drawn at once: 2^25 float32 logits are 128 MB, whatever the number of
# instances and the size of the video (a chunk holds one frame at least).
DRAW_PIXELS = 1 << 25


@dataclass
class AvisVideoInstances:
    """The instances kept for one video.

    scores (`(N,)`): class probability x mask score, in descending order.
    labels (`(N,)`): 0-based classes.
    query_indices (`(N,)`): the clip query each instance comes from.
    topk_indices (`(N,)`): the flat (query * num_labels + label) index among all pairs.
    mask_embeddings (`(N, mask_dim)`): one per instance; with the mask features they give its masks.
    """

    scores: torch.Tensor
    labels: torch.Tensor
    query_indices: torch.Tensor
    topk_indices: torch.Tensor
    mask_embeddings: torch.Tensor

    def select(self, index: torch.Tensor | slice) -> "AvisVideoInstances":
        """The instances at `index` (indices or a slice), in that order."""
        return AvisVideoInstances(
            scores=self.scores[index],
            labels=self.labels[index],
            query_indices=self.query_indices[index],
            topk_indices=self.topk_indices[index],
            mask_embeddings=self.mask_embeddings[index],
        )


def select_instances(class_logits: torch.Tensor, mask_embeddings: torch.Tensor, num_detections: int):
    """The top `num_detections` (clip query, class) pairs of one video by class probability.

    class_logits: (cQ, K+1); mask_embeddings: (cQ, mask_dim). A query may appear once per class.
    Returns AvisVideoInstances whose scores are still the class probabilities, unsorted by mask score.
    """
    num_labels = class_logits.shape[-1] - 1
    probabilities = class_logits.softmax(-1)[:, :-1]  # no-object dropped after the softmax
    scores, topk_indices = probabilities.flatten().topk(min(num_detections, probabilities.numel()))
    query_indices = torch.div(topk_indices, num_labels, rounding_mode="floor")
    return AvisVideoInstances(
        scores=scores,
        labels=topk_indices % num_labels,
        query_indices=query_indices,
        topk_indices=topk_indices,
        mask_embeddings=mask_embeddings[query_indices],
    )


def mask_logits(
    mask_embeddings: torch.Tensor,
    mask_features: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Mask logits (N, t, h, w) at the unpadded input size, in float32, of (N, mask_dim) embeddings and
    (t, mask_dim, h/4, w/4) mask features at stride 4 of the padded frames."""
    logits = torch.einsum("nc,tchw->nthw", mask_embeddings.float(), mask_features.float())
    logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
    return logits[:, :, : image_size[0], : image_size[1]]


def mask_scores(
    mask_embeddings: torch.Tensor,
    mask_features: Sequence[torch.Tensor],
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    chunk_size: int,
) -> torch.Tensor:
    """Each embedding's mask score: the mean probability inside its predicted mask, over all frames at the input size.

    The mask is where the probability exceeds 0.5. The stride-4 logits are upsampled a few masks of one frame at a
    time (SCORE_GROUP), so that the full-size probabilities stay in the cache rather than stream through memory.
    mask_features: (T, mask_dim, h/4, w/4), a tensor or any frame sequence sliced the same way (`len`,
    `[start:stop]`), such as `AvisMaskFeatureStore`.
    """
    numerator = torch.zeros(len(mask_embeddings), dtype=torch.float32, device=mask_embeddings.device)
    denominator = torch.zeros_like(numerator)
    height, width = image_size
    for start in range(0, len(mask_features), chunk_size):
        features = mask_features[start : start + chunk_size].float()
        logits = torch.einsum("nc,tchw->tnhw", mask_embeddings.float(), features)  # (t, N, h/4, w/4)
        for frame_logits in logits:
            for first in range(0, len(frame_logits), SCORE_GROUP):
                group = frame_logits[None, first : first + SCORE_GROUP]
                upsampled = F.interpolate(group, size=padded_size, mode="bilinear", align_corners=False)[0]
                probabilities = upsampled[:, :height, :width].sigmoid_()
                inside = F.threshold(probabilities, 0.5, 0.0, inplace=True)  # the probabilities above 0.5, else 0
                numerator[first : first + SCORE_GROUP] += inside.sum((1, 2))
                denominator[first : first + SCORE_GROUP] += torch.count_nonzero(inside, dim=(1, 2))
    return numerator / (denominator + 1e-6)


def score_instances(
    class_logits: torch.Tensor,
    mask_embeddings: torch.Tensor,
    mask_features: Sequence[torch.Tensor],
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    num_detections: int = 100,
    score_threshold: float = 0.3,
    chunk_size: int = 5,
) -> AvisVideoInstances:
    """The instances of one video scoring above `score_threshold`, in descending score order.

    The score of a (query, class) pair is its class probability times its query's mask score (`mask_scores`).
    mask_features: (T, mask_dim, h/4, w/4), a tensor or a frame sequence (see `mask_scores`).
    """
    instances = select_instances(class_logits, mask_embeddings, num_detections)
    # a query kept for several classes has one mask: score each query once
    queries, pair_query = instances.query_indices.unique(return_inverse=True)
    query_scores = mask_scores(mask_embeddings[queries], mask_features, padded_size, image_size, chunk_size)
    scores = instances.scores * query_scores[pair_query]
    keep = torch.nonzero(scores > score_threshold).squeeze(-1)
    keep = keep[scores[keep].argsort(descending=True, stable=True)]
    return dataclasses.replace(instances, scores=scores).select(keep)


def instance_mask_chunks(
    instances: AvisVideoInstances,
    mask_features: Sequence[torch.Tensor],
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    target_size: tuple[int, int],
    chunk_size: int = 5,
) -> Iterator[torch.Tensor]:
    """The instances' masks (N, t, H, W) bool at `target_size` (logit > 0), `chunk_size` frames at a time, fewer when
    N x t masks would exceed DRAW_PIXELS; the logits are made for as many instances at a time as fit in it.

    mask_features: (T, mask_dim, h/4, w/4), a tensor or a frame sequence (see `mask_scores`).
    """
    num_instances = len(instances.mask_embeddings)
    largest = max(math.prod(padded_size), math.prod(target_size))
    frames = max(1, min(chunk_size, DRAW_PIXELS // max(1, num_instances * largest)))
    for start in range(0, len(mask_features), frames):
        features = mask_features[start : start + frames]
        masks = torch.empty(num_instances, len(features), *target_size, dtype=torch.bool, device=features.device)
        group = max(1, DRAW_PIXELS // (len(features) * largest))
        for first in range(0, num_instances, group):
            logits = mask_logits(instances.mask_embeddings[first : first + group], features, padded_size, image_size)
            if tuple(target_size) != tuple(image_size):  # at the same size, bilinear resizing is the identity
                logits = F.interpolate(logits, size=target_size, mode="bilinear", align_corners=False)
            torch.gt(logits, 0, out=masks[first : first + group])
        yield masks
