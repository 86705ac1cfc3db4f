"""Shared helpers: where the reference fixtures live, and a tiny random-weight AVISM configuration."""

import json
import os
import tempfile
from functools import cache

import pytest

# transformers copies the code of folders loaded with trust_remote_code here: a fresh place for each session
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="avis_hf_modules_")

from modeling_avis import AvisConfig  # noqa: E402

from .fixture_data import ORIGINAL  # noqa: E402


def original_io_cases() -> list[tuple[str, str]]:
    """(model folder, io file) for every io entry of every original-model manifest."""
    cases = []
    for manifest in sorted(ORIGINAL.glob("*/manifest.json")):
        for entry in json.loads(manifest.read_text())["io"].values():
            cases.append((manifest.parent.name, entry["file"]))
    return cases


@cache
def converted_model(name: str):
    """The original model folder `name` converted (AvisForAudioVisualInstanceSegmentation), built once per session."""
    from conversion.convert_avism import build_converted_model, load_original_state_dict
    from conversion.original_config import avis_config_from_original, load_original_config

    folder = ORIGINAL / name
    config = avis_config_from_original(load_original_config(folder / "config.yaml"))
    return build_converted_model(load_original_state_dict(folder / "model_final.pth"), config)


def tiny_config(**overrides) -> AvisConfig:
    """A small AVISM whose every part is exercised (two windows, shifted layers, three FPN inputs)."""
    settings = dict(
        backbone_config=dict(
            model_type="resnet",
            embedding_size=8,
            hidden_sizes=[32, 64, 128, 256],
            depths=[1, 1, 1, 1],
            out_features=["stage1", "stage2", "stage3", "stage4"],
        ),
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        num_attention_heads=4,
        dim_feedforward=64,
        encoder_layers=2,
        encoder_feedforward_dim=64,
        decoder_layers=3,
        num_frame_queries=10,
        clip_hidden_dim=32,
        clip_num_attention_heads=4,
        clip_dim_feedforward=64,
        clip_encoder_layers=2,
        clip_window_size=4,
        clip_decoder_layers=2,
        num_clip_queries=8,
    )
    settings.update(overrides)
    return AvisConfig(**settings)


@pytest.fixture
def tiny_inputs():
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, 7, 3, 64, 96, generator=generator), torch.randn(1, 7, 128, generator=generator)


# A VGGish small enough for tests, whose embeddings have the model's 128 dimensions.
TINY_VGGISH = {"conv_channels": [4, 8, 8, 8], "pool_after": [0, 1, 2, 3], "fc_sizes": [32, 128]}


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory):
    """A tiny random AVISM with an audio encoder, saved with a processor that keeps every instance (threshold 0)."""
    import torch

    from modeling_avis import AvisModel, AvisProcessor, save_model_folder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_avis")
    save_model_folder(folder, AvisModel(tiny_config(audio_config=TINY_VGGISH)), AvisProcessor(score_threshold=0.0))
    return folder
