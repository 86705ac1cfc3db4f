"""The training losses: Hungarian matching, point sampling, set losses, similarity loss (modeling_avis/loss_avis.py).

Bit-level parity with the original criteria needs detectron2 and so lives outside the test-suite; these tests prove
the parts against brute force and hand computations.
"""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling_avis.configuration_avis import AvisConfig
from modeling_avis.loss_avis import (
    AvisHungarianMatcher,
    AvisLoss,
    min_cost_assignment,
    sample_points,
    sample_uncertain_points,
    similarity_loss,
)

NUM_LABELS = 26


def tiny_config(**overrides) -> AvisConfig:
    values = {
        "decoder_layers": 2,
        "num_frame_query_layers": 2,
        "clip_decoder_layers": 2,
        "train_num_points": 196,
    }
    return AvisConfig(**{**values, **overrides})


def brute_force_assignment(cost: np.ndarray) -> tuple[float, set[tuple[int, int]]]:
    """The least total cost over every one-to-one assignment of min(Q, N) pairs, and its pairs."""
    num_queries, num_targets = cost.shape
    best = (math.inf, set())
    if num_queries >= num_targets:
        for queries in itertools.permutations(range(num_queries), num_targets):
            pairs = set(zip(queries, range(num_targets), strict=True))
            best = min(best, (sum(cost[q, t] for q, t in pairs), pairs), key=lambda candidate: candidate[0])
    else:
        for targets in itertools.permutations(range(num_targets), num_queries):
            pairs = set(zip(range(num_queries), targets, strict=True))
            best = min(best, (sum(cost[q, t] for q, t in pairs), pairs), key=lambda candidate: candidate[0])
    return best


@pytest.mark.parametrize("shape", [(4, 4), (7, 3), (6, 1), (3, 5)], ids=lambda shape: f"{shape[0]}x{shape[1]}")
@pytest.mark.parametrize("seed", range(4))
def test_min_cost_assignment_equals_brute_force(shape, seed):
    cost = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 10 - 3
    rows, cols = min_cost_assignment(cost)
    expected_cost, expected_pairs = brute_force_assignment(cost.numpy())
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == expected_pairs
    assert cost[rows, cols].sum().item() == pytest.approx(expected_cost, abs=1e-5)
    assert rows.tolist() == sorted(rows.tolist())


def bilinear_reference(image: np.ndarray, x: float, y: float) -> float:
    """Bilinear value at normalised (x, y) with pixel centres at (i + 0.5) / size and zeros outside the image."""
    height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    value = 0.0
    for dx, dy in itertools.product((0, 1), (0, 1)):
        weight = (1 - abs(px - (x0 + dx))) * (1 - abs(py - (y0 + dy)))
        if 0 <= x0 + dx < width and 0 <= y0 + dy < height:
            value += weight * image[y0 + dy, x0 + dx]
    return value


def test_sample_points_is_bilinear_with_zero_padding():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, 5, 7, generator=generator)
    coords = torch.rand(1, 40, 2, generator=generator)
    values = sample_points(image, coords)[0, 0]
    expected = [bilinear_reference(image[0, 0].numpy(), x, y) for x, y in coords[0].tolist()]
    np.testing.assert_allclose(values.numpy(), expected, atol=1e-5)


def test_uncertain_points_concentrate_where_logits_are_near_zero():
    torch.manual_seed(0)
    logits = torch.full((3, 1, 16, 16), 10.0)
    logits[:, :, 4:12, 4:12] = 0.0  # a quarter of the area is uncertain; 3x oversampling finds 0.75 of the points
    coords = sample_uncertain_points(logits, num_points=400, oversample_ratio=3.0, importance_sample_ratio=0.75)
    assert coords.shape == (3, 400, 2)
    inside = ((coords > 4 / 16) & (coords < 12 / 16)).all(-1).float()
    # the first 300 points are the most uncertain candidates: all inside; the last 100 are uniform (1/4 inside)
    assert inside[:, :300].mean().item() > 0.97
    assert 0.1 < inside[:, 300:].mean().item() < 0.45


