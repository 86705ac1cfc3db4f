import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvggish.torchvggish import _vgg
from transformers import AutoModel
from transformers.initialization import no_init_weights

from conversion.convert_vggish import convert_state_dict
from modeling_avis.configuration_avis import AvisVggishConfig
from modeling_avis.errors import AvisCheckpointError
from modeling_avis.modeling_vggish import AvisVggishModel

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def torchvggish_network():
    """torchvggish's VGG (postprocess off) with random weights scaled so every layer's ReLUs are about half open."""
    torch.manual_seed(0)
    network = _vgg(postprocess=False).eval()
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, std=(2 / module.weight[0].numel()) ** 0.5)
            nn.init.normal_(module.bias, std=0.1)
    return network


@pytest.fixture(scope="module")
def converted(torchvggish_network):
    config = AvisVggishConfig()
    with no_init_weights():  # every weight is loaded below
        model = AvisVggishModel(config).eval()
    model.load_state_dict(convert_state_dict(torchvggish_network.state_dict(), config))
    return model


def test_network_equals_torchvggish_on_random_weights(torchvggish_network, converted):
    log_mel = torch.randn(6, 96, 64, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        reference = torchvggish_network(log_mel.unsqueeze(1))
        ours = converted(log_mel)
        # In float64 the two differ only by summation order: the mapping (including the channel-last flatten) is exact.
        reference64 = torchvggish_network.double()(log_mel.double().unsqueeze(1))
        ours64 = converted.double()(log_mel.double())
    torchvggish_network.float(), converted.float()
    assert ours.shape == (6, 128) and (reference > 0).float().mean() > 0.2
    assert (ours64 - reference64).abs().max().item() <= 1e-10
    # float32: the first linear layer sums 12288 products in another order after the column permutation; measured
    # max 2.5e-5 on embeddings up to ~22, i.e. 1.1e-6 relative (float64: 1.3e-13). Bound: 1e-5 of the largest value.
    assert (ours - reference).abs().max().item() <= 1e-5 * reference.abs().max().item()


def test_conversion_cli_writes_a_loadable_folder(tmp_path, torchvggish_network):
    torch.save(torchvggish_network.state_dict(), tmp_path / "vggish.pth")
    subprocess.run(
        [sys.executable, "-m", "conversion.convert_vggish", str(tmp_path / "vggish.pth"), str(tmp_path / "hf")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert {p.name for p in (tmp_path / "hf").iterdir()} == {"config.json", "model.safetensors"}
    loaded = AutoModel.from_pretrained(tmp_path / "hf")
    assert type(loaded) is AvisVggishModel
    log_mel = torch.randn(2, 96, 64)
    with torch.no_grad():
        reference = torchvggish_network(log_mel.unsqueeze(1))
        assert (loaded(log_mel) - reference).abs().max().item() <= 1e-5 * reference.abs().max().item()


def test_conversion_refuses_a_state_dict_of_another_network():
    with pytest.raises(AvisCheckpointError, match="the checkpoint has weights VGGish does not: pproc.matrix"):
        state = _vgg(postprocess=False).state_dict()
        convert_state_dict({**state, "pproc.matrix": torch.zeros(1)}, AvisVggishConfig())
    with pytest.raises(AvisCheckpointError, match="the checkpoint has 6 convolutions and 3 linear layers; the config"):
        convert_state_dict(
            _vgg(postprocess=False).state_dict(), AvisVggishConfig(conv_channels=[8, 8], pool_after=[0])
        )


def test_widths_come_from_the_config():
    config = AvisVggishConfig(
        conv_channels=[4, 8, 8], pool_after=[0, 2], fc_sizes=[16, 12], num_frames=8, num_mel_bins=12
    )
    model = AvisVggishModel(config)
    assert model(torch.randn(3, 8, 12)).shape == (3, 12)
    assert model.fc_layers[0].in_features == 8 * 2 * 3
    assert [conv.out_channels for conv in model.conv_layers] == [4, 8, 8]


def test_embeddings_are_non_negative_and_the_encoder_can_be_frozen():
    model = AvisVggishModel(
        AvisVggishConfig(conv_channels=[4], pool_after=[0], fc_sizes=[8], num_frames=4, num_mel_bins=4)
    )
    assert model(torch.randn(5, 4, 4)).min() >= 0  # ReLU on the embedding layer too, as in the TF original
    model.freeze()
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_he_initialisation_keeps_a_from_scratch_encoder_listening():
    """At VGGish's 0.01 the small encoder's embedding is ~1e-4 and input-blind; He's is O(1) and input-dependent."""
    torch.manual_seed(0)
    layout = dict(conv_channels=[16, 32, 64, 64], pool_after=[0, 1, 2, 3], fc_sizes=[128, 128])
    log_mel = torch.randn(8, 96, 64) - 1.5  # about the scale of real log-mel examples
    vggish = AvisVggishModel(AvisVggishConfig(**layout))
    he = AvisVggishModel(AvisVggishConfig(**layout, initializer_range=None))
    assert vggish.conv_layers[0].weight.abs().max() <= 0.02  # truncated at two standard deviations
    assert vggish(log_mel).abs().max() < 1e-3
    embeddings = he(log_mel)
    assert embeddings.mean() > 0.1 and (embeddings > 0).float().mean() > 0.25
    assert (embeddings - embeddings.mean(0)).abs().mean() > 0.01  # differs from one example to the next


def test_a_converted_avism_with_vggish_built_in_hears_a_real_clip(torchvggish_network, tmp_path):
    from conversion.convert_avism import main as convert_avism
    from modeling_avis.inference_avis import AvisVideoSegmenter

    from .fixture_data import MEDIA, ORIGINAL

    torch.save(torchvggish_network.state_dict(), tmp_path / "vggish.pth")
    original = ORIGINAL / "r50_tiny"
    argv = [str(original / "model_final.pth"), str(tmp_path / "avism"), "--config", str(original / "config.yaml")]
    assert convert_avism([*argv, "--vggish", str(tmp_path / "vggish.pth")]) == 0
    segmenter = AvisVideoSegmenter.from_pretrained(tmp_path / "avism", device="cpu")
    config = segmenter.model.config
    assert config.freeze_audio_encoder and config.audio_config.fc_sizes == [4096, 4096, 128]
    log_mel = torch.randn(3, 96, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = torchvggish_network(log_mel.unsqueeze(1))
        ours = segmenter.model.encode_audio(log_mel)
    assert ((ours - reference).abs().max() / reference.abs().max()).item() <= 1e-5
    assert "the video's sound" in (tmp_path / "avism" / "README.md").read_text()
    result = segmenter(MEDIA / "dogs_640x360.mp4", score_threshold=0.0, max_instances=2)
    assert result.has_audio and len(result.tracks) == 2 and len(result.tracks[0].segmentations) == 5


def test_a_model_without_audio_encoder_asks_for_features_in_one_line(tmp_path):
    from modeling_avis import AvisModel
    from modeling_avis.inference_avis import AvisVideoSegmenter

    from .conftest import tiny_config
    from .fixture_data import MEDIA

    AvisModel(tiny_config()).save_pretrained(tmp_path / "features_only")
    segmenter = AvisVideoSegmenter.from_pretrained(tmp_path / "features_only", device="cpu")
    with pytest.raises(AvisCheckpointError, match="reads precomputed VGGish features .* convert it with --vggish"):
        segmenter(MEDIA / "dogs_640x360.mp4")
    features = torch.randn(5, 128).numpy()
    assert len(segmenter(MEDIA / "dogs_640x360.mp4", audio_features=features).timestamps) == 5
