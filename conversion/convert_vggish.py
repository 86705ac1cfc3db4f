"""torchvggish's VGGish weights -> an `AvisVggishModel` folder (config.json + model.safetensors).

    python -m conversion.convert_vggish vggish-10086976.pth OUT_DIR

torchvggish (`torchvggish/torchvggish.py`) names the layers of its `VGG` by position: `features.{i}` is its
Sequential of Conv2d / ReLU / MaxPool2d, `embeddings.{i}` its Sequential of Linear / ReLU. Our layers take them in
that order. torchvggish flattens the last feature map channel-last, (frames, mel bins, channels), to match the TF
original; ours flattens channel-first, so the first fully connected layer's input columns are permuted here. The
converted model is checked against a channel-last functional forward of the original weights before saving.
"""

import argparse
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers.initialization import no_init_weights

from modeling_avis.configuration_avis import AvisVggishConfig
from modeling_avis.entry_point import OneLineArgumentParser, run_command
from modeling_avis.errors import AvisCheckpointError, printable
from modeling_avis.loading import tensors_only
from modeling_avis.modeling_vggish import AvisVggishModel
from modeling_avis.outputs import atomic_folder, check_output_folder

from .torch_files import load_torch_file

# Relative to the largest embedding value: the first fully connected layer sums its 12288 float32 products in another
# order once its columns are permuted (measured 1.1e-6 on random weights).
VERIFY_TOLERANCE = 1e-5


def convert_state_dict(original: dict[str, torch.Tensor], config: AvisVggishConfig) -> dict[str, torch.Tensor]:
    """torchvggish's `VGG.state_dict()` -> `AvisVggishModel`'s, for the layer widths of `config`."""
    convs = _layers_by_position(original, "features")
    linears = _layers_by_position(original, "embeddings")
    if len(convs) != len(config.conv_channels) or len(linears) != len(config.fc_sizes):
        raise AvisCheckpointError(
            f"the checkpoint has {len(convs)} convolutions and {len(linears)} linear layers; the config expects "
            f"{len(config.conv_channels)} and {len(config.fc_sizes)}"
        )
    converted = {}
    for ours, theirs in enumerate(convs):
        converted[f"conv_layers.{ours}.weight"] = original[f"features.{theirs}.weight"]
        converted[f"conv_layers.{ours}.bias"] = original[f"features.{theirs}.bias"]
    for ours, theirs in enumerate(linears):
        converted[f"fc_layers.{ours}.weight"] = original[f"embeddings.{theirs}.weight"]
        converted[f"fc_layers.{ours}.bias"] = original[f"embeddings.{theirs}.bias"]
    unused = sorted(set(original) - _used_keys(convs, linears))
    if unused:
        raise AvisCheckpointError(f"the checkpoint has weights VGGish does not: {', '.join(unused[:5])}")
    downsampling = 2 ** len(config.pool_after)
    height, width = config.num_frames // downsampling, config.num_mel_bins // downsampling
    first = converted["fc_layers.0.weight"]  # (out, height x width x channels), channel-last
    channel_first = first.view(len(first), height, width, config.conv_channels[-1]).permute(0, 3, 1, 2)
    converted["fc_layers.0.weight"] = channel_first.reshape(len(first), -1).contiguous()
    return converted


def original_forward(original: dict[str, torch.Tensor], config: AvisVggishConfig, log_mel: torch.Tensor):
    """torchvggish's VGG forward (postprocess off) on its own state dict: the reference the conversion must match."""
    hidden = log_mel.unsqueeze(1)
    for index, position in enumerate(_layers_by_position(original, "features")):
        hidden = F.relu(
            F.conv2d(hidden, original[f"features.{position}.weight"], original[f"features.{position}.bias"], padding=1)
        )
        if index in config.pool_after:
            hidden = F.max_pool2d(hidden, 2)
    hidden = hidden.permute(0, 2, 3, 1).flatten(1)
    for position in _layers_by_position(original, "embeddings"):
        hidden = F.relu(
            F.linear(hidden, original[f"embeddings.{position}.weight"], original[f"embeddings.{position}.bias"])
        )
    return hidden


def load_torchvggish_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """torchvggish's state dict from its .pth file; AvisCheckpointError when the file is something else."""
    original = load_torch_file(checkpoint)
    if not isinstance(original, dict) or not any(str(key).startswith("features.") for key in original):
        raise AvisCheckpointError(
            f"{printable(Path(checkpoint).name)}: not a torchvggish state dict (no features.* weights)"
        )
    return tensors_only(original, printable(Path(checkpoint).name))


def convert(checkpoint: str | Path, output_dir: str | Path, config: AvisVggishConfig | None = None) -> AvisVggishModel:
    """Converts, verifies and saves; returns the converted model."""
    config = config or AvisVggishConfig()
    check_output_folder(output_dir)
    original = load_torchvggish_state_dict(checkpoint)
    with no_init_weights():  # every weight comes from the checkpoint
        model = AvisVggishModel(config)
    model.load_state_dict(convert_state_dict(original, config), strict=True)
    model.eval()
    log_mel = torch.randn(4, config.num_frames, config.num_mel_bins, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = original_forward(original, config, log_mel)
        difference = ((model(log_mel) - reference).abs().max() / reference.abs().max().clamp(min=1e-12)).item()
    if difference > VERIFY_TOLERANCE:
        raise AvisCheckpointError(f"the converted VGGish differs from the original by {difference:.2e} (relative)")
    with atomic_folder(output_dir) as folder:
        model.save_pretrained(folder)
    return model


def _used_keys(convs: list[int], linears: list[int]) -> set[str]:
    layers = [f"features.{i}" for i in convs] + [f"embeddings.{i}" for i in linears]
    return {f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")}


def _layers_by_position(state_dict: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Positions `i` of the `{prefix}.{i}.weight` entries (the layers with weights), in order."""
    pattern = re.compile(rf"^{prefix}\.(\d+)\.weight$")
    return sorted(int(match.group(1)) for key in state_dict if (match := pattern.match(key)))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m conversion.convert_vggish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="torchvggish state dict (.pth), e.g. vggish-10086976.pth")
    parser.add_argument("output_dir", help="folder to write config.json and model.safetensors to (new, or empty)")

    def run() -> None:
        args = parser.parse_args(argv)
        convert(args.checkpoint, args.output_dir)
        print(f"saved AvisVggishModel to {args.output_dir}")

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
