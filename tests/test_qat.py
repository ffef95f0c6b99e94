"""Quantization-aware fine-tuning on small models: the fake-quant follows TFLite's int8 rules, the
learned ranges are saved with the checkpoint, and convert puts them on the .tflite's tensors."""
import json
import os

import numpy as np
import pytest
import torch

from conftest_convert import make_checkpoint
from mobilebert_mobile import assets
from mobilebert_mobile.distill.qat import (QAT, ActivationFakeQuant, PerChannelWeightFakeQuant, activation_points,
                                           load_ranges, tflite_qparams)

SEQ = 32


def test_weight_fake_quant_is_tflite_per_channel_symmetric_int8():
    w = torch.randn(6, 10) * torch.tensor([0.01, 0.1, 1.0, 3.0, 10.0, 0.5])[:, None]
    got = PerChannelWeightFakeQuant()(w)
    scale = w.abs().amax(1, keepdim=True) / 127
    want = torch.clamp(torch.round(w / scale), -127, 127) * scale
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert len({round(float(v), 6) for v in (got[2] / scale[2]).unique()}) <= 255


def test_activation_fake_quant_observes_then_quantizes_on_the_tflite_grid():
    fq = ActivationFakeQuant(observe_steps=2, momentum=0.5).train()
    x = torch.linspace(-1.0, 3.0, 101)
    for _ in range(2):
        assert torch.equal(fq(x), x)  # observing only
    y = fq(x)  # third call: on
    scale, zero = tflite_qparams(fq.lo, fq.hi)
    assert float(scale) == pytest.approx(4.0 / 255, rel=1e-6) and -128 <= int(zero) <= 127
    q = torch.round(y / scale) + zero
    assert torch.allclose(q, torch.round(q), atol=1e-3) and float(q.min()) >= -128 and float(q.max()) <= 127
    assert not torch.equal(y, x) and float((y - x).abs().max()) <= float(scale) / 2 + 1e-6
    # a range that excludes 0 is widened to contain it (zero must be exact)
    s2, z2 = tflite_qparams(torch.tensor(0.5), torch.tensor(2.0))
    assert float(s2) == pytest.approx(2.0 / 255) and int(z2) == -128


def test_points_follow_the_converted_graph():
    from mobilebert_mobile import MobileBertConfig
    from mobilebert_mobile.modeling import MobileBertForSequenceClassification

    cfg = MobileBertConfig.from_preset("mobilebert", num_hidden_layers=1).with_labels(["a", "b"])
    pts = activation_points(MobileBertForSequenceClassification(cfg))
    layer = "mobilebert.encoder.layer.0."
    # NoNorm after the bottleneck Linear folds into it; ReLU fuses into the FFN's first Linear
    assert layer + "bottleneck.input.dense:out" not in pts and layer + "bottleneck.input.LayerNorm:out" in pts
    assert layer + "intermediate.dense:out" not in pts and layer + "intermediate:out" in pts
    assert layer + "attention.output.dense:in" in pts and layer + "attention.self.query:out" in pts
    assert layer + "output.bottleneck.LayerNorm:in" in pts and "classifier:out" in pts
    gelu = MobileBertConfig.from_preset("mobilebert", num_hidden_layers=1, hidden_act="gelu").with_labels(["a", "b"])
    assert layer + "intermediate.dense:out" in activation_points(MobileBertForSequenceClassification(gelu))
    # a NoNorm on a residual sum stays an int8 MUL then an int8 ADD: its product is a point of its own
    assert layer + "ffn.0.output.LayerNorm:mul" in pts and layer + "output.bottleneck.LayerNorm:mul" in pts
    assert layer + "bottleneck.input.LayerNorm:mul" not in pts  # folded into its Linear: no MUL
    ln = MobileBertConfig.from_preset("mobilebert", num_hidden_layers=1, normalization_type="layer_norm")
    assert not [p for p in activation_points(MobileBertForSequenceClassification(ln.with_labels(["a", "b"])))
                if p.endswith(":mul")]