def test_matcher_cost_and_matches_equal_a_hand_computation_on_model_like_outputs():
    generator = torch.Generator().manual_seed(3)
    num_queries, num_frames, num_points = 5, 2, 50
    logits = torch.randn(num_queries, NUM_LABELS + 1, generator=generator) * 2
    masks = torch.randn(num_queries, num_frames, 6, 6, generator=generator) * 3
    labels = torch.tensor([4, 0, 4])
    targets = torch.rand(3, num_frames, 24, 24, generator=generator) > 0.5
    matcher = AvisHungarianMatcher(class_weight=2.0, mask_weight=5.0, dice_weight=5.0, num_points=num_points)

    torch.manual_seed(11)
    cost = matcher.matching_cost(logits, masks, labels, targets)
    torch.manual_seed(11)
    coords = torch.rand(1, num_points, 2)[0].tolist()

    probs = logits.softmax(-1)
    expected = np.zeros((num_queries, 3))
    for query, target in itertools.product(range(num_queries), range(3)):
        pred = np.array([bilinear_reference(m.numpy(), x, y) for m in masks[query] for x, y in coords])
        true = np.array([bilinear_reference(t.float().numpy(), x, y) for t in targets[target] for x, y in coords])
        cross_entropy = np.mean(np.logaddexp(0, pred) - true * pred)
        sigmoid = 1 / (1 + np.exp(-pred))
        dice = 1 - (2 * (sigmoid * true).sum() + 1) / (sigmoid.sum() + true.sum() + 1)
        expected[query, target] = -2.0 * probs[query, labels[target]].item() + 5.0 * cross_entropy + 5.0 * dice
    np.testing.assert_allclose(cost.numpy(), expected, rtol=1e-4, atol=1e-4)

    torch.manual_seed(11)
    [(rows, cols)] = matcher(logits[None], masks[None], [labels], [targets])
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == brute_force_assignment(expected)[1]


def random_outputs(config: AvisConfig, batch_size=2, num_frames=3, size=(8, 8), seed=0, requires_grad=False):
    """Model-shaped random outputs: frame_logits, frame_masks, clip_logits, clip_masks, clip/frame query embeds."""
    generator = torch.Generator().manual_seed(seed)
    fq, cq, width = 6, 5, 8
    depth, layers = config.clip_decoder_layers, config.num_frame_query_layers
    bt = batch_size * num_frames

    def rand(*shape):
        return (torch.randn(*shape, generator=generator) * 2).requires_grad_(requires_grad)

    return (
        [rand(bt, fq, NUM_LABELS + 1) for _ in range(config.decoder_layers + 1)],
        [rand(bt, fq, *size) for _ in range(config.decoder_layers + 1)],
        rand(depth, layers, batch_size, cq, NUM_LABELS + 1),
        rand(depth, layers, batch_size, cq, num_frames, *size),
        rand(depth, layers, batch_size, cq, width),
        rand(layers, batch_size, num_frames, fq, width),
    )


def block_targets(num_instances=(2, 1), num_frames=3, size=(8, 8), seed=0):
    """Targets at 4x the mask size, made of 4x4 blocks so that the stride-4 logits can describe them exactly.
    The first instance of each video is absent from frame 1. Returns (low-res masks, mask_labels, class_labels)."""
    generator = torch.Generator().manual_seed(seed)
    low_res, mask_labels, class_labels = [], [], []
    for count in num_instances:
        masks = torch.zeros(count, num_frames, *size, dtype=torch.bool)
        for instance, frame in itertools.product(range(count), range(num_frames)):
            top, left = torch.randint(0, size[0] - 3, (2,), generator=generator).tolist()
            masks[instance, frame, top : top + 3, left : left + 3] = True
        if count:
            masks[0, 1] = False
        low_res.append(masks)
        mask_labels.append(masks.repeat_interleave(4, -2).repeat_interleave(4, -1))
        class_labels.append(torch.randint(NUM_LABELS, (count,), generator=generator))
    return low_res, mask_labels, class_labels


def perfect_outputs(config: AvisConfig, low_res, class_labels, num_frames=3, size=(8, 8)):
    """Outputs that predict the targets with huge logits: query n <-> instance n, the others no-object."""
    frame_logits, frame_masks, clip_logits, clip_masks, clip_embeds, frame_embeds = random_outputs(
        config, len(low_res), num_frames, size
    )
    big = 20.0

    def one_hot_logits(labels, num_queries):
        logits = torch.full((num_queries, NUM_LABELS + 1), -big)
        logits[:, NUM_LABELS] = big
        logits[torch.arange(len(labels)), NUM_LABELS] = -big
        logits[torch.arange(len(labels)), labels] = big
        return logits

    def instance_embeddings(count, width):
        vectors = torch.eye(width)[:count]
        if count > 1:
            vectors = vectors - vectors.mean(0)  # same instance: positive dot product; different: negative
        return 10.0 * vectors

    fq, cq = frame_logits[0].shape[1], clip_logits.shape[3]
    for video, (masks, labels) in enumerate(zip(low_res, class_labels, strict=True)):
        embeddings = instance_embeddings(len(labels), clip_embeds.shape[-1])
        for frame in range(num_frames):
            visible = masks[:, frame].flatten(1).any(1)
            index = video * num_frames + frame
            logits = one_hot_logits(labels[visible], fq)
            mask_logits = torch.full((fq, *size), -big)
            mask_logits[: int(visible.sum())] = big * (2 * masks[visible, frame].float() - 1)
            for layer in range(config.decoder_layers + 1):
                frame_logits[layer][index] = logits
                frame_masks[layer][index] = mask_logits
            frame_embeds[:, video, frame, : int(visible.sum())] = embeddings[visible]
        clip_logits[:, :, video] = one_hot_logits(labels, cq)
        clip_mask_logits = torch.full((cq, num_frames, *size), -big)
        clip_mask_logits[: len(labels)] = big * (2 * masks.float() - 1)
        clip_masks[:, :, video] = clip_mask_logits
        clip_embeds[:, :, video, : len(labels)] = embeddings
    return frame_logits, frame_masks, clip_logits, clip_masks, clip_embeds, frame_embeds


