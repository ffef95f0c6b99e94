"""``Predictor``: raw text in, labels / scores / embeddings / answers out, over a converted model.

>>> from mobilebert_mobile import Predictor
>>> p = Predictor.load("bundle/")                  # LiteRT, the bundle's default precision
>>> p.predict(["a gorgeous, witty, seductive movie."])

Importing this module and loading with ``backend="litert"`` needs numpy, tokenizers and
ai-edge-litert only.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
import zipfile
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .._batching import run_in_fixed_batches
from ..bundle import ONNX_BUNDLE_KEY, ONNX_VOCAB_KEY, Bundle, BundleError, read_bundle
from ..errors import TaskMismatchError
from ..tokenizer import Tokenizer, TokenizerError
from .backends import LiteRTBackend, OnnxRuntimeBackend, PredictorError, TorchBackend
from .tflite_check import check_tflite_file

BACKENDS = ("litert", "onnxruntime", "torch")


@dataclass
class _Meta:
    task: str
    labels: list[str]
    lowercase: bool
    vocab_path: str | None
    vocab_text: str | None
    embedding: dict


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numpy; the runtime and the converter's verification share it)."""
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class _BackendPool:
    """Hands each call a backend of its own. A LiteRT interpreter holds its input and output tensors,
    so two threads in one interpreter overwrite each other's rows; the pool gives every concurrent
    call its own interpreter, creating up to ``size`` of them on demand (callers beyond that wait).
    Backends that are safe to share (``thread_safe``: onnxruntime sessions, the torch model in
    inference mode) are handed to every caller at once."""

    def __init__(self, first, factory: Callable[[], object], size: int):
        self._shared = bool(getattr(first, "thread_safe", False))
        self._factory, self._size = factory, size
        self._idle, self._created = [first], 1
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def take(self) -> Iterator:
        if self._shared:
            yield self._idle[0]
            return
        with self._cond:
            while not self._idle and self._created >= self._size:
                self._cond.wait()
            be = self._idle.pop() if self._idle else None
            if be is None:
                self._created += 1
        if be is None:
            try:
                be = self._factory()
            except BaseException:
                with self._cond:
                    self._created -= 1
                    self._cond.notify()
                raise
        try:
            yield be
        finally:
            with self._cond:
                self._idle.append(be)
                self._cond.notify()

    @property
    def created(self) -> int:
        return self._created


