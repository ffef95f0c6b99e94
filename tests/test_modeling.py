"""Parity with transformers' MobileBERT (both directions), the IB-BERT teacher, outputs for distillation."""
import pytest
import torch

from mobilebert_mobile import MobileBertConfig
from mobilebert_mobile import modeling as M

transformers = pytest.importorskip("transformers")

# Every config switch transformers supports, on small random-weight models.
SWITCHES = {
    "mobilebert": dict(),
    "tiny": dict(use_bottleneck_attention=True, key_query_shared_bottleneck=False, num_feedforward_networks=2),
    "no-opt": dict(hidden_act="gelu", normalization_type="layer_norm"),
    "relu6": dict(hidden_act="relu6"),
    "no-bottleneck": dict(use_bottleneck=False, key_query_shared_bottleneck=False, hidden_size=128,
                          intermediate_size=256, num_feedforward_networks=1),
    "no-trigram": dict(trigram_input=False, embedding_size=128),
    "pooler-act": dict(classifier_activation=True),
    "ffn1-wide": dict(num_feedforward_networks=1, intermediate_size=1024, intra_bottleneck_size=256,
                      num_attention_heads=8),
}
PAIRS = [
    (transformers.MobileBertModel, M.MobileBertModel, ("last_hidden_state", "pooler_output")),
    (transformers.MobileBertForSequenceClassification, M.MobileBertForSequenceClassification, ("logits",)),
    (transformers.MobileBertForPreTraining, M.MobileBertForPreTraining, (("prediction_logits", "logits"),
                                                                          "seq_relationship_logits")),
    (transformers.MobileBertForTokenClassification, M.MobileBertForTokenClassification, ("logits",)),
    (transformers.MobileBertForQuestionAnswering, M.MobileBertForQuestionAnswering, ("start_logits", "end_logits")),
    (transformers.MobileBertForMaskedLM, M.MobileBertForMaskedLM, ("logits",)),
]
VOCAB = 400


def _hf_config(switch, num_labels=3):
    return transformers.MobileBertConfig(num_hidden_layers=2, vocab_size=VOCAB, attn_implementation="eager",
                                         num_labels=num_labels, **SWITCHES[switch])