def test_nonorm_product_is_fake_quantized_before_beta():
    from torch import nn

    from mobilebert_mobile.distill.qat import point_activations
    from mobilebert_mobile.modeling.layers import NoNorm

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = NoNorm(8)

        def forward(self, x):
            return self.norm(x)

    net = Net()
    with torch.no_grad():
        net.norm.weight.copy_(torch.linspace(0.05, 3.0, 8))
        net.norm.bias.copy_(torch.linspace(-1.0, 1.0, 8) * 0.37)
    x = torch.randn(4, 16, 8)
    q = QAT(net, points=["norm:mul"], observe_steps=0)
    net.train()
    y = net(x)
    fq = q.observers["norm:mul"]
    scale, zero = tflite_qparams(fq.lo, fq.hi)
    grid = (y - net.norm.bias) / scale + zero  # beta added after the product's rounding
    assert torch.allclose(grid, torch.round(grid), atol=1e-3)
    assert not torch.allclose(y, x * net.norm.weight + net.norm.bias, atol=float(scale) / 10)
    q.remove()
    acts = point_activations(net, ["norm:mul"], {"x": x})
    torch.testing.assert_close(acts["norm:mul"], x * net.norm.weight)
    from mobilebert_mobile.distill.qat import QatError

    for bad in ("norm:sum", "nowhere:out", ":mul"):
        with pytest.raises(QatError, match="bad QAT point"):
            QAT(net, points=[bad])


@pytest.fixture(scope="module")
def qat_checkpoint(tmp_path_factory):
    """A 2-layer mobilebert-relu6 classifier (the original QAT variant), fine-tuned 24 steps with QAT."""
    from mobilebert_mobile.distill import finetune
    from mobilebert_mobile.distill.data import LabelledData

    d = tmp_path_factory.mktemp("qat")
    ck = make_checkpoint(d / "ck", preset="mobilebert-relu6", layers=2)
    texts = assets.sample_sentences(64)
    data = LabelledData(texts, [int(len(t) % 2) for t in texts], None, ["negative", "positive"])
    s = finetune(str(ck), None, str(d / "ft"), data=data, steps=24, batch_size=8, seq_len=SEQ, lr=1e-4,
                 progress=False, qat=True, qat_observe_steps=6)
    return s


def test_finetune_qat_writes_ranges_and_plain_float_weights(qat_checkpoint):
    from safetensors.numpy import load_file

    model_dir = qat_checkpoint["model"]
    ranges = load_ranges(model_dir)
    assert qat_checkpoint["qat"]["points"] == len(ranges) > 40
    assert all(lo <= hi for lo, hi in ranges.values())
    # ReLU6 outputs: the observed range stays inside [0, 6]
    relu = [r for p, r in ranges.items() if p.endswith("intermediate:out")]
    assert relu and all(lo >= 0.0 and hi <= 6.0 for lo, hi in relu)
    # the checkpoint keeps the transformers layout: float weights, no parametrization names
    tensors = load_file(os.path.join(model_dir, "model.safetensors"))
    assert not any("parametrizations" in k or "original" in k for k in tensors)
    w = tensors["classifier.weight"]
    assert len(np.unique(np.round(w / (np.abs(w).max(1, keepdims=True) / 127), 4))) > 255  # not pre-rounded


def test_learned_ranges_reach_the_quantized_tflite(qat_checkpoint, tmp_path):
    """convert finds each point's tensor by value and sets its range: the int8 scales in the .tflite
    are the learned ranges over 255. The ranges are scaled by 1.37 first, so that no calibration
    could produce the same scales by chance."""
    import shutil

    from mobilebert_mobile.converters import quantize as Q
    from mobilebert_mobile.converters.pipeline import convert

    ck = tmp_path / "ck"
    shutil.copytree(qat_checkpoint["model"], ck)
    doc = json.loads((ck / "qat_ranges.json").read_text())
    doc["points"] = {p: [lo * 1.37, hi * 1.37] for p, (lo, hi) in doc["points"].items()}
    (ck / "qat_ranges.json").write_text(json.dumps(doc))
    rep = convert(ck, tmp_path / "b", precisions=("int8",), seq_len=SEQ, calibration_size=8, heldout_size=8,
                  quiet=True, include_checkpoint=False, metadata=False, target=0.0, ranges_from=str(ck))
    cal = next(s for s in rep["stages"] if s.get("precision") == "int8")["calibration"]
    assert cal["source"] == "qat" and cal["points_matched"] >= 0.6 * cal["points"], cal
    assert "calibrated_candidate" not in cal and "qat_candidate" not in cal  # imposed: no competition
    scales = np.array([v[1] for v in Q.tensor_ranges((tmp_path / "b" / "model_int8.tflite").read_bytes()).values()
                       if v[0] == "q"])
    matched = [p for p in doc["points"] if p not in set(cal["unmatched"])]
    missing = []
    for p in matched:
        lo, hi = doc["points"][p]
        want = (max(hi, 0.0) - min(lo, 0.0)) / 255
        if not np.any(np.abs(scales - want) <= 1e-3 * want):
            missing.append(p)
    # Exceptions by design: slices of a fused FULLY_CONNECTED (the bottlenecks and V share one, Q and K
    # another) share its scale, the union of their ranges. Everything after attention is exact.
    assert len(missing) <= 0.2 * len(matched), missing
    assert not [p for p in missing if ".ffn." in p or ".output." in p or p == "classifier:out"], missing
    # the NoNorm products (an int8 MUL's output in the graph) carry their learned ranges too
    assert [p for p in matched if p.endswith(":mul")] and not [p for p in missing if p.endswith(":mul")], missing
    assert cal["tensors_propagated"] > 0  # the fused outputs and the context before its transpose
    # the queries carry the folded attention scale 1/sqrt(head size): matched with that factor
    assert not [p for p in cal["unmatched"] if p.endswith("query:out")] and cal["tensors_scaled"] >= 2


