import json
import os

import pytest
import torch

from mobilebert_mobile import MobileBertConfig
from mobilebert_mobile import modeling as M
from mobilebert_mobile.modeling import CheckpointError


def _small(**kw):
    return MobileBertConfig.from_preset("mobilebert", num_hidden_layers=2, vocab_size=300, **kw)


def _ids():
    return torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))


def test_save_writes_transformers_layout(tmp_path):
    model = M.MobileBertForPreTraining(_small()).eval()
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["MobileBertForPreTraining"] and cfg["model_type"] == "mobilebert"
    from safetensors import safe_open

    keys = set(safe_open(str(tmp_path / "model.safetensors"), "pt").keys())
    assert "cls.predictions.bias" in keys and "cls.predictions.decoder.weight" not in keys  # tied
    assert "mobilebert.encoder.layer.1.ffn.2.output.LayerNorm.weight" in keys
    assert "mobilebert.encoder.layer.0.bottleneck.attention.dense.weight" in keys
    back = M.MobileBertForPreTraining.from_pretrained(tmp_path)
    assert back.cls.predictions.decoder.weight is back.mobilebert.embeddings.word_embeddings.weight
    ids = _ids()
    assert torch.equal(back(ids).logits, model(ids).logits)


def test_pytorch_model_bin_is_read_with_weights_only(tmp_path):
    model = M.MobileBertForSequenceClassification(_small()).eval()
    model.save_pretrained(tmp_path)
    sd = {k: v for k, v in model.state_dict().items()}
    os.remove(tmp_path / "model.safetensors")
    torch.save(sd, tmp_path / "pytorch_model.bin")
    back = M.MobileBertForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(back(_ids()).logits, model(_ids()).logits)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safely"):
        M.MobileBertForSequenceClassification.from_pretrained(tmp_path)


def test_backbone_from_head_checkpoint_and_head_from_backbone(tmp_path):
    clf = M.MobileBertForSequenceClassification(_small()).eval()
    clf.save_pretrained(tmp_path / "clf")
    base = M.MobileBertModel.from_pretrained(tmp_path / "clf")  # head weights ignored
    ids = _ids()
    assert torch.equal(base(ids).last_hidden_state, clf.mobilebert(ids).last_hidden_state)
    base.save_pretrained(tmp_path / "base")
    with pytest.raises(CheckpointError, match=r"missing tensors: classifier\.bias, classifier\.weight"):
        M.MobileBertForSequenceClassification.from_pretrained(tmp_path / "base")
    partial = M.MobileBertForSequenceClassification.from_pretrained(tmp_path / "base", strict=False)
    assert torch.equal(partial.mobilebert(ids).last_hidden_state, base(ids).last_hidden_state)


def test_mismatch_errors_list_the_tensors(tmp_path):
    M.MobileBertForSequenceClassification(_small()).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 256
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mis-shaped tensors: mobilebert\.encoder\.layer\.0\.ffn\.0\."
                                              r"intermediate\.dense\.bias \(checkpoint \(512,\), model \(256,\)\)"):
        M.MobileBertForSequenceClassification.from_pretrained(tmp_path)
    cfg["intermediate_size"] = 512
    cfg["num_hidden_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: mobilebert\.encoder\.layer\.1\."):
        M.MobileBertForSequenceClassification.from_pretrained(tmp_path)
    # non-strict: loads what fits, reports the rest
    M.MobileBertForSequenceClassification.from_pretrained(tmp_path, strict=False)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        M.MobileBertModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        M.MobileBertModel.from_pretrained(tmp_path)
    _small().to_json(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no weights in"):
        M.MobileBertModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        M.MobileBertModel.from_pretrained(tmp_path)


def test_save_is_atomic(tmp_path, monkeypatch):
    model = M.MobileBertModel(_small())
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    import safetensors.torch

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="No space left"):
        M.MobileBertModel(_small()).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temp file left


@pytest.mark.parametrize("preset, expected_m", [("mobilebert", 24.6), ("mobilebert-tiny", 15.5),
                                                ("ib-bert-teacher", 294.2)])
def test_parameter_counts(preset, expected_m):
    n = M.MobileBertModel(MobileBertConfig.from_preset(preset), add_pooling_layer=False).num_parameters()
    assert round(n / 1e6, 1) == expected_m
