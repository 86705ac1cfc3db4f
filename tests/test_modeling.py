"""AVISM as a transformers model: outputs, save/load, Auto classes, remote code, kernels."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from kernels import LayerRepository, LocalLayerRepository, Mode, kernelize, use_kernel_mapping
from transformers import AutoConfig, AutoModel, AutoModelForInstanceSegmentation, AutoProcessor

from modeling_avis import (
    AvisConfig,
    AvisForAudioVisualInstanceSegmentation,
    AvisModel,
    AvisProcessor,
    save_model_folder,
)
from modeling_avis.deformable_attention import MultiScaleDeformableAttention
from modeling_avis.modeling_avis import AvisAttention
from training.build_default_model import DEFAULT_MODEL

from .conftest import tiny_config

EXAMPLES = Path(__file__).parents[1] / "app" / "examples"


def run(model, pixel_values, audio_features):
    with torch.no_grad():
        return model(pixel_values, audio_features)


def test_inference_outputs_have_the_documented_shapes(tiny_inputs):
    model = AvisModel(tiny_config()).eval()
    output = run(model, *tiny_inputs)
    assert output.class_logits.shape == (1, 8, 27)
    assert output.mask_embeddings.shape == (1, 8, 32)
    assert output.mask_features.shape == (1, 7, 32, 16, 24)
    assert output.frame_queries.shape == (1, 7, 10, 32)
    assert torch.isfinite(output.class_logits).all()


def test_auxiliary_outputs_cover_every_supervised_layer(tiny_inputs):
    config = tiny_config()
    model = AvisModel(config).train()
    output = model(*tiny_inputs, output_auxiliary_logits=True)
    frames = output.frame_decoder_output
    assert len(frames.class_logits) == len(frames.mask_logits) == config.decoder_layers + 1
    assert frames.frame_queries.shape == (config.num_frame_query_layers, 7, 10, 32)
    clip = output.clip_output
    layers = (config.clip_decoder_layers, config.num_frame_query_layers, 1)
    assert clip.class_logits.shape == (*layers, 8, 27)
    assert clip.mask_embeddings.shape == (*layers, 8, 32)
    assert clip.clip_query_embeddings.shape == (*layers, 8, 32)
    assert clip.frame_query_embeddings.shape == (config.num_frame_query_layers, 1, 7, 10, 32)
    clip.class_logits.sum().backward()
    assert model.frame_decoder.query_features.weight.grad.abs().sum() > 0


def test_without_auxiliary_outputs_only_the_last_layers_come_out(tiny_inputs):
    output = AvisModel(tiny_config()).train()(*tiny_inputs)
    assert output.frame_decoder_output.mask_logits is None and output.frame_decoder_output.frame_queries.shape[0] == 1
    assert output.clip_output.class_logits.shape[:2] == (1, 1)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_a_forward_with_labels_gives_a_finite_loss_in_train_and_eval_mode(tiny_inputs, train):
    torch.manual_seed(0)
    model = AvisForAudioVisualInstanceSegmentation(tiny_config(train_num_points=64)).train(train)
    pixels, audio = tiny_inputs
    mask_labels = [torch.zeros(2, 7, 64, 96, dtype=torch.bool)]
    mask_labels[0][0, :, 8:40, 8:40] = mask_labels[0][1, 3:, 20:60, 40:90] = True
    output = model(pixels, audio, mask_labels=mask_labels, class_labels=[torch.tensor([3, 11])])
    assert torch.isfinite(output.loss) and output.loss > 0
    assert output.frame_decoder_output.mask_logits is not None  # the auxiliary outputs came out for the loss


def test_frame_chunks_do_not_change_the_result(tiny_inputs):
    torch.manual_seed(0)
    whole = AvisModel(tiny_config(frame_chunk_size=100)).eval()
    chunked = AvisModel(tiny_config(frame_chunk_size=3)).eval()
    chunked.load_state_dict(whole.state_dict())
    a, b = run(whole, *tiny_inputs), run(chunked, *tiny_inputs)
    assert (a.class_logits - b.class_logits).abs().max() < 1e-5
    assert (a.mask_features - b.mask_features).abs().max() < 1e-5


def test_a_batch_of_two_videos_equals_two_single_runs(tiny_inputs):
    torch.manual_seed(0)
    model = AvisModel(tiny_config()).eval()
    pixels, audio = tiny_inputs
    other_pixels, other_audio = torch.randn_like(pixels), torch.randn_like(audio)
    batched = run(model, torch.cat([pixels, other_pixels]), torch.cat([audio, other_audio]))
    first, second = run(model, pixels, audio), run(model, other_pixels, other_audio)
    assert (batched.class_logits[0] - first.class_logits[0]).abs().max() < 1e-5
    assert (batched.class_logits[1] - second.class_logits[0]).abs().max() < 1e-5
    assert (batched.mask_embeddings[1] - second.mask_embeddings[0]).abs().max() < 1e-5


def test_the_audio_changes_the_prediction(tiny_inputs):
    torch.manual_seed(0)
    model = AvisModel(tiny_config()).eval()
    pixels, audio = tiny_inputs
    delta = (run(model, pixels, audio).class_logits - run(model, pixels, torch.zeros_like(audio)).class_logits).abs()
    assert delta.max() > 1e-3


def test_save_and_load_round_trip_through_safetensors(tmp_path, tiny_inputs):
    torch.manual_seed(0)
    model = AvisForAudioVisualInstanceSegmentation(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AvisForAudioVisualInstanceSegmentation.from_pretrained(tmp_path).eval()
    assert torch.equal(run(model, *tiny_inputs).class_logits, run(loaded, *tiny_inputs).class_logits)


def test_auto_classes_load_a_saved_folder(tmp_path, tiny_inputs):
    torch.manual_seed(0)
    model = AvisForAudioVisualInstanceSegmentation(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), AvisConfig)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is AvisModel
    assert torch.equal(run(model, *tiny_inputs).class_logits, run(base, *tiny_inputs).class_logits)


def test_every_auto_class_gives_the_same_classes_with_the_package_and_through_remote_code(tmp_path, tiny_inputs):
    torch.manual_seed(0)
    model = AvisForAudioVisualInstanceSegmentation(tiny_config()).eval()
    folder = tmp_path / "checkpoint"
    save_model_folder(folder, model, AvisProcessor())
    assert json.loads((folder / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_avis.AvisConfig",
        "AutoModel": "modeling_avis.AvisModel",
        "AutoModelForInstanceSegmentation": "modeling_avis.AvisForAudioVisualInstanceSegmentation",
    }
    assert {"modeling_avis.py", "processing_avis.py", "pipeline_avis.py"} <= {path.name for path in folder.iterdir()}
    # with the package imported
    assert type(AutoConfig.from_pretrained(folder)) is AvisConfig
    assert type(AutoModel.from_pretrained(folder)) is AvisModel
    assert type(AutoModelForInstanceSegmentation.from_pretrained(folder)) is AvisForAudioVisualInstanceSegmentation
    assert type(AutoProcessor.from_pretrained(folder)) is AvisProcessor
    # where it was never imported: the same class names, from the folder's code, and the same outputs
    torch.save(tiny_inputs, tmp_path / "inputs.pt")
    script = f"""
        import sys, torch
        from transformers import AutoConfig, AutoModel, AutoModelForInstanceSegmentation, AutoProcessor
        folder = {str(folder)!r}
        names = [type(auto.from_pretrained(folder, trust_remote_code=True)).__name__
                 for auto in (AutoConfig, AutoModel, AutoModelForInstanceSegmentation, AutoProcessor)]
        assert names == ["AvisConfig", "AvisModel", "AvisForAudioVisualInstanceSegmentation", "AvisProcessor"], names
        assert "modeling_avis" not in sys.modules
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        pixels, audio = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            torch.save(model(pixels, audio).class_logits, {str(tmp_path / "logits.pt")!r})
    """
    run_without_the_package(script, tmp_path)
    assert torch.equal(torch.load(tmp_path / "logits.pt"), run(model.model, *tiny_inputs).class_logits)


def test_the_shipped_default_model_segments_a_video_through_the_pipeline_without_the_package(tmp_path):
    script = f"""
        import sys
        from transformers import pipeline
        segment = pipeline(model={str(DEFAULT_MODEL)!r}, trust_remote_code=True, device="cpu")
        result = segment({str(EXAMPLES / "shapes_duet.mp4")!r})
        assert "modeling_avis" not in sys.modules
        print(sorted(track.label_name for track in result.tracks))
    """
    assert run_without_the_package(script, tmp_path).strip() == "['diamond', 'square']"


def run_without_the_package(script: str, folder: Path) -> str:
    """Runs `script` in a fresh Python outside the repository, where `import modeling_avis` fails."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["HF_MODULES_CACHE"] = str(folder / "hf_modules")
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=folder, env=environment, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def _write_local_kernel(root):
    """A kernel repository whose MultiScaleDeformableAttention samples with explicit bilinear gathers."""
    variant = root / "build" / "torch-universal"
    package = variant / "avis_test_kernel"
    package.mkdir(parents=True)
    (variant / "metadata.json").write_text(
        json.dumps(
            {
                "id": "avis-test-kernel",
                "name": "avis-test-kernel",
                "version": 1,
                "license": "MIT",
                "python-depends": [],
                "backend": {"type": "cpu"},
            }
        )
    )
    (package / "__init__.py").write_text("from . import layers\n")
    (package / "layers.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        CALLS = []


        def _bilinear(value, height, width, x, y):
            # value: (N, heads, H*W, d); x, y: (N, heads, Lq, P) pixel coordinates (centres at +0.5)
            x, y = x - 0.5, y - 0.5
            x0, y0 = x.floor(), y.floor()
            output = 0
            for dx in (0, 1):
                for dy in (0, 1):
                    xi, yi = x0 + dx, y0 + dy
                    weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
                    inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
                    index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long()
                    gathered = torch.gather(
                        value[:, :, None].expand(-1, -1, index.shape[2], -1, -1),
                        3,
                        index.flatten(3)[..., None].expand(-1, -1, -1, -1, value.shape[-1]),
                    )
                    output = output + gathered * (weight * inside)[..., None]
            return output  # (N, heads, Lq, P, d)


        class MultiScaleDeformableAttention(nn.Module):
            def forward(self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index,
                        sampling_locations, attention_weights, im2col_step):
                CALLS.append(value.shape)
                batch, _, heads, dim = value.shape
                queries = sampling_locations.shape[1]
                values = value.split([h * w for h, w in value_spatial_shapes_list], dim=1)
                output = 0
                for level, (height, width) in enumerate(value_spatial_shapes_list):
                    location = sampling_locations[:, :, :, level].transpose(1, 2)  # (N, heads, Lq, P, 2)
                    sampled = _bilinear(values[level].transpose(1, 2), height, width,
                                        location[..., 0] * width, location[..., 1] * height)
                    weights = attention_weights[:, :, :, level].transpose(1, 2)[..., None]
                    output = output + (sampled * weights).sum(3)
                return output.transpose(1, 2).reshape(batch, queries, heads * dim)
        """)
    )
    return root


def test_kernelize_swaps_in_a_kernel_layer_that_gives_the_same_outputs(tmp_path, tiny_inputs):
    torch.manual_seed(0)
    model = AvisModel(tiny_config()).eval()
    reference = run(model, *tiny_inputs)
    repository = LocalLayerRepository(
        _write_local_kernel(tmp_path / "kernel"), layer_name="MultiScaleDeformableAttention"
    )
    with use_kernel_mapping({"MultiScaleDeformableAttention": {"cpu": repository}}, inherit_mapping=False):
        kernelize(model, device="cpu", mode=Mode.INFERENCE, use_fallback=False)
    swapped = run(model, *tiny_inputs)
    layers = sys.modules["avis-test-kernel.layers"]
    assert len(layers.CALLS) == model.config.encoder_layers
    assert (swapped.class_logits - reference.class_logits).abs().max() < 1e-4
    assert (swapped.mask_features - reference.mask_features).abs().max() < 1e-4


def test_an_unreachable_kernel_hub_warns_and_keeps_pytorch(monkeypatch, tiny_inputs, caplog):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)
    model = AvisModel(tiny_config()).eval()
    reference = run(model, *tiny_inputs)
    hub = LayerRepository(
        repo_id="kernels-community/deformable-detr", layer_name="MultiScaleDeformableAttention", version=1
    )
    with use_kernel_mapping({"MultiScaleDeformableAttention": {"cpu": hub}}, inherit_mapping=False):
        with caplog.at_level("WARNING"):
            model.set_use_kernels(True)
    assert "running the PyTorch implementation" in caplog.text
    assert not model.use_kernels
    attention = next(m for m in model.modules() if isinstance(m, MultiScaleDeformableAttention))
    assert "forward" not in attention.__dict__
    assert torch.equal(run(model, *tiny_inputs).class_logits, reference.class_logits)


@pytest.mark.parametrize("window", [0, 3, 6])
def test_clip_window_settings_run_and_pad(window, tiny_inputs):
    model = AvisModel(tiny_config(clip_window_size=window)).eval()
    with torch.no_grad():
        output = model(*tiny_inputs, output_hidden_states=True)
    assert output.clip_output.encoded_frame_queries.shape == (1, 1, 7, 10, 32)
    assert output.clip_output.audio_visual_features.shape == (1, 1, 7, 10, 32)
    assert torch.isfinite(output.class_logits).all()
    # without output_hidden_states the window encoders' outputs are not held
    assert run(model, *tiny_inputs).clip_output.encoded_frame_queries is None


@pytest.mark.parametrize("train", [False, True])
def test_clip_windows_run_a_few_at_a_time_with_the_same_result(train):
    # 11 frames in windows of 2: 6 windows (the last padded), shifted ones at inference; 1 or 4 windows per pass
    torch.manual_seed(0)
    frame_queries, audio = torch.randn(2, 1, 11, 10, 32), torch.randn(1, 11, 128)
    whole = AvisModel(tiny_config(clip_window_size=2, clip_window_chunk_size=6)).train(train)
    outputs = []
    for chunk_size in (1, 4, 6):
        model = AvisModel(tiny_config(clip_window_size=2, clip_window_chunk_size=chunk_size)).train(train)
        model.load_state_dict(whole.state_dict())
        with torch.no_grad():
            outputs.append(model.clip_module(frame_queries, audio, output_hidden_states=True))
    for output in outputs[:-1]:
        assert (output.encoded_frame_queries - outputs[-1].encoded_frame_queries).abs().max() < 1e-5
        assert (output.audio_visual_features - outputs[-1].audio_visual_features).abs().max() < 1e-5
        assert (output.mask_embeddings - outputs[-1].mask_embeddings).abs().max() < 1e-5


@pytest.mark.parametrize("mask_dims", [2, 3, 4, 5])
def test_attention_takes_any_mask_broadcastable_to_its_heads(mask_dims):
    # (2, 3) leading dims, 4 heads, 5 queries, 6 keys: a mask of any rank acts as its full (2, 3, 4, 5, 6) expansion
    torch.manual_seed(0)
    attention = AvisAttention(16, 4)
    torch.nn.init.normal_(attention.in_proj_weight)
    torch.nn.init.zeros_(attention.in_proj_bias)
    query, memory = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 6, 16)
    allowed = torch.rand(2, 3, 1, 5, 6) > 0.3
    allowed[..., 0] = True  # every query sees a key
    mask = allowed[(0,) * (5 - mask_dims)]
    expected = attention(query, memory, memory, mask.expand(2, 3, 4, 5, 6).clone())
    assert (attention(query, memory, memory, mask) - expected).abs().max() < 1e-6
    assert (attention(query, memory, memory) - expected).abs().max() > 1e-3


SMALL_VGGISH = {"conv_channels": [4, 8, 8, 8], "pool_after": [0, 1, 2, 3], "fc_sizes": [32, 128]}


def test_log_mel_goes_through_the_models_audio_encoder(tiny_inputs):
    torch.manual_seed(0)
    model = AvisModel(tiny_config(audio_config=SMALL_VGGISH)).eval()
    pixels, _ = tiny_inputs
    log_mel = torch.randn(1, 7, 96, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.audio_encoder(log_mel[0])[None]
        from_log_mel = model(pixels, audio_log_mel=log_mel)
        from_features = model(pixels, audio_features=features)
    assert features.shape == (1, 7, 128)
    assert torch.equal(from_log_mel.class_logits, from_features.class_logits)


def test_the_audio_encoder_is_frozen_unless_configured(tiny_inputs):
    frozen = AvisModel(tiny_config(audio_config=SMALL_VGGISH))
    trained = AvisModel(tiny_config(audio_config=SMALL_VGGISH, freeze_audio_encoder=False))
    assert not any(p.requires_grad for p in frozen.audio_encoder.parameters())
    assert all(p.requires_grad for p in trained.audio_encoder.parameters())


def test_audio_must_come_one_way():
    model = AvisModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="exactly one"):
        model(torch.zeros(1, 2, 3, 64, 64))
    with pytest.raises(ValueError, match="no audio encoder"):
        model(torch.zeros(1, 2, 3, 64, 64), audio_log_mel=torch.zeros(1, 2, 96, 64))


def test_an_audio_encoder_that_does_not_fit_is_a_config_error():
    with pytest.raises(StrictDataclassClassValidationError, match="audio_feature_size"):
        tiny_config(audio_config={**SMALL_VGGISH, "fc_sizes": [32, 64]})