def _perturb(model, seed=0):
    """Random norms/biases so NoNorm and zero biases are not identities that hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm" in n or n.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _inputs(seed=1, batch=3, seq=13):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids, mask, types


def _fields(a, b, names):
    for name in names:
        ha, ob = (name, name) if isinstance(name, str) else name
        yield name, getattr(a, ha), getattr(b, ob)


@pytest.mark.parametrize("switch", sorted(SWITCHES))
@pytest.mark.parametrize("hf_cls, our_cls, names", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_transformers_checkpoint_loads_into_ours(tmp_path, switch, hf_cls, our_cls, names):
    torch.manual_seed(0)
    # transformers sizes qa_outputs by num_labels (and only 2 works at forward time)
    hf = hf_cls(_hf_config(switch, 2 if our_cls is M.MobileBertForQuestionAnswering else 3)).eval()
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = our_cls.from_pretrained(tmp_path)
    ids, mask, types = _inputs()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        b = ours(ids, mask, types)
    for name, x, y in _fields(a, b, names):
        assert x.shape == y.shape, name
        assert (x - y).abs().max().item() <= 1e-5, name


@pytest.mark.parametrize("switch", ["mobilebert", "tiny", "no-opt", "no-bottleneck"])
@pytest.mark.parametrize("hf_cls, our_cls, names", PAIRS[:3], ids=[p[1].__name__ for p in PAIRS[:3]])
def test_our_checkpoint_loads_into_transformers(tmp_path, switch, hf_cls, our_cls, names):
    torch.manual_seed(0)
    cfg = MobileBertConfig.from_dict({k: v for k, v in _hf_config(switch).to_dict().items()})
    ours = our_cls(cfg).eval()
    _perturb(ours, seed=3)
    ours.save_pretrained(tmp_path)
    hf = hf_cls.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask, types = _inputs(seed=5)
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        b = ours(ids, mask, types)
    for name, x, y in _fields(a, b, names):
        assert (x - y).abs().max().item() <= 1e-5, name


def test_hidden_states_and_attentions_match_transformers(tmp_path):
    torch.manual_seed(0)
    hf = transformers.MobileBertModel(_hf_config("mobilebert")).eval()
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = M.MobileBertModel.from_pretrained(tmp_path)
    ids, mask, types = _inputs()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
               output_attentions=True)
        b = ours(ids, mask, types, output_hidden_states=True, output_attentions=True, output_attention_scores=True)
    assert len(b.hidden_states) == len(a.hidden_states) == 3 and len(b.attentions) == 2
    for x, y in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions):
        assert (x - y).abs().max().item() <= 1e-5
    # scores are the masked pre-softmax logits: softmax(scores) == probabilities
    for s, p in zip(b.attention_scores, b.attentions):
        assert s.shape == p.shape == (3, 4, 13, 13)
        assert torch.allclose(torch.softmax(s, -1), p, atol=1e-6)


def test_ib_bert_teacher_builds_and_runs():
    cfg = MobileBertConfig.from_preset("ib-bert-teacher", num_hidden_layers=2)
    model = M.MobileBertModel(cfg).eval()
    assert model.encoder.layer[0].attention.self.query.in_features == 512  # Q, K from the 512-wide input
    assert model.encoder.layer[0].attention.self.query.out_features == 1024  # 4 heads x 256
    ids, mask, types = _inputs()
    out = model(ids, mask, types, output_attentions=True, output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 13, 512)
    assert out.attentions[0].shape == (3, 4, 13, 13) and len(out.hidden_states) == 3
    with pytest.raises(RuntimeError):  # transformers cannot build it: its Q/K expect 1024 inputs
        hf = transformers.MobileBertModel(transformers.MobileBertConfig(
            num_hidden_layers=1, vocab_size=VOCAB, intra_bottleneck_size=1024, intermediate_size=4096,
            num_feedforward_networks=1, key_query_shared_bottleneck=False)).eval()
        hf(input_ids=ids)


def test_mask_value_is_configurable_and_masks_padding():
    cfg = MobileBertConfig.from_preset("mobilebert", num_hidden_layers=2, vocab_size=VOCAB, attention_mask_value=-100.0)
    model = M.MobileBertModel(cfg).eval()
    ids, mask, types = _inputs()
    ids = ids * mask  # padding id 0 (a zero embedding row), as the tokenizer pads
    out = model(ids, mask, types, output_attentions=True, output_attention_scores=True)
    # padded keys of row 2 (positions 4..) get ~0 probability
    assert out.attentions[0][2, :, :, 4:].max().item() < 1e-20
    raw_minus = out.attention_scores[0][2, :, :, 4:]
    assert raw_minus.max().item() < -90  # -100 added to small scores
    # padding does not change the outputs at real positions (the trigram window sees the zero pad row)
    short = model(ids[2:, :4], mask[2:, :4], types[2:, :4]).last_hidden_state
    assert (short - out.last_hidden_state[2:, :4]).abs().max().item() < 1e-4


def test_train_mode_uses_dropout_and_eval_is_deterministic():
    cfg = MobileBertConfig.from_preset("mobilebert-tiny", num_hidden_layers=2, vocab_size=VOCAB,
                                       hidden_dropout_prob=0.1)
    model = M.MobileBertForSequenceClassification(cfg)
    ids, mask, types = _inputs()
    model.train()
    a, b = model(ids, mask, types).logits, model(ids, mask, types).logits
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model(ids, mask, types).logits, model(ids, mask, types).logits)
    # gradients flow to every parameter that takes part
    model.train()
    model(ids, mask, types, labels=torch.tensor([0, 1, 0])).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "pooler" not in n)


def test_sentence_embedding_pooling(tmp_path):
    cfg = MobileBertConfig.from_preset("mobilebert", num_hidden_layers=1, vocab_size=VOCAB)
    model = M.MobileBertForSentenceEmbedding(cfg, normalize=True).eval()
    ids, mask, types = _inputs()
    out = model(ids, mask, types)
    assert out.embedding.shape == (3, 512)
    assert torch.allclose(out.embedding.norm(dim=-1), torch.ones(3), atol=1e-5)
    h = out.last_hidden_state[2, :4].mean(0)
    assert torch.allclose(torch.nn.functional.normalize(h, dim=0), out.embedding[2], atol=1e-5)
    model.save_pretrained(tmp_path)
    back = M.MobileBertForSentenceEmbedding.from_pretrained(tmp_path)
    assert back.normalize and back.pooling == "mean"
    assert torch.equal(back(ids, mask, types).embedding, out.embedding)


def test_bad_forward_inputs():
    model = M.MobileBertModel(MobileBertConfig.from_preset("mobilebert-tiny", num_hidden_layers=1, vocab_size=VOCAB))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 400\)"):
        model(torch.tensor([[1, 2, 400]]))
    with pytest.raises(ValueError, match="must be 2-D"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="must be integers"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="shape"):
        model(torch.tensor([[1, 2, 3]]), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=512"):
        model(torch.ones(1, 513, dtype=torch.long))
