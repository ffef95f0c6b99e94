"""BERT WordPiece tokenizer on the ``tokenizers`` library (no torch, no transformers).

Produces what transformers' ``BertTokenizerFast`` produces for the same vocabulary
(``[CLS] a [SEP] (b [SEP])``, longest-first truncation, padding to a fixed length) as int32
numpy arrays, which is what the converted models and MediaPipe take.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from .errors import TokenizerError  # noqa: F401  (re-exported: defined in errors.py)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
DEFAULT_MAX_LENGTH = 128


@dataclass
class Encoding:
    """A batch of encoded texts. Arrays are int32 [batch, seq]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    # Per text: (start, end) character offsets of every token in its own text ((0, 0) for
    # special and padding tokens) and which text each token came from (None, 0 or 1).
    offsets: list[list[tuple[int, int]]] = field(default_factory=list)
    sequence_ids: list[list[int | None]] = field(default_factory=list)
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # For sliding windows: the index of the input each row came from.
    overflow_to_sample: np.ndarray | None = None

    def __getitem__(self, key: str) -> np.ndarray:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "token_type_ids": self.token_type_ids}[key]

    def model_inputs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "token_type_ids": self.token_type_ids}

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def read_vocab_text(text: str, where: str = "<vocabulary>") -> dict[str, int]:
    """Parse vocab.txt content: one token per line, the line number is the id."""
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        tok = tok.rstrip("\r")
        if tok in vocab:
            raise TokenizerError(f"vocabulary {where} repeats token {tok!r} (lines {vocab[tok] + 1} and {i + 1})")
        vocab[tok] = i
    if not vocab:
        raise TokenizerError(f"vocabulary {where} is empty")
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise TokenizerError(f"vocabulary {where} lacks the BERT special tokens {', '.join(missing)}")
    return vocab


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt``: one token per line, the line number is the id."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise TokenizerError(f"cannot read vocabulary {p}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenizerError(f"vocabulary {p} is not UTF-8 text") from None
    return read_vocab_text(text, p)


