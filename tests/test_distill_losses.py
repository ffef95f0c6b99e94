"""Each distillation loss against a value computed by hand, padding handling, and LAMB / schedule."""
import math

import numpy as np

import pytest

torch = pytest.importorskip("torch")

from mobilebert_mobile.distill import losses as L  # noqa: E402
from mobilebert_mobile.distill.optim import Lamb, param_groups, warmup_linear  # noqa: E402


def test_feature_map_loss_hand_value_and_padding():
    s = torch.tensor([[[1.0, 2.0, 3.0], [9.0, -4.0, 7.0]]])  # second token is padding
    t = torch.tensor([[[3.0, 2.0, 1.0], [0.0, 0.0, 5.0]]])
    mask = torch.tensor([[1, 0]])
    # LN([1,2,3]) = (x - 2) / sqrt(2/3 + 1e-5); LN([3,2,1]) is its negation: diff = 2 LN(s)
    var = 2 / 3
    expected = 4 * 2 * (1 / (var + 1e-5)) / 3  # sum of (2 LN)^2 over 3 features / 3
    assert L.feature_map_loss(s, t, mask).item() == pytest.approx(expected, rel=1e-5)
    assert L.feature_map_loss(s, t, None).item() != pytest.approx(expected, rel=1e-3)  # padding would count
    # a data-parallel denominator: sum / denom
    assert L.feature_map_loss(s, t, mask, denom=2.0).item() == pytest.approx(expected / 2, rel=1e-5)


def test_feature_map_loss_names_shape_mismatch():
    with pytest.raises(ValueError, match=r"student \(1, 2, 4\) vs teacher \(1, 2, 3\)"):
        L.feature_map_loss(torch.zeros(1, 2, 4), torch.zeros(1, 2, 3))


def test_attention_transfer_hand_value_masks_padded_queries():
    # teacher: uniform over 2 keys; student: scores [0, ln 3] -> [0.25, 0.75]
    t = torch.zeros(1, 2, 3, 2)
    s = torch.zeros(1, 2, 3, 2)
    s[..., 1] = math.log(3)
    s[:, :, 2] = torch.tensor([5.0, -5.0])  # query 2 is padding: garbage must not count
    t[:, :, 2] = torch.tensor([-5.0, 5.0])
    mask = torch.tensor([[1, 1, 0]])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = 0.5 ln(4/3)
    assert L.attention_transfer_loss(s, t, mask).item() == pytest.approx(kl, rel=1e-5)
    assert L.attention_transfer_loss(t, t, mask).item() == pytest.approx(0.0, abs=1e-7)


def test_mean_variance_hand_value():
    s = torch.tensor([[[1.0, 2.0, 3.0]]])  # mean 2, var 2/3
    t = torch.tensor([[[2.0, 4.0, 6.0]]])  # mean 4, var 8/3
    assert L.mean_variance_loss(s, t).item() == pytest.approx(2 + 2, rel=1e-6)


def test_mlm_distillation_hand_value():
    # student p = [0.75, 0.25]; label 0; teacher p = [0.2, 0.8]; a second, unmasked row is ignored
    s = torch.tensor([[math.log(3), 0.0], [10.0, -10.0]])
    tl = torch.tensor([[math.log(0.2), math.log(0.8)], [0.0, 0.0]])
    y = torch.tensor([0, -100])
    hard = -math.log(0.75)
    soft = -(0.2 * math.log(0.75) + 0.8 * math.log(0.25))
    assert L.mlm_distillation_loss(s, y, tl, alpha=0.5).item() == pytest.approx(0.5 * hard + 0.5 * soft, rel=1e-5)
    assert L.mlm_distillation_loss(s, y, None).item() == pytest.approx(hard, rel=1e-5)
    assert L.mlm_distillation_loss(s, y, tl, alpha=1.0).item() == pytest.approx(hard, rel=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        L.mlm_distillation_loss(s, y, tl, alpha=1.5)


def test_task_distillation_hand_value():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[2.0, 0.0]])
    y = torch.tensor([1])
    T = 2.0
    pt = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]  # softmax(t / T)
    kl = sum(p * math.log(p / 0.5) for p in pt)
    ce = math.log(2)
    got = L.task_distillation_loss(s, y, t, alpha=0.3, temperature=T).item()
    assert got == pytest.approx(0.3 * ce + 0.7 * T * T * kl, rel=1e-5)
    assert L.task_distillation_loss(s, y).item() == pytest.approx(ce, rel=1e-6)
    with pytest.raises(ValueError):
        L.task_distillation_loss(s)


def test_sentence_pair_loss():
    logits = torch.tensor([[0.0, math.log(3)]])
    assert L.sentence_pair_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_lamb_step_by_hand():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = Lamb([p], lr=0.1, weight_decay=0.0)
    p.grad = torch.tensor([1.0, 1.0])
    opt.step()
    # first step: bias-corrected m / sqrt(v) = g / |g| = [1, 1]; trust ratio ||p|| / ||u|| = 5 / sqrt 2
    step = 0.1 * 5 / math.sqrt(2) / (1 + 1e-6)
    assert p.detach().tolist() == pytest.approx([3 - step, 4 - step], rel=1e-6)


def _lamb_reference(w, grads, lr, wd, adapt, b1=0.9, b2=0.999, eps=1e-6):
    """LAMB (You et al. 2019, Algorithm 2) written out in numpy, step by step."""
    w, m, v = np.array(w, np.float64), 0.0, 0.0
    for t, g in enumerate(grads, 1):
        g = np.array(g, np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * w
        ratio = np.linalg.norm(w) / np.linalg.norm(u) if adapt and np.linalg.norm(w) > 0 else 1.0
        w = w - lr * ratio * u
    return w


@pytest.mark.parametrize("wd, adapt", [(0.01, True), (0.1, True), (0.01, False)])
def test_lamb_several_steps_with_weight_decay_match_the_algorithm(wd, adapt):
    """Three steps with changing gradients and weight decay, with and without layer adaptation
    (``adapt=False`` is how Google's BERT LAMB treats biases and norms)."""
    w0 = [[0.5, -1.0, 2.0], [0.3, 0.0, -0.7]]
    grads = [[[0.1, -0.2, 0.3], [1.0, 0.5, -0.5]], [[-0.3, 0.1, 0.0], [0.2, -0.4, 0.9]],
             [[0.05, 0.05, -0.1], [-1.0, 0.3, 0.2]]]
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = Lamb([p], lr=0.05, weight_decay=wd, adapt=adapt)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), _lamb_reference(w0, grads, 0.05, wd, adapt), rtol=1e-9)


def test_param_groups_no_decay_and_scales():
    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    groups = param_groups(m.named_parameters(), 0.01, lambda n: 0.0 if n.startswith("1.") else 2.0)
    assert [(g["weight_decay"], g["lr_scale"], g["names"]) for g in groups] == [
        (0.01, 2.0, ["0.weight"]), (0.0, 2.0, ["0.bias"])]


def test_warmup_linear_schedule():
    f = warmup_linear(10, 2)
    assert [round(f(i), 3) for i in range(11)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
