"""The pieces of the training recipe: parameter groups, learning-rate schedule, backbone weights, data order,
model inputs."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, ResNetForImageClassification, ResNetModel, SwinModel

from modeling_avis.errors import AvisCheckpointError
from modeling_avis.image_processing_avis import AvisImageProcessor
from modeling_avis.modeling_avis import AvisForAudioVisualInstanceSegmentation
from training.optimization import parameter_groups, warmup_multistep_factor
from training.sampling import EpochOrderSampler, SeededDataset
from training.train import load_backbone_weights

from .conftest import tiny_config

SWIN_BACKBONE = dict(
    model_type="swin", image_size=64, embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4,
    out_features=["stage1", "stage2", "stage3", "stage4"],
)  # fmt: skip


def groups_by_parameter(model) -> dict[str, tuple[str, float, float]]:
    groups = parameter_groups(model, lr=1e-4, weight_decay=0.05, backbone_multiplier=0.1)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    return {
        names[id(p)]: (group["name"], group["lr"], group["weight_decay"]) for group in groups for p in group["params"]
    }


def test_parameter_groups_follow_the_original_rule_on_a_resnet_model():
    model = AvisForAudioVisualInstanceSegmentation(tiny_config())
    groups = groups_by_parameter(model)
    assert set(groups) == {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    expected = {
        # backbone: lr x0.1; its frozen batch norms hold buffers only
        "model.backbone.embedder.embedder.convolution.weight": ("backbone", 1e-5, 0.05),
        # GroupNorm, LayerNorm and nn.Embedding: no weight decay
        "model.pixel_decoder.input_projections.0.1.weight": ("head_no_decay", 1e-4, 0.0),
        "model.frame_decoder.decoder_norm.bias": ("head_no_decay", 1e-4, 0.0),
        "model.frame_decoder.query_features.weight": ("head_no_decay", 1e-4, 0.0),
        "model.frame_decoder.level_embed.weight": ("head_no_decay", 1e-4, 0.0),
        "model.clip_module.frame_query_position_embeddings.weight": ("head_no_decay", 1e-4, 0.0),
        # a bare parameter (the original's nn.Parameter level embedding of the pixel decoder) and biases decay
        "model.pixel_decoder.level_embed": ("head", 1e-4, 0.05),
        "model.clip_module.class_predictor.bias": ("head", 1e-4, 0.05),
        "model.frame_decoder.audio_attention_layers.0.multihead_attn.in_proj_weight": ("head", 1e-4, 0.05),
    }
    assert {name: groups[name] for name in expected} == pytest.approx(expected)
    exempt = {
        f"{module_name}.{name}"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.GroupNorm | nn.LayerNorm | nn.Embedding)
        for name, _ in module.named_parameters(recurse=False)
    }
    assert {name for name, (group, _, _) in groups.items() if group.endswith("no_decay")} == exempt
    assert len(exempt) == 18 + 29 + 33  # pixel decoder, frame decoder, clip module of the tiny model
    assert not any(name.startswith("model.backbone.embedder.embedder.normalization") for name in groups)


def test_parameter_groups_exempt_swin_norms_and_position_tables_in_the_backbone():
    model = AvisForAudioVisualInstanceSegmentation(tiny_config(backbone_config=SWIN_BACKBONE))
    groups = groups_by_parameter(model)
    swin = "model.backbone.swin.encoder.layers.0.blocks.0."
    assert groups[swin + "attention.relative_position_bias.relative_position_bias_table"] == pytest.approx(
        ("backbone_no_decay", 1e-5, 0.0)
    )
    assert groups[swin + "layernorm_before.weight"] == pytest.approx(("backbone_no_decay", 1e-5, 0.0))
    assert groups["model.backbone.hidden_states_norms.stage1.bias"] == pytest.approx(("backbone_no_decay", 1e-5, 0.0))
    assert groups[swin + "mlp.fc1.weight"] == pytest.approx(("backbone", 1e-5, 0.05))


def test_schedule_is_detectron2_warmup_then_step_decay():
    recipe = dict(warmup_iters=10, warmup_factor=1.0, milestones=(32000,), gamma=0.1)
    # the recipe's warm-up factor 1.0 makes warm-up a no-op
    assert [warmup_multistep_factor(s, **recipe) for s in (0, 5, 9, 10, 31999, 32000, 47999)] == pytest.approx(
        [1, 1, 1, 1, 1, 0.1, 0.1]
    )
    steps = dict(warmup_iters=100, warmup_factor=0.001, milestones=(300, 200), gamma=0.5)
    assert [warmup_multistep_factor(s, **steps) for s in (0, 50, 100, 199, 200, 299, 300)] == pytest.approx(
        [0.001, 0.5005, 1.0, 1.0, 0.5, 0.5, 0.25]
    )
    # a milestone inside the warm-up: linear from factor x value at 0 to the value at the warm-up's end
    assert warmup_multistep_factor(5, warmup_iters=10, warmup_factor=0.0, milestones=(2,), gamma=0.1) == 0.05


def tiny_resnet_config(model):
    settings = model.config.backbone_config.to_dict()
    keys = ("embedding_size", "hidden_sizes", "depths", "layer_type", "downsample_in_bottleneck")
    return AutoConfig.for_model("resnet", **{key: settings[key] for key in keys})


def randomize_batch_norm_statistics(model):
    generator = torch.Generator().manual_seed(0)
    for name, buffer in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)


@pytest.mark.parametrize("model_class", [ResNetModel, ResNetForImageClassification], ids=lambda c: c.__name__)
def test_backbone_weights_load_from_a_transformers_resnet_folder(model_class, tmp_path):
    model = AvisForAudioVisualInstanceSegmentation(tiny_config())
    pretrained = model_class(tiny_resnet_config(model))
    randomize_batch_norm_statistics(pretrained)
    pretrained.save_pretrained(tmp_path)
    load_backbone_weights(model, tmp_path)
    source = {key.removeprefix("resnet."): value for key, value in pretrained.state_dict().items()}
    loaded = model.model.backbone.state_dict()
    assert max((loaded[key] - source[key]).abs().max().item() for key in loaded) == 0.0
    assert loaded["embedder.embedder.normalization.running_var"].min() >= 0.5  # frozen statistics came along


def test_backbone_weights_load_from_a_swin_folder_leaving_the_new_stage_norms(tmp_path):
    model = AvisForAudioVisualInstanceSegmentation(tiny_config(backbone_config=SWIN_BACKBONE))
    pretrained = SwinModel(model.config.backbone_config)
    pretrained.save_pretrained(tmp_path)
    load_backbone_weights(model, tmp_path)
    table = "encoder.layers.1.blocks.0.attention.relative_position_bias.relative_position_bias_table"
    assert torch.equal(model.model.backbone.swin.state_dict()[table], pretrained.state_dict()[table])


def test_backbone_weights_load_from_a_safetensors_file_of_the_backbone(tmp_path):
    source = AvisForAudioVisualInstanceSegmentation(tiny_config()).model.backbone.state_dict()
    save_file(
        {f"model.backbone.{key}": value.contiguous() for key, value in source.items()}, tmp_path / "b.safetensors"
    )
    model = AvisForAudioVisualInstanceSegmentation(tiny_config())
    load_backbone_weights(model, tmp_path / "b.safetensors")
    loaded = model.model.backbone.state_dict()
    assert all(torch.equal(loaded[key], source[key]) for key in source)


def test_backbone_weights_that_do_not_fit_are_refused(tmp_path):
    model = AvisForAudioVisualInstanceSegmentation(tiny_config())
    other = AvisForAudioVisualInstanceSegmentation(tiny_config(backbone_config={**SWIN_BACKBONE, "embed_dim": 16}))
    save_file(dict(other.model.backbone.state_dict()), tmp_path / "swin.safetensors")
    with pytest.raises(AvisCheckpointError, match="does not hold the weights of model.backbone"):
        load_backbone_weights(model, tmp_path / "swin.safetensors")
    wider = tiny_resnet_config(model)
    wider.hidden_sizes = [64, 128, 256, 512]
    ResNetModel(wider).save_pretrained(tmp_path / "wider")
    with pytest.raises(AvisCheckpointError, match="does not fit the resnet backbone"):
        load_backbone_weights(model, tmp_path / "wider")


class RandomDraws(torch.utils.data.Dataset):
    """Items drawn from torch's global generator, as the clip sampling and augmentation do."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return index, torch.rand(3).tolist()


