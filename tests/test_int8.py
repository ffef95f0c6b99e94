"""int8 mechanisms on small models: equalization exact in float, chosen ranges reaching the .tflite,
the per-op profile and the GEMM-shape floor reading real models."""
import copy
import json

import numpy as np
import pytest

from conftest_convert import make_checkpoint
from mobilebert_mobile import Tokenizer, assets
from mobilebert_mobile.converters import export as E
from mobilebert_mobile.converters import onnx_passes as P

SEQ = 32


@pytest.fixture(scope="module")
def feeds():
    tok = Tokenizer.from_file(assets.vocab_path(), max_length=SEQ)
    return tok(assets.sample_sentences(8, offset=500)).model_inputs()


@pytest.fixture(scope="module")
def folded(tmp_path_factory, feeds):
    """A 2-layer MobileBERT export after the default folds (before sibling fusion)."""
    ck = make_checkpoint(tmp_path_factory.mktemp("eq") / "ck", layers=2)
    model, task, _ = E.load_for_export(ck, None, mask_value=-100.0)
    outs = ("logits",)  # not the probabilities: a random model's softmax saturates and hides differences
    onx = E.export_onnx(E.ExportWrapper.build(model, task, outs), None, batch=1, seq_len=SEQ, outputs=outs)
    first = ("remove_noops", "fold_constants", "set_mask_value", "fold_nonorm_into_linear", "fuse_gelu")  # as int8
    opt, _ = P.run_passes(onx, feeds, passes=[p for p in P.DEFAULT_PASSES if p[0] in first])
    return opt


def _weights(model):
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_equalization_is_exact_in_float_and_changes_the_weights(folded, feeds):
    info = {}
    g = P.Graph(copy.deepcopy(folded))
    n = P.make_equalize_pass(feeds, alpha=0.5, info=info)(g)
    out = g.finalize()
    # per layer: 4 FFN pairs (ReLU between, fused with bias) + the attention bottleneck feeding Q and K
    assert n == info["sites"] == 10 + 2 and info["by_kind"]["linear"] >= 8
    # NoNorm outputs read by a residual add cannot fold
    assert info["blocked_by_kind"].get("nonorm", 0) > 0
    a, b = P.run_onnx(folded, feeds), P.run_onnx(out, feeds)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, rtol=1e-4)
    before, after = _weights(folded), _weights(out)
    changed = [k for k in after if k.startswith("pass_eq_w")]
    assert len(changed) >= 2 * n - 2  # producer and consumer weights of every site
    # the FFN output weights: rows multiplied by s, far from the identity
    same_shape = [(before[k], after[k2]) for k2 in changed for k in before
                  if before[k].shape == after[k2].shape and before[k].ndim == 2]
    assert same_shape and all(not np.allclose(x, y, rtol=1e-3) for x, y in same_shape[:4])
    # and the activations it targets are flatter: the max/median channel ratio of X shrinks
    sites, _ = P.equalization_sites(P.Graph(copy.deepcopy(out)))
    amax = P.channel_absmax(out, feeds, [s["x"] for s in sites])
    ratio_after = float(np.median([v.max() / np.median(np.maximum(v, 1e-5)) for v in amax.values()]))
    assert ratio_after < info["outlier_ratio_median"]


def test_equalization_breaks_if_scales_are_not_compensated(folded, feeds):
    """The exactness check can fail: dropping the producer's 1/s changes the outputs."""
    g = P.Graph(copy.deepcopy(folded))
    sites, _ = P.equalization_sites(g)
    site = next(s for s in sites if s["relu"])  # an FFN: ReLU between the two linears
    u = site["consumers"][0]
    u.input[1] = g.new_const(g.consts[u.input[1]] * 1.5, "bad")
    bad = g.finalize()
    a, b = P.run_onnx(folded, feeds), P.run_onnx(bad, feeds)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) > 1e-3


@pytest.fixture(scope="module")
def minilm_graph(minilm_dir, feeds):
    """The real all-MiniLM-L6-v2 after the static-int8 passes (its residual stream has outlier channels)."""
    model, task, _ = E.load_for_export(minilm_dir, "embedding", mask_value=-100.0)
    outs = tuple(E.DEFAULT_OUTPUTS[task])
    onx = E.export_onnx(E.ExportWrapper.build(model, task, outs), None, batch=1, seq_len=SEQ, outputs=outs)
    opt, _ = P.run_passes(onx, feeds, passes=P.passes_for(static_int8=True))
    return opt


