"""From clip-level predictions to scored instances with a mask per frame, as the original's inference."""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F


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


def mask_logit_chunks(
    mask_embeddings: torch.Tensor,
    mask_features: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    chunk_size: int,
) -> Iterator[torch.Tensor]:
    """Mask logits (N, t, h, w) at the unpadded input size, `chunk_size` frames at a time.

    mask_embeddings: (N, mask_dim); mask_features: (T, mask_dim, h/4, w/4) at stride 4 of the padded frames.
    """
    for start in range(0, mask_features.shape[0], chunk_size):
        logits = torch.einsum("nc,tchw->nthw", mask_embeddings, mask_features[start : start + chunk_size])
        logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
        yield logits[:, :, : image_size[0], : image_size[1]]


def score_instances(
    class_logits: torch.Tensor,
    mask_embeddings: torch.Tensor,
    mask_features: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    num_detections: int = 100,
    score_threshold: float = 0.3,
    chunk_size: int = 5,
) -> AvisVideoInstances:
    """The instances of one video scoring above `score_threshold`, in descending score order.

    The score of a (query, class) pair is its class probability times its mask score: the mean probability
    inside the predicted mask over all frames at the input size.
    """
    instances = select_instances(class_logits, mask_embeddings, num_detections)
    numerator = torch.zeros_like(instances.scores)
    denominator = torch.zeros_like(instances.scores)
    for logits in mask_logit_chunks(instances.mask_embeddings, mask_features, padded_size, image_size, chunk_size):
        probabilities = logits.sigmoid()
        foreground = probabilities > 0.5
        numerator += (probabilities * foreground).flatten(1).sum(1)
        denominator += foreground.flatten(1).sum(1)
    scores = instances.scores * numerator / (denominator + 1e-6)
    keep = torch.nonzero(scores > score_threshold).squeeze(-1)
    keep = keep[scores[keep].argsort(descending=True, stable=True)]
    return AvisVideoInstances(
        scores=scores[keep],
        labels=instances.labels[keep],
        query_indices=instances.query_indices[keep],
        topk_indices=instances.topk_indices[keep],
        mask_embeddings=instances.mask_embeddings[keep],
    )


def instance_mask_chunks(
    instances: AvisVideoInstances,
    mask_features: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    target_size: tuple[int, int],
    chunk_size: int = 5,
) -> Iterator[torch.Tensor]:
    """The instances' masks (N, t, H, W) bool at `target_size`, `chunk_size` frames at a time (logit > 0)."""
    for logits in mask_logit_chunks(instances.mask_embeddings, mask_features, padded_size, image_size, chunk_size):
        yield F.interpolate(logits, size=target_size, mode="bilinear", align_corners=False) > 0


def post_process_video_instance_segmentation(
    class_logits: torch.Tensor,
    mask_embeddings: torch.Tensor,
    mask_features: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    target_size: tuple[int, int],
    num_detections: int = 100,
    score_threshold: float = 0.3,
    chunk_size: int = 5,
) -> tuple[AvisVideoInstances, torch.Tensor]:
    """`score_instances` and all their masks at once: (instances, masks (N, T, H, W) bool)."""
    instances = score_instances(
        class_logits,
        mask_embeddings,
        mask_features,
        padded_size,
        image_size,
        num_detections,
        score_threshold,
        chunk_size,
    )
    chunks = instance_mask_chunks(instances, mask_features, padded_size, image_size, target_size, chunk_size)
    return instances, torch.cat(list(chunks), dim=1)
