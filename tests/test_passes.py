"""Each ONNX graph pass on a real export: what it rewrites, and that outputs stay the same."""
import copy

import numpy as np
import pytest

from conftest_convert import make_checkpoint
from mobilebert_mobile import Tokenizer, assets
from mobilebert_mobile.converters import export as E
from mobilebert_mobile.converters import onnx_passes as P

SEQ = 32


def _export(tmp_path, mask_value=-100.0, **kw):
    ck = make_checkpoint(tmp_path / "ck", **kw)
    model, task, _ = E.load_for_export(ck, None, mask_value=mask_value)
    outs = E.DEFAULT_OUTPUTS[task]
    w = E.ExportWrapper.build(model, task, outs)
    return E.export_onnx(w, None, batch=1, seq_len=SEQ, outputs=outs), w, outs


@pytest.fixture(scope="module")
def feeds():
    tok = Tokenizer.from_file(assets.vocab_path(), max_length=SEQ)
    return tok(assets.sample_sentences(6)).model_inputs()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("p"))


def _apply(model, fn):
    g = P.Graph(copy.deepcopy(model))
    n = fn(g)
    return g.finalize(), n


def _same(a, b, feeds, tol=1e-5):
    x, y = P.run_onnx(a, feeds), P.run_onnx(b, feeds)
    for k in x:
        np.testing.assert_allclose(x[k], y[k], atol=tol, rtol=1e-4)


def test_export_matches_torch(exported, feeds):
    onx, w, outs = exported
    ref = E.torch_outputs(w, feeds, outs, 1)
    got = P.run_onnx(onx, feeds)
    assert np.abs(got["probabilities"] - ref["probabilities"]).max() < 1e-5
    assert "IsNaN" not in P.op_counts(onx) and "Where" not in P.op_counts(onx)


def test_fold_nonorm_into_linear(exported, feeds):
    onx, _, _ = exported
    before = P.op_counts(onx)["Mul"]
    out, n = _apply(P.Graph(copy.deepcopy(onx)).finalize(), P.fold_constants)
    out2, n2 = _apply(out, P.fold_nonorm_into_linear)
    # embeddings + per layer: input bottleneck, attention bottleneck, and the attention-output norm
    # (its residual is the input bottleneck, itself a constant-weight linear map, so gamma distributes)
    assert n2 == 1 + 3 * 2
    after = P.op_counts(out2)["Mul"]
    assert before - after == n2
    # left: per layer the norms after residual adds of activations (3 stacked FFNs, the last FFN,
    # the output bottleneck) and the attention scale; once, the mask bias
    assert after == 5 * 2 + 2 + 1
    _same(onx, out2, feeds)


def test_fold_nonorm_through_residuals(exported, feeds):
    """The NoNorms on the residual streams (3 stacked FFNs, the last FFN, the output bottleneck: 5 a
    layer) fold into the linear layers that read them and into the next NoNorm, exactly in float."""
    onx, _, _ = exported
    out, _ = _apply(P.Graph(copy.deepcopy(onx)).finalize(), P.fold_constants)
    out, _ = _apply(out, P.fold_nonorm_into_linear)
    before = P.op_counts(out)
    unbounded, n = _apply(out, lambda g: P.fold_nonorm_through_residuals(g, max_spread=1e9))
    # all but the last one, whose reader (the [CLS] Gather of the classifier) cannot absorb it
    assert n == 5 * 2 - 1
    after = P.op_counts(unbounded)
    assert before["Mul"] - after["Mul"] == n and before["Add"] - after["Add"] == n
    _same(out, unbounded, feeds)
    # gamma's channel spread bounds what is folded (the stored sums change by gamma per channel,
    # and an int8 tensor has one scale); accumulated gammas count, so fewer fold at the default bound
    _, none = _apply(out, lambda g: P.fold_nonorm_through_residuals(g, max_spread=1.0))
    bounded, some = _apply(out, P.fold_nonorm_through_residuals)
    assert none == 0 and 0 < some <= n
    _same(out, bounded, feeds)


def test_fold_embedding_norm_reaches_tables(exported, feeds):
    onx, _, _ = exported
    g = P.Graph(copy.deepcopy(onx))
    P.fold_constants(g)
    P.fold_nonorm_into_linear(g)
    # the token-type Gather now reads a folded (scaled) table, and no Mul sits after the embedding sum
    gathers = [n for n in g.nodes if n.op_type == "Gather" and g.consts.get(n.input[0]) is not None
               and g.consts[n.input[0]].shape[0] == 2]
    assert gathers and gathers[0].input[0].startswith("pass_folded")
    # the folded numbers: the token-type table times the embedding NoNorm's gamma (beta goes to one
    # constant term of the sum, not to this table)
    emb = exported[1].model.mobilebert.embeddings
    table = emb.token_type_embeddings.weight.detach().numpy()
    gamma = emb.LayerNorm.weight.detach().numpy()
    np.testing.assert_allclose(g.consts[gathers[0].input[0]], table * gamma, rtol=1e-6, atol=1e-7)