def _spread(model, feeds, names):
    amax = P.channel_absmax(model, feeds, names)
    return {n: float(v.max() / np.median(np.maximum(v, 1e-6))) for n, v in amax.items()}


def test_two_level_scales():
    a = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 60.0, 13.0])  # median 2: threshold 6 at tau 3
    s = P.two_level_scales(a, 3.0)
    assert s.tolist() == [1, 1, 1, 1, 1, 10, 10]  # M = 60 / 6: the largest channel lands on the threshold
    assert P.two_level_scales(np.array([1.0, 2.0, 2.5, 2.0]), 3.0) is None  # nothing above 3x the median
    assert P.two_level_scales(np.array([0.0, 0.0, 0.0, 5.0]), 3.0).max() == 1e3  # near-zero median: capped


def test_residual_scaling_is_exact_in_float_and_flattens_the_residual_stream(minilm_graph, feeds):
    g = P.Graph(copy.deepcopy(minilm_graph))
    segs = P.residual_segments(g)
    assert len(segs) == 12  # attention and FFN of each of the 6 layers
    embs = P.embedding_sums(g)
    assert len(embs) == 1 and len(embs[0]["leaves"]) == 3  # word and token-type lookups, folded positions
    sums = [s["x"] for s in segs] + [embs[0]["x"]]
    info = {}
    n = P.make_residual_scaling_pass(feeds, tau=3.0, info=info)(g)
    out = g.finalize()
    assert len(info["embedding_sums"]) == 1 and info["embedding_sums"][0]["scaled"] >= 1
    assert n == info["scaled"] + 1 and 4 <= n <= 13
    a, b = P.run_onnx(minilm_graph, feeds), P.run_onnx(out, feeds)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, rtol=1e-4)
    ops = P.op_counts(out)
    assert ops.get("LayerNormalization", 0) == 13 - n and ops["Pow"] == n  # each scaled sum's LayerNorm made explicit
    before, after = _spread(minilm_graph, feeds, sums), _spread(out, feeds, sums)
    worst = max(before, key=before.get)
    assert before[worst] > 20 and after[worst] < before[worst] / 3
    assert after[embs[0]["x"]] < before[embs[0]["x"]] / 2  # the embedding sum, scaled through its tables
    # two levels: every statistics-correction weight vector holds zeros and one other value (exact in int8)
    w = [v for k, v in P.Graph(copy.deepcopy(out)).consts.items() if k.startswith(("pass_rs_wm", "pass_rs_wv"))]
    assert len(w) == 2 * n and all(len(np.unique(v)) == 2 and 0 in v for v in w)


def test_residual_scaled_graph_lowers_to_tflite_with_rsqrt(minilm_graph, feeds, tmp_path):
    """The explicit LayerNorms lower (Pow(-0.5) as one RSQRT) and the fp32 .tflite matches ONNX."""
    import collections

    from tensorflow.lite.tools import flatbuffer_utils

    from mobilebert_mobile.converters.onnx_to_tf import Lowering
    from mobilebert_mobile.converters.tflite import concrete_function, convert, op_name, run_tflite

    g = P.Graph(copy.deepcopy(minilm_graph))
    n = P.make_residual_scaling_pass(feeds, tau=3.0)(g)
    scaled = g.finalize()
    outs = tuple(o.name for o in scaled.graph.output)
    data = convert(concrete_function(Lowering(scaled), 1, SEQ, outs), "fp32")
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    ops = collections.Counter(op_name(m, op) for op in m.subgraphs[0].operators)
    assert ops["RSQRT"] == 13 and "POW" not in ops  # every LayerNorm: n explicit, 13 - n lowered as before
    assert n >= 3
    path = tmp_path / "scaled.tflite"
    path.write_bytes(data)
    got, want = run_tflite(str(path), feeds), P.run_onnx(minilm_graph, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=2e-4, rtol=1e-3)


def test_residual_scaling_breaks_if_a_reader_is_not_compensated(minilm_graph, feeds):
    """The exactness check can fail: a reader of the scaled LayerNorm output left unscaled."""
    g = P.Graph(copy.deepcopy(minilm_graph))
    readers = {id(u): list(u.input) for s in P.residual_segments(g) for u in s["readers"]}
    assert P.make_residual_scaling_pass(feeds, tau=3.0)(g)
    changed = [u for u in g.nodes if id(u) in readers and u.input[1] != readers[id(u)][1]]
    assert changed
    changed[0].input[1] = readers[id(changed[0])][1]  # the original weights back on one reader
    bad = g.finalize()
    a, b = P.run_onnx(minilm_graph, feeds), P.run_onnx(bad, feeds)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) > 1e-3


