"""The original's optimizer and learning-rate schedule (train_net.py `build_optimizer`, detectron2's solver).

AdamW where the backbone learns at a tenth of the base rate and norms, embeddings and Swin's relative position
tables have no weight decay; warm-up then step decay of the learning rate, counted in optimizer steps.
"""

import bisect

from torch import nn

# The module types whose parameters the original exempts from weight decay (`SOLVER.WEIGHT_DECAY_NORM = 0.0`).
NORM_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
# Parameters exempt by name: Swin's position tables (the original's `relative_position_bias_table` and
# `absolute_pos_embed`).
NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, backbone_multiplier: float) -> list[dict]:
    """AdamW parameter groups of the original's rule, merged by hyperparameters (named for logging).

    A parameter is in the backbone when its module's name contains "backbone" (lr x `backbone_multiplier`); it has no
    weight decay when its module is a norm or an `nn.Embedding` (`SOLVER.WEIGHT_DECAY_NORM`/`_EMBED` are 0) or its
    name is one of `NO_DECAY_NAMES`. Frozen parameters are left out.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or parameter in seen:
                continue
            seen.add(parameter)
            in_backbone = "backbone" in module_name
            decays = not (isinstance(module, NORM_MODULES + (nn.Embedding,)) or any(n in name for n in NO_DECAY_NAMES))
            groups.setdefault((in_backbone, decays), []).append(parameter)
    return [
        {
            "name": f"{'backbone' if in_backbone else 'head'}{'' if decays else '_no_decay'}",
            "params": params,
            "lr": lr * (backbone_multiplier if in_backbone else 1.0),
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (in_backbone, decays), params in sorted(groups.items(), key=lambda item: (not item[0][0], not item[0][1]))
    ]


def warmup_multistep_factor(
    step: int, warmup_iters: int, warmup_factor: float, milestones: tuple[int, ...], gamma: float
) -> float:
    """The learning-rate multiplier at optimizer step `step` (0-based), as detectron2's WarmupMultiStepLR.

    The step decay multiplies by `gamma` for each milestone reached; during the first `warmup_iters` steps the
    multiplier instead goes linearly from `warmup_factor` times its value at step 0 to its value at `warmup_iters`.
    """

    def decay(at: int) -> float:
        return gamma ** bisect.bisect_right(sorted(milestones), at)

    if step >= warmup_iters:
        return decay(step)
    start, end = warmup_factor * decay(0), decay(warmup_iters)
    return start + (end - start) * step / warmup_iters


__all__ = ["NORM_MODULES", "parameter_groups", "warmup_multistep_factor"]
