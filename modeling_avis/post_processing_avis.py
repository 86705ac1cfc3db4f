"""From clip-level predictions to scored instances with a mask per frame, as the original's inference: the
steps of `AvisProcessor.post_process_video_instance_segmentation`."""

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

# Mask pixels (instances x frames x H x W) drawn at once: 2^25 float32 logits are 128 MB, whatever the number of
# instances and the size of the video (a chunk holds one frame at least).
DRAW_PIXELS = 1 << 25
# Mask-feature elements read at once: 2^23 floats are 32 MB, 2 frames at 360p (fewer than the original's chunk of 5
# frames). Past its disk budget a long video's features are computed again as they are read, into a buffer of
# that size: 5 frames (79 MB) added 0.26 GB to the second pass's peak RSS, 2 frames 0.06 GB.
FEATURE_ELEMENTS = 1 << 23
# Upsampled mask pixels made at once, in one frame's masks: 2^21 float32 logits are 8 MB, 9 masks at 360 x 640.
REGION_PIXELS = 1 << 21
# The four phases of a 4x bilinear upsampling (align_corners=False): output row 4k + j interpolates rows k - 1 and k
# (shift 0) or k and k + 1 (shift 1) of the input, by this weight on the second.
UPSAMPLING_PHASES = ((0, 0.625), (0, 0.875), (1, 0.125), (1, 0.375))


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

    def best_per_query(self) -> "AvisVideoInstances":
        """The instances of each clip query's best class only, in their order (one object, one instance)."""
        seen, keep = set(), []
        for index, query in enumerate(self.query_indices.tolist()):
            if query not in seen:
                seen.add(query)
                keep.append(index)
        return self.select(torch.tensor(keep, dtype=torch.long, device=self.scores.device))

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


def upsample_4x(logits: torch.Tensor, workspace: torch.Tensor | None = None) -> torch.Tensor:
    """(..., h, w) -> (..., 4h, 4w): bilinear upsampling with align_corners=False, as F.interpolate's (to float
    rounding), in eight interpolations between shifted copies of the map, about three times as fast on the CPU.
    With `workspace` (a flat tensor of at least `upsampling_workspace(logits.shape)` elements) the result and its
    intermediate live there, not in memory of their own.

    With align_corners=False, output row 4k + j samples input row k + (2j - 3) / 8, so each of the four phases j
    interpolates rows k - 1 and k (j < 2) or k and k + 1 with one fixed weight; the edge rows repeat, as the clamp
    of F.interpolate. Columns alike.
    """
    *batch, height, width = logits.shape
    edged = F.pad(logits.reshape(-1, height, width), (1, 1, 1, 1), mode="replicate")  # (B, h + 2, w + 2)
    if workspace is None:
        workspace = logits.new_empty(upsampling_workspace(logits.shape))
    maps = edged.shape[0]
    upsampled = workspace[: maps * height * 16 * width].view(maps, height, 4, 4 * width)
    wide = workspace[upsampled.numel() : upsampled.numel() + maps * (height + 2) * 4 * width]
    wide = wide.view(maps, height + 2, width, 4)
    for phase, (shift, weight) in enumerate(UPSAMPLING_PHASES):
        torch.lerp(edged[:, :, shift : shift + width], edged[:, :, shift + 1 : shift + 1 + width], weight,
                   out=wide[..., phase])  # fmt: skip
    wide = wide.view(-1, height + 2, 4 * width)
    for phase, (shift, weight) in enumerate(UPSAMPLING_PHASES):
        torch.lerp(wide[:, shift : shift + height], wide[:, shift + 1 : shift + 1 + height], weight,
                   out=upsampled[:, :, phase])  # fmt: skip
    return upsampled.view(*batch, 4 * height, 4 * width)


def upsampling_workspace(shape: Sequence[int]) -> int:
    """The elements `upsample_4x` of logits of `shape` works in: its output and the columns-only intermediate."""
    *batch, height, width = shape
    return math.prod(batch) * 4 * width * (4 * height + height + 2)