def _tiny_calibrated():
    """FC -> ReLU -> FC with an outlier-heavy input, calibrated (float model with min/max)."""
    import tensorflow as tf

    from mobilebert_mobile.converters.quantize import calibrate

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((32, 8)).astype(np.float32) * 0.3

    @tf.function(input_signature=[tf.TensorSpec([4, 16], tf.float32, name="x")])
    def f(x):
        return {"y": tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)}

    def data():
        for i in range(16):
            x = rng.standard_normal((4, 16)).astype(np.float32)
            if i == 3:
                x[0, 0] = 60.0  # one outlier value in the whole calibration set
            yield {"x": x}

    feeds = {"x": np.concatenate([d["x"] for d in data()])}
    module = tf.Module()
    module.f = f
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], module)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = data
    return calibrate(conv), feeds


def _quantized_scale_of(model_bytes: bytes, name: str) -> float:
    """Scale of the int8 tensor the QUANTIZE op makes from float tensor ``name``."""
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    sg = m.subgraphs[0]
    for op in sg.operators:
        if sg.tensors[op.inputs[0]].name.decode() == name and sg.tensors[op.outputs[0]].type == 9:  # INT8
            return float(sg.tensors[op.outputs[0]].quantization.scale[0])
    raise AssertionError(f"no int8 tensor quantized from {name}")


def test_chosen_ranges_reach_the_quantized_tflite():
    from mobilebert_mobile.converters import quantize as Q

    calibrated, feeds = _tiny_calibrated()
    # histograms read the float model; feeds are split into its batch of 4
    hists = Q.activation_histograms(calibrated, {"x": feeds["x"]})
    assert hists and all(h["counts"].sum() > 0 for h in hists.values())
    names = {h["name"]: i for i, h in hists.items()}
    x_name = next(n for n in names if "x" in n.split("/")[-1] or n.startswith("serving_default_x"))
    h = hists[names[x_name]]
    lo_p, hi_p = Q.choose_range(h, "percentile", 99.0)
    assert hi_p < 0.5 * h["hi"]  # the 60.0 outlier is clipped
    got = {}
    for method in ("minmax", "percentile", "mse"):
        ranged, stats = Q.apply_ranges(calibrated, hists, method, percentile=99.0)
        r = Q.tensor_ranges(ranged)[x_name]
        a, b = Q.choose_range(h, method, 99.0)
        assert r[0] == "r" and r[1] == pytest.approx(a, rel=1e-5, abs=1e-6) and r[2] == pytest.approx(b, rel=1e-5)
        scale = _quantized_scale_of(Q.quantize_calibrated(ranged), x_name)
        # the quantized input's scale is the chosen range over 255 (TFLite nudges the zero point only)
        assert scale == pytest.approx((b - a) / 255.0, rel=0.02)
        got[method] = scale
    assert got["percentile"] < 0.5 * got["minmax"] and got["mse"] <= got["minmax"]


def test_mse_range_clips_a_long_tail_and_lowers_the_error():
    from mobilebert_mobile.converters import quantize as Q

    x = np.random.default_rng(0).laplace(size=1_000_000)
    lo, hi = float(x.min()), float(x.max())
    counts = np.bincount(np.clip(((x - lo) / (hi - lo) * 2048).astype(int), 0, 2047), minlength=2048)
    h = {"lo": lo, "hi": hi, "counts": counts}
    a, b = Q.choose_range(h, "mse")
    assert lo < a < 0 < b < hi and (b - a) < 0.8 * (hi - lo)

    def err(a, b):  # measured int8 round-trip error on the samples themselves
        s = (b - a) / 255
        q = np.clip(np.round((x - a) / s), 0, 255) * s + a
        return float(np.mean((x - q) ** 2))

    assert err(a, b) < 0.8 * err(lo, hi)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import tensorflow as tf

    d = tmp_path_factory.mktemp("prof")
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((64, 128)).astype(np.float32) * 0.1
    w2 = rng.standard_normal((128, 64)).astype(np.float32) * 0.1

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 64], tf.float32)])
    def f(x):
        h = tf.nn.relu(tf.matmul(tf.reshape(x, [16, 64]), w1))
        y = tf.matmul(h, w2) + tf.reshape(x, [16, 64])
        a = tf.nn.softmax(tf.matmul(y, y, transpose_b=True))
        return tf.reshape(tf.matmul(a, y), [1, 16, 64])

    paths = {}
    for kind in ("int8", "dynamic", "fp32"):
        c = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
        if kind != "fp32":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "int8":
            c.representative_dataset = lambda: ([rng.standard_normal((1, 16, 64)).astype(np.float32)]
                                                for _ in range(4))
        p = d / f"{kind}.tflite"
        p.write_bytes(c.convert())
        paths[kind] = str(p)
    return paths


