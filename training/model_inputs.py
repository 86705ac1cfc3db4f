"""From a batch of `collate_clips` to the model's inputs: its frames and its audio, under the model's input names."""

from torch import Tensor

from modeling_avis.configuration_avis import AvisConfig

from .data import audio_input_name


def model_inputs(batch: dict, config: AvisConfig) -> dict[str, Tensor]:
    """`pixel_values` and the audio input (`audio_features` or `audio_log_mel`) of a `collate_clips` batch."""
    return {"pixel_values": batch["pixel_values"], audio_input_name(config): batch["audio"]}


__all__ = ["model_inputs"]
