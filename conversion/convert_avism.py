"""Convert a published AVISM checkpoint (detectron2 format) into a Hugging Face folder, and prove it.

    python -m conversion.convert_avism CHECKPOINT OUTPUT_DIR --preset r50_imagenet
    python -m conversion.convert_avism CHECKPOINT OUTPUT_DIR --config merged_config.yaml --verify io.safetensors
    python -m conversion.convert_avism CHECKPOINT OUTPUT_DIR --preset r50_imagenet --vggish vggish-10086976.pth

The folder holds safetensors weights, the config (with `auto_map` and the modeling code for
`trust_remote_code`), and a model card naming the source checkpoint and its published scores. `--verify` runs
the converted model on an input file holding the original's inputs and outputs (the `io_*.safetensors` layout of
the reference fixtures) and prints the largest difference of every captured stage. `--vggish` builds torchvggish's
VGGish in as the audio encoder: the published models read precomputed features, and with it they hear a video.
"""

import argparse
import sys
from pathlib import Path

import torch

from modeling_avis import AvisConfig, AvisForAudioVisualInstanceSegmentation, AvisProcessor, save_model_folder
from modeling_avis.configuration_avis import AvisVggishConfig
from modeling_avis.entry_point import OneLineArgumentParser, hub_repository, run_command
from modeling_avis.errors import AvisCheckpointError, AvisUsageError, printable
from modeling_avis.loading import tensors_only
from modeling_avis.outputs import atomic_folder, check_output_folder, push_folder_to_hub

from .backbone_keys import convert_backbone_state_dict
from .convert_vggish import convert_state_dict as convert_vggish_state_dict
from .convert_vggish import load_torchvggish_state_dict
from .head_keys import TRAINING_ONLY_KEYS, convert_head_state_dict
from .original_config import avis_config_from_original, avis_processor_from_original, load_original_config
from .torch_files import load_torch_file
from .verification import compare_with_original

# The published models (AVISM README, model zoo): AVISeg test split, in percent.
PUBLISHED = {
    "r50_imagenet": {"file": "AVISM_R50_IN.pth", "pretraining": "ImageNet", "FSLA": 42.78, "HOTA": 61.73, "mAP": 40.57},
    "r50_coco": {"file": "AVISM_R50_COCO.pth", "pretraining": "ImageNet & COCO", "FSLA": 44.42, "HOTA": 64.52,
                 "mAP": 45.04},
    "swinl_imagenet": {"file": "AVISM_SwinL_IN.pth", "pretraining": "ImageNet", "FSLA": 49.15, "HOTA": 68.81,
                       "mAP": 49.06},
    "swinl_coco": {"file": "AVISM_SwinL_COCO.pth", "pretraining": "ImageNet & COCO", "FSLA": 52.49, "HOTA": 71.13,
                   "mAP": 53.46},
}  # fmt: skip


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a detectron2 checkpoint (`{"model": state_dict, ...}`)."""
    checkpoint = load_torch_file(path)
    state_dict = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise AvisCheckpointError(f"{printable(path)} is not a detectron2 checkpoint: it has no 'model' state dict")
    return tensors_only(state_dict, f"{printable(path)}: its 'model' state dict")


def convert_state_dict(original: dict[str, torch.Tensor], config: AvisConfig) -> dict[str, torch.Tensor]:
    """Our AvisModel state dict from an original one; every original key is used or a known training buffer."""
    backbone = {key: value for key, value in original.items() if key.startswith("backbone.")}
    head = {key: value for key, value in original.items() if key not in backbone and key not in TRAINING_ONLY_KEYS}
    num_fpn_levels = 4 - config.num_feature_levels
    converted = {
        f"backbone.{key}": value
        for key, value in convert_backbone_state_dict(backbone, config.backbone_config).items()
    }
    converted.update(convert_head_state_dict(head, num_fpn_levels))
    unused = [key for key in head if not key.startswith(("sem_seg_head.", "avism_module.", "vita_module."))]
    if unused:
        raise AvisCheckpointError(f"unknown key in the original checkpoint: {unused[0]}")
    return converted


def check_state_dict(converted: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Raise AvisCheckpointError unless `converted` has exactly the keys and shapes of `expected`."""
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise AvisCheckpointError(
            f"the checkpoint does not fit the configuration: {len(missing)} missing keys {missing[:1]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:1]}"
        )
    for key, value in converted.items():
        if value.shape != expected[key].shape:
            raise AvisCheckpointError(
                f"{key}: shape {tuple(value.shape)} in the checkpoint, {tuple(expected[key].shape)} expected"
            )


