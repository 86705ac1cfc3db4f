"""Training losses of AVISM: Hungarian matching, frame-level and clip-level set losses, query similarity loss.

Each decoder prediction is matched one-to-one to the ground-truth instances on a cost of class probability,
sigmoid cross-entropy and dice, the last two on randomly sampled points. Matched predictions learn their class and
mask, unmatched ones the no-object class. The frame-level decoder is supervised per frame; the clip-level decoder per
clip, once for each of the last `num_frame_query_layers` frame-decoder layers it was run on. A similarity loss pulls
together the frame and clip queries matched to the same instance of a clip.
"""

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .configuration_avis import AvisConfig

Matches = list[tuple[Tensor, Tensor]]  # per prediction set: (query indices, target indices), sorted by query


def sample_points(inputs: Tensor, coords: Tensor) -> Tensor:
    """Bilinear values of `inputs` (N, C, H, W) at `coords` (N, P, 2) in [0, 1] (x, y) -> (N, C, P)."""
    grid = 2.0 * coords[:, :, None] - 1.0
    return F.grid_sample(inputs, grid, align_corners=False)[..., 0]


def sample_uncertain_points(
    logits: Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> Tensor:
    """PointRend's training points for mask logits (N, 1, H, W) -> coordinates (N, num_points, 2).

    `oversample_ratio * num_points` random candidates are drawn; the `importance_sample_ratio` share of the points
    are the candidates whose interpolated logit is closest to 0 (the most uncertain), the rest are uniform.
    """
    num_masks = logits.shape[0]
    candidates = torch.rand(num_masks, int(num_points * oversample_ratio), 2, device=logits.device)
    uncertainty = -sample_points(logits, candidates)[:, 0].abs()
    num_uncertain = int(importance_sample_ratio * num_points)
    most_uncertain = uncertainty.topk(num_uncertain, dim=1).indices
    uncertain_coords = torch.gather(candidates, 1, most_uncertain[..., None].expand(-1, -1, 2))
    random_coords = torch.rand(num_masks, num_points - num_uncertain, 2, device=logits.device)
    return torch.cat([uncertain_coords, random_coords], dim=1)


def pairwise_sigmoid_cross_entropy(inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of every prediction (Q, P) logits against every target (N, P) -> (Q, N)."""
    positive = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    negative = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (positive @ targets.T + negative @ (1 - targets).T) / inputs.shape[1]


def pairwise_dice(inputs: Tensor, targets: Tensor) -> Tensor:
    """Dice loss (smoothed by 1) of every prediction (Q, P) logits against every target (N, P) -> (Q, N)."""
    probs = inputs.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def sigmoid_cross_entropy_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Binary cross-entropy of matched pairs (M, P), averaged over points, summed over pairs, over `num_masks`."""
    return F.binary_cross_entropy_with_logits(inputs, targets, reduction="none").mean(1).sum() / num_masks


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Dice loss (smoothed by 1) of matched pairs (M, P), summed over pairs, over `num_masks`."""
    probs = inputs.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def min_cost_assignment(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The one-to-one assignment of rows (queries) to columns (targets) of least total cost (Hungarian)."""
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


class AvisHungarianMatcher(nn.Module):
    """Matches predicted instances to ground-truth instances, per frame or per clip.

    A prediction is a class distribution and a mask over T frames (T = 1 for frame-level matching); the cost of a
    (prediction, target) pair is `class_weight * -p(target class) + mask_weight * sigmoid CE + dice_weight * dice`,
    the mask terms on `num_points` points drawn uniformly once per prediction set and shared by every prediction,
    every target and every frame.
    """

    def __init__(self, class_weight: float, mask_weight: float, dice_weight: float, num_points: int):
        super().__init__()
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def matching_cost(self, logits: Tensor, masks: Tensor, class_labels: Tensor, mask_labels: Tensor) -> Tensor:
        """Cost (Q, N) of one prediction set: logits (Q, K+1), mask logits (Q, T, h, w), labels (N,), masks (N, T, H, W).

        Draws the shared points with one `torch.rand(1, num_points, 2)` call.
        """
        cost_class = -logits.float().softmax(-1)[:, class_labels]
        coords = torch.rand(1, self.num_points, 2, device=masks.device)
        pred_points = sample_points(masks.float(), coords.expand(masks.shape[0], -1, -1)).flatten(1)
        target_points = sample_points(mask_labels.float(), coords.expand(mask_labels.shape[0], -1, -1)).flatten(1)
        cost_mask = pairwise_sigmoid_cross_entropy(pred_points, target_points)
        cost_dice = pairwise_dice(pred_points, target_points)
        return self.class_weight * cost_class + self.mask_weight * cost_mask + self.dice_weight * cost_dice

    @torch.no_grad()
    def forward(self, logits: Tensor, masks: Tensor, class_labels: list[Tensor], mask_labels: list[Tensor]) -> Matches:
        """Matches of S prediction sets: logits (S, Q, K+1), mask logits (S, Q, T, h, w); per set labels (N_s,) and
        masks (N_s, T, H, W)."""
        return [
            min_cost_assignment(self.matching_cost(*prediction))
            for prediction in zip(logits, masks, class_labels, mask_labels, strict=True)
        ]


class AvisLoss(nn.Module):
    """The training objective of AVISM: frame-level and clip-level set losses plus the query similarity loss.

    Targets are per video: `mask_labels[b]` (N_b, T, Hp, Wp) at the padded input size, all-zero in the frames where
    an instance is absent (each instance visible in at least one frame), `class_labels[b]` (N_b,) in [0, K).
    A frame's targets are the instances visible in it. Mask losses compare point samples of the stride-4 logits and
    of the full-size targets at the same normalised coordinates, so no upsampling is needed.
    """

    def __init__(self, config: AvisConfig):
        super().__init__()
        self.class_weight = config.class_weight
        self.mask_weight = config.mask_weight
        self.dice_weight = config.dice_weight
        # The original's SIM_WEIGHT only switches the similarity loss on: its weight-dict key (`loss_avism_sim`)
        # does not match the loss's name (`loss_clip_sim`), so the published models were trained with weight 1.
        # Here `sim_weight` is the weight; set it to 1.0 to train as the published models were.
        self.sim_weight = config.sim_weight
        self.num_points = config.train_num_points
        self.oversample_ratio = config.oversample_ratio
        self.importance_sample_ratio = config.importance_sample_ratio
        self.num_frame_query_layers = config.num_frame_query_layers
        self.matcher = AvisHungarianMatcher(
            config.class_weight, config.mask_weight, config.dice_weight, config.train_num_points
        )
        num_labels = len(config.id2label)
        self.register_buffer("frame_empty_weight", self.class_weights(num_labels, config.no_object_weight), False)
        self.register_buffer("clip_empty_weight", self.class_weights(num_labels, config.clip_no_object_weight), False)

    @staticmethod
    def class_weights(num_labels: int, no_object_weight: float) -> Tensor:
        weights = torch.ones(num_labels + 1)
        weights[-1] = no_object_weight
        return weights

    def forward(
        self,
        frame_logits: list[Tensor],
        frame_masks: list[Tensor],
        clip_logits: Tensor,
        clip_masks: Tensor,
        clip_query_embeds: Tensor,
        frame_query_embeds: Tensor,
        mask_labels: list[Tensor],
        class_labels: list[Tensor],
    ) -> dict[str, Tensor]:
        """Weighted loss terms and their sum under "loss".

        frame_logits / frame_masks: one entry per frame-decoder prediction (the first on the audio-fused queries,
            the last after the last layer): (B*T, fQ, K+1) and (B*T, fQ, h, w), frames video-major.
        clip_logits (D, Lf, B, cQ, K+1), clip_masks (D, Lf, B, cQ, T, h, w), clip_query_embeds (D, Lf, B, cQ, C):
            clip-decoder layer x frame-decoder layer (the last Lf) x video.
        frame_query_embeds (Lf, B, T, fQ, C): the frame queries of the last Lf frame-decoder layers, projected for
            the similarity loss.
        """
        num_frames = clip_masks.shape[4]
        frame_class_labels, frame_ids, frame_mask_labels = self._frame_targets(mask_labels, class_labels)
        frame_losses, frame_matches = self._deeply_supervised_losses(
            frame_logits,
            [masks[:, :, None] for masks in frame_masks],
            frame_class_labels,
            frame_mask_labels,
            self.frame_empty_weight,
            prefix="loss_",
        )
        num_layers = clip_logits.shape[1]
        clip_losses, clip_matches = self._deeply_supervised_losses(
            list(clip_logits.flatten(1, 2)),  # (l, b) flattened to l * B + b
            list(clip_masks.flatten(1, 2)),
            class_labels * num_layers,
            mask_labels * num_layers,
            self.clip_empty_weight,
            prefix="loss_avism_",
        )
        # Like the original, only the last clip-decoder layer's matches and queries enter the similarity loss.
        similarity = similarity_loss(
            frame_query_embeds,
            clip_query_embeds[-1],
            frame_matches[-self.num_frame_query_layers :],
            frame_ids,
            clip_matches[-1],
            num_frames,
        )
        losses = {**frame_losses, **clip_losses, "loss_clip_sim": self.sim_weight * similarity}
        losses["loss"] = sum(losses.values())
        return losses

    def _deeply_supervised_losses(
        self,
        logits: list[Tensor],
        masks: list[Tensor],
        class_labels: list[Tensor],
        mask_labels: list[Tensor],
        empty_weight: Tensor,
        prefix: str,
    ) -> tuple[dict[str, Tensor], list[Matches]]:
        """Losses of each decoder layer's predictions (S, Q, K+1) and (S, Q, T, h, w), each matched on its own; the
        last layer's are named `{prefix}ce` and so on, layer i's `{prefix}ce_{i}`. Returns the matches per layer."""
        num_masks = self._average_over_processes(sum(len(labels) for labels in class_labels), logits[0].device)
        losses, matches = {}, [None] * len(logits)
        last = len(logits) - 1
        # The last layer first, then the others in order: the original's order of random draws.
        for layer in [last, *range(last)]:
            matches[layer] = self.matcher(logits[layer], masks[layer], class_labels, mask_labels)
            terms = self._set_losses(
                logits[layer], masks[layer], matches[layer], class_labels, mask_labels, num_masks, empty_weight
            )
            suffix = "" if layer == last else f"_{layer}"
            losses.update({f"{prefix}{name}{suffix}": value for name, value in terms.items()})
        return losses, matches

    @staticmethod
    def _frame_targets(
        mask_labels: list[Tensor], class_labels: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per frame (video-major): the visible instances' classes, instance indices in their clip, masks (n, 1, H, W)."""
        frame_class_labels, frame_ids, frame_mask_labels = [], [], []
        for masks, labels in zip(mask_labels, class_labels, strict=True):
            for frame_masks in masks.unbind(1):
                visible = frame_masks.flatten(1).any(1)
                frame_class_labels.append(labels[visible])
                frame_ids.append(visible.nonzero()[:, 0])
                frame_mask_labels.append(frame_masks[visible, None])
        return frame_class_labels, frame_ids, frame_mask_labels

    @staticmethod
    def _average_over_processes(num_masks: int, device: torch.device) -> float:
        """The mean number of target masks per process, at least 1: the mask losses' normaliser."""
        count = torch.tensor([float(num_masks)], device=device)
        world_size = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(count)
            world_size = torch.distributed.get_world_size()
        return max(count.item() / world_size, 1.0)

    def _set_losses(
        self,
        logits: Tensor,
        masks: Tensor,
        matches: Matches,
        class_labels: list[Tensor],
        mask_labels: list[Tensor],
        num_masks: float,
        empty_weight: Tensor,
    ) -> dict[str, Tensor]:
        """Weighted class, mask and dice losses of S prediction sets (S, Q, K+1), (S, Q, T, h, w)."""
        set_index = torch.cat([torch.full_like(queries, s) for s, (queries, _) in enumerate(matches)])
        query_index = torch.cat([queries for queries, _ in matches])
        matched_labels = torch.cat(
            [labels[targets] for labels, (_, targets) in zip(class_labels, matches, strict=True)]
        )
        matched_masks = torch.cat(
            [target_masks[targets] for target_masks, (_, targets) in zip(mask_labels, matches, strict=True)]
        )
        class_loss = classification_loss(
            logits, set_index, query_index, matched_labels.to(logits.device), empty_weight
        )
        mask_loss, dice = self._mask_losses(masks[set_index, query_index], matched_masks, num_masks)
        return {
            "ce": self.class_weight * class_loss,
            "mask": self.mask_weight * mask_loss,
            "dice": self.dice_weight * dice,
        }

    def _mask_losses(self, masks: Tensor, targets: Tensor, num_masks: float) -> tuple[Tensor, Tensor]:
        """Point-sampled sigmoid CE and dice of matched mask logits (M, T, h, w) and targets (M, T, H, W); each frame
        gets its own points, and a clip's loss averages over all its frames' points."""
        num_matched, num_frames = masks.shape[:2]
        masks = masks.flatten(0, 1)[:, None].float()
        with torch.no_grad():
            coords = sample_uncertain_points(
                masks, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_labels = sample_points(targets.flatten(0, 1)[:, None].to(masks), coords)
        point_logits = sample_points(masks, coords)
        point_logits = point_logits.reshape(num_matched, num_frames * self.num_points)
        point_labels = point_labels.reshape(num_matched, num_frames * self.num_points)
        return (
            sigmoid_cross_entropy_loss(point_logits, point_labels, num_masks),
            dice_loss(point_logits, point_labels, num_masks),
        )


def classification_loss(
    logits: Tensor, set_index: Tensor, query_index: Tensor, matched_labels: Tensor, empty_weight: Tensor
) -> Tensor:
    """Class-weighted cross-entropy of S prediction sets (S, Q, K+1): matched queries learn their target's class,
    the others the no-object class K (weighted by `empty_weight[K]`)."""
    target_classes = torch.full(logits.shape[:2], logits.shape[-1] - 1, dtype=torch.long, device=logits.device)
    target_classes[set_index, query_index] = matched_labels
    return F.cross_entropy(logits.float().transpose(1, 2), target_classes, empty_weight)


def similarity_loss(
    frame_query_embeds: Tensor,
    clip_query_embeds: Tensor,
    frame_matches: list[Matches],
    frame_ids: list[Tensor],
    clip_matches: Matches,
    num_frames: int,
) -> Tensor:
    """Binary cross-entropy on the dot products of every pair of matched queries of one clip and one frame-decoder
    layer: 1 when both were matched to the same instance, 0 otherwise; averaged over all such pairs (self-pairs too).

    frame_query_embeds (Lf, B, T, fQ, C) with `frame_matches[l][b * T + t]`; clip_query_embeds (Lf, B, cQ, C) with
    `clip_matches[l * B + b]`; frame_ids[b * T + t]: instance index (in its clip) of each frame target.
    """
    batch_size = clip_query_embeds.shape[1]
    frame_embeds = frame_query_embeds.flatten(0, 2)  # (Lf*B*T, fQ, C)
    clip_embeds = clip_query_embeds.flatten(0, 1)  # (Lf*B, cQ, C)
    embeds, groups, instances = [], [], []
    for frame, (queries, targets) in enumerate(sum(frame_matches, [])):
        embeds.append(frame_embeds[frame, queries])
        groups.append(torch.full_like(queries, frame // num_frames))  # l * B + b
        instances.append(frame_ids[frame % (batch_size * num_frames)][targets].to(queries.device))
    for clip, (queries, targets) in enumerate(clip_matches):
        embeds.append(clip_embeds[clip, queries])
        groups.append(torch.full_like(queries, clip))
        instances.append(targets)
    embeds = torch.cat(embeds).float()
    groups = torch.cat(groups).to(embeds.device)
    instances = torch.cat(instances).to(embeds.device)
    same_clip = groups[:, None] == groups[None]
    same_instance = same_clip & (instances[:, None] == instances[None])
    pair_losses = F.binary_cross_entropy_with_logits(embeds @ embeds.T, same_instance.float(), reduction="none")
    return (pair_losses * same_clip).sum() / (same_clip.sum() + 1e-6)


__all__ = ["AvisHungarianMatcher", "AvisLoss"]