def test_own_qat_ranges_compete_with_calibration(qat_checkpoint, tmp_path):
    """A checkpoint that carries its QAT ranges: convert scores them against calibration of the folded
    graph (the residual NoNorms folded) on the held-out texts and keeps the better (a tie: the folded
    graph, fewer ops), recording both."""
    from mobilebert_mobile.converters.pipeline import convert

    rep = convert(qat_checkpoint["model"], tmp_path / "b", precisions=("int8", "int8-full"), seq_len=SEQ,
                  calibration_size=8, heldout_size=8, quiet=True, include_checkpoint=False, metadata=False,
                  target=0.0)
    assert rep["float_passes"][0]["name"] == "fold_nonorm_through_residuals"  # made for the candidate
    md = (tmp_path / "b" / "report.md").read_text()
    assert "over the checkpoint's QAT ranges" in md or "over calibration of the folded graph" in md
    for prec in ("int8", "int8-full"):
        st = next(s for s in rep["stages"] if s.get("precision") == prec)
        cal = st["calibration"]
        if "qat_candidate" in cal:  # calibration won or tied, on the folded graph (fewer ops)
            assert cal["score"] >= cal["qat_candidate"]["score"] and cal["chosen"] in ("minmax", "percentile", "mse")
            assert st["graph"] == "float"
        else:
            assert cal["source"] == "qat" and cal["score"] > cal["calibrated_candidate"]["score"], cal
            assert st["graph"] == "static-int8"


def test_convert_refuses_ranges_of_another_model(qat_checkpoint, tmp_path):
    from mobilebert_mobile.converters.export import ConversionError
    from mobilebert_mobile.converters.pipeline import convert

    bad = tmp_path / "qat_ranges.json"
    doc = json.loads(open(os.path.join(qat_checkpoint["model"], "qat_ranges.json")).read())
    doc["points"] = {"bert.encoder.layer.0.output.dense:out": [-1.0, 1.0]}
    bad.write_text(json.dumps(doc))
    with pytest.raises(ConversionError, match="name no module of this model"):
        convert(qat_checkpoint["model"], tmp_path / "b", precisions=("int8",), seq_len=SEQ, calibration_size=8,
                heldout_size=8, quiet=True, ranges_from=str(bad))
    bad.write_text(json.dumps({"format": "something else", "points": {}}))
    with pytest.raises(ConversionError, match="not a QAT ranges file"):
        convert(qat_checkpoint["model"], tmp_path / "b", precisions=("int8",), seq_len=SEQ, ranges_from=str(bad))
    doc["points"] = {"classifier:out": [2.0, 1.0]}
    bad.write_text(json.dumps(doc))
    with pytest.raises(ConversionError, match="bad range"):
        convert(qat_checkpoint["model"], tmp_path / "b", precisions=("int8",), seq_len=SEQ, ranges_from=str(bad))


@pytest.mark.parametrize("observe, match", [(-1, "non-negative integer"), (24, "must be below the training steps"),
                                            (True, "non-negative integer")])
def test_finetune_qat_refuses_bad_observe_steps(tmp_path, observe, match):
    from mobilebert_mobile.distill import finetune
    from mobilebert_mobile.distill.data import LabelledData
    from mobilebert_mobile.distill.teachers import DistillError

    ck = make_checkpoint(tmp_path / "ck", preset="mobilebert-relu6", layers=1)
    texts = assets.sample_sentences(16)
    data = LabelledData(texts, [i % 2 for i in range(16)], None, ["negative", "positive"])
    with pytest.raises(DistillError, match=match):
        finetune(str(ck), None, str(tmp_path / "ft"), data=data, steps=24, batch_size=8, seq_len=SEQ,
                 progress=False, qat=True, qat_observe_steps=observe)
