"""The values each setting of a model or processor config may take, in one table, checked as the config is made.

A config.json or processor_config.json is user input: a size of 0 or -1 fails deep inside the model, and one of a
million allocates gigabytes, or builds layers for minutes, before anything is said. Each range admits every real
AVISM (the four published presets, Swin-L with 200 queries, the tests' tiny configs, the shipped sounding-shapes
model) with room to spare, and refuses what no AVISM has, before anything is built or allocated:

    check_ranges(config, MODEL_RANGES)   # ValueError: "decoder_layers is 1000000, allowed 1..64"

Checks that relate two settings (widths divisible by their heads, the log-mel band edges within the sampling rate)
are the configs' own, after these.
"""

import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class Allowed:
    """low..high, both included; integer: whole numbers only; items: (fewest, most) for a list of such values."""

    low: float
    high: float
    integer: bool = True
    items: tuple[int, int] | None = None

    def admits(self, value: object) -> bool:
        if self.items is None:
            return self._admits_one(value)
        return (
            isinstance(value, list | tuple)
            and self.items[0] <= len(value) <= self.items[1]
            and all(self._admits_one(item) for item in value)
        )

    def _admits_one(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.integer else numbers.Real):
            return False
        # an integer of any size compares exactly; NaN compares False
        return self.low <= value <= self.high

    def __str__(self) -> str:
        span = f"{self.low:g}" if self.low == self.high else f"{self.low:g}..{self.high:g}"
        if self.items is None:
            return span
        fewest, most = self.items
        count = str(fewest) if fewest == most else f"{fewest} to {most}"
        return f"a list of {count} {'integers' if self.integer else 'numbers'} in {span}"


def whole(low: int, high: int) -> Allowed:
    return Allowed(low, high)


def real(low: float, high: float) -> Allowed:
    return Allowed(low, high, integer=False)


def whole_list(low: int, high: int, fewest: int, most: int) -> Allowed:
    return Allowed(low, high, items=(fewest, most))


def real_list(low: float, high: float, count: int) -> Allowed:
    return Allowed(low, high, integer=False, items=(count, count))


LAYERS = whole(1, 64)
OPTIONAL_LAYERS = whole(0, 64)  # an encoder of 0 layers is an ablation the model runs
WIDTH = whole(1, 4096)
FEEDFORWARD = whole(1, 16384)
HEADS = whole(1, 256)
QUERIES = whole(1, 1000)
LOSS_WEIGHT = real(0, 1000)

# AvisConfig (published: widths 256, FFN 1024/2048, 6 + 9 + 6 + 3 layers, 100 or 200 frame queries, 100 clip queries)
MODEL_RANGES = {
    "feature_size": WIDTH,
    "mask_feature_size": WIDTH,
    "encoder_layers": OPTIONAL_LAYERS,
    "encoder_feedforward_dim": FEEDFORWARD,
    "encoder_n_points": whole(1, 64),
    "num_feature_levels": whole(1, 4),
    "hidden_dim": WIDTH,
    "num_attention_heads": HEADS,
    "dim_feedforward": FEEDFORWARD,
    "decoder_layers": LAYERS,
    "num_frame_queries": QUERIES,
    "clip_hidden_dim": WIDTH,
    "clip_num_attention_heads": HEADS,
    "clip_dim_feedforward": FEEDFORWARD,
    "clip_encoder_layers": OPTIONAL_LAYERS,
    "clip_window_size": whole(0, 1000),  # 0: one window over the whole video
    "clip_decoder_layers": LAYERS,
    "num_clip_queries": QUERIES,
    "num_frame_query_layers": LAYERS,
    "audio_feature_size": WIDTH,
    "frame_chunk_size": whole(1, 1024),
    "clip_window_chunk_size": whole(1, 1024),
    "no_object_weight": LOSS_WEIGHT,
    "clip_no_object_weight": LOSS_WEIGHT,
    "class_weight": LOSS_WEIGHT,
    "mask_weight": LOSS_WEIGHT,
    "dice_weight": LOSS_WEIGHT,
    "sim_weight": LOSS_WEIGHT,
    "train_num_points": whole(1, 2**20),
    "oversample_ratio": real(1, 100),
    "importance_sample_ratio": real(0, 1),
    "init_xavier_std": real(0, 100),
}
# The number of classes (`id2label`; AVISeg: 26).
NUM_LABELS = whole(1, 4096)

