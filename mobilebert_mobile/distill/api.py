"""``distill(...)``, ``finetune(...)`` and ``evaluate(...)``: files in, checkpoints out."""
from __future__ import annotations

import json
import os
import shutil

import torch

from .._io import atomic_write_text
from ..config import MobileBertConfig
from ..modeling import MobileBertForPreTraining
from ..modeling.loading import load_task_model
from ..tokenizer import Tokenizer
from .data import (Batches, DataError, encode_corpus, encode_labelled, encode_qa, read_labelled, read_qa,
                   to_tensors)
from .tasks import DistillTask, FinetuneTask
from .teachers import DistillError, copy_from_teacher, load_teacher, matching_student_config
from .trainer import TrainConfig, dist_info, train


def _tokenizer_for(source: str | None, seq_len: int) -> tuple[Tokenizer, str]:
    from .. import assets

    own = os.path.join(source, "vocab.txt") if source else None
    vocab = own if own and os.path.isfile(own) else assets.vocab_path()
    return Tokenizer.from_file(vocab, max_length=seq_len), vocab


def _save(model, out_dir: str, vocab: str, extra: dict | None = None) -> str:
    final = os.path.join(out_dir, "model")
    if dist_info()[0] != 0:
        return final
    model.save_pretrained(final)
    tmp = os.path.join(final, "vocab.txt.tmp")
    shutil.copyfile(vocab, tmp)
    os.replace(tmp, os.path.join(final, "vocab.txt"))
    if extra:
        atomic_write_text(os.path.join(final, "training.json"), json.dumps(extra, indent=2))
    return final


def distill(teacher: str, corpus: list[str], out_dir: str, *, strategy: str = "progressive", steps: int = 1000,
            student: MobileBertConfig | str | None = None, seq_len: int = 128, batch_size: int = 32,
            lr: float = 1e-3, optimizer: str = "lamb", mapping: bool = False, copy_embeddings: bool = True,
            resume: bool = False, save_every: int = 0, seed: int = 0, max_seconds: float | None = None,
            progress: bool = True, amp: str = "auto", probe=None, calibration_size: int = 128,
            **task_options) -> dict:
    """Distill ``teacher`` (checkpoint dir or preset) into a student on ``corpus`` texts.

    ``student``: a config, a preset name, a checkpoint directory to continue from, or None for
    :func:`matching_student_config`. Writes ``out_dir/model`` (MobileBertForPreTraining layout),
    ``out_dir/state.pt`` (resumable) and ``out_dir/metrics.jsonl``.
    """
    t = load_teacher(teacher)
    if student is None:
        scfg = matching_student_config(t.config)
    elif isinstance(student, MobileBertConfig):
        scfg = student
    elif os.path.isdir(student):
        scfg = MobileBertConfig.from_json(student)
    else:
        scfg = MobileBertConfig.from_preset(student)
    torch.manual_seed(seed)
    model = MobileBertForPreTraining(scfg)
    if isinstance(student, str) and os.path.isdir(student):
        from ..modeling.checkpoint import read_state_dict
        model.load_checkpoint_tensors(read_state_dict(student), strict=False, where=student)
    resuming = resume and os.path.exists(os.path.join(out_dir, "state.pt"))
    copied = copy_from_teacher(model, t) if copy_embeddings and not resuming else []  # else: from state.pt
    tok, vocab = _tokenizer_for(teacher, seq_len)
    if tok.vocab_size != scfg.vocab_size:
        raise DistillError(f"the vocabulary has {tok.vocab_size} tokens but the student expects {scfg.vocab_size}")
    data = encode_corpus(tok, corpus, seq_len)
    calibration = _calibration(data, seed, calibration_size)
    task = DistillTask(t, model, strategy=strategy, steps=steps, seed=seed, calibration=calibration,
                       special_ids=(tok.pad_id, tok.vocab.get("[CLS]", 101), tok.vocab.get("[SEP]", 102)),
                       mask_id=tok.vocab.get("[MASK]", 103), sep_id=tok.vocab.get("[SEP]", 102), mapping=mapping,
                       **task_options)
    cfg = TrainConfig(out_dir=out_dir, global_batch=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                      save_every=save_every, resume=resume, progress=progress, max_seconds=max_seconds, amp=amp)
    summary = train(task, Batches(data, batch_size, seed), cfg, probe=probe)
    summary.update(qk_init=task.qk_log, copied=copied, windows=int(data["input_ids"].shape[0]), strategy=strategy,
                   student_parameters=model.num_parameters(), teacher_parameters=sum(
                       p.numel() for p in t.model.parameters()),
                   stages=[s.to_dict() for s in task.stages])
    summary["model"] = _save(model, out_dir, vocab, {"distill": summary})
    return summary