class Tokenizer:
    """BERT WordPiece tokenizer.

    >>> tok = Tokenizer.from_file("vocab.txt")            # uncased by default
    >>> enc = tok(["a sentence", "another"])               # int32 arrays [2, 128]
    >>> enc = tok([("a question", "its context")])         # sentence pairs
    """

    def __init__(self, backend, *, lowercase: bool, max_length: int = DEFAULT_MAX_LENGTH):
        from tokenizers import Tokenizer as _Backend  # noqa: F401  (type of backend)

        if not isinstance(max_length, int) or max_length < 2:
            raise TokenizerError(f"max_length must be an integer >= 2, got {max_length!r}")
        self._tok = backend
        # The backend's truncation setting is state shared by every call: enabling it and encoding
        # happen under one lock, so concurrent callers (a shared Predictor) cannot mix settings.
        self._lock = threading.Lock()
        self._tok.no_truncation()
        self._tok.no_padding()
        self.lowercase = lowercase
        self.max_length = max_length
        vocab = self._tok.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise TokenizerError(f"tokenizer lacks the BERT special tokens {', '.join(missing)}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in SPECIAL_TOKENS)

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_vocab(cls, vocab: dict[str, int], *, lowercase: bool = True,
                   max_length: int = DEFAULT_MAX_LENGTH) -> "Tokenizer":
        from tokenizers import Tokenizer as _Backend
        from tokenizers import decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece

        backend = _Backend(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        backend.decoder = decoders.WordPiece(prefix="##")
        # matched before normalisation, as BertTokenizerFast does: "[MASK]" in a text stays one token
        from tokenizers import AddedToken

        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
        return cls(backend, lowercase=lowercase, max_length=max_length)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, lowercase: bool | None = None,
                  max_length: int = DEFAULT_MAX_LENGTH) -> "Tokenizer":
        """Load ``vocab.txt`` or ``tokenizer.json`` (or a directory holding either).

        ``lowercase=None`` means uncased for a vocab.txt, and what the file says for tokenizer.json.
        """
        p = os.fspath(path)
        if os.path.isdir(p):
            for name in ("vocab.txt", "tokenizer.json"):
                if os.path.isfile(os.path.join(p, name)):
                    p = os.path.join(p, name)
                    break
            else:
                raise TokenizerError(f"no vocab.txt or tokenizer.json in {p}")
        if not os.path.isfile(p):
            raise TokenizerError(f"tokenizer file not found: {p}")
        if p.endswith(".json"):
            return cls._from_tokenizer_json(p, lowercase=lowercase, max_length=max_length)
        return cls.from_vocab(read_vocab(p), lowercase=True if lowercase is None else lowercase,
                              max_length=max_length)

    @classmethod
    def _from_tokenizer_json(cls, p: str, *, lowercase: bool | None, max_length: int) -> "Tokenizer":
        try:
            with open(p, encoding="utf-8") as fh:
                spec = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"cannot read {p}: {e}") from None
        model = spec.get("model") or {}
        if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise TokenizerError(f"{p} is not a WordPiece tokenizer (model type {model.get('type')!r})")
        norm = spec.get("normalizer") or {}
        file_lower = bool(norm.get("lowercase", True)) if norm.get("type") == "BertNormalizer" else True
        vocab = {str(k): int(v) for k, v in model["vocab"].items()}
        return cls.from_vocab(vocab, lowercase=file_lower if lowercase is None else lowercase,
                              max_length=max_length)

    # -------------------------------------------------------------- properties
    @property
    def vocab(self) -> dict[str, int]:
        return self._tok.get_vocab()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def save_vocab(self, path: str | os.PathLike) -> None:
        from ._io import atomic_write_text

        inv = sorted(self.vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in inv] != list(range(len(inv))):
            raise TokenizerError("vocabulary ids are not contiguous; cannot write vocab.txt")
        atomic_write_text(path, "".join(t + "\n" for t, _ in inv))

    # ---------------------------------------------------------------- encoding
    @staticmethod
    def _check_text(x, where: str) -> str:
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate (e.g. from a bad decode): not Unicode text
                raise TokenizerError(f"{where} has an invalid character {x[e.start]!r} at position {e.start} "
                                     f"(a lone surrogate, not valid Unicode)") from None
            return x
        if isinstance(x, (bytes, bytearray)):
            raise TokenizerError(f"{where} is bytes; decode it to str first (e.g. b.decode('utf-8'))")
        raise TokenizerError(f"{where} must be a str, got {type(x).__name__}")

    def _normalise_inputs(self, texts, text_pairs):
        if isinstance(texts, (str, bytes, bytearray)):
            texts = [texts]
        if text_pairs is not None and isinstance(text_pairs, (str, bytes, bytearray)):
            text_pairs = [text_pairs]
        if not isinstance(texts, Sequence):
            raise TokenizerError(f"texts must be a str or a list of str (or of (str, str) pairs), "
                                 f"got {type(texts).__name__}")
        texts = list(texts)
        if text_pairs is None and texts and all(isinstance(t, (tuple, list)) for t in texts):
            if not all(len(t) == 2 for t in texts):
                raise TokenizerError("sentence pairs must be (text, text_pair) tuples of two strings")
            text_pairs = [t[1] for t in texts]
            texts = [t[0] for t in texts]
        firsts = [self._check_text(t, f"text {i}") for i, t in enumerate(texts)]
        seconds = None
        if text_pairs is not None:
            text_pairs = list(text_pairs)
            if len(text_pairs) != len(firsts):
                raise TokenizerError(f"{len(firsts)} texts but {len(text_pairs)} text pairs")
            seconds = [self._check_text(t, f"text pair {i}") for i, t in enumerate(text_pairs)]
        return firsts, seconds

    def __call__(self, texts, text_pairs=None, *, max_length: int | None = None, padding: str = "max_length",
                 truncation: str | bool = "longest_first", stride: int = 0,
                 return_overflowing: bool = False) -> Encoding:
        """Encode one text, a list of texts, a list of (text, pair) tuples, or texts + text_pairs.

        ``padding``: "max_length" (fixed shape, default) or "longest". ``truncation``:
        "longest_first" (default), "only_first", "only_second", or False (error when too long).
        With ``return_overflowing`` the tokens cut off are returned as further rows (windows that
        overlap by ``stride`` tokens), and ``overflow_to_sample`` maps rows to inputs.
        """
        L = self.max_length if max_length is None else max_length
        if not isinstance(L, int) or L < 2:
            raise TokenizerError(f"max_length must be an integer >= 2, got {L!r}")
        if padding not in ("max_length", "longest"):
            raise TokenizerError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        firsts, seconds = self._normalise_inputs(texts, text_pairs)
        if truncation:
            strategy = "longest_first" if truncation is True else truncation
            if strategy not in ("longest_first", "only_first", "only_second"):
                raise TokenizerError(f"unknown truncation strategy {truncation!r}")
        with self._lock:
            if truncation:
                self._tok.enable_truncation(L, stride=stride, strategy=strategy)
            else:
                self._tok.no_truncation()
            try:
                if seconds is None:
                    encs = self._tok.encode_batch(firsts) if firsts else []
                else:
                    encs = self._tok.encode_batch(list(zip(firsts, seconds))) if firsts else []
            except Exception as e:  # tokenizers raises plain Exceptions for e.g. impossible truncation
                raise TokenizerError(f"cannot encode: {e}") from None
            finally:
                self._tok.no_truncation()
        rows, owner, truncated = [], [], []
        for i, e in enumerate(encs):
            cut = bool(e.overflowing)
            if not truncation and len(e.ids) > L:
                raise TokenizerError(f"text {i} has {len(e.ids)} tokens, more than max_length={L}, "
                                     f"and truncation is off")
            rows.append(e)
            owner.append(i)
            truncated.append(cut)
            if return_overflowing:
                for o in e.overflowing:
                    rows.append(o)
                    owner.append(i)
                    truncated.append(True)
        width = L if padding == "max_length" else max([len(e.ids) for e in rows], default=0)
        n = len(rows)
        ids = np.full((n, width), self.pad_id, dtype=np.int32)
        mask = np.zeros((n, width), dtype=np.int32)
        types = np.zeros((n, width), dtype=np.int32)
        offsets, seq_ids = [], []
        for r, e in enumerate(rows):
            k = len(e.ids)
            ids[r, :k] = e.ids
            mask[r, :k] = 1
            types[r, :k] = e.type_ids
            offsets.append(list(e.offsets) + [(0, 0)] * (width - k))
            seq_ids.append(list(e.sequence_ids) + [None] * (width - k))
        return Encoding(ids, mask, types, offsets, seq_ids, np.asarray(truncated, dtype=bool),
                        np.asarray(owner, dtype=np.int64) if return_overflowing else None)

    encode = __call__

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of one text, without special tokens."""
        return self._tok.encode(self._check_text(text, "text"), add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self._tok.id_to_token(int(i)) or "[UNK]" for i in ids]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
