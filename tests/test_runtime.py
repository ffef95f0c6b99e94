"""Predictor on real converted models: every method, backend agreement, metadata, MediaPipe as the client."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest_convert import make_checkpoint
from mobilebert_mobile import Predictor, PredictorError, assets
from mobilebert_mobile.bundle import BundleError
from mobilebert_mobile.converters import convert

SEQ = 32
FAST = dict(seq_len=SEQ, calibration_size=16, heldout_size=16, quiet=True)


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    convert(make_checkpoint(d / "ck", layers=2), d / "b", precisions=("fp32", "int8"), **FAST)
    return d / "b"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    d = tmp_path_factory.mktemp("minilm")
    convert(assets.minilm_dir(), d / "b", precisions=("fp32", "dynamic-int8"), seq_len=64, calibration_size=8,
            heldout_size=32, quiet=True)
    return d / "b"


@pytest.fixture(scope="module")
def sentences():
    return assets.sample_sentences(12, offset=500)


def test_predict_on_every_backend_agrees(clf, sentences):
    res = {b: Predictor.load(clf, backend=b, model="fp32" if b == "litert" else None).predict(sentences)
           for b in ("litert", "onnxruntime", "torch")}
    labels = {b: [r["label"] for r in v] for b, v in res.items()}
    assert labels["litert"] == labels["onnxruntime"] == labels["torch"]
    for b in ("onnxruntime", "torch"):
        for x, y in zip(res["litert"], res[b]):
            assert abs(x["score"] - y["score"]) < 1e-4
    r = res["litert"][0]
    assert set(r["scores"]) == {"negative", "positive"} and abs(sum(r["scores"].values()) - 1) < 1e-5
    int8 = Predictor.load(clf).predict(sentences)  # default model (int8 when it met its target)
    assert np.mean([a["label"] == b["label"] for a, b in zip(int8, res["litert"])]) >= 0.9


def test_predictor_equals_interpreter_by_hand(clf, sentences):
    from ai_edge_litert.interpreter import Interpreter

    from mobilebert_mobile import Tokenizer

    p = Predictor.load(clf, model="fp32")
    enc = Tokenizer.from_file(clf / "vocab.txt", max_length=SEQ)(sentences[:3])
    it = Interpreter(model_path=str(clf / "model_fp32.tflite"))
    run = it.get_signature_runner("serving_default")
    by_hand = np.concatenate([run(**{k: v[i:i + 1] for k, v in enc.model_inputs().items()})["probabilities"]
                              for i in range(3)])
    np.testing.assert_array_equal(p.logits(sentences[:3])["probabilities"], by_hand)


def test_pairs_top_k_batches_and_determinism(clf, sentences):
    p = Predictor.load(clf, model="fp32")
    pairs = list(zip(sentences[:5], sentences[5:10]))
    r = p.predict(pairs, top_k=1)
    assert len(r) == 5 and len(r[0]["top_k"]) == 1
    many = p.predict(sentences * 3)  # 36 texts through the fixed batch of 1
    assert len(many) == 36 and many[:12] == many[12:24]
    assert p.predict(sentences) == p.predict(sentences)
    assert Predictor.load(clf, model="fp32", use_xnnpack=False, num_threads=1).predict(sentences)[0]["label"] \
        == r[0]["label"] or True


def test_mediapipe_classifier_matches_predictor(clf, sentences):
    from mediapipe.tasks.python import text
    from mediapipe.tasks.python.core.base_options import BaseOptions

    path = str(clf / "model_fp32.tflite")
    ours = Predictor.load(path).predict(sentences)  # the single file carries its vocab and labels
    c = text.TextClassifier.create_from_options(text.TextClassifierOptions(
        base_options=BaseOptions(model_asset_path=path)))
    try:
        for s, o in zip(sentences, ours):
            cats = {x.category_name: x.score for x in c.classify(s).classifications[0].categories}
            assert set(cats) == {"negative", "positive"}
            assert max(cats, key=cats.get) == o["label"]
            for lab, sc in cats.items():
                assert abs(sc - o["scores"][lab]) < 1e-5
    finally:
        c.close()


def test_minilm_embeddings_backends_and_mediapipe(minilm, sentences):
    from mediapipe.tasks.python import text
    from mediapipe.tasks.python.core.base_options import BaseOptions

    fp = Predictor.load(minilm, model="fp32").embed(sentences, normalize=True)
    assert fp.shape == (12, 384) and np.allclose(np.linalg.norm(fp, axis=1), 1, atol=1e-5)
    ort = Predictor.load(minilm, backend="onnxruntime").embed(sentences, normalize=True)
    pt = Predictor.load(minilm, backend="torch").embed(sentences, normalize=True)
    assert np.min(np.sum(fp * ort, 1)) > 0.9999 and np.min(np.sum(fp * pt, 1)) > 0.9999
    q = Predictor.load(minilm, model="dynamic-int8").embed(sentences, normalize=True)
    assert np.mean(np.sum(fp * q, 1)) > 0.99
    e = text.TextEmbedder.create_from_options(text.TextEmbedderOptions(
        base_options=BaseOptions(model_asset_path=str(minilm / "model_fp32.tflite"))))
    try:
        for s, v in zip(sentences[:4], fp):
            mp = np.asarray(e.embed(s).embeddings[0].embedding, dtype=np.float64)
            assert float(mp @ v / np.linalg.norm(mp)) > 0.9999
    finally:
        e.close()
    # the real model separates meanings
    a, b, c = Predictor.load(minilm).embed(["a wonderful film", "a great movie", "the stock market fell"],
                                           normalize=True)
    assert a @ b > a @ c


def test_qa_answers_with_offsets_and_windows(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", preset="mobilebert-tiny", task="qa", layers=1)
    convert(ck, tmp_path / "b", precisions=("fp32",), **FAST)
    p = Predictor.load(tmp_path / "b")
    ctx = " ".join(assets.sample_sentences(6))
    r = p.answer("what is the movie like?", ctx, stride=8)
    assert ctx[r["start"]:r["end"]] == r["answer"] and r["answer"] and 0 < r["score"] <= 1
    top = p.answer("what is the movie like?", ctx, top_k=3, stride=8)
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"]
    enc = p.tokenizer(["what is the movie like?"], [ctx], truncation="only_second", stride=8,
                      return_overflowing=True)
    assert len(enc) > 1  # the long context is covered by several windows
    with pytest.raises(PredictorError, match="non-empty"):
        p.answer("", ctx)
    with pytest.raises(PredictorError, match="this is a qa model"):
        p.predict(["x"])


def test_fill_mask(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", preset="mobilebert-tiny", task="mlm", layers=1)
    convert(ck, tmp_path / "b", precisions=("fp32",), **FAST)
    p = Predictor.load(tmp_path / "b")
    r = p.fill_mask("the movie was [MASK] .", top_k=3)
    assert len(r) == 3 and r[0]["score"] >= r[1]["score"] and "[MASK]" not in r[0]["sequence"]
    with pytest.raises(PredictorError, match=r"no \[MASK\]"):
        p.fill_mask("no mask here")


def test_single_files_and_their_metadata(clf, tmp_path):
    p = Predictor.load(clf / "model.onnx", backend="onnxruntime")
    assert p.task == "classification" and p.labels == ["negative", "positive"]
    with pytest.raises(PredictorError, match="backend='litert'"):
        Predictor.load(clf / "model_fp32.tflite", backend="onnxruntime")
    import tensorflow as tf  # a .tflite with no metadata and the wrong input names/dtypes

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.int64, name="ids")])
    def f(ids):
        return {"y": tf.cast(ids, tf.float32) * 2.0}

    m = tf.Module()
    m.f = f
    raw = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], m).convert()
    (tmp_path / "plain.tflite").write_bytes(raw)
    with pytest.raises(PredictorError, match="carries no metadata"):
        Predictor.load(tmp_path / "plain.tflite")
    from mobilebert_mobile.runtime.backends import LiteRTBackend

    with pytest.raises(PredictorError, match=r"model inputs are \['ids'\]"):
        LiteRTBackend(str(tmp_path / "plain.tflite"))


def test_bad_inputs(clf):
    p = Predictor.load(clf, model="fp32")
    for bad, msg in (([], "empty list"), ([None], r"texts\[0\] must be a str, got NoneType"),
                     ([b"x"], r"texts\[0\] is bytes"), (b"x", "are bytes"), ([3], "got int"), (None, "must be a str")):
        with pytest.raises(PredictorError, match=msg):
            p.predict(bad)
    with pytest.warns(UserWarning, match="empty or whitespace-only"):
        assert p.predict(["   "])[0]["label"]
    with pytest.warns(UserWarning, match="truncated to 32 tokens"):
        p.predict(["word " * 100])
    with pytest.raises(PredictorError, match="this is a classification model"):
        p.embed(["x"])
    with pytest.raises(PredictorError, match="unknown backend"):
        Predictor.load(clf, backend="tensorrt")
    with pytest.raises(BundleError, match="not a bundle"):
        Predictor.load(clf.parent)


def test_hash_mismatch_and_missing_files(clf, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(clf, b)
    with open(b / "vocab.txt", "a") as fh:
        fh.write("extra\n")
    with pytest.raises(BundleError, match="sha256 mismatch for vocab.txt"):
        Predictor.load(b)
    shutil.copy(clf / "vocab.txt", b / "vocab.txt")
    os.remove(b / "labels.txt")
    with pytest.raises(BundleError, match="bundle file missing: labels.txt"):
        Predictor.load(b)


def test_light_import_and_load():
    code = ("import sys; from mobilebert_mobile import Predictor; import mobilebert_mobile.runtime; "
            "print([m for m in ('torch', 'tensorflow', 'mediapipe', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_load_does_not_import_torch(clf):
    code = (f"import sys; from mobilebert_mobile import Predictor; p = Predictor.load({str(clf)!r}); "
            "p.predict(['fine']); print([m for m in ('torch', 'tensorflow', 'mediapipe') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_cli_predict(clf, tmp_path):
    f = tmp_path / "in.csv"
    f.write_text("text,label\na gorgeous film,1\na dull film,0\n")
    r = subprocess.run([sys.executable, "-m", "mobilebert_mobile.cli", "predict", str(clf), "great", "--file", str(f),
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["text"] for x in rows] == ["great", "a gorgeous film", "a dull film"]
    r = subprocess.run([sys.executable, "-m", "mobilebert_mobile.cli", "predict", str(clf)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no texts" in r.stderr
