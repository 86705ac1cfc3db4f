import pytest

from modeling_avis import AVISEG_LABELS, PRESETS, AvisConfig


def test_default_config_is_the_published_r50_imagenet_model():
    config = AvisConfig()
    assert config.backbone_config.model_type == "resnet"
    assert config.backbone_config.hidden_sizes == [256, 512, 1024, 2048]
    assert (config.hidden_dim, config.num_attention_heads, config.dim_feedforward) == (256, 8, 2048)
    assert (config.num_frame_queries, config.num_clip_queries) == (100, 100)
    assert (config.encoder_layers, config.encoder_feedforward_dim, config.encoder_n_points) == (6, 1024, 4)
    assert (config.decoder_layers, config.clip_encoder_layers, config.clip_window_size) == (9, 6, 6)
    assert config.clip_decoder_layers == 3
    assert (config.frame_chunk_size, config.mask_chunk_size) == (18, 5)
    assert (config.num_detections, config.score_threshold) == (100, 0.3)
    assert config.num_labels == 26 and config.id2label[25] == "horse" and len(AVISEG_LABELS) == 26


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_save_pretrained(name, tmp_path):
    config = AvisConfig.from_preset(name)
    config.save_pretrained(tmp_path)
    loaded = AvisConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.num_frame_queries == (200 if name.startswith("swinl") else 100)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="r50_imagenet"):
        AvisConfig.from_preset("r101")