def _calibration(data: dict, seed: int, size: int) -> dict:
    """A fixed, seeded sample of training windows (unmasked) for the Q/K initialisation."""
    n = data["input_ids"].shape[0]
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7))[:min(n, size)]
    return {k: data[k][idx] for k in ("input_ids", "attention_mask", "token_type_ids")}


def finetune(checkpoint: str, train_file: str, out_dir: str, *, task: str = "classification",
             teacher: str | None = None, steps: int | None = None, epochs: float = 2.0, seq_len: int = 128,
             batch_size: int = 32, lr: float = 1e-4, optimizer: str = "adamw", alpha: float = 0.5,
             temperature: float = 2.0, label_names: list[str] | None = None, resume: bool = False,
             save_every: int = 0, seed: int = 0, progress: bool = True, text_column: str | None = None,
             pair_column: str | None = None, label_column: str | None = None, data=None,
             teacher_logits: torch.Tensor | None = None, amp: str = "auto", qat: bool = False,
             qat_observe_steps: int = 100) -> dict:
    """Fine-tune a checkpoint (any of our family or BERT layout) for classification or QA.

    ``qat``: quantization-aware fine-tuning (see distill/qat.py): fake-quant where the TFLite int8
    converter quantizes, activation ranges observed for ``qat_observe_steps`` steps before the
    fake-quant is switched on; the learned ranges are saved as ``model/qat_ranges.json`` and
    ``convert`` uses them instead of calibrating.

    ``teacher``: a fine-tuned checkpoint of the same task whose logits are distilled (task
    distillation). ``data``: an already read LabelledData/QAData instead of ``train_file``;
    ``teacher_logits``: the teacher's [N, C] logits on it, precomputed (see :func:`predict_logits`).
    """
    tok, vocab = _tokenizer_for(checkpoint, seq_len)
    if task == "classification":
        d = data if data is not None else read_labelled(train_file, text_column=text_column, pair_column=pair_column,
                                                        label_column=label_column, label_names=label_names)
        tensors = encode_labelled(tok, d, seq_len)
        names = d.label_names
    elif task == "qa":
        d = data if data is not None else read_qa(train_file)
        tensors = encode_qa(tok, d, seq_len)
        names = None
    else:
        raise DataError(f"fine-tuning supports tasks classification and qa, not {task!r}")
    model = _task_model(checkpoint, task, names)
    tmodel = None
    if teacher:
        tmodel, ttask, _ = load_task_model(teacher, task)
        if task == "classification" and tmodel.config.num_labels != len(names):
            raise DistillError(f"the teacher has {tmodel.config.num_labels} labels, the data {len(names)}")
    n = tensors["input_ids"].shape[0]
    if teacher_logits is not None:
        if tuple(teacher_logits.shape) != (n, len(names or [])):
            raise DistillError(f"teacher_logits has shape {tuple(teacher_logits.shape)}, expected ({n}, {len(names)})")
        tensors["teacher_logits"] = teacher_logits.float()
    if steps is None:
        steps = max(1, int(epochs * (n // batch_size)))
    ft = FinetuneTask(model, task, steps, teacher=tmodel, alpha=alpha, temperature=temperature)
    q = None
    if qat:
        from .qat import QAT

        if isinstance(qat_observe_steps, bool) or not isinstance(qat_observe_steps, int) or qat_observe_steps < 0:
            raise DistillError(f"qat_observe_steps must be a non-negative integer, got {qat_observe_steps!r}")
        if qat_observe_steps >= steps:
            raise DistillError(f"qat_observe_steps ({qat_observe_steps}) must be below the training steps ({steps}): "
                               f"the fake-quant would never be switched on")
        q = QAT(model, observe_steps=qat_observe_steps)
        ft.module.qat_observers = q.observers  # their buffers travel in state.pt (resume)
        ft.opts.update(qat=True, qat_observe_steps=qat_observe_steps)
    cfg = TrainConfig(out_dir=out_dir, global_batch=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                      save_every=save_every, resume=resume, progress=progress, amp=amp)
    try:
        summary = train(ft, Batches(tensors, batch_size, seed), cfg)
    finally:
        ranges = q.ranges() if q is not None else None
        if q is not None:
            q.remove()  # the float weights stay; the converter quantizes them as the fake-quant did
    summary.update(examples=int(n), labels=names, parameters=model.num_parameters())
    if q is not None:
        summary["qat"] = {"points": len(ranges), "observe_steps": qat_observe_steps}
    summary["model"] = _save(model, out_dir, vocab, {"finetune": summary})
    if q is not None and dist_info()[0] == 0:
        from .qat import save_ranges

        save_ranges(summary["model"], ranges, {"observe_steps": qat_observe_steps, "steps": steps})
    return summary


def _task_model(checkpoint: str, task: str, label_names: list[str] | None):
    """The checkpoint's backbone under a fresh head of ``task`` (its own head when it has one)."""
    from ..modeling.loading import load_model, task_model_class

    over: dict = {"architectures": None}
    if label_names is not None:
        over["id2label"] = {i: n for i, n in enumerate(label_names)}
    model, _, _ = load_model(checkpoint, task_model_class(task), config_overrides=over, strict=False,
                             skip_mismatched=True)
    return model


def _model_and_tokenizer(model_or_dir, task: str, seq_len: int):
    """A task model in eval mode (given, or loaded from a checkpoint directory) and its tokenizer."""
    if isinstance(model_or_dir, (str, os.PathLike)):
        model, _, _ = load_task_model(model_or_dir, task)
        tok, _ = _tokenizer_for(os.fspath(model_or_dir), seq_len)
    else:
        model, (tok, _) = model_or_dir, _tokenizer_for(None, seq_len)
    return model.eval(), tok


@torch.no_grad()
def predict_logits(model_or_dir, texts: list[str], pairs: list[str] | None = None, *, seq_len: int = 128,
                   batch_size: int = 64) -> torch.Tensor:
    """[N, C] classifier logits (for task distillation with a fixed teacher)."""
    model, tok = _model_and_tokenizer(model_or_dir, "classification", seq_len)
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], None if pairs is None else pairs[i:i + batch_size], max_length=seq_len)
        x = to_tensors(enc)
        out.append(model(x["input_ids"], x["attention_mask"], x["token_type_ids"]).logits)
    return torch.cat(out)


def evaluate(model_or_dir, texts: list[str], labels: list[int], *, seq_len: int = 128, batch_size: int = 64) -> dict:
    """Accuracy of a classifier (a model or a checkpoint directory) on labelled texts."""
    preds = predict_logits(model_or_dir, texts, seq_len=seq_len, batch_size=batch_size).argmax(-1).tolist()
    correct = sum(int(p == y) for p, y in zip(preds, labels))
    return {"accuracy": correct / max(1, len(labels)), "n": len(labels), "predictions": preds}


@torch.no_grad()
def layerwise_losses(teacher: str, student_dir: str, texts: list[str], *, seq_len: int = 128,
                     batch_size: int = 64) -> dict:
    """Per-layer feature-map and attention-transfer losses of a student against its teacher on
    ``texts`` (unmasked, held-out): the ablation's comparable measure of layer-wise transfer."""
    from ..modeling.checkpoint import read_state_dict
    from . import losses as L
    from .tasks import encode
    from .teachers import check_pair

    t = load_teacher(teacher)
    scfg = MobileBertConfig.from_json(student_dir)
    student = MobileBertForPreTraining(scfg)
    student.load_checkpoint_tensors(read_state_dict(student_dir), strict=False, where=student_dir)
    student.eval()
    pair = check_pair(t.config, scfg, mapping=True)
    tok, _ = _tokenizer_for(student_dir, seq_len)
    n = scfg.num_hidden_layers
    fm, at, tokens = [0.0] * (n + 1), [0.0] * n, 0.0
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], max_length=seq_len)
        b = to_tensors(enc)
        sh, ss = encode(student.mobilebert, b)
        th, ts = encode(t.encoder(), b)
        m = b["attention_mask"]
        c = float(m.sum())
        tokens += c
        if sh[0].shape[-1] == th[0].shape[-1]:
            fm[0] += float(L.feature_map_loss(sh[0], th[0], m)) * c
        for l in range(n):
            tl = pair["layer_map"][l]
            if sh[l + 1].shape[-1] == th[tl + 1].shape[-1]:
                fm[l + 1] += float(L.feature_map_loss(sh[l + 1], th[tl + 1], m)) * c
            if pair["attention"]:
                at[l] += float(L.attention_transfer_loss(ss[l], ts[tl], m)) * c
    return {"feature_map": [round(x / tokens, 5) for x in fm], "attention": [round(x / tokens, 5) for x in at]}