def test_each_clip_is_a_function_of_seed_epoch_and_index_whatever_the_global_generator():
    dataset = SeededDataset(RandomDraws(), seed=7)
    torch.manual_seed(1)
    first = dataset[(2, 4)]
    torch.manual_seed(2)
    state = torch.get_rng_state()
    assert dataset[(2, 4)] == first
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert dataset[(3, 4)] != first and dataset[(2, 5)][1] != first[1]
    assert SeededDataset(RandomDraws(), seed=8)[(2, 4)] != first


def test_epoch_order_is_a_permutation_drawn_from_seed_and_epoch():
    sampler = EpochOrderSampler(10, seed=3)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert {epoch_of for epoch_of, _ in keys} == {epoch}
        orders.append([index for _, index in keys])
    assert sorted(orders[0]) == list(range(10)) and sorted(orders[1]) == list(range(10))
    assert orders[0] == orders[2] != orders[1]


def test_frames_are_normalized_then_zero_padded_by_the_image_processor():
    image_processor = AvisImageProcessor()
    frames = torch.full((2, 3, 3, 5), 200, dtype=torch.uint8)
    pixel_values = image_processor.pad(image_processor.normalize(frames), (4, 6))
    expected = (200 - torch.tensor(image_processor.image_mean)) / torch.tensor(image_processor.image_std)
    assert torch.allclose(pixel_values[1, :, 2, 4], expected)
    assert pixel_values[..., 3, :].abs().max() == 0 and pixel_values[..., 5].abs().max() == 0


def test_a_saved_model_loads_for_fine_tuning_with_its_no_object_class_weights(tmp_path):
    # The weights are non-persistent buffers of the loss: from_pretrained used to leave them uninitialised.
    AvisForAudioVisualInstanceSegmentation(tiny_config(no_object_weight=0.2)).save_pretrained(tmp_path)
    criterion = AvisForAudioVisualInstanceSegmentation.from_pretrained(tmp_path).criterion
    assert criterion.frame_empty_weight.tolist() == pytest.approx([1.0] * 26 + [0.2])
    assert criterion.clip_empty_weight.tolist() == pytest.approx([1.0] * 26 + [0.1])