def expected_loss_names(config: AvisConfig) -> set[str]:
    names = {"loss", "loss_clip_sim"}
    for prefix, depth in (("loss_", config.decoder_layers + 1), ("loss_avism_", config.clip_decoder_layers)):
        for term in ("ce", "mask", "dice"):
            names |= {f"{prefix}{term}"} | {f"{prefix}{term}_{layer}" for layer in range(depth - 1)}
    return names


def test_losses_and_gradients_are_finite_on_random_outputs():
    config = tiny_config()
    outputs = random_outputs(config, requires_grad=True)
    _, mask_labels, class_labels = block_targets()
    torch.manual_seed(0)
    losses = AvisLoss(config)(*outputs, mask_labels, class_labels)

    assert set(losses) == expected_loss_names(config)
    assert all(torch.isfinite(value) for value in losses.values())
    assert losses["loss"].item() == pytest.approx(sum(v.item() for k, v in losses.items() if k != "loss"), rel=1e-6)
    losses["loss"].backward()
    leaves = [*outputs[0], *outputs[1], *outputs[2:]]
    assert all(torch.isfinite(leaf.grad).all() for leaf in leaves)
    assert all(leaf.grad.abs().sum() > 0 for leaf in leaves)


def test_a_perfect_prediction_scores_far_below_a_random_one():
    config = tiny_config()
    low_res, mask_labels, class_labels = block_targets()
    torch.manual_seed(0)
    random_losses = AvisLoss(config)(*random_outputs(config), mask_labels, class_labels)
    torch.manual_seed(0)
    perfect_losses = AvisLoss(config)(*perfect_outputs(config, low_res, class_labels), mask_labels, class_labels)

    # Random: 86 in total. Perfect: 6.7, all from the mask terms: 3/4 of their points are drawn where the logits are
    # uncertain, i.e. on mask edges, where the full-size target is fractional and the cross-entropy cannot reach 0.
    assert random_losses["loss"].item() > 40
    assert perfect_losses["loss"].item() < 0.1 * random_losses["loss"].item()
    for name in ("loss_ce", "loss_avism_ce", "loss_clip_sim"):
        assert perfect_losses[name].item() < 1e-6
    for name in ("loss_dice", "loss_avism_dice", "loss_mask", "loss_avism_mask"):
        assert perfect_losses[name].item() < 0.25 * random_losses[name].item()


