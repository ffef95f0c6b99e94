"""Training data: text files in, fixed-shape tensors out, batches that do not depend on process count.

Readers accept ``.txt`` (one text per line), ``.csv``/``.tsv`` (header row) and ``.jsonl``
(one object per line). Empty lines/texts are skipped and counted; a label outside the label set,
a missing column or a malformed line is an error naming the file and line.

Batches are drawn from a per-epoch permutation seeded by ``(seed, epoch)``; the random parts of a
batch (MLM masking, sentence-order swaps) come from a generator seeded by ``(seed, step)`` and are
drawn for the *global* batch before each process takes its slice. So a run resumed at step k,
and a run on W processes, see exactly the batches a single uninterrupted process sees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .. import textfiles
from ..errors import InputError


class DataError(InputError):
    """A data file is missing, empty, malformed, or has labels outside the label set."""


def read_records(path: str | os.PathLike) -> list[dict]:
    """Rows of a .txt/.csv/.tsv/.jsonl file as dicts with their line under ``__line__`` (the one reader,
    ``mobilebert_mobile.textfiles``; errors as DataError naming the file and line)."""
    return textfiles.read_records(path, what="data file", error=DataError)


def _column(rows: list[dict], path: str, wanted: str | None, candidates: tuple[str, ...], what: str) -> str:
    return textfiles.column(rows, path, wanted, candidates, what, error=DataError)


def read_texts(path: str | os.PathLike, column: str | None = None) -> list[str]:
    """Non-empty texts of a file (an unlabelled corpus; a TAB in a .txt line is part of the text)."""
    return [t.strip() for t in textfiles.read_texts(path, what="data file", pairs=False, text_column=column,
                                                    error=DataError)]


@dataclass
class LabelledData:
    texts: list[str]
    labels: list[int]
    pairs: list[str] | None = None
    label_names: list[str] = field(default_factory=list)
    skipped_empty: int = 0


def read_labelled(path: str | os.PathLike, *, text_column: str | None = None, pair_column: str | None = None,
                  label_column: str | None = None, label_names: list[str] | None = None) -> LabelledData:
    """Classification rows (GLUE-style: text, optional second text, label).

    Labels may be names or integer ids; ``label_names`` fixes the label set (a label outside it
    is an error), otherwise the sorted set of labels seen becomes the label set.
    """
    path = os.fspath(path)
    rows = read_records(path)
    tcol = _column(rows, path, text_column, ("text", "sentence", "sentence1", "question1", "premise"), "text")
    pcol = pair_column
    if pcol is None:
        for c in ("text_pair", "sentence2", "question2", "hypothesis"):
            if c in rows[0]:
                pcol = c
                break
    elif pcol not in rows[0]:
        raise DataError(f"{path}: no pair column {pcol!r}")
    lcol = _column(rows, path, label_column, ("label", "labels", "y", "class"), "label")
    texts, pairs, raw, skipped = [], [], [], 0
    for i, r in enumerate(rows):
        line = r.get("__line__", i + 2)
        t = str(r.get(tcol) or "").strip()
        if not t:
            skipped += 1
            continue
        lab = r.get(lcol)
        if lab is None or str(lab).strip() == "":
            raise DataError(f"{path}:{line}: empty label")
        texts.append(t)
        raw.append(str(lab).strip())
        if pcol:
            pairs.append(str(r.get(pcol) or "").strip())
    if not texts:
        raise DataError(f"{path}: every text is empty")
    if label_names is None:
        seen = sorted(set(raw), key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
        label_names = seen
    index = {name: i for i, name in enumerate(label_names)}
    labels = []
    for k, lab in enumerate(raw):
        if lab in index:
            labels.append(index[lab])
        elif lab.isdigit() and int(lab) < len(label_names) and lab not in index and not any(n.isdigit() for n in label_names):
            labels.append(int(lab))
        else:
            raise DataError(f"{path}: label {lab!r} (row {k + 1}) is not in the label set {label_names}")
    return LabelledData(texts, labels, pairs if pcol else None, list(label_names), skipped)


@dataclass
class QAData:
    questions: list[str]
    contexts: list[str]
    answer_starts: list[int]
    answer_texts: list[str]


def read_qa(path: str | os.PathLike) -> QAData:
    """SQuAD-style rows: question, context, answer_text, answer_start (character offset)."""
    path = os.fspath(path)
    rows = read_records(path)
    for c in ("question", "context", "answer_text", "answer_start"):
        _column(rows, path, c, (), c)
    out = QAData([], [], [], [])
    for i, r in enumerate(rows):
        line = r.get("__line__", i + 2)
        q, c, a = (str(r.get(k) or "") for k in ("question", "context", "answer_text"))
        try:
            s = int(r.get("answer_start"))
        except (TypeError, ValueError):
            raise DataError(f"{path}:{line}: answer_start is not an integer") from None
        if not q.strip() or not c.strip():
            raise DataError(f"{path}:{line}: empty question or context")
        if c[s:s + len(a)] != a:
            raise DataError(f"{path}:{line}: the answer {a!r} is not at character {s} of the context")
        out.questions.append(q), out.contexts.append(c), out.answer_starts.append(s), out.answer_texts.append(a)
    return out


# ------------------------------------------------------------------ tensors and batches
def to_tensors(enc) -> dict[str, torch.Tensor]:
    """A tokenizer Encoding's int32 numpy inputs as int64 tensors (what the PyTorch models take)."""
    return {k: torch.from_numpy(v.astype("int64")) for k, v in enc.model_inputs().items()}