def build_converted_model(
    original: dict[str, torch.Tensor], config: AvisConfig, vggish: dict[str, torch.Tensor] | None = None
):
    """An AvisForAudioVisualInstanceSegmentation holding the original's weights, every tensor checked.

    vggish: torchvggish's VGGish state dict, which becomes the model's (frozen) audio encoder, so that the model
    hears a video's sound itself instead of reading precomputed features; `config.audio_config` is set for it.
    """
    if vggish is not None:
        config.audio_config = AvisVggishConfig()
        config.freeze_audio_encoder = True
    model = AvisForAudioVisualInstanceSegmentation(config).eval()
    converted = convert_state_dict(original, config)
    if vggish is not None:
        audio = convert_vggish_state_dict(vggish, config.audio_config)
        converted.update({f"audio_encoder.{key}": value for key, value in audio.items()})
    check_state_dict(converted, model.model.state_dict())
    model.model.load_state_dict(converted, strict=True)
    return model


AUDIO_INPUT = {
    False: "128-d VGGish embeddings, one per frame (1-second windows), computed beforehand (AVISeg's FEATAudios).",
    True: "the video's sound: VGGish log-mel examples (one per frame, 1-second windows) through the built-in, frozen "
    "VGGish (torchvggish's weights), as AVISeg's features were made.",
}


def model_card(source: str, preset: str | None, hears: bool = False) -> str:
    published = PUBLISHED.get(preset)
    scores = (
        f"| {published['pretraining']} | {published['FSLA']} | {published['HOTA']} | {published['mAP']} |"
        if published
        else "| (not a published model) | | | |"
    )
    return f"""---
library_name: transformers
tags: [audio-visual-instance-segmentation, video-instance-segmentation, avis]
license: mit
---
# AVISM ({preset or "custom"})

AVISM, the audio-visual instance segmentation model of *Audio-Visual Instance Segmentation* (Guo et al.,
CVPR 2025), converted from the original detectron2 checkpoint `{source}` by `conversion/convert_avism.py` of
the avis project. Given a video with its sound, it segments and tracks every object that makes sound
(26 AVISeg classes).

Published scores of the original checkpoint on the AVISeg test set:

| pre-training | FSLA | HOTA | mAP |
|---|---|---|---|
{scores}

Audio input: {AUDIO_INPUT[hears]}
"""


def verify(model, processor: AvisProcessor, io_path: str | Path) -> dict[str, float]:
    """Largest |ours - original| of each captured stage of an io file, printed and returned."""
    return compare_with_original(model, processor, io_path)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m conversion.convert_avism",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="the original checkpoint (.pth, detectron2 format)")
    parser.add_argument("output_dir", help="where to write the Hugging Face folder (new, or empty)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PUBLISHED), help="one of the four published models")
    source.add_argument("--config", help="the original's merged config (YAML dump of the detectron2 cfg)")
    parser.add_argument(
        "--vggish",
        metavar="VGGISH.pth",
        help="torchvggish's VGGish weights (vggish-10086976.pth): built in as the audio encoder, so that the model "
        "runs on a video's own sound (without it, it reads precomputed 128-d features)",
    )
    parser.add_argument("--verify", nargs="*", default=[], help="io_*.safetensors files to compare against")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", type=hub_repository, help="also upload the folder to this Hub repository"
    )
    return run_command(lambda: convert(parser.parse_args(argv)))


def convert(args: argparse.Namespace) -> int:
    """Converts, saves, verifies and uploads as the arguments say; 1 when a verification fails."""
    check_output_folder(args.output_dir)
    for io_path in args.verify:
        if not Path(io_path).is_file():
            raise AvisUsageError(f"{printable(io_path)}: no such io file to verify against")
    if args.preset:
        config = AvisConfig.from_preset(args.preset)
        processor = AvisProcessor.for_model(config)
    else:
        original = load_original_config(args.config)
        config, processor = avis_config_from_original(original), avis_processor_from_original(original)
    vggish = load_torchvggish_state_dict(args.vggish) if args.vggish else None
    model = build_converted_model(load_original_state_dict(args.checkpoint), config, vggish)
    with atomic_folder(args.output_dir) as folder:
        save_model_folder(folder, model, processor)
        (folder / "README.md").write_text(model_card(Path(args.checkpoint).name, args.preset, args.vggish is not None))
    print(f"saved {args.output_dir}")
    failures = sum(not verify(model, processor, io_path)["passed"] for io_path in args.verify)
    if args.push_to_hub:
        push_folder_to_hub(args.output_dir, args.push_to_hub)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