def test_classification_losses_weight_the_no_object_class():
    # One video, one frame, one instance: query 0 predicts its mask exactly, every other query an empty mask.
    config = tiny_config(
        decoder_layers=1, num_frame_query_layers=1, clip_decoder_layers=1, no_object_weight=0.1,
        clip_no_object_weight=0.3,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(5)
    num_queries = 4
    target = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    target[0, 0, 2:6, 1:5] = True
    mask_labels, class_labels = [target.repeat_interleave(4, -2).repeat_interleave(4, -1)], [torch.tensor([7])]
    mask_logits = torch.full((num_queries, 8, 8), -20.0)
    mask_logits[0] = 20 * (2 * target[0, 0].float() - 1)
    frame_class_logits = torch.randn(1, num_queries, NUM_LABELS + 1, generator=generator)
    clip_class_logits = torch.randn(1, 1, 1, num_queries, NUM_LABELS + 1, generator=generator)
    outputs = (
        [frame_class_logits],
        [mask_logits[None]],
        clip_class_logits,
        mask_logits[None, None, None, :, None],
        torch.randn(1, 1, 1, num_queries, 8, generator=generator),
        torch.randn(1, 1, 1, num_queries, 8, generator=generator),
    )
    losses = AvisLoss(config)(*outputs, mask_labels, class_labels)

    def hand_cross_entropy(logits, no_object_weight):
        log_probs = logits.log_softmax(-1)
        nll = [-log_probs[0, 7].item()] + [-log_probs[q, NUM_LABELS].item() for q in range(1, num_queries)]
        weights = [1.0] + [no_object_weight] * (num_queries - 1)
        return sum(w * n for w, n in zip(weights, nll, strict=True)) / sum(weights)

    assert losses["loss_ce"].item() == pytest.approx(2.0 * hand_cross_entropy(frame_class_logits[0], 0.1), rel=1e-5)
    assert losses["loss_avism_ce"].item() == pytest.approx(
        2.0 * hand_cross_entropy(clip_class_logits[0, 0, 0], 0.3), rel=1e-5
    )
    unweighted = F.cross_entropy(frame_class_logits[0], torch.tensor([7, NUM_LABELS, NUM_LABELS, NUM_LABELS]))
    assert abs(losses["loss_ce"].item() - 2.0 * unweighted.item()) > 0.05


def test_similarity_loss_equals_a_hand_computation():
    generator = torch.Generator().manual_seed(2)
    # Two videos of two frames, one frame-decoder layer. Video 0: frame 0 matches queries 0, 2 to instances 0, 1;
    # frame 1 matches query 1 to its target 0, which is instance 1; clip query 1 matches instance 0.
    # Video 1: frame 0 matches query 2 to instance 0, frame 1 nothing; clip query 0 matches instance 0.
    frame_embeds = torch.randn(1, 2, 2, 3, 4, generator=generator)
    clip_embeds = torch.randn(1, 2, 2, 4, generator=generator)
    long = torch.tensor
    frame_matches = [
        [
            (long([0, 2]), long([0, 1])),
            (long([1]), long([0])),
            (long([2]), long([0])),
            (long([], dtype=torch.long),) * 2,
        ]
    ]
    frame_ids = [long([0, 1]), long([1]), long([0]), long([], dtype=torch.long)]
    clip_matches = [(long([1]), long([0])), (long([0]), long([0]))]
    loss = similarity_loss(frame_embeds, clip_embeds, frame_matches, frame_ids, clip_matches, num_frames=2)

    groups = [
        [(frame_embeds[0, 0, 0, 0], 0), (frame_embeds[0, 0, 0, 2], 1), (frame_embeds[0, 0, 1, 1], 1),
         (clip_embeds[0, 0, 1], 0)],
        [(frame_embeds[0, 1, 0, 2], 0), (clip_embeds[0, 1, 0], 0)],
    ]  # fmt: skip
    total, count = 0.0, 0
    for group in groups:
        for (a, instance_a), (b, instance_b) in itertools.product(group, group):
            logit = float(a @ b)
            target = float(instance_a == instance_b)
            total += math.log1p(math.exp(-abs(logit))) + max(logit, 0) - logit * target
            count += 1
    assert count == 20
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_similarity_loss_is_scaled_by_sim_weight():
    _, mask_labels, class_labels = block_targets()
    results = []
    for sim_weight in (0.5, 1.0):
        config = tiny_config(sim_weight=sim_weight)
        torch.manual_seed(0)
        results.append(AvisLoss(config)(*random_outputs(config), mask_labels, class_labels)["loss_clip_sim"])
    assert results[1].item() > 0.1
    assert results[0].item() == pytest.approx(0.5 * results[1].item(), rel=1e-6)


def test_clips_without_instances_learn_only_the_no_object_class():
    config = tiny_config()
    _, mask_labels, class_labels = block_targets(num_instances=(0, 0))
    outputs = random_outputs(config, requires_grad=True)
    losses = AvisLoss(config)(*outputs, mask_labels, class_labels)
    for name, value in losses.items():
        if "mask" in name or "dice" in name or name == "loss_clip_sim":
            assert value.item() == 0.0
    expected_ce = 2.0 * F.cross_entropy(outputs[0][-1].flatten(0, 1), torch.full((6 * 6,), NUM_LABELS))
    assert losses["loss_ce"].item() == pytest.approx(expected_ce.item(), rel=1e-5)
    losses["loss"].backward()
    assert torch.isfinite(outputs[0][-1].grad).all()


def test_mask_losses_are_normalised_by_the_mean_count_over_processes(tmp_path):
    config = tiny_config()
    _, mask_labels, class_labels = block_targets()
    torch.manual_seed(0)
    local = AvisLoss(config)(*random_outputs(config), mask_labels, class_labels)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        distributed = AvisLoss(config)(*random_outputs(config), mask_labels, class_labels)
    finally:
        torch.distributed.destroy_process_group()
    # one process: the mean count is the local count
    assert distributed["loss"].item() == pytest.approx(local["loss"].item(), rel=1e-6)