# AvisVggishConfig (VGGish: 6 convolutions of 64..512 channels, 4 pools, FC 4096-4096-128, 96 x 64 examples)
VGGISH_RANGES = {
    "conv_channels": whole_list(1, 2048, 1, 16),
    "pool_after": whole_list(0, 15, 0, 16),
    "fc_sizes": whole_list(1, 16384, 1, 8),
    "num_frames": whole(1, 1000),
    "num_mel_bins": whole(1, 256),
}
# Values the last convolution's output flattens to, the first fully connected layer's input (VGGish: 12288).
VGGISH_MAX_FLAT_SIZE = 2**17

# The backbone_config of each backbone (R50: stem 64, widths up to 2048; Swin-L: 192-d, depths 2-2-18-2, window 12).
STAGES = 4
BACKBONE_RANGES = {
    "resnet": {
        "num_channels": whole(3, 3),
        "embedding_size": whole(1, 1024),
        "hidden_sizes": whole_list(1, 8192, STAGES, STAGES),
        "depths": whole_list(1, 64, STAGES, STAGES),
    },
    "swin": {
        "num_channels": whole(3, 3),
        "image_size": whole(1, 4096),
        "patch_size": whole(1, 64),
        "embed_dim": whole(1, 1024),
        "depths": whole_list(1, 64, STAGES, STAGES),
        "num_heads": whole_list(1, 256, STAGES, STAGES),
        "window_size": whole(1, 64),
        "mlp_ratio": real(0.01, 16),
        "drop_path_rate": real(0, 1),
    },
}

# AvisImageProcessor (published: 360 or 448, longest 1333, padded to 32)
IMAGE_PROCESSOR_RANGES = {
    "shortest_edge": whole(1, 4096),
    "longest_edge": whole(1, 4096),
    "size_divisibility": whole(1, 256),
    "image_mean": real_list(0, 255, 3),
    "image_std": real_list(0.001, 255, 3),
}

# AvisFeatureExtractor (VGGish: 16 kHz, 64 bands from 125 to 7500 Hz, 96 frames of 25 ms every 10 ms)
FEATURE_EXTRACTOR_RANGES = {
    "sampling_rate": whole(8000, 48000),
    "num_mel_bins": whole(1, 256),
    "num_frames": whole(1, 1000),
    "window_seconds": real(0.001, 0.1),
    "hop_seconds": real(0.001, 0.1),
    "min_frequency": real(0, 24000),
    "max_frequency": real(1, 24000),
    "log_offset": real(1e-12, 1),
}

# AvisProcessor's own settings (AVISeg: 1 frame per second; the original: top 100, threshold 0.3, masks 5 frames a pass)
PROCESSOR_RANGES = {
    "fps": real(0.001, 1000),
    "num_detections": whole(1, 10000),
    "score_threshold": real(-1, 1),  # scores are in 0..1: below 0 keeps every instance, those scoring 0 too
    "mask_chunk_size": whole(1, 256),
}


def check_ranges(settings: object, ranges: dict[str, Allowed], prefix: str = "") -> None:
    """ValueError naming the first of `ranges`' attributes of `settings` that is outside its range, with its value
    and the range (`prefix` before the name: where the settings are, e.g. "audio_config.")."""
    for name, allowed in ranges.items():
        value = getattr(settings, name)
        if not allowed.admits(value):
            fraction = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
            whole_numbers = allowed.integer and allowed.items is None and fraction
            raise ValueError(
                f"{prefix}{name} is {shown(value)}, allowed {'whole numbers ' if whole_numbers else ''}{allowed}"
            )


def shown(value: object) -> str:
    """A value as a message shows it: a long list or string cut short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


__all__ = [
    "BACKBONE_RANGES",
    "FEATURE_EXTRACTOR_RANGES",
    "IMAGE_PROCESSOR_RANGES",
    "MODEL_RANGES",
    "NUM_LABELS",
    "PROCESSOR_RANGES",
    "VGGISH_MAX_FLAT_SIZE",
    "VGGISH_RANGES",
    "Allowed",
    "check_ranges",
    "shown",
]