def test_op_profile_output_parses(tiny_models, tmp_path):
    from mobilebert_mobile.benchmarks import op_profile
    from mobilebert_mobile.converters.tflite import inventory

    out = tmp_path / "o"
    assert op_profile.main([f"int8={tiny_models['int8']}", f"dyn={tiny_models['dynamic']}", "--runs", "4",
                            "--rounds", "2", "--out", str(out)]) == 0
    res = json.loads((out / "op_profile.json").read_text())
    md = (out / "op_profile.md").read_text()
    for label, kind in (("int8", "int8"), ("dyn", "dynamic")):
        with open(tiny_models[kind], "rb") as fh:
            inv = inventory(fh.read())
        r = res["models"][label]
        assert r["ops"] == inv["total_ops"] == sum(v["count"] for v in r["by_type"].values())
        assert r["whole_median_ms"] > 0 and r["sum_of_ops_ms"] > 0
        # the markdown table of this model parses back to the same counts
        sec = md.split(f"## {label}: by op type and dtype")[1].split("\n\n")[1]
        rows = [ln.split("|")[1:-1] for ln in sec.splitlines()[2:]]
        assert sum(int(c[1]) for c in rows) == inv["total_ops"]
        assert {c[0].strip() for c in rows} == set(r["by_type"])
    assert any(k.startswith("QUANTIZE f32->i8") for k in res["models"]["int8"]["by_type"])
    assert "FULLY_CONNECTED f32 (i8 weights, dynamic)" in res["models"]["dyn"]["by_type"]
    assert "## Findings" in md and res["machine"]["int8_isa"]["best"]


def test_gemm_shapes_and_shape_floor(tiny_models):
    from mobilebert_mobile.benchmarks import floor

    with open(tiny_models["fp32"], "rb") as fh:
        data = fh.read()
    shapes = floor.gemm_shapes(data)
    fcs = sorted((s["m"], s["k"], s["n"]) for s in shapes if s["op"] == "FULLY_CONNECTED")
    # TF turns y @ y^T into a FULLY_CONNECTED with y as its weight; a @ y stays a BATCH_MATMUL
    assert fcs == [(16, 64, 16), (16, 64, 128), (16, 128, 64)]
    bmm = [s for s in shapes if s["op"] == "BATCH_MATMUL"]
    assert [(s["batch"], s["m"], s["k"], s["n"], s["count"]) for s in bmm] == [(1, 16, 16, 64, 1)]
    res = floor.shape_floor(data, runs=4, rounds=2)
    assert res["fp32_ms"] > 0 and res["int8_ms"] > 0
    assert all(s["fp32_xnnpack"] for s in res["shapes"])
    assert res["int8_attention_fp32_ms"] > 0


def test_floor_command_reports_both_floors(tiny_models, tmp_path):
    from mobilebert_mobile.benchmarks import floor

    p = tiny_models["fp32"]
    assert floor.main([p, "--measure", f"tiny fp32={p}", f"tiny int8={tiny_models['int8']}", "--runs", "4",
                       "--rounds", "2", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "floor.json").read_text())
    assert res["single_gemm_floor"]["fp32_ms"] > 0 and res["single_gemm_floor"]["int8_ms"] > 0
    assert set(res["measured_ms"]) == {"tiny fp32", "tiny int8"} and res["machine"]["int8_isa"]["best"]
    md = (tmp_path / "floor.md").read_text()
    rows = [ln.split("|")[1:-1] for ln in md.splitlines() if ln.startswith("| tiny ")]
    assert len(rows) == 2 and all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)


def _tiny_attention_calibrated():
    """FC -> scores (BATCH_MATMUL) -> SOFTMAX -> context (BATCH_MATMUL) -> FC, calibrated."""
    import tensorflow as tf

    from mobilebert_mobile.converters.quantize import calibrate

    rng = np.random.default_rng(1)
    wq = rng.standard_normal((32, 32)).astype(np.float32) * 0.2
    wo = rng.standard_normal((32, 8)).astype(np.float32) * 0.2

    @tf.function(input_signature=[tf.TensorSpec([1, 2, 16, 32], tf.float32, name="x")])
    def f(x):
        q = tf.reshape(tf.matmul(tf.reshape(x, [32, 32]), wq), [1, 2, 16, 32])
        a = tf.nn.softmax(tf.matmul(q, x, transpose_b=True))
        return {"y": tf.matmul(tf.reshape(tf.matmul(a, x), [32, 32]), wo)}

    module = tf.Module()
    module.f = f
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], module)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ({"x": rng.standard_normal((1, 2, 16, 32)).astype(np.float32)}
                                           for _ in range(8))
    return calibrate(conv)