def _normalise_answer(s: str) -> list[str]:
    import re
    import string

    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return s.split()


@torch.no_grad()
def evaluate_qa(model_or_dir, data, *, seq_len: int = 128, batch_size: int = 32, max_answer_tokens: int = 30) -> dict:
    """SQuAD-style exact match and token F1 of a QA model on QAData (best span inside the context,
    start <= end, at most ``max_answer_tokens``)."""
    from collections import Counter

    model, tok = _model_and_tokenizer(model_or_dir, "qa", seq_len)
    em = f1 = 0.0
    answers = []
    n = len(data.questions)
    for i in range(0, n, batch_size):
        enc = tok(data.questions[i:i + batch_size], data.contexts[i:i + batch_size], max_length=seq_len,
                  truncation="only_second")
        x = to_tensors(enc)
        out = model(x["input_ids"], x["attention_mask"], x["token_type_ids"])
        for r in range(len(enc)):
            ctx_tokens = [j for j, sid in enumerate(enc.sequence_ids[r]) if sid == 1]
            st, en = out.start_logits[r], out.end_logits[r]
            best, span = -float("inf"), (0, 0)
            for a in ctx_tokens:
                for b in ctx_tokens:
                    if a <= b < a + max_answer_tokens and float(st[a] + en[b]) > best:
                        best, span = float(st[a] + en[b]), (a, b)
            ctx = data.contexts[i + r]
            text = ctx[enc.offsets[r][span[0]][0]:enc.offsets[r][span[1]][1]] if ctx_tokens else ""
            answers.append(text)
            pred, gold = _normalise_answer(text), _normalise_answer(data.answer_texts[i + r])
            em += float(pred == gold)
            common = sum((Counter(pred) & Counter(gold)).values())
            if common:
                p, rc = common / len(pred), common / len(gold)
                f1 += 2 * p * rc / (p + rc)
    return {"exact_match": em / max(1, n), "f1": f1 / max(1, n), "n": n, "answers": answers}