def test_fold_attention_scale(exported, feeds):
    onx, _, _ = exported
    out, n = _apply(onx, P.fold_attention_scale)
    assert n == 2  # one per layer
    _same(onx, out, feeds)
    # the folded numbers: layer 0's query weight (and bias) divided by sqrt(head size)
    attn = exported[1].model.mobilebert.encoder.layer[0].attention.self
    head = attn.query.weight.shape[0] // exported[1].model.config.num_attention_heads
    wq = attn.query.weight.detach().numpy().T / np.sqrt(head)
    consts = P.Graph(copy.deepcopy(out)).consts.values()
    assert any(c.shape == wq.shape and np.allclose(c, wq, rtol=1e-6, atol=1e-7) for c in consts)


def test_fuse_sibling_matmuls(exported, feeds):
    onx, _, _ = exported
    out, n = _apply(onx, P.fuse_sibling_matmuls)
    assert n == 2 * 2 and P.op_counts(out)["Split"] == 4  # (bottlenecks + V) and (Q + K) per layer
    assert P.op_counts(out)["MatMul"] == P.op_counts(onx)["MatMul"] - 2 * 3
    _same(onx, out, feeds)


def test_set_mask_value_replaces_float_min(tmp_path, feeds):
    onx, _, _ = _export(tmp_path, mask_value=None)  # transformers' float32-min fill
    g = P.Graph(copy.deepcopy(onx))
    P.fold_constants(g)
    n = P.set_mask_value(g, -100.0)
    assert n == 1
    out = g.finalize()
    assert min(float(v.min()) for v in P.Graph(copy.deepcopy(out)).consts.values() if v.dtype == np.float32
               and v.size == 1) >= -100.0
    _same(onx, out, feeds, tol=1e-4)


def test_run_passes_reports_each_and_catches_a_wrong_pass(exported, feeds):
    onx, _, _ = exported
    opt, results = P.run_passes(onx, feeds)
    assert [r.name for r in results] == [n for n, _ in P.DEFAULT_PASSES]
    assert all(r.max_abs_diff < 1e-4 for r in results)
    assert len(opt.graph.node) < len(onx.graph.node)

    def broken(g):
        name = next(n.input[1] for n in g.nodes if n.op_type == "MatMul" and n.input[1] in g.consts)
        g.consts[name] = g.consts[name] * 1.5
        return 1

    with pytest.raises(P.PassError, match="pass broken changed the outputs"):
        P.run_passes(onx, feeds, passes=[("broken", broken)])


def test_gelu_layernorm_graph_passes(tmp_path, feeds):
    onx, w, outs = _export(tmp_path, preset="mobilebert-no-opt")
    opt, _ = P.run_passes(onx, feeds)
    counts = P.op_counts(opt)
    # fuse_gelu: one Gelu per FFN (2 layers x 4 stacked FFNs), no Erf chain left
    assert counts.get("LayerNormalization", 0) > 0 and counts.get("Erf", 0) == 0 and counts["Gelu"] == 2 * 4


def test_fuse_siblings_keeps_apart_outputs_of_different_magnitudes(tmp_path, feeds):
    """For static int8 the fused GEMM's output is one int8 tensor: siblings whose outputs differ in
    magnitude by more than max_ratio stay separate (layer 0's attention bottleneck is scaled 100x
    here, as a student with transferred attention has it), the others are still fused."""
    import torch

    ck = make_checkpoint(tmp_path / "ck")
    model, task, _ = E.load_for_export(ck, None, mask_value=-100.0)
    with torch.no_grad():
        att = model.mobilebert.encoder.layer[0].bottleneck.attention
        att.LayerNorm.weight.mul_(100.0)
        att.LayerNorm.bias.mul_(100.0)
    outs = E.DEFAULT_OUTPUTS[task]
    onx = E.export_onnx(E.ExportWrapper.build(model, task, outs), None, batch=1, seq_len=SEQ, outputs=outs)
    g = P.Graph(copy.deepcopy(onx))
    P.fold_constants(g)
    P.fold_nonorm_into_linear(g)
    folded = g.finalize()
    plain, n_plain = _apply(folded, P.fuse_sibling_matmuls)
    info = {}
    aware, n_aware = _apply(folded, P.make_fuse_siblings_pass(feeds, max_ratio=4.0, info=info))
    assert n_plain == 4 and info["sibling_groups"] == 4 and info["kept_apart_for_ranges"] >= 1
    # layer 0: input bottleneck + V fused, the attention bottleneck alone; Q + K and layer 1 as before
    assert n_aware == 4 and P.op_counts(aware)["MatMul"] == P.op_counts(plain)["MatMul"] + 1
    _same(folded, aware, feeds, tol=1e-4)
