"""From a batch of `collate_clips` to the model's inputs: normalised, zero-padded frames and audio features."""

import torch
from torch import Tensor

from modeling_avis.configuration_avis import AvisConfig

from .data import audio_input_name


def normalize_frames(frames: Tensor, pixel_mask: Tensor, config: AvisConfig) -> Tensor:
    """(B, T, 3, Hp, Wp) uint8 RGB -> float32 normalised with the config's mean and std, zero outside `pixel_mask`.

    The original normalises each frame and then zero-pads it, so the padding is 0 after normalisation, not the
    normalised value of a black pixel. pixel_mask: (B, Hp, Wp) bool, True on real pixels.
    """
    mean = torch.tensor(config.pixel_mean, device=frames.device).view(3, 1, 1)
    std = torch.tensor(config.pixel_std, device=frames.device).view(3, 1, 1)
    normalized = (frames.float() - mean) / std
    return normalized * pixel_mask[:, None, None]


def model_inputs(batch: dict, config: AvisConfig) -> dict[str, Tensor]:
    """`pixel_values` and the audio input (`audio_features` or `audio_log_mel`) of a `collate_clips` batch."""
    return {
        "pixel_values": normalize_frames(batch["frames"], batch["pixel_mask"], config),
        audio_input_name(config): batch["audio"],
    }


__all__ = ["model_inputs", "normalize_frames"]