class Predictor:
    """Tokenize, run, post-process.

    Thread safety: one Predictor may be shared by any number of threads. Each concurrent call runs
    in an interpreter of its own (LiteRT interpreters are not thread-safe); up to ``max_workers``
    interpreters are created on demand, and further callers wait for a free one. onnxruntime and
    torch backends are shared as they are (both are safe for concurrent inference).
    """

    def __init__(self, backend, tokenizer: Tokenizer, meta: _Meta, source: str, *,
                 factory: Callable[[], object] | None = None, max_workers: int = 1):
        self.backend = backend
        self._pool = _BackendPool(backend, factory or (lambda: backend), max_workers if factory else 1)
        self.tokenizer = tokenizer
        self.task = meta.task
        self.labels = meta.labels
        self.meta = meta
        self.source = source
        self.max_seq_length = backend.seq_len
        self.batch_size = backend.batch

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "litert", num_threads: int | None = None, *,
             use_xnnpack: bool = True, model: str | None = None, max_workers: int | None = None) -> "Predictor":
        """Load a bundle directory, or a single .tflite (MediaPipe metadata) or .onnx (our metadata).

        ``max_workers``: how many LiteRT interpreters concurrent callers may use (default 1: calls
        from several threads take turns on one interpreter with ``num_threads`` threads, which
        measured the faster choice on 2 cores; see the README).
        """
        if backend not in BACKENDS:
            raise PredictorError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise PredictorError(f"num_threads must be a positive integer, got {num_threads!r}")
        if max_workers is None:
            max_workers = 1
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise PredictorError(f"max_workers must be a positive integer, got {max_workers!r}")
        p = os.fspath(path)
        if os.path.isdir(p):
            return cls._from_bundle(read_bundle(p), backend, num_threads, use_xnnpack, model, max_workers)
        if not os.path.isfile(p):
            raise PredictorError(f"no model at {p}")
        factory = None
        if p.endswith(".tflite"):
            if backend != "litert":
                raise PredictorError(f"a .tflite file runs with backend='litert', not {backend!r}")
            check_tflite_file(p)
            meta = _tflite_meta(p)
            factory = lambda: LiteRTBackend(p, num_threads, use_xnnpack)  # noqa: E731
            be = factory()
        elif p.endswith(".onnx"):
            if backend != "onnxruntime":
                raise PredictorError(f"a .onnx file runs with backend='onnxruntime', not {backend!r}")
            meta = _onnx_meta(p)
            be = OnnxRuntimeBackend(p, num_threads)
        else:
            raise PredictorError(f"{p}: expected a bundle directory, a .tflite or a .onnx file")
        return cls(be, _tokenizer(meta, be.seq_len), meta, p, factory=factory, max_workers=max_workers)

    @classmethod
    def _from_bundle(cls, b: Bundle, backend: str, num_threads, use_xnnpack, model, max_workers) -> "Predictor":
        meta = _Meta(b.task, b.labels, b.lowercase, b.path("vocab.txt"), None, b.manifest.get("embedding") or {})
        factory = None
        if backend == "litert":
            path = b.model_path(model)
            if not path.endswith(".tflite"):
                raise PredictorError(f"{model!r} is not a .tflite model of this bundle; choose one of "
                                     f"{', '.join(b.tflite_models())}")
            check_tflite_file(path)
            factory = lambda: LiteRTBackend(path, num_threads, use_xnnpack)  # noqa: E731
            be = factory()
        elif backend == "onnxruntime":
            be = OnnxRuntimeBackend(b.model_path(model or "onnx"), num_threads)
        else:
            ck = b.path("checkpoint")
            if not os.path.isdir(ck):
                raise PredictorError(f"bundle {b.root} has no checkpoint/ (converted with --no-checkpoint): "
                                     "backend='torch' needs it")
            be = TorchBackend(ck, b.task, b.output_names, b.batch_size, b.max_seq_length,
                              b.manifest.get("attention_mask_value"), num_threads)
        missing = [o for o in b.output_names if o not in be.output_names]
        if missing:
            raise PredictorError(f"model outputs {be.output_names} lack {missing} named in bundle.json")
        return cls(be, _tokenizer(meta, be.seq_len), meta, b.root, factory=factory, max_workers=max_workers)

    # --------------------------------------------------------------- running
    def _check_texts(self, texts, what: str = "texts") -> list:
        """The one input rule: a str, or a list of items, each a str or a (text, text_pair) pair (a
        tuple or list of two str). Anything else (a dict, a set, a bare tuple, bytes, a generator)
        is an error that names its type, and every bad item is named by its index."""
        if isinstance(texts, str):
            return self._check_items([texts], what)
        if isinstance(texts, (bytes, bytearray)):
            raise PredictorError(f"{what} are bytes; decode them to str first")
        if isinstance(texts, tuple):
            raise PredictorError(f"{what} must be a str or a list, got a bare tuple; for one pair of texts "
                                 f"give a list holding it: [(text, text_pair)]")
        if not isinstance(texts, list):
            raise PredictorError(f"{what} must be a str or a list of str / (text, text_pair) pairs, got "
                                 f"{type(texts).__name__}")
        if not texts:
            raise PredictorError(f"no {what} given (empty list)")
        return self._check_items(texts, what)

    @staticmethod
    def _check_items(texts: list, what: str) -> list:
        out = []
        for i, t in enumerate(texts):
            if isinstance(t, (tuple, list)):
                if len(t) != 2:
                    raise PredictorError(f"{what}[{i}] has {len(t)} elements; a pair is (text, text_pair)")
                items = tuple(t)
            else:
                items = (t,)
            for x in items:
                if isinstance(x, (bytes, bytearray)):
                    raise PredictorError(f"{what}[{i}] is bytes; decode it to str first")
                if not isinstance(x, str):
                    raise PredictorError(f"{what}[{i}] must be a str, got {type(x).__name__}")
                try:
                    x.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise PredictorError(f"{what}[{i}] has an invalid character {x[e.start]!r} at position "
                                         f"{e.start} (a lone surrogate, not valid Unicode)") from None
            if not any(x.strip() for x in items):
                warnings.warn(f"{what}[{i}] is empty or whitespace-only: it is encoded as [CLS] [SEP]", stacklevel=4)
            out.append(items if len(items) == 2 else items[0])
        return out

    def _encode(self, texts: list):
        try:
            if texts and isinstance(texts[0], tuple):
                if not all(isinstance(t, tuple) for t in texts):
                    raise PredictorError("mix of single texts and pairs; give all as (text, text_pair) pairs")
                enc = self.tokenizer([t[0] for t in texts], [t[1] for t in texts])
            else:
                enc = self.tokenizer(texts)
        except TokenizerError as e:
            raise PredictorError(str(e)) from None
        cut = np.flatnonzero(enc.truncated)
        if cut.size:
            warnings.warn(f"{cut.size} text(s) truncated to {self.max_seq_length} tokens (indices "
                          f"{cut[:10].tolist()}{'...' if cut.size > 10 else ''})", stacklevel=3)
        return enc

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Any number of rows through the model's fixed batch (the last chunk padded)."""
        feeds = {k: np.ascontiguousarray(v, dtype=np.int32) for k, v in feeds.items()}
        with self._pool.take() as backend:
            return run_in_fixed_batches(backend.run, feeds, self.batch_size)

    def _need(self, *tasks: str) -> None:
        if self.task not in tasks:
            raise TaskMismatchError(f"this is a {self.task} model; the method needs a {' or '.join(tasks)} model")

    # --------------------------------------------------------------- methods
    def encode(self, texts) -> dict[str, np.ndarray]:
        """The model inputs (int32 [N, seq]) for texts or (text, text_pair) pairs: tokenization alone."""
        return self._encode(self._check_texts(texts)).model_inputs()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model alone on inputs from ``encode`` (any number of rows)."""
        return self._run(feeds)

    def logits(self, texts) -> dict[str, np.ndarray]:
        """Raw model outputs for texts (or (text, pair) tuples): ``run(encode(texts))``."""
        return self._run(self.encode(texts))

    def predict(self, texts, top_k: int | None = None) -> list[dict]:
        """Classify texts or (text, pair) tuples: label, score, all scores, and the top-k labels
        (``top_k`` >= 1; values above the number of labels give all of them)."""
        self._need("classification")
        out = self.logits(texts)
        probs = out["probabilities"] if "probabilities" in out else softmax(out["logits"])
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
            raise PredictorError(f"top_k must be a positive integer, got {top_k!r}")
        k = len(self.labels) if top_k is None else min(int(top_k), len(self.labels))
        res = []
        for row in probs:
            order = np.argsort(-row, kind="stable")
            res.append({"label": self.labels[order[0]], "score": float(row[order[0]]),
                        "scores": {lab: float(p) for lab, p in zip(self.labels, row)},
                        "top_k": [{"label": self.labels[i], "score": float(row[i])} for i in order[:k]]})
        return res

    def embed(self, texts, normalize: bool = False) -> np.ndarray:
        """Sentence embeddings [N, H] (L2-normalised when ``normalize``)."""
        self._need("embedding")
        e = self.logits(texts)["embedding"].astype(np.float32)
        if normalize:
            e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
        return e

    def answer(self, question: str, context: str, *, top_k: int = 1, max_answer_len: int = 30,
               stride: int = 32) -> dict | list[dict]:
        """Extractive QA: the best span of ``context``, with character offsets. Contexts longer than the
        sequence are covered by overlapping windows (``stride`` tokens of overlap), not truncated."""
        self._need("qa")
        self._check_texts([(question, context)], "question/context")
        if not question.strip() or not context.strip():
            raise PredictorError("question and context must both be non-empty")
        try:
            enc = self.tokenizer([question], [context], truncation="only_second", stride=stride,
                                 return_overflowing=True)
        except TokenizerError as e:
            raise PredictorError(f"cannot fit the question into {self.max_seq_length} tokens: {e}") from None
        out = self._run(enc.model_inputs())
        cands = []
        for r in range(len(enc)):
            seq = enc.sequence_ids[r]
            ctx = [i for i, s in enumerate(seq) if s == 1]
            if not ctx:
                continue
            s_log, e_log = out["start_logits"][r], out["end_logits"][r]
            ps, pe = softmax(s_log[ctx]), softmax(e_log[ctx])
            for a, i in enumerate(ctx):
                for bb in range(a, min(len(ctx), a + max_answer_len)):
                    j = ctx[bb]
                    cands.append((float(ps[a] * pe[bb]), enc.offsets[r][i][0], enc.offsets[r][j][1]))
        if not cands:
            raise PredictorError("the context produced no tokens to answer from")
        cands.sort(key=lambda c: -c[0])
        seen, best = set(), []
        for score, s, e in cands:
            if (s, e) in seen:
                continue
            seen.add((s, e))
            best.append({"answer": context[s:e], "score": score, "start": s, "end": e})
            if len(best) >= top_k:
                break
        return best[0] if top_k == 1 else best

    def fill_mask(self, text: str, top_k: int = 5) -> list[dict]:
        """Top-k tokens for the first ``[MASK]`` in ``text``."""
        self._need("mlm")
        self._check_texts([text])
        enc = self._encode([text])
        pos = np.flatnonzero(enc.input_ids[0] == self.tokenizer.mask_id)
        if pos.size == 0:
            raise PredictorError("the text has no [MASK] token")
        logits = self._run(enc.model_inputs())["mlm_logits"][0, pos[0]]
        probs = softmax(logits.astype(np.float64))
        top = np.argsort(-probs)[:top_k]
        res = []
        for t in top:
            token = self.tokenizer.convert_ids_to_tokens([int(t)])[0]
            res.append({"token": token, "token_id": int(t), "score": float(probs[t]),
                        "sequence": text.replace("[MASK]", token, 1)})
        return res


# ------------------------------------------------------------------ metadata of single files
def _tokenizer(meta: _Meta, seq_len: int) -> Tokenizer:
    if meta.vocab_path:
        return Tokenizer.from_file(meta.vocab_path, lowercase=meta.lowercase, max_length=seq_len)
    from ..tokenizer import read_vocab_text

    return Tokenizer.from_vocab(read_vocab_text(meta.vocab_text), lowercase=meta.lowercase, max_length=seq_len)


MAX_ASSOCIATED_FILE_BYTES = 16 << 20  # a vocabulary is ~230 KB; a zip bomb is refused before inflating


def _tflite_meta(path: str) -> _Meta:
    """Vocab and labels from the MediaPipe associated files (a zip appended to the model)."""
    try:
        z = zipfile.ZipFile(path)
        infos = z.infolist()
    except (zipfile.BadZipFile, OSError):
        raise PredictorError(f"{path} carries no metadata (no vocabulary attached): load its bundle "
                             "directory, or convert with metadata") from None

    def read(info) -> str:
        if info.file_size > MAX_ASSOCIATED_FILE_BYTES:
            raise PredictorError(f"{path}: attached file {info.filename!r} would inflate to {info.file_size} "
                                 f"bytes (limit {MAX_ASSOCIATED_FILE_BYTES >> 20} MiB)")
        try:
            return z.read(info).decode("utf-8")
        except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as e:
            raise PredictorError(f"{path}: attached file {info.filename!r} is unreadable: {e}") from None

    big = [i for i in infos if i.file_size > MAX_ASSOCIATED_FILE_BYTES]
    if big or len(infos) > 64:
        raise PredictorError(f"{path}: attached file {big[0].filename!r} would inflate to {big[0].file_size} bytes "
                             f"(limit {MAX_ASSOCIATED_FILE_BYTES >> 20} MiB)" if big else
                             f"{path}: {len(infos)} attached files (limit 64)")
    vocab = next((i for i in infos if i.filename.endswith("vocab.txt")), None)
    if vocab is None:
        raise PredictorError(f"{path}: the metadata has no vocab.txt")
    labels_info = next((i for i in infos if i.filename.endswith("labels.txt")), None)
    labels = read(labels_info).split() if labels_info else []
    task = "classification" if labels else "embedding"
    return _Meta(task, labels, True, None, read(vocab), {})


def _onnx_meta(path: str) -> _Meta:
    import onnx

    m = onnx.load(path, load_external_data=False)
    props = {p.key: p.value for p in m.metadata_props}
    if ONNX_BUNDLE_KEY not in props or ONNX_VOCAB_KEY not in props:
        raise PredictorError(f"{path} carries no mobilebert-mobile metadata: load its bundle directory")
    b = json.loads(props[ONNX_BUNDLE_KEY])
    return _Meta(b["task"], list(b.get("labels") or []), bool(b.get("lowercase", True)), None,
                 props[ONNX_VOCAB_KEY], b.get("embedding") or {})


__all__ = ["Predictor", "PredictorError", "BundleError", "BACKENDS"]
