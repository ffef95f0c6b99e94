import json

import pytest

from mobilebert_mobile import PRESETS, ConfigError, MobileBertConfig


def test_presets_have_the_paper_shapes():
    mb = MobileBertConfig.from_preset("mobilebert")
    assert (mb.num_hidden_layers, mb.hidden_size, mb.intra_bottleneck_size, mb.num_attention_heads) == (24, 512, 128, 4)
    assert (mb.num_feedforward_networks, mb.hidden_act, mb.normalization_type) == (4, "relu", "no_norm")
    assert mb.key_query_shared_bottleneck and not mb.use_bottleneck_attention and not mb.classifier_activation
    tiny = MobileBertConfig.from_preset("mobilebert-tiny")
    assert tiny.use_bottleneck_attention and not tiny.key_query_shared_bottleneck and tiny.num_feedforward_networks == 2
    noopt = MobileBertConfig.from_preset("mobilebert-no-opt")
    assert (noopt.hidden_act, noopt.normalization_type) == ("gelu", "layer_norm")
    t = MobileBertConfig.from_preset("ib-bert-teacher")
    assert (t.intra_bottleneck_size, t.attention_head_size, t.intermediate_size, t.num_feedforward_networks) == (1024, 256, 4096, 1)
    assert t.query_key_input_size == 512 and not t.transformers_compatible
    assert MobileBertConfig.from_preset("mobilebert-relu6").hidden_act == "relu6"
    assert set(PRESETS) >= {"mobilebert", "mobilebert-tiny", "mobilebert-no-opt", "ib-bert-teacher"}


def test_preset_overrides_and_unknowns():
    c = MobileBertConfig.from_preset("mobilebert", num_hidden_layers=2, attention_mask_value=-100.0)
    assert c.num_hidden_layers == 2 and c.attention_mask_value == -100.0
    with pytest.raises(ConfigError, match="unknown preset 'bert-large'"):
        MobileBertConfig.from_preset("bert-large")
    with pytest.raises(ConfigError, match="unknown config field.*num_layers"):
        MobileBertConfig.from_preset("mobilebert", num_layers=3)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(tmp_path, name):
    c = MobileBertConfig.from_preset(name).with_labels(["neg", "pos", "neutral"])
    p = tmp_path / "config.json"
    c.to_json(p)
    d = json.loads(p.read_text())
    assert d["model_type"] == "mobilebert" and d["id2label"] == {"0": "neg", "1": "pos", "2": "neutral"}
    assert d["label2id"] == {"neg": 0, "pos": 1, "neutral": 2} and d["true_hidden_size"] == c.true_hidden_size
    back = MobileBertConfig.from_json(p)
    assert back == c and back.num_labels == 3 and back.label_names == ["neg", "pos", "neutral"]
    assert MobileBertConfig.from_json(tmp_path) == c  # a directory works too


def test_reads_transformers_config_json(tmp_path):
    import transformers

    hc = transformers.MobileBertConfig(num_hidden_layers=3, intra_bottleneck_size=64, hidden_act="gelu")
    hc.save_pretrained(tmp_path)
    c = MobileBertConfig.from_json(tmp_path)
    assert (c.num_hidden_layers, c.intra_bottleneck_size, c.hidden_act) == (3, 64, "gelu")
    assert c.classifier_activation is True  # transformers' default is kept
    assert "transformers_version" in c.extra and "true_hidden_size" not in c.extra
    # and transformers reads ours back
    c.to_json(tmp_path / "config.json")
    hc2 = transformers.MobileBertConfig.from_pretrained(tmp_path)
    assert (hc2.num_hidden_layers, hc2.intra_bottleneck_size, hc2.true_hidden_size) == (3, 64, 64)


@pytest.mark.parametrize("overrides, message", [
    (dict(intra_bottleneck_size=130), "not divisible by num_attention_heads=4"),
    (dict(hidden_act="swishy"), "unknown activation hidden_act='swishy'"),
    (dict(normalization_type="batch_norm"), "unknown normalization_type='batch_norm'"),
    (dict(embedding_size=1024), "embedding_size=1024 is larger than hidden_size=512"),
    (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob must be in"),
    (dict(attention_mask_value=5.0), "attention_mask_value must be a negative number"),
    (dict(use_bottleneck_attention=True), "exclusive"),
    (dict(use_bottleneck=False), "key_query_shared_bottleneck=True needs use_bottleneck=True"),
    (dict(pad_token_id=40000), "outside the vocabulary"),
])
def test_validation_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        MobileBertConfig.from_preset("mobilebert", **overrides)


def test_bad_json_files(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        MobileBertConfig.from_json(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match="not UTF-8"):
        MobileBertConfig.from_json(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="model_type='bert'"):
        MobileBertConfig.from_json(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        MobileBertConfig.from_json(tmp_path / "nope")