def frame_mask_logits(mask_embeddings: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """Stride-4 mask logits (t, N, h, w) in float32 of (N, mask_dim) embeddings and (t, mask_dim, h, w) features: one
    matmul per frame on the features as they are laid out (an einsum would first copy them to (mask_dim, t, h, w):
    79 MB for 5 frames at 360p, on top of the frames themselves)."""
    logits = torch.matmul(mask_embeddings.float(), mask_features.float().flatten(2))  # (t, N, h*w)
    return logits.unflatten(-1, mask_features.shape[-2:])


def mask_logits(
    mask_embeddings: torch.Tensor,
    mask_features: torch.Tensor,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Mask logits (N, t, h, w) at the unpadded input size, in float32, of (N, mask_dim) embeddings and
    (t, mask_dim, h/4, w/4) mask features at stride 4 of the padded frames."""
    logits = frame_mask_logits(mask_embeddings, mask_features).transpose(0, 1)
    return upsample_4x(logits)[:, :, : image_size[0], : image_size[1]]


def positive_regions(
    logits: torch.Tensor, image_size: tuple[int, int]
) -> Iterator[tuple[int, torch.Tensor, int, int, torch.Tensor]]:
    """The upsampled logits of a frame's masks where they may be positive: (frame, masks, top, left, regions) for
    groups of the masks of stride-4 logits (t, N, h/4, w/4) that have a positive logit.

    `regions` (len(masks), H', W'), valid until the next group is made, covers the input size's rows `top, top + 1,
    ...` and columns `left, ...`; there it has the logits of `mask_logits` where they are positive and logits <= 0
    where they are not (to float rounding), and outside it `mask_logits` gives logits <= 0. A mask covers a part of
    the frame, and upsampling is most of the post-processing's time: only the box around a group's masks is
    upsampled.
    Why: a bilinear sample is a weighted sum of its four neighbours with non-negative weights, so it is <= 0 unless
    a neighbour is positive; the box of the masks' positive logits, grown by one pixel (whose logits are <= 0),
    holds the neighbours of every sample that may be positive, and a sample that clamps at the box's edge reads
    only that border: <= 0, as its true neighbours.
    """
    height, width = image_size
    # the stride-4 rows that the upsampled rows inside the image read: row height - 1 samples between
    # floor((2 height - 5) / 8) and the row after it (columns alike)
    rows = min(logits.shape[-2], max(0, (2 * height - 5) // 8) + 2)
    columns = min(logits.shape[-1], max(0, (2 * width - 5) // 8) + 2)
    logits = logits[..., :rows, :columns]
    positive = logits > 0
    row_has, column_has = positive.any(-1), positive.any(-2)  # (t, N, rows), (t, N, columns)
    frames, masks = row_has.any(-1).nonzero().unbind(-1)  # the masks with a positive logit

    def span(has: torch.Tensor) -> list[list[int]]:  # first and last index of a True, (M, 2)
        has = has[frames, masks].to(torch.uint8)
        return torch.stack((has.argmax(-1), has.shape[-1] - 1 - has.flip(-1).argmax(-1)), -1).tolist()

    group_size = max(1, REGION_PIXELS // (height * width))
    # one workspace for every group, rather than an allocation of another size for each
    workspace = logits.new_empty(upsampling_workspace((min(group_size, logits.shape[1]), rows, columns)))
    boxes = zip(frames.tolist(), masks.tolist(), span(row_has), span(column_has))
    for frame, frame_boxes in itertools.groupby(boxes, key=lambda box: box[0]):
        frame_boxes = list(frame_boxes)
        for first in range(0, len(frame_boxes), group_size):
            group = frame_boxes[first : first + group_size]
            top = max(min(box[2][0] for box in group) - 1, 0)
            bottom = min(max(box[2][1] for box in group) + 1, rows - 1)
            left = max(min(box[3][0] for box in group) - 1, 0)
            right = min(max(box[3][1] for box in group) + 1, columns - 1)
            indices = [box[1] for box in group]
            regions = upsample_4x(logits[frame, indices, top : bottom + 1, left : right + 1], workspace)
            yield (
                frame,
                torch.tensor(indices, device=logits.device),
                4 * top,
                4 * left,
                regions[:, : height - 4 * top, : width - 4 * left],
            )


def mask_scores(
    mask_embeddings: torch.Tensor,
    mask_features: Sequence[torch.Tensor],
    image_size: tuple[int, int],
    chunk_size: int,
) -> torch.Tensor:
    """Each embedding's mask score: the mean probability inside its predicted mask, over all frames at the input size.

    The mask is where the probability exceeds 0.5, so only the upsampled logits that may be positive are made
    (`positive_regions`). mask_features: (T, mask_dim, h/4, w/4), a tensor or any frame sequence sliced the same
    way (`len`, `[start:stop]`), such as `AvisMaskFeatureStore`.
    """
    numerator = torch.zeros(len(mask_embeddings), dtype=torch.float32, device=mask_embeddings.device)
    denominator = torch.zeros_like(numerator)
    frames = frames_per_read(mask_features[0:1].numel(), chunk_size)
    for start in range(0, len(mask_features), frames):
        logits = frame_mask_logits(mask_embeddings, mask_features[start : start + frames])  # (t, N, h/4, w/4)
        for _, queries, _, _, regions in positive_regions(logits, image_size):
            inside = F.threshold(regions.sigmoid_(), 0.5, 0.0, inplace=True)  # the probabilities above 0.5, else 0
            numerator.index_add_(0, queries, inside.sum((1, 2)))
            # ceil: 1 inside, 0 outside; a sum of these floats is 8x as fast as one of the bools of a comparison
            denominator.index_add_(0, queries, inside.ceil_().sum((1, 2)))
    return numerator / (denominator + 1e-6)


def frames_per_read(frame_elements: int, chunk_size: int) -> int:
    """Frames of mask features (`frame_elements` each) the post-processing reads at once: `chunk_size`, fewer where
    they would exceed FEATURE_ELEMENTS (one at least)."""
    return max(1, min(chunk_size, FEATURE_ELEMENTS // max(frame_elements, 1)))


def drawn_frame_pixels(frame_size: Sequence[int], target_size: tuple[int, int]) -> int:
    """The pixels of a frame's largest map while its masks are drawn: the logits upsampled from stride 4 of a
    (h/4, w/4) `frame_size`, or the target size."""
    return max(16 * math.prod(frame_size), math.prod(target_size))


def score_instances(
    class_logits: torch.Tensor,
    mask_embeddings: torch.Tensor,
    mask_features: Sequence[torch.Tensor],
    image_size: tuple[int, int],
    num_detections: int = 100,
    score_threshold: float = 0.3,
    chunk_size: int = 5,
) -> AvisVideoInstances:
    """The instances of one video scoring above `score_threshold`, in descending score order.

    The score of a (query, class) pair is its class probability times its query's mask score (`mask_scores`).
    mask_features: (T, mask_dim, h/4, w/4) at stride 4 of the padded frames, a tensor or a frame sequence (see
    `mask_scores`); image_size: the frames' size before padding.
    """
    instances = select_instances(class_logits, mask_embeddings, num_detections)
    # a query kept for several classes has one mask: score each query once
    queries, pair_query = instances.query_indices.unique(return_inverse=True)
    query_scores = mask_scores(mask_embeddings[queries], mask_features, image_size, chunk_size)
    scores = instances.scores * query_scores[pair_query]
    keep = torch.nonzero(scores > score_threshold).squeeze(-1)
    keep = keep[scores[keep].argsort(descending=True, stable=True)]
    return dataclasses.replace(instances, scores=scores).select(keep)


def instance_mask_chunks(
    instances: AvisVideoInstances,
    mask_features: Sequence[torch.Tensor],
    image_size: tuple[int, int],
    target_size: tuple[int, int],
    chunk_size: int = 5,
) -> Iterator[torch.Tensor]:
    """The instances' masks (N, t, H, W) bool at `target_size` (logit > 0), `chunk_size` frames at a time, fewer when
    their features would exceed FEATURE_ELEMENTS or N x t masks DRAW_PIXELS; the logits are made for as many
    instances at a time as fit in it.

    mask_features: (T, mask_dim, h/4, w/4), a tensor or a frame sequence (see `mask_scores`); image_size: the
    frames' size before padding. At that size, only where a mask may be is upsampled (`positive_regions`).
    """
    num_instances = len(instances.mask_embeddings)
    if not len(mask_features):
        return
    first = mask_features[0:1]
    largest = drawn_frame_pixels(first.shape[-2:], target_size)
    frames = max(1, min(frames_per_read(first.numel(), chunk_size), DRAW_PIXELS // max(1, num_instances * largest)))
    for start in range(0, len(mask_features), frames):
        # drawn by a function of its own: a chunk's features (read back or computed again) are freed before the
        # next chunk's are read
        yield draw_masks(instances, mask_features[start : start + frames], image_size, target_size)


def draw_masks(
    instances: AvisVideoInstances, features: torch.Tensor, image_size: tuple[int, int], target_size: tuple[int, int]
) -> torch.Tensor:
    """The instances' masks (N, t, H, W) bool at `target_size` of one chunk of mask features (t, mask_dim, h/4,
    w/4) (see `instance_mask_chunks`)."""
    num_instances = len(instances.mask_embeddings)
    resized = tuple(target_size) != tuple(image_size)
    # resized: every pixel is written; else only the regions, on zeros
    allocate = torch.empty if resized else torch.zeros
    masks = allocate(num_instances, len(features), *target_size, dtype=torch.bool, device=features.device)
    if resized:
        group = max(1, DRAW_PIXELS // (len(features) * drawn_frame_pixels(features.shape[-2:], target_size)))
        for first in range(0, num_instances, group):
            logits = mask_logits(instances.mask_embeddings[first : first + group], features, image_size)
            logits = F.interpolate(logits, size=target_size, mode="bilinear", align_corners=False)
            torch.gt(logits, 0, out=masks[first : first + group])
    else:
        logits = frame_mask_logits(instances.mask_embeddings, features)
        for frame, indices, top, left, regions in positive_regions(logits, image_size):
            for instance, region in zip(indices.tolist(), regions):  # written in place: no temporary
                height, width = region.shape
                torch.gt(region, 0, out=masks[instance, frame, top : top + height, left : left + width])
    return masks
