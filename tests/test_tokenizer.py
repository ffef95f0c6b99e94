"""Equality with transformers' BertTokenizerFast on the real 30522-token vocabulary."""
import json

import numpy as np
import pytest

from mobilebert_mobile import Tokenizer, TokenizerError

HARD = [
    "Café naïve résumé — Ünïcödé ÀÉÎ façade", "日本語のテキスト 中文字符 한국어", "emoji 😀🎉👍🏽 and ♥ symbols",
    "ctrl\x00\x01\x7f\u200b chars\t\n\r end", "x" * 150 + " long word over 100 chars", "", "   \t\n ",
    "word " * 400, "\ufeffbyte order mark", "I'm 'quoted' \"double\" … ellipsis ¿qué?", "don't-stop co-op U.S.A.",
    "ﬁ ligature ＦＵＬＬＷＩＤＴＨ ①②", "e\u0301 combining accent", "a" * 99 + " " + "b" * 101,
    "the movie was [MASK] . [SEP] [CLS][UNK]",
]


@pytest.fixture(scope="module")
def ref(minilm_dir):
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(minilm_dir)
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]  # the real vocabulary, not a stub
    return tok


@pytest.fixture(scope="module")
def ours(vocab_path):
    return Tokenizer.from_file(vocab_path)


def _assert_same(ref, ours, a, b=None, max_length=128):
    r = ref(a, b, padding="max_length", truncation=True, max_length=max_length, return_offsets_mapping=True)
    o = ours(a, b, max_length=max_length)
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert o[k].dtype == np.int32
        np.testing.assert_array_equal(np.asarray(r[k]), o[k], err_msg=k)
    assert [list(map(tuple, x)) for x in r["offset_mapping"]] == o.offsets


def test_real_sentences(ref, ours, rt_sentences):
    assert ours.vocab_size == 30522
    _assert_same(ref, ours, rt_sentences)


def test_real_pairs_and_short_max_length(ref, ours, rt_sentences):
    _assert_same(ref, ours, rt_sentences[:100], rt_sentences[100:200])
    _assert_same(ref, ours, rt_sentences[:50], rt_sentences[50:100], max_length=24)  # longest-first truncation


def test_hard_cases(ref, ours):
    _assert_same(ref, ours, HARD)
    nonempty = [h for h in HARD if h.strip()]
    _assert_same(ref, ours, nonempty, nonempty[::-1])
    enc = ours(["", "   "])
    assert enc.input_ids[:, :3].tolist() == [[101, 102, 0], [101, 102, 0]]
    assert ours(["word " * 400]).truncated.tolist() == [True]


def test_pair_with_empty_second_is_a_real_pair(ours):
    # transformers treats an empty second text as "no pair"; we keep it a pair: [CLS] a [SEP] [SEP]
    enc = ours([("good", "")])
    assert enc.input_ids[0, :4].tolist() == [101, 2204, 102, 102]
    assert enc.token_type_ids[0, :4].tolist() == [0, 0, 0, 1]


def test_cased_and_tokenizer_json(ref, vocab_path, minilm_dir, tmp_path):
    cased = Tokenizer.from_file(vocab_path, lowercase=False)
    assert cased.tokenize("Hello") != Tokenizer.from_file(vocab_path).tokenize("Hello")
    from transformers import BertTokenizerFast

    ref_cased = BertTokenizerFast.from_pretrained(minilm_dir, do_lower_case=False)
    _assert_same(ref_cased, cased, HARD[:4] + ["Hello World CAPS"])
    from_json = Tokenizer.from_file(f"{minilm_dir}/tokenizer.json")
    _assert_same(ref, from_json, HARD)
    from_dir = Tokenizer.from_file(minilm_dir)
    assert from_dir.vocab_size == 30522
    from_json.save_vocab(tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").read_bytes() == open(vocab_path, "rb").read()


def test_overflow_windows(ours):
    long = "the movie " * 100
    enc = ours([long, "short"], max_length=32, stride=8, return_overflowing=True)
    assert len(enc) > 2 and enc.overflow_to_sample.tolist()[-1] == 1
    assert enc.truncated[0] and not enc.truncated[-1]


def test_bad_inputs(ours, tmp_path):
    with pytest.raises(TokenizerError, match="text 1 must be a str, got NoneType"):
        ours(["ok", None])
    with pytest.raises(TokenizerError, match="text 0 is bytes"):
        ours([b"bytes"])
    with pytest.raises(TokenizerError, match="must be a str, got int"):
        ours([3])
    with pytest.raises(TokenizerError, match="2 texts but 1 text pairs"):
        ours(["a", "b"], ["c"])
    with pytest.raises(TokenizerError, match="max_length must be an integer >= 2"):
        ours("a", max_length=1)
    with pytest.raises(TokenizerError, match="truncation is off"):
        ours("word " * 300, truncation=False)
    with pytest.raises(TokenizerError, match="tokenizer file not found"):
        Tokenizer.from_file(tmp_path / "missing.txt")
    (tmp_path / "v.txt").write_text("a\nb\n")
    with pytest.raises(TokenizerError, match=r"lacks the BERT special tokens \[PAD\]"):
        Tokenizer.from_file(tmp_path / "v.txt")
    (tmp_path / "v.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(TokenizerError, match="not UTF-8"):
        Tokenizer.from_file(tmp_path / "v.txt")
    (tmp_path / "t.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(TokenizerError, match="not a WordPiece tokenizer"):
        Tokenizer.from_file(tmp_path / "t.json")
    assert len(ours([])) == 0