def test_int8_full_has_no_float_compute_op():
    from mobilebert_mobile.converters.quantize import DEFAULT_FLOAT_OPS, quantize_calibrated
    from mobilebert_mobile.converters.tflite import float_compute_ops, inventory

    calibrated = _tiny_attention_calibrated()
    default = quantize_calibrated(calibrated, float_ops=DEFAULT_FLOAT_OPS)
    full = quantize_calibrated(calibrated, float_ops=())
    # our int8 keeps attention float; the inventory check sees it
    assert set(float_compute_ops(default)) >= {"BATCH_MATMUL", "SOFTMAX"}
    assert float_compute_ops(full) == {}
    ops = inventory(full)["ops"]
    assert ops.get("BATCH_MATMUL") and ops.get("SOFTMAX") and ops.get("FULLY_CONNECTED")


def _fake_range_search(monkeypatch, parts: dict, histograms):
    """select_ranges over stand-ins: each method's 'model' is its name, scored and partitioned by dicts."""
    from mobilebert_mobile.converters import quantize as Q

    monkeypatch.setattr(Q, "activation_histograms", histograms)
    monkeypatch.setattr(Q, "apply_ranges", lambda cal, hists, method: (method.encode(), {"method": method}))
    monkeypatch.setattr(Q, "quantize_calibrated", lambda ranged, float_ops=(): ranged if ranged != b"calibrated"
                        else b"minmax")
    monkeypatch.setattr(Q, "_partitions", lambda model: parts[model])
    return Q, {"input_ids": np.zeros((4, 8), np.int32)}


def test_range_choice_never_splits_the_xnnpack_graph_more_than_minmax(monkeypatch):
    """Clipped ranges can take an int8 ADD out of XNNPACK (the default student: 7 partitions, 2x slower):
    a method that splits the graph more than min/max is not chosen, whatever its score."""
    scores = {b"minmax": 0.985, b"percentile": 0.995, b"mse": 0.990}
    parts = {b"minmax": 1, b"percentile": 7, b"mse": 1}
    Q, feeds = _fake_range_search(monkeypatch, parts, lambda cal, feeds: {"t": None})
    chosen, rec = Q.select_ranges(b"calibrated", feeds, lambda m: scores[m])
    assert rec["chosen"] == "mse" and chosen == b"mse" and rec["xnnpack_partitions"] == 1
    assert rec["methods"]["percentile"]["xnnpack_partitions"] == 7
    parts[b"percentile"] = 1  # once it does not split the graph, the best score wins
    _, rec = Q.select_ranges(b"calibrated", feeds, lambda m: scores[m])
    assert rec["chosen"] == "percentile"


def test_range_search_stops_at_a_perfect_score_without_histograms(monkeypatch):
    """A method that scores 1.0 in no more partitions than the others cannot be beaten: the rest are
    skipped, and min/max alone needs no histogram pass (the 24-layer conversion's slowest step)."""
    def no_histograms(cal, feeds):
        raise AssertionError("histograms computed for a min/max-only search")

    scores = {b"minmax": 1.0, b"percentile": 1.0, b"mse": 1.0}
    parts = {b"minmax": 1, b"percentile": 1, b"mse": 1}
    Q, feeds = _fake_range_search(monkeypatch, parts, no_histograms)
    chosen, rec = Q.select_ranges(b"calibrated", feeds, lambda m: scores[m])
    assert rec["chosen"] == "minmax" and chosen == b"calibrated" and rec["skipped"] == ["percentile", "mse"]
    assert list(rec["methods"]) == ["minmax"] and rec["histogram_texts"] == 0
    # short of perfect, every method is tried (and the histograms are computed once)
    calls = []
    monkeypatch.setattr(Q, "activation_histograms", lambda cal, feeds: calls.append(1) or {"t": None})
    scores[b"minmax"] = 0.99
    chosen, rec = Q.select_ranges(b"calibrated", feeds, lambda m: scores[m])
    assert rec["chosen"] == "percentile" and rec["skipped"] == ["mse"] and calls == [1]