def encode_corpus(tokenizer, texts: list[str], seq_len: int, *, windows: bool = True) -> dict[str, torch.Tensor]:
    """Texts -> [N, seq_len] tensors; long texts become several non-overlapping windows."""
    return to_tensors(tokenizer(texts, max_length=seq_len, return_overflowing=windows))


def encode_labelled(tokenizer, data: LabelledData, seq_len: int) -> dict[str, torch.Tensor]:
    t = to_tensors(tokenizer(data.texts, data.pairs, max_length=seq_len))
    t["labels"] = torch.tensor(data.labels, dtype=torch.long)
    return t


def encode_qa(tokenizer, data: QAData, seq_len: int) -> dict[str, torch.Tensor]:
    """Question + context (context truncated); answer character span -> token start/end.
    Answers cut off by truncation point at [CLS] (position 0), as in SQuAD v2 practice."""
    enc = tokenizer(data.questions, data.contexts, max_length=seq_len, truncation="only_second")
    starts, ends = [], []
    for i in range(len(enc)):
        a0 = data.answer_starts[i]
        a1 = a0 + len(data.answer_texts[i])
        s = e = 0
        for j, (off, sid) in enumerate(zip(enc.offsets[i], enc.sequence_ids[i])):
            if sid != 1:
                continue
            if off[0] <= a0 < off[1] or (s == 0 and off[0] >= a0 and off[0] < a1):
                s = s or j
            if s and off[0] < a1:
                e = j
        if not s or not e:
            s = e = 0
        starts.append(s)
        ends.append(e)
    t = to_tensors(enc)
    t["start_positions"] = torch.tensor(starts)
    t["end_positions"] = torch.tensor(ends)
    return t


def step_generator(seed: int, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7919) % (2 ** 63 - 1))
    return g


class Batches:
    """Deterministic global batches over in-memory tensors.

    ``batch(step)`` gives the global batch of a step: epoch = step // steps_per_epoch, its
    permutation from ``(seed, epoch)``; a last partial batch is dropped so every step has the
    same size (data-parallel equality needs equal slices).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], global_batch: int, seed: int = 0):
        n = next(iter(tensors.values())).shape[0]
        if n < global_batch:
            raise DataError(f"only {n} examples for a global batch of {global_batch}: use a smaller --batch-size")
        self.t, self.n, self.global_batch, self.seed = tensors, n, global_batch, seed
        self.steps_per_epoch = n // global_batch
        self._perm_epoch, self._perm = -1, None

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator()
            g.manual_seed(self.seed * 9973 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        idx = self._perm[k * self.global_batch:(k + 1) * self.global_batch]
        return {name: v[idx] for name, v in self.t.items()}


def shard(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    n = next(iter(batch.values())).shape[0]
    if n % world:
        raise DataError(f"global batch {n} is not divisible by {world} processes")
    per = n // world
    return {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}


def mask_tokens(batch: dict[str, torch.Tensor], g: torch.Generator, *, vocab_size: int, mask_id: int,
                special_ids: tuple[int, ...], prob: float = 0.15) -> dict[str, torch.Tensor]:
    """BERT masking: ``prob`` of the real, non-special tokens are predicted; of those 80% become
    [MASK], 10% a random token, 10% stay. Adds ``labels`` (-100 elsewhere)."""
    ids = batch["input_ids"].clone()
    real = batch["attention_mask"].bool()
    for s in special_ids:
        real &= ids != s
    chosen = (torch.rand(ids.shape, generator=g) < prob) & real
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=g)
    rand_ids = torch.randint(0, vocab_size, ids.shape, generator=g)
    ids = torch.where(chosen & (r < 0.8), torch.full_like(ids, mask_id), ids)
    ids = torch.where(chosen & (r >= 0.8) & (r < 0.9), rand_ids, ids)
    out = dict(batch)
    out["input_ids"], out["labels"] = ids, labels
    return out


def sentence_order(batch: dict[str, torch.Tensor], g: torch.Generator, *, sep_id: int) -> dict[str, torch.Tensor]:
    """Sentence-order prediction (ALBERT's SOP) built from single-segment rows: each row
    ``[CLS] a b [SEP]`` is cut at a random point into ``[CLS] A [SEP] B [SEP]`` (label 0) or
    ``[CLS] B [SEP] A [SEP]`` (label 1, swapped); token types 0 / 1. Rows too short to cut, or
    with no room for the second [SEP], stay one segment with label 0."""
    ids, mask = batch["input_ids"].clone(), batch["attention_mask"].clone()
    types = torch.zeros_like(ids)
    n, S = ids.shape
    labels = torch.zeros(n, dtype=torch.long)
    swap = torch.rand(n, generator=g) < 0.5
    cut_u = torch.rand(n, generator=g)
    for i in range(n):
        L = int(mask[i].sum())  # [CLS] body [SEP]
        body = ids[i, 1:L - 1]
        if body.numel() < 2 or L >= S:
            continue
        c = 1 + int(cut_u[i] * (body.numel() - 1))
        a, b = body[:c], body[c:]
        first, second = (b, a) if swap[i] else (a, b)
        sep = ids.new_tensor([sep_id])
        row = torch.cat([ids[i, :1], first, sep, second, sep])  # L + 1 tokens
        ids[i, :row.numel()] = row
        mask[i, :row.numel()] = 1
        types[i, 2 + first.numel():row.numel()] = 1
        labels[i] = int(swap[i])
    out = dict(batch)
    out.update(input_ids=ids, attention_mask=mask, token_type_ids=types, next_sentence_label=labels)
    return out
