"""Loss values against formulas written out by hand, the margin-0 reductions, and finite gradients."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gallery.errors import InvalidInputError
from gallery.train import (
    ArcFaceLoss,
    CombinedMarginLoss,
    ContrastiveLoss,
    CosFaceLoss,
    NormSoftmaxLoss,
    SoftmaxLoss,
    SphereFaceLoss,
    TripletLoss,
    make_loss,
    sphereface_psi,
)

torch.set_default_dtype(torch.float32)


def unit(deg):
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


@pytest.fixture
def batch():
    """Three 2-d features and three class centres at known angles (degrees), so every cosine is known."""
    x = torch.tensor([[2.0 * v for v in unit(10)], [0.5 * v for v in unit(100)], [3.0 * v for v in unit(200)]])
    W = torch.tensor([unit(0), unit(120), unit(240)])
    y = torch.tensor([0, 1, 2])
    return x, W, y


def cosines_by_hand(x, W):
    """cos(theta_ij) by an explicit double loop over rows and centres."""
    out = np.zeros((len(x), len(W)))
    for i, xi in enumerate(x.tolist()):
        for j, wj in enumerate(W.tolist()):
            out[i, j] = np.dot(xi, wj) / (np.linalg.norm(xi) * np.linalg.norm(wj))
    return out


def ce_by_hand(logits, y):
    total = 0.0
    for row, t in zip(logits, y.tolist()):
        total += -row[t] + math.log(sum(math.exp(v) for v in row))
    return total / len(logits)


def value(t):
    return float(t.detach())


def with_centres(loss, W):
    with torch.no_grad():
        loss.weight.copy_(W)
    return loss


def test_contract_weight_shape_and_call():
    for cls in (SoftmaxLoss, NormSoftmaxLoss, SphereFaceLoss, CosFaceLoss, ArcFaceLoss):
        loss = cls(7, 5)
        assert isinstance(loss, torch.nn.Module)
        assert loss.weight.shape == (7, 5)
        out = loss(torch.randn(4, 5), torch.tensor([0, 6, 2, 2]))
        assert out.ndim == 0 and torch.isfinite(out)
    assert ArcFaceLoss(3, 2, s=30.0, m=0.2).s == 30.0


def test_softmax_value(batch):
    x, W, y = batch
    loss = with_centres(SoftmaxLoss(3, 2), W)
    with torch.no_grad():
        loss.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    logits = [[float(np.dot(xi, wj)) + b for wj, b in zip(W.tolist(), [0.1, -0.2, 0.3])] for xi in x.tolist()]
    assert value(loss(x, y)) == pytest.approx(ce_by_hand(logits, y), rel=1e-5)


def test_nsl_value(batch):
    x, W, y = batch
    cos = cosines_by_hand(x, W)
    loss = with_centres(NormSoftmaxLoss(3, 2, s=8.0), W)
    assert value(loss(x, y)) == pytest.approx(ce_by_hand(8.0 * cos, y), rel=1e-5)
    assert cos[0, 0] == pytest.approx(math.cos(math.radians(10)))


def test_cosface_value(batch):
    x, W, y = batch
    cos = cosines_by_hand(x, W)
    target = cos.copy()
    for i, t in enumerate(y.tolist()):
        target[i, t] = cos[i, t] - 0.35
    loss = with_centres(CosFaceLoss(3, 2, s=16.0, m=0.35), W)
    assert value(loss(x, y)) == pytest.approx(ce_by_hand(16.0 * target, y), rel=1e-5)


def test_arcface_value_and_logits(batch):
    x, W, y = batch
    s, m = 16.0, 0.5
    cos = cosines_by_hand(x, W)
    expected = s * cos.copy()
    for i, t in enumerate(y.tolist()):
        theta = math.acos(cos[i, t])
        assert theta + m < math.pi
        expected[i, t] = s * math.cos(theta + m)
    loss = with_centres(ArcFaceLoss(3, 2, s=s, m=m), W)
    logits, cols = loss.logits(x, y)
    assert torch.equal(cols, y)
    np.testing.assert_allclose(logits.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert value(loss(x, y)) == pytest.approx(ce_by_hand(expected, y), rel=1e-5)


def test_arcface_beyond_pi_uses_the_documented_fallback():
    """theta + m > pi: the target is cos(theta) - m sin(m), not the (rising) cos(theta + m)."""
    s, m = 10.0, 0.5
    W = torch.tensor([unit(0), unit(90)])
    for deg in (150.0, 170.0, 179.0):
        x = torch.tensor([unit(deg)])
        loss = with_centres(ArcFaceLoss(2, 2, s=s, m=m), W)
        target = value(loss.logits(x, torch.tensor([0]))[0][0, 0])
        c = math.cos(math.radians(deg))
        if math.radians(deg) + m > math.pi:
            assert target == pytest.approx(s * (c - m * math.sin(m)), abs=1e-4)
        else:
            assert target == pytest.approx(s * math.cos(math.radians(deg) + m), abs=1e-4)
    # the target logit never rises as theta grows
    thetas = torch.linspace(0, math.pi, 721)
    loss = ArcFaceLoss(2, 2, s=s, m=m)
    t = loss.target_cosine(torch.cos(thetas)[:, None]).squeeze(1)
    assert (t[1:] <= t[:-1] + 1e-6).all()


def test_arcface_easy_margin():
    loss = ArcFaceLoss(2, 2, s=1.0, m=0.3, easy_margin=True)
    c = torch.tensor([[0.5], [-0.5]])
    t = loss.target_cosine(c)
    assert float(t[0]) == pytest.approx(math.cos(math.acos(0.5) + 0.3), abs=1e-5)
    assert float(t[1]) == pytest.approx(-0.5)


def test_sphereface_psi_by_hand():
    m = 4
    for deg, expected in ((0, 1.0), (22.5, 0.0), (45, -1.0), (67.5, -2.0), (90, -3.0), (180, -7.0)):
        got = float(sphereface_psi(torch.tensor([math.cos(math.radians(deg))]), m))
        assert got == pytest.approx(expected, abs=2e-3), deg
    theta = torch.linspace(0, math.pi, 2001)
    psi = sphereface_psi(torch.cos(theta), m)
    assert (psi[1:] <= psi[:-1] + 1e-5).all(), "psi must decrease monotonically"
    assert (psi[1:] - psi[:-1]).abs().max() < 0.05, "psi must be continuous"


def test_sphereface_value_with_feature_norm_and_annealing(batch):
    x, W, y = batch
    cos = cosines_by_hand(x, W)
    norms = np.linalg.norm(x.numpy(), axis=1)
    loss = with_centres(SphereFaceLoss(3, 2, m=4.0), W)  # s=None: the paper's un-normalised features
    lam = loss.lam
    assert lam == pytest.approx(1000.0)
    expected = cos * norms[:, None]
    for i, t in enumerate(y.tolist()):
        theta = math.acos(cos[i, t])
        k = math.floor(4 * theta / math.pi)
        psi = (-1) ** k * math.cos(4 * theta) - 2 * k
        expected[i, t] = norms[i] * (lam * cos[i, t] + psi) / (1 + lam)
    assert value(loss(x, y)) == pytest.approx(ce_by_hand(expected, y), rel=1e-4)
    # one training step taken: lambda = 1000 / (1 + 0.12); it never goes below lambda_min
    assert loss.lam == pytest.approx(1000.0 / 1.12)
    loss.step.fill_(10**6)
    assert loss.lam == 5.0
    loss.eval()
    loss(x, y)
    assert int(loss.step) == 10**6, "eval calls do not advance the annealing"


@pytest.mark.parametrize("make", [
    lambda: CosFaceLoss(4, 3, s=12.0, m=0.0),
    lambda: ArcFaceLoss(4, 3, s=12.0, m=0.0),
    lambda: CombinedMarginLoss(4, 3, s=12.0, m1=1.0, m2=0.0, m3=0.0),
    lambda: SphereFaceLoss(4, 3, s=12.0, m=1.0),                       # multiplicative: m = 1 is no margin
    lambda: SphereFaceLoss(4, 3, s=12.0, m=1.0, lambda_base=0.0),
], ids=["cosface", "arcface", "combined", "sphereface", "sphereface-no-annealing"])
def test_zero_margin_is_nsl(make):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    loss = make()
    nsl = NormSoftmaxLoss(4, 3, s=12.0)
    nsl.load_state_dict({"weight": loss.weight.detach().clone()})
    assert value(loss(x, y)) == pytest.approx(value(nsl(x, y)), rel=1e-4)
    np.testing.assert_allclose(loss.logits(x, y)[0].detach(), nsl.logits(x, y)[0].detach(), atol=1e-3)


def test_combined_margin_covers_the_three():
    torch.manual_seed(1)
    x, y = torch.randn(32, 6), torch.randint(0, 5, (32,))
    W = torch.randn(5, 6)
    pairs = [
        (CombinedMarginLoss(5, 6, s=10.0, m1=1.0, m2=0.0, m3=0.3), CosFaceLoss(5, 6, s=10.0, m=0.3)),
        (CombinedMarginLoss(5, 6, s=10.0, m1=3.0, m2=0.0, m3=0.0), SphereFaceLoss(5, 6, s=10.0, m=3.0, lambda_base=0.0)),
    ]
    for combined, single in pairs:
        with_centres(combined, W), with_centres(single, W)
        np.testing.assert_allclose(combined.logits(x, y)[0].detach(), single.logits(x, y)[0].detach(), atol=1e-4)
    # ArcFace: equal wherever theta + m <= pi
    combined = with_centres(CombinedMarginLoss(5, 6, s=10.0, m1=1.0, m2=0.4, m3=0.0), W)
    arc = with_centres(ArcFaceLoss(5, 6, s=10.0, m=0.4), W)
    c = torch.linspace(-0.99, 0.99, 199)[:, None]
    inside = c.squeeze(1) > math.cos(math.pi - 0.4)
    np.testing.assert_allclose(combined.target_cosine(c)[inside], arc.target_cosine(c)[inside], atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: NormSoftmaxLoss(3, 2, s=10.0),
    lambda: SphereFaceLoss(3, 2, m=4.0),
    lambda: SphereFaceLoss(3, 2, s=10.0, m=4.0, lambda_base=0.0),
    lambda: CosFaceLoss(3, 2, s=10.0, m=0.35),
    lambda: ArcFaceLoss(3, 2, s=10.0, m=0.5),
    lambda: ArcFaceLoss(3, 2, s=10.0, m=0.5, easy_margin=True),
    lambda: CombinedMarginLoss(3, 2, s=10.0, m1=1.0, m2=0.3, m3=0.2),
    lambda: CombinedMarginLoss(3, 2, s=10.0, m1=2.0, m2=0.3, m3=0.2),
], ids=["nsl", "sphereface", "sphereface-s", "cosface", "arcface", "arcface-easy", "combined", "combined-m1"])
@pytest.mark.parametrize("deg", [0.0, 1e-4, 179.9999, 180.0])
def test_gradients_finite_at_theta_near_0_and_pi(make, deg):
    loss = make()
    W = torch.tensor([unit(0), unit(120), unit(240)])
    with_centres(loss, W)
    x = torch.tensor([unit(deg), unit(deg)], requires_grad=True)
    value = loss(x, torch.tensor([0, 0]))
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(x.grad).all() and torch.isfinite(loss.weight.grad).all()


def test_margins_raise_the_loss_over_nsl():
    """With the same centres and features, a margin penalises the target, so the loss grows."""
    torch.manual_seed(2)
    x, y = torch.randn(64, 8), torch.randint(0, 10, (64,))
    nsl = NormSoftmaxLoss(10, 8, s=16.0)
    base = value(nsl(x, y))
    for loss in (CosFaceLoss(10, 8, s=16.0, m=0.2), ArcFaceLoss(10, 8, s=16.0, m=0.2),
                 SphereFaceLoss(10, 8, s=16.0, m=2.0, lambda_base=0.0)):
        loss.load_state_dict({**loss.state_dict(), "weight": nsl.weight.detach().clone()})
        assert value(loss(x, y)) > base


def test_partial_fc_samples_positives_and_negatives():
    torch.manual_seed(3)
    C, d = 1000, 8
    loss = ArcFaceLoss(C, d, s=10.0, m=0.3, partial_fc=0.05)
    y = torch.tensor([5, 700, 5, 999, 12])
    x = torch.randn(5, d)
    idx, local = loss.sample_classes(y)
    assert len(idx) == 50 and len(set(idx.tolist())) == 50
    assert idx[:3].tolist() == [5, 12, 700, 999][:3] and 999 in idx.tolist()[:4]
    assert torch.equal(idx[local], y), "labels re-indexed into the sampled centres"
    # the logits have one column per sampled centre, and the target column holds the target class's logit
    torch.manual_seed(4)
    logits, cols = loss.logits(x, y)
    assert logits.shape == (5, 50)
    full = ArcFaceLoss(C, d, s=10.0, m=0.3)
    full.load_state_dict(loss.state_dict())
    full_logits, _ = full.logits(x, y)
    np.testing.assert_allclose(logits.gather(1, cols[:, None]).detach(), full_logits.gather(1, y[:, None]).detach(),
                               atol=1e-5)
    # the centres get a sparse gradient touching only the sampled rows
    loss(x, y).backward()
    assert loss.weight.grad.is_sparse
    touched = set(loss.weight.grad.coalesce().indices()[0].tolist())
    assert {5, 12, 700, 999} <= touched and len(touched) <= 50
    # eval mode uses every centre
    loss.eval()
    assert loss.logits(x, y)[0].shape == (5, C)


def test_partial_fc_rate_one_is_the_full_softmax():
    loss = CosFaceLoss(20, 4, partial_fc=1.0)
    assert loss.partial_fc is None and not loss.sparse_grad


def test_contrastive_value_by_hand():
    x = torch.tensor([unit(0), unit(30), unit(90), unit(100)])
    y = torch.tensor([0, 0, 1, 1])
    margin = 0.9
    d = lambda a, b: 1 - math.cos(math.radians(b - a))  # noqa: E731
    angles = [0, 30, 90, 100]
    pos = [d(0, 30), d(90, 100)]
    neg = [d(angles[i], angles[j]) for i in (0, 1) for j in (2, 3)]
    expected = (sum(0.5 * v * v for v in pos) + sum(0.5 * max(0.0, margin - v) ** 2 for v in neg)) / 6
    assert value(ContrastiveLoss(margin=margin, mining="batch-all")(x, y)) == pytest.approx(expected, rel=1e-5)


def test_triplet_value_by_hand():
    x = torch.tensor([unit(0), unit(30), unit(40), unit(100)])
    y = torch.tensor([0, 0, 1, 1])
    d = lambda a, b: 1 - math.cos(math.radians(abs(b - a)))  # noqa: E731
    angles = [0, 30, 40, 100]
    margin = 0.1
    # batch-hard: each anchor's farthest positive and nearest negative
    per_anchor = []
    for a in range(4):
        pos = [p for p in range(4) if p != a and y[p] == y[a]]
        neg = [n for n in range(4) if y[n] != y[a]]
        dp = max(d(angles[a], angles[p]) for p in pos)
        dn = min(d(angles[a], angles[n]) for n in neg)
        per_anchor.append(max(0.0, dp - dn + margin))
    got = value(TripletLoss(margin=margin, mining="batch-hard")(x, y))
    assert got == pytest.approx(sum(per_anchor) / 4, rel=1e-5)


def test_pair_losses_without_pairs_are_zero_and_backpropagate():
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2])  # no positives
    for loss in (TripletLoss(), ContrastiveLoss(mining="batch-hard")):
        v = loss(x, y)
        v.backward()
        assert value(v) == 0.0 and torch.isfinite(x.grad).all()


def test_bad_input_errors():
    loss = ArcFaceLoss(5, 4)
    with pytest.raises(InvalidInputError, match=r"dimension 3 does not match the loss's dim = 4"):
        loss(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(InvalidInputError, match=r"class indices must lie in \[0, 5\), got \[0, 7\]"):
        loss(torch.randn(2, 4), torch.tensor([0, 7]))
    with pytest.raises(InvalidInputError, match="integer class indices"):
        loss(torch.randn(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(InvalidInputError, match="num_classes"):
        ArcFaceLoss(1, 4)
    with pytest.raises(InvalidInputError, match="partial_fc"):
        ArcFaceLoss(5, 4, partial_fc=1.5)
    with pytest.raises(InvalidInputError, match="below pi"):
        ArcFaceLoss(5, 4, m=4.0)
    with pytest.raises(InvalidInputError, match="mining"):
        TripletLoss(mining="hardest")


def test_make_loss_names_and_guards():
    assert isinstance(make_loss("arcface", num_classes=3, dim=2, s=5.0, m=0.1), ArcFaceLoss)
    assert make_loss("triplet", num_classes=3, dim=2, m=0.2, mining="semi-hard").margin == 0.2
    with pytest.raises(InvalidInputError, match="does not apply to the plain softmax"):
        make_loss("softmax", num_classes=3, dim=2, s=3.0)
    with pytest.raises(InvalidInputError, match="nsl"):
        make_loss("nsl", num_classes=3, dim=2, m=0.1)
    with pytest.raises(InvalidInputError, match="no class centres"):
        make_loss("contrastive", num_classes=3, dim=2, partial_fc=0.1)
    with pytest.raises(InvalidInputError, match="expected one of"):
        make_loss("magface", num_classes=3, dim=2)


def test_gradient_matches_finite_differences():
    """ArcFace's analytic gradient agrees with central differences (float64) away from the kinks."""
    torch.manual_seed(5)
    loss = ArcFaceLoss(4, 3, s=4.0, m=0.3).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (5,))
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (x,))
    sphere = SphereFaceLoss(4, 3, s=3.0, m=2.0).double().eval()  # eval: the annealing step stays put
    x2 = F.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sphere(t, y), (x2,))