def _tiny_layer_norm_calibrated():
    """FC -> LayerNorm (explicit ops, as the lowering writes them) -> FC, one channel 40x the others."""
    import tensorflow as tf

    from mobilebert_mobile.converters.quantize import calibrate

    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((32, 64)).astype(np.float32) * 0.2
    w1[:, 5] *= 40.0  # an outlier channel: it sets the scale of every square
    w2 = rng.standard_normal((64, 8)).astype(np.float32) * 0.2

    @tf.function(input_signature=[tf.TensorSpec([16, 32], tf.float32, name="x")])
    def f(x):
        h = tf.matmul(x, w1)
        d = h - tf.reduce_mean(h, axis=-1, keepdims=True)
        r = tf.math.rsqrt(tf.reduce_mean(d * d, axis=-1, keepdims=True) + 1e-12)
        return {"y": tf.matmul(d * r * 0.8 + 0.1, w2)}

    data = [rng.standard_normal((16, 32)).astype(np.float32) for _ in range(12)]
    module = tf.Module()
    module.f = f
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], module)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ({"x": x} for x in data)
    return calibrate(conv), f, data


def test_layer_norm_statistics_stay_float_and_keep_the_variance():
    """From the square to RSQRT the LayerNorm statistics are float in int8; quantized, the squares
    share one scale set by the outlier channel and the output drifts far more."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.tools import flatbuffer_utils

    from mobilebert_mobile.converters.quantize import (DEFAULT_FLOAT_OPS, layer_norm_statistics_nodes,
                                                       quantize_calibrated)
    from mobilebert_mobile.converters.tflite import op_name

    calibrated, f, data = _tiny_layer_norm_calibrated()
    nodes = layer_norm_statistics_nodes(calibrated)
    assert len(nodes) == 3  # the square, its MEAN, the epsilon ADD
    ours = quantize_calibrated(calibrated, float_ops=DEFAULT_FLOAT_OPS)
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(ours))
    sg = m.subgraphs[0]
    kinds = {sg.tensors[op.outputs[0]].name.decode(): (op_name(m, op), sg.tensors[op.outputs[0]].type)
             for op in sg.operators}
    assert {kinds[n][0] for n in nodes} == {"MUL", "MEAN", "ADD"}
    assert all(kinds[n][1] == 0 for n in nodes)  # FLOAT32
    # before: only the epsilon ADD float (XNNPACK's int8 ADD refuses its scale ratio)
    eps_only = tfl_convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                         enable_numeric_verify=False, denylisted_ops=list(DEFAULT_FLOAT_OPS),
                                         denylisted_nodes=[n for n in nodes if kinds[n][0] == "ADD"])

    def err(model_bytes):
        it = tf.lite.Interpreter(model_content=bytes(model_bytes))
        it.allocate_tensors()
        e = []
        for x in data[:4]:
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            want = f(tf.constant(x))["y"].numpy()
            e.append(np.linalg.norm(it.get_tensor(it.get_output_details()[0]["index"]) - want) / np.linalg.norm(want))
        return float(np.mean(e))

    assert err(ours) < 0.75 * err(eps_only)  # measured: 0.106 against 0.187


@pytest.fixture(scope="module")
def minilm_unfused(minilm_dir, feeds):
    """The real all-MiniLM-L6-v2 after the static-int8 passes that come before sibling fusion."""
    model, task, _ = E.load_for_export(minilm_dir, "embedding", mask_value=-100.0)
    outs = tuple(E.DEFAULT_OUTPUTS[task])
    onx = E.export_onnx(E.ExportWrapper.build(model, task, outs), None, batch=1, seq_len=SEQ, outputs=outs)
    passes = P.passes_for(static_int8=True)
    opt, _ = P.run_passes(onx, feeds, passes=passes[:[n for n, _ in passes].index("fuse_sibling_matmuls")])
    return opt


def test_query_key_equalization_is_exact_and_evens_the_ranges(minilm_unfused, feeds):
    g = P.Graph(copy.deepcopy(minilm_unfused))
    pairs = P.attention_score_pairs(g)
    assert len(pairs) == 6
    names = [(p["q"][1].output[0], p["k"][1].output[0]) for p in pairs]
    before = P.channel_absmax(minilm_unfused, feeds, [n for qk in names for n in qk])
    info = {}
    assert P.make_equalize_query_key_pass(feeds, info=info)(g) == 6
    out = g.finalize()
    a, b = P.run_onnx(minilm_unfused, feeds), P.run_onnx(out, feeds)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, rtol=1e-4)
    after = P.channel_absmax(out, feeds, [n for qk in names for n in qk])
    for q, k in names:
        assert before[k].max() / before[q].max() > 2  # the queries carry the attention scale: smaller
        np.testing.assert_allclose(after[q], after[k], rtol=1e-3)  # same data: each pair now even
    assert info["key_over_query_median"] > 2
    # a key left uncompensated changes every score: the check that guards the pass can fail
    km = pairs[0]["k"][0]
    km.input[1] = g.new_const(g.consts[km.input[1]] * 2.0, "bad")
    bad = g.finalize()
    c = P.run_onnx(bad, feeds)
    assert max(float(np.abs(a[k] - c[k]).max()) for k in a) > 1e-3



def test_tensor_errors_locate_where_int8_error_enters(tmp_path):
    """Per-tensor comparison: zero against itself; against int8, the coarse squares of the LayerNorm
    variance add more error than any other op when quantized, and little once they stay float."""
    import tensorflow as tf

    from mobilebert_mobile.benchmarks.tensor_errors import markdown, tensor_errors
    from mobilebert_mobile.converters.quantize import DEFAULT_FLOAT_OPS, quantize_calibrated

    calibrated, f, data = _tiny_layer_norm_calibrated()
    module = tf.Module()
    module.f = f
    fp = tmp_path / "fp32.tflite"
    fp.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], module).convert())
    full, ours = tmp_path / "full.tflite", tmp_path / "ours.tflite"
    full.write_bytes(quantize_calibrated(calibrated, float_ops=()))
    ours.write_bytes(quantize_calibrated(calibrated, float_ops=DEFAULT_FLOAT_OPS))
    feeds = {"x": np.stack(data[:3])}  # 3 samples of the [16, 32] input
    same = tensor_errors(str(fp), str(fp), feeds, samples=2)
    assert same and all(r["rel_error"] == 0 for r in same)
    rows = tensor_errors(str(fp), str(full), feeds, samples=3)
    kept = tensor_errors(str(fp), str(ours), feeds, samples=3)
    assert {"MEAN", "MUL", "FULLY_CONNECTED", "RSQRT"} <= {r["op"] for r in rows}
    assert all(r["rel_error"] > 0 for r in rows if r["dtype"] == "int8")
    # the variance (second MEAN): int8 in int8-full, float in our int8; the error it adds drops with it
    var_full, var_ours = ([r for r in x if r["op"] == "MEAN"][1] for x in (rows, kept))
    assert var_full["dtype"] == "int8" and var_ours["dtype"] == "float32"
    assert var_ours["increase"] < var_full["increase"] / 5  # measured 0.001 against 0.030
    assert kept[-1]["rel_error"] < rows[-1]["rel_error"]
    assert markdown(rows)[0].startswith("| op # |")
    from mobilebert_mobile.benchmarks.tensor_errors import _real_tokens

    # real tokens of scores, K^T and hidden states; MobileBERT's 128 channels at seq 128 stay whole
    assert [_real_tokens(np.zeros(sh), 5, 128).shape for sh in ((1, 4, 128, 128), (1, 4, 32, 128), (1, 128, 128))] \
        == [(1, 4, 5, 5), (1, 4, 32, 5), (1, 5, 128)]


def test_thread_scaling_reports_each_kernel_and_model(tiny_models, tmp_path):
    from mobilebert_mobile.benchmarks import thread_scaling

    assert thread_scaling.main([f"tiny int8={tiny_models['int8']}", "--shapes-from", tiny_models["fp32"], "--runs", "4",
                                "--rounds", "2", "--concurrent-seconds", "0.3", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "thread_scaling.json").read_text())
    assert len(res["shapes"]) == 4 and res["machine"]["int8_isa"]["best"]
    for s in res["shapes"]:  # each speed-up is the ratio of the two medians it reports
        for kind in ("fp32", "int8"):
            if s[f"{kind}_ms_2"] > 0:
                assert s[f"{kind}_speedup"] == pytest.approx(s[f"{kind}_ms_1"] / s[f"{kind}_ms_2"])
    g = res["gemms"]  # count-weighted sums of the shapes' medians; the int8 graph's attention matmuls in fp32
    fcs = [s for s in res["shapes"] if s["op"] == "FULLY_CONNECTED"]
    assert g["int8 FULLY_CONNECTED"]["ms_1"] == pytest.approx(sum(s["int8_ms_1"] * s["count"] for s in fcs))
    assert g["int8 graph (attention matmuls fp32)"]["ms_2"] == pytest.approx(
        g["int8 FULLY_CONNECTED"]["ms_2"] + sum(s["fp32_ms_2"] * s["count"] for s in res["shapes"] if s not in fcs))
    c = res["concurrent"]["models"]["tiny int8"]  # one timing per process, each from real invokes
    assert len(c["together_ms"]) == 2 and all(n > 0 for n in c["together_invokes"]) and c["solo_invokes"] > 0
    assert c["throughput_x"] == pytest.approx(sum(c["solo_ms"] / ms for ms in c["together_ms"]))
    md = (tmp_path / "thread_scaling.md").read_text()
    row = next(ln.split("|")[1:-1] for ln in md.splitlines() if ln.startswith("| tiny int8 "))
    assert float(row[1]) == pytest.approx(res["models"]["tiny int8"]["ms_1"], abs=0.006)
    assert len(row[4].split(",")) == 2 and "## Findings" in md
    png = tmp_path / "thread_scaling.png"  # the chart, drawn from the JSON and linked from the markdown
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![thread_scaling](thread_scaling.png)" in md


def test_thread_scaling_refuses_bad_arguments(tiny_models, tmp_path, capsys):
    from mobilebert_mobile.benchmarks import thread_scaling

    assert thread_scaling.main(["no-equals-sign"]) == 2
    assert "expected LABEL=PATH.tflite" in capsys.readouterr().err
    assert thread_scaling.main([f"m={tmp_path / 'missing.tflite'}"]) == 2
    assert "no model file" in capsys.readouterr().err
    assert thread_scaling.main([f"m={tiny_models['int8']}", "--threads", "1"]) == 2
    assert "--threads must be >= 2" in capsys.readouterr().err
    assert thread_scaling.main([f"m={tiny_models['int8']}", "--name", "../escape", "--out", str(tmp_path)]) == 2
    assert "--name must be" in capsys.readouterr().err and not list(tmp_path.parent.glob("escape*"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    assert thread_scaling.main([f"m={bad}", "--concurrent-seconds", "0"]) == 1
    assert "thread_scaling: cannot load" in capsys.readouterr().err


def test_charts_redraw_from_json_and_refuse_what_they_cannot_draw(tmp_path, capsys):
    from mobilebert_mobile.benchmarks import charts

    res = {"metric": "mean_cosine", "target": 0.99, "machine": {"cpu": "x", "cores": 2, "int8_isa": {"best": "AVX2"}},
           "variants": {"fp32": {"score": 1.0, "median_ms": 9.0}, "int8 mse": {"score": 0.97, "median_ms": 3.0}}}
    (tmp_path / "calibration_m.json").write_text(json.dumps(res))
    (tmp_path / "calibration_m.md").write_text("# table\n")
    (tmp_path / "notes.json").write_text("{}")  # no chart kind: left alone
    assert charts.main([str(tmp_path)]) == 0
    assert (tmp_path / "calibration_m.png").stat().st_size > 1000 and not (tmp_path / "notes.png").exists()
    md = (tmp_path / "calibration_m.md").read_text()
    assert md.count("![calibration_m](calibration_m.png)") == 1
    assert charts.main([str(tmp_path)]) == 0  # idempotent: the link is not added twice
    assert (tmp_path / "calibration_m.md").read_text() == md
    (tmp_path / "calibration_m.json").write_text(json.dumps({"metric": "x"}))  # lacks the variants
    assert charts.main([str(tmp_path)]) == 2
    assert "lack what its chart needs" in capsys.readouterr().err
    (tmp_path / "calibration_m.json").write_text("{not json")
    assert charts.main([str(tmp_path)]) == 2 and "not valid JSON" in capsys.readouterr().err
    assert charts.main([str(tmp_path / "missing")]) == 2 and "no folder" in capsys.readouterr().err
    with pytest.raises(charts.ChartError, match="plain file name"):  # a label must not name a path
        charts.save(str(tmp_path / "o"), "../escape", "# x\n", res)
    assert not (tmp_path / "escape.md").exists()


def test_int8_calibration_refuses_a_label_that_is_a_path_before_running(tmp_path, capsys):
    from mobilebert_mobile.benchmarks import int8_calibration

    for argv, named in ((["--checkpoint", str(tmp_path), "--label", "../escape"], "'../escape'"),
                        (["--checkpoint", str(tmp_path / "model.v2")], "from the checkpoint folder")):
        with pytest.raises(SystemExit) as e:  # refused at once: no conversion, no results file
            int8_calibration.main([*argv, "--out", str(tmp_path / "o")])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--label names the results files" in err and named in err
    assert not (tmp_path / "o").exists()
