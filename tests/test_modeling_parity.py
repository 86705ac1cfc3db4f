"""Converted original checkpoints compute what the original AVISM computed (../shared/fixtures/original)."""

import json

import pytest
import torch

from conversion.convert_avism import (
    build_converted_model,
    check_state_dict,
    convert_state_dict,
    load_original_state_dict,
)
from conversion.original_config import avis_config_from_original, load_original_config
from conversion.verification import FLOAT_TOLERANCE, MASK_FLIP_TOLERANCE, compare_with_original
from modeling_avis import AvisConfig, AvisForAudioVisualInstanceSegmentation, AvisProcessor
from modeling_avis.errors import AvisCheckpointError

from .conftest import converted_model, original_io_cases
from .fixture_data import ORIGINAL

CASES = original_io_cases()


@pytest.mark.parametrize(("name", "io_file"), CASES, ids=[f"{name}-{io}" for name, io in CASES])
def test_converted_checkpoint_matches_every_captured_stage(name, io_file):
    model = converted_model(name)
    result = compare_with_original(
        model, AvisProcessor.for_model(model.config), ORIGINAL / name / io_file, verbose=False
    )
    stages = result["stages"]
    failed = {stage: value for stage, value in stages.items() if not value["passed"]}
    assert not failed, failed
    float_errors = [value["error"] for value in stages.values() if value["tolerance"] == FLOAT_TOLERANCE]
    assert len(float_errors) >= 35 and max(float_errors) <= FLOAT_TOLERANCE
    assert stages["nocut.topk_flat_indices"]["error"] == 0 and stages["final.topk_set"]["error"] == 0
    assert stages["nocut.pred_labels"]["error"] == 0 and stages["final.pred_labels"]["error"] == 0
    assert stages["final.pred_masks"]["error"] <= MASK_FLIP_TOLERANCE


@pytest.mark.parametrize(
    ("keys_file", "preset"),
    [("r50_full_keys.json", "r50_imagenet"), ("r50_coco_full_keys.json", "r50_coco")],
)
def test_full_size_resnet_checkpoints_load_strictly_into_their_presets(keys_file, preset):
    listing = json.loads((ORIGINAL / "keys" / keys_file).read_text())["keys"]
    generator = torch.Generator().manual_seed(0)
    original = {key: torch.randn(entry["shape"], generator=generator) for key, entry in listing.items()}
    model = build_converted_model(original, AvisConfig.from_preset(preset))
    head_key = "avism_module.class_embed.weight" if preset == "r50_imagenet" else "vita_module.class_embed.weight"
    assert torch.equal(model.model.clip_module.class_predictor.weight, original[head_key])
    assert sum(p.numel() for p in model.parameters()) > 60_000_000


def test_full_size_swin_checkpoint_fits_its_preset():
    listing = json.loads((ORIGINAL / "keys" / "swinl_full_keys.json").read_text())["keys"]
    original = {key: torch.empty(entry["shape"], device="meta") for key, entry in listing.items()}
    config = AvisConfig.from_preset("swinl_imagenet")
    with torch.device("meta"):
        model = AvisForAudioVisualInstanceSegmentation(config)
    check_state_dict(convert_state_dict(original, config), model.model.state_dict())
    assert len(model.model.state_dict()) > 800


def test_an_unknown_key_is_an_error_naming_it():
    original = dict(load_original_state_dict(ORIGINAL / "r50_tiny" / "model_final.pth"))
    original["avism_module.extra_head.weight"] = torch.zeros(1)
    config = avis_config_from_original(load_original_config(ORIGINAL / "r50_tiny" / "config.yaml"))
    with pytest.raises(AvisCheckpointError, match="avism_module.extra_head.weight"):
        build_converted_model(original, config)


def test_a_checkpoint_of_another_size_is_an_error():
    original = load_original_state_dict(ORIGINAL / "r50_tiny" / "model_final.pth")
    with pytest.raises(AvisCheckpointError, match="shape|missing"):
        build_converted_model(original, AvisConfig.from_preset("r50_imagenet"))


def test_a_file_that_is_no_checkpoint_is_an_error(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(AvisCheckpointError, match="not a readable PyTorch file"):
        load_original_state_dict(path)
