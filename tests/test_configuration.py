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
    assert config.frame_chunk_size == 18 and not config.output_auxiliary_logits
    assert config.num_labels == 26 and config.id2label[25] == "horse" and len(AVISEG_LABELS) == 26


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_save_pretrained(name, tmp_path):
    config = AvisConfig.from_preset(name)
    config.save_pretrained(tmp_path)
    loaded = AvisConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.num_frame_queries == (200 if name.startswith("swinl") else 100)


def test_a_config_saved_with_the_processing_settings_of_old_still_loads_with_them(tmp_path):
    # folders saved before the processor held them keep them in config.json: they load, and the processor reads them
    AvisConfig(score_threshold=0.6, num_detections=20, common_stride=4).save_pretrained(tmp_path)
    loaded = AvisConfig.from_pretrained(tmp_path)
    assert (loaded.score_threshold, loaded.num_detections) == (0.6, 20)
    assert not hasattr(AvisConfig(), "score_threshold") and not hasattr(AvisConfig(), "common_stride")


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="r50_imagenet"):
        AvisConfig.from_preset("r101")
