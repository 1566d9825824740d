"""Losses for training embedders: softmax, the margin softmaxes (NSL, SphereFace, CosFace, ArcFace) and pair losses.

Every softmax-style loss is a :class:`MarginSoftmaxLoss`: the base owns the class-centre matrix
``.weight`` (num_classes, dim), normalises features and centres, optionally samples the negative
centres (partial FC), scales the logits and applies cross-entropy. A margin loss overrides one hook,
:meth:`MarginSoftmaxLoss.target_cosine`, which turns the target class's cosine ``cos(theta_y)`` into
its margin-penalised value; the other logits stay ``s * cos(theta_j)``. All of them are called as
``loss(embeddings, labels)`` and return the mean over the batch.

>>> loss = ArcFaceLoss(num_classes=1000, dim=128, s=64.0, m=0.5)      # doctest: +SKIP
>>> loss(model(images), labels).backward()                            # doctest: +SKIP

The pair losses (:class:`ContrastiveLoss`, :class:`TripletLoss`) own no parameters; they mine pairs or
triplets in the batch (:mod:`gallery.train.mining`) and use the cosine distance ``1 - cos``.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidInputError
from .mining import MINING, cosine_distances, mine_pairs, mine_triplets

LOG = logging.getLogger(__name__)

#: Keeps sqrt(1 - cos^2) and acos away from their infinite slopes at cos = +-1.
EPS = 1e-6


def _check_int(value, name: str, *, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInputError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def _check_float(value, name: str, *, low: float = 0.0, open_low: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or v < low or (open_low and v == low):
        bound = ">" if open_low else ">="
        raise InvalidInputError(f"{name}: expected a finite number {bound} {low}, got {value!r}")
    return v


def check_batch(embeddings: Tensor, labels: Tensor, *, dim: Optional[int] = None,
                num_classes: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Validate a (B, dim) float batch and its B integer labels; return the labels as int64."""
    if not isinstance(embeddings, Tensor) or not isinstance(labels, Tensor):
        raise InvalidInputError("embeddings and labels: expected torch tensors "
                                f"(got {type(embeddings).__name__} and {type(labels).__name__})")
    if embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise InvalidInputError(f"embeddings: expected a (batch, dim) float tensor, got {tuple(embeddings.shape)} "
                                f"{embeddings.dtype}")
    if dim is not None and embeddings.shape[1] != dim:
        raise InvalidInputError(f"embeddings: dimension {embeddings.shape[1]} does not match the loss's dim = {dim}")
    if labels.shape != (embeddings.shape[0],) or labels.is_floating_point() or labels.is_complex():
        raise InvalidInputError(f"labels: expected {embeddings.shape[0]} integer class indices, got shape "
                                f"{tuple(labels.shape)} {labels.dtype}")
    labels = labels.long()
    if num_classes is not None and len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise InvalidInputError(f"labels: class indices must lie in [0, {num_classes}), got [{lo}, {hi}]; "
                                    f"map the labels to 0..num_classes-1 first")
    return embeddings, labels


class MarginSoftmaxLoss(nn.Module):
    """Normalised softmax cross-entropy with a hook for the target-class margin.

    Features and class centres are L2-normalised, so every logit is ``s * cos(theta_j)``; subclasses
    change only the target logit through :meth:`target_cosine`. ``s=None`` keeps the features' own norm
    as the scale (the un-normalised features of SphereFace's A-Softmax).

    ``partial_fc``: with a rate r in (0, 1), each training step builds logits against the batch's own
    (positive) centres plus uniformly sampled negative centres, r * num_classes in all (An et al., "Partial
    FC: Training 10 Million Identities on a Single Machine", ICCVW 2021). The logits, their softmax and
    the centres' gradient then scale with r * num_classes instead of num_classes; the gradient of
    ``.weight`` is sparse (only the sampled rows), so optimise it with ``torch.optim.SparseAdam`` or SGD
    (the training loop does). In eval mode every centre is used.
    """

    def __init__(self, num_classes: int, dim: int, *, s: Optional[float] = 30.0, partial_fc: Optional[float] = None):
        super().__init__()
        self.num_classes = _check_int(num_classes, "num_classes", low=2)
        self.dim = _check_int(dim, "dim")
        self.s = None if s is None else _check_float(s, "s", open_low=True)
        if partial_fc is not None:
            partial_fc = _check_float(partial_fc, "partial_fc", open_low=True)
            if partial_fc > 1:
                raise InvalidInputError(f"partial_fc: expected a sampling rate in (0, 1], got {partial_fc}")
            if partial_fc == 1:
                partial_fc = None
        self.partial_fc = partial_fc
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.dim))
        nn.init.xavier_uniform_(self.weight)

    @property
    def sparse_grad(self) -> bool:
        """True when ``.weight`` receives sparse gradients (partial FC)."""
        return self.partial_fc is not None

    def extra_repr(self) -> str:
        pfc = f", partial_fc={self.partial_fc}" if self.partial_fc else ""
        return f"num_classes={self.num_classes}, dim={self.dim}, s={self.s}{pfc}"

    def target_cosine(self, cos_y: Tensor) -> Tensor:
        """The target class's cosine after the margin; the identity here (no margin: NSL)."""
        return cos_y

    def sample_classes(self, labels: Tensor) -> tuple[Optional[Tensor], Tensor]:
        """Class centres for this step (None: all) and the labels re-indexed into them.

        The positives (classes present in the batch) come first, in increasing order, then randomly
        drawn negatives; the draws use torch's global generator, so ``torch.manual_seed`` fixes them.
        """
        if self.partial_fc is None or not self.training:
            return None, labels
        pos = torch.unique(labels)
        k = max(int(math.ceil(self.partial_fc * self.num_classes)), len(pos))
        need = k - len(pos)
        local = torch.searchsorted(pos, labels)
        if need == 0:
            return pos, local
        # Draw a few more candidates than needed, drop positives and repeats; O(k), not O(num_classes).
        cand = torch.randint(self.num_classes, (2 * need + 64,), device=labels.device)
        cand = cand[~torch.isin(cand, pos)]
        cand = _first_occurrences(cand)
        if len(cand) < need:  # very high rates: fall back to an exact draw over every negative
            mask = torch.ones(self.num_classes, dtype=torch.bool, device=labels.device)
            mask[pos] = False
            rest = torch.nonzero(mask).squeeze(1)
            cand = rest[torch.randperm(len(rest), device=labels.device)]
        return torch.cat([pos, cand[:need]]), local

    def cosines(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, k) cosines to the centres in use, the labels indexed into them, and the feature norms."""
        x, y = check_batch(embeddings, labels, dim=self.dim, num_classes=self.num_classes)
        idx, y = self.sample_classes(y)
        W = self.weight if idx is None else F.embedding(idx, self.weight, sparse=True)
        norms = x.norm(dim=1, keepdim=True)
        cos = F.linear(F.normalize(x, dim=1), F.normalize(W, dim=1))
        return cos, y, norms

    def logits(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Scaled logits with the margin applied to each row's target, and the targets' column indices."""
        cos, y, norms = self.cosines(embeddings, labels)
        target = self.target_cosine(cos.gather(1, y[:, None]))
        cos = cos.scatter(1, y[:, None], target)
        scale = norms if self.s is None else self.s
        return scale * cos, y

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        logits, y = self.logits(embeddings, labels)
        return F.cross_entropy(logits, y)


def _first_occurrences(x: Tensor) -> Tensor:
    """The distinct values of ``x`` in order of first appearance (keeps a random draw random)."""
    uniq, inv = torch.unique(x, return_inverse=True)
    first = torch.full((len(uniq),), len(x), dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inv, torch.arange(len(x), device=x.device), reduce="amin")
    return uniq[torch.argsort(first)]


class SoftmaxLoss(MarginSoftmaxLoss):
    """Plain softmax cross-entropy: logits ``W x + b`` with no normalisation (the baseline every margin paper
    compares against). ``.weight`` (num_classes, dim) holds the class weights, ``.bias`` the biases."""

    def __init__(self, num_classes: int, dim: int, *, bias: bool = True, partial_fc: Optional[float] = None):
        super().__init__(num_classes, dim, s=1.0, partial_fc=partial_fc)
        self.s = None
        self.bias = nn.Parameter(torch.zeros(self.num_classes)) if bias else None

    def logits(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        x, y = check_batch(embeddings, labels, dim=self.dim, num_classes=self.num_classes)
        idx, y = self.sample_classes(y)
        if idx is None:
            return F.linear(x, self.weight, self.bias), y
        W = F.embedding(idx, self.weight, sparse=True)
        b = None if self.bias is None else self.bias[idx]
        return F.linear(x, W, b), y


class NormSoftmaxLoss(MarginSoftmaxLoss):
    """Normalised softmax (NSL): cross-entropy on ``s * cos(theta_j)`` with unit features and centres.

    Wang, Xiang, Cheng and Yuille, "NormFace: L2 Hypersphere Embedding for Face Verification", ACM MM 2017:
    normalising both makes training optimise the cosine used at test time, and the scale ``s`` is needed
    because logits in [-1, 1] cannot drive the softmax loss low (their bound grows with s).
    """

    def __init__(self, num_classes: int, dim: int, *, s: float = 16.0, partial_fc: Optional[float] = None):
        super().__init__(num_classes, dim, s=s, partial_fc=partial_fc)


def sphereface_psi(cos: Tensor, m: float) -> Tensor:
    """SphereFace's monotonic extension of ``cos(m * theta)``: ``(-1)^k cos(m theta) - 2k`` on
    ``theta in [k pi / m, (k + 1) pi / m]``; it decreases over all of [0, pi] and is continuous."""
    theta = torch.acos(cos.clamp(-1 + EPS, 1 - EPS))
    mt = m * theta
    k = torch.floor(mt / math.pi).detach()
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    return sign * torch.cos(mt) - 2.0 * k


class SphereFaceLoss(MarginSoftmaxLoss):
    """A-Softmax with a multiplicative angular margin: the target logit is ``||x|| psi(theta_y)``.

    Liu, Wen, Yu, Li, Raj and Song, "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017.
    The centres are normalised (and have no bias); with ``s=None``, as in the paper, the features keep
    their norm, which scales every logit; a number ``s`` normalises them too and uses ``s`` instead.
    ``psi`` is :func:`sphereface_psi`; ``m`` is an integer in the paper (4), ``m = 1`` means no margin.

    Annealing, as in the paper's training: the target is ``(lambda cos(theta_y) + psi(theta_y)) / (1 + lambda)``
    with ``lambda = max(lambda_min, lambda_base * (1 + gamma * step) ** -power)``, which starts close to
    softmax and tightens as training goes (defaults 1000, 0.12, 1, 5: the released SphereFace solver).
    The step counts training-mode calls; ``lambda_base=0`` turns annealing off (pure ``psi``).
    """

    def __init__(self, num_classes: int, dim: int, *, s: Optional[float] = None, m: float = 4.0,
                 lambda_base: float = 1000.0, lambda_min: float = 5.0, gamma: float = 0.12, power: float = 1.0,
                 partial_fc: Optional[float] = None):
        super().__init__(num_classes, dim, s=s, partial_fc=partial_fc)
        self.m = _check_float(m, "m", low=1.0)
        self.lambda_base = _check_float(lambda_base, "lambda_base")
        self.lambda_min = _check_float(lambda_min, "lambda_min")
        self.gamma = _check_float(gamma, "gamma")
        self.power = _check_float(power, "power")
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def lam(self) -> float:
        """The current annealing weight lambda (0 when annealing is off)."""
        if self.lambda_base == 0:
            return 0.0
        lam = self.lambda_base * (1.0 + self.gamma * float(self.step)) ** (-self.power)
        return max(self.lambda_min, lam)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}, lambda={self.lam:.3g}"

    def target_cosine(self, cos_y: Tensor) -> Tensor:
        psi = sphereface_psi(cos_y, self.m)
        lam = self.lam
        return (lam * cos_y + psi) / (1.0 + lam)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        out = super().forward(embeddings, labels)
        if self.training:
            self.step += 1
        return out


class CosFaceLoss(MarginSoftmaxLoss):
    """Large margin cosine loss (LMCL): the target logit is ``s * (cos(theta_y) - m)``.

    Wang, Wang, Zhou, Ji, Gong, Zhou, Li and Liu, "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR 2018. The margin is additive in cosine space, so it is the same at every angle
    and needs no special case; the paper uses s = 64, m = 0.35.
    """

    def __init__(self, num_classes: int, dim: int, *, s: float = 64.0, m: float = 0.35,
                 partial_fc: Optional[float] = None):
        super().__init__(num_classes, dim, s=s, partial_fc=partial_fc)
        self.m = _check_float(m, "m")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}"

    def target_cosine(self, cos_y: Tensor) -> Tensor:
        return cos_y - self.m


class ArcFaceLoss(MarginSoftmaxLoss):
    """Additive angular margin: the target logit is ``s * cos(theta_y + m)``.

    Deng, Guo, Xue and Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019
    (s = 64, m = 0.5 in the paper). ``cos(theta + m)`` is computed as ``cos(theta) cos(m) - sin(theta) sin(m)``
    with ``sin(theta) = sqrt(max(1 - cos^2, eps))``, so there is no ``acos`` and the gradient stays finite
    at theta = 0 and pi.

    When ``theta + m > pi`` the angle would wrap and ``cos(theta + m)`` would rise again, rewarding a
    worse angle. There, as in the paper's reference implementation, the target is
    ``cos(theta) - m sin(m)`` (a CosFace-style margin that keeps the target decreasing in theta).
    ``easy_margin=True`` instead applies the margin only where ``cos(theta) > 0`` (that implementation's
    other option).
    """

    def __init__(self, num_classes: int, dim: int, *, s: float = 64.0, m: float = 0.5, easy_margin: bool = False,
                 partial_fc: Optional[float] = None):
        super().__init__(num_classes, dim, s=s, partial_fc=partial_fc)
        self.m = _check_float(m, "m")
        if self.m >= math.pi:
            raise InvalidInputError(f"m: an angular margin must be below pi, got {m}")
        self.easy_margin = bool(easy_margin)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}" + (", easy_margin=True" if self.easy_margin else "")

    def target_cosine(self, cos_y: Tensor) -> Tensor:
        sin_y = torch.sqrt((1.0 - cos_y * cos_y).clamp_min(EPS))
        phi = cos_y * math.cos(self.m) - sin_y * math.sin(self.m)
        if self.easy_margin:
            return torch.where(cos_y > 0, phi, cos_y)
        return torch.where(cos_y > math.cos(math.pi - self.m), phi, cos_y - self.m * math.sin(self.m))


class CombinedMarginLoss(MarginSoftmaxLoss):
    """The combined margin ``s * (cos(m1 theta_y + m2) - m3)`` that covers the three above.

    Deng et al. (ArcFace, CVPR 2019, Sec. 2.3): ``(m1, m2, m3) = (m, 0, 0)`` is SphereFace (no
    annealing, normalised features), ``(1, m, 0)`` ArcFace and ``(1, 0, m)`` CosFace. Where
    ``m1 theta + m2`` passes pi, SphereFace's monotonic extension ``(-1)^k cos(.) - 2k`` keeps the target
    decreasing (so for ``(1, m, 0)`` beyond ``theta = pi - m`` it differs from :class:`ArcFaceLoss`'s
    linear fallback). ``m1 = 1`` uses the trigonometric identity (finite gradients at theta = 0);
    other ``m1`` go through ``acos`` of the cosine clamped to ``[-1 + eps, 1 - eps]``.
    """

    def __init__(self, num_classes: int, dim: int, *, s: float = 64.0, m1: float = 1.0, m2: float = 0.3,
                 m3: float = 0.2, partial_fc: Optional[float] = None):
        super().__init__(num_classes, dim, s=s, partial_fc=partial_fc)
        self.m1 = _check_float(m1, "m1", low=1.0)
        self.m2 = _check_float(m2, "m2")
        self.m3 = _check_float(m3, "m3")
        if self.m2 >= math.pi:
            raise InvalidInputError(f"m2: an angular margin must be below pi, got {m2}")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m1={self.m1}, m2={self.m2}, m3={self.m3}"

    def target_cosine(self, cos_y: Tensor) -> Tensor:
        if self.m1 == 1.0:
            sin_y = torch.sqrt((1.0 - cos_y * cos_y).clamp_min(EPS))
            inside = cos_y * math.cos(self.m2) - sin_y * math.sin(self.m2)
            # beyond theta = pi - m2 the extension's k = 1 piece: -cos(theta + m2) - 2
            below_pi = cos_y > math.cos(math.pi - self.m2)
            phi = torch.where(below_pi, inside, -inside - 2.0)
        else:
            theta = torch.acos(cos_y.clamp(-1 + EPS, 1 - EPS))
            a = self.m1 * theta + self.m2
            k = torch.floor(a / math.pi).detach()
            phi = (1.0 - 2.0 * torch.remainder(k, 2.0)) * torch.cos(a) - 2.0 * k
        return phi - self.m3


class ContrastiveLoss(nn.Module):
    """Contrastive loss with a margin on the cosine distance ``d = 1 - cos`` of L2-normalised embeddings.

    Hadsell, Chopra and LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006:
    ``L = 1/2 d^2`` for a positive pair and ``1/2 max(0, margin - d)^2`` for a negative pair (the paper's
    Euclidean distance is replaced by the cosine distance the gallery ranks by; on unit vectors the
    squared Euclidean distance is ``2 d``). The mean is over the mined pairs (:func:`mine_pairs`);
    a batch without any is a zero loss that still backpropagates.
    """

    def __init__(self, margin: float = 0.5, mining: str = "batch-all"):
        super().__init__()
        self.margin = _check_float(margin, "margin")
        self.mining = _check_mining(mining)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}"

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        x, y = check_batch(embeddings, labels)
        x = F.normalize(x, dim=1)
        pairs = mine_pairs(x.detach(), y, mining=self.mining, margin=self.margin)
        if pairs.count == 0:
            return x.sum() * 0.0
        d_pos = 1.0 - (x[pairs.pos_i] * x[pairs.pos_j]).sum(1)
        d_neg = 1.0 - (x[pairs.neg_i] * x[pairs.neg_j]).sum(1)
        total = 0.5 * (d_pos.pow(2).sum() + F.relu(self.margin - d_neg).pow(2).sum())
        return total / pairs.count


class TripletLoss(nn.Module):
    """Triplet loss ``max(0, d(a, p) - d(a, n) + margin)`` on the cosine distance ``d = 1 - cos``.

    Schroff, Kalenichenko and Philbin, "FaceNet: A Unified Embedding for Face Recognition and Clustering",
    CVPR 2015 (the loss and semi-hard negatives), and Hermans, Beyer and Leibe, "In Defense of the Triplet
    Loss for Person Re-Identification", arXiv 2017 (batch-hard). FaceNet's margin 0.2 on squared Euclidean
    distances of unit vectors is 0.1 here (squared Euclidean = 2 d). The mean is over the mined triplets
    (:func:`mine_triplets`); batches should hold several images per class (``pk_batches``).
    """

    def __init__(self, margin: float = 0.1, mining: str = "batch-hard"):
        super().__init__()
        self.margin = _check_float(margin, "margin")
        self.mining = _check_mining(mining)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}"

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        x, y = check_batch(embeddings, labels)
        x = F.normalize(x, dim=1)
        t = mine_triplets(x.detach(), y, mining=self.mining, margin=self.margin)
        if len(t.anchor) == 0:
            return x.sum() * 0.0
        d_ap = 1.0 - (x[t.anchor] * x[t.positive]).sum(1)
        d_an = 1.0 - (x[t.anchor] * x[t.negative]).sum(1)
        return F.relu(d_ap - d_an + self.margin).mean()


def _check_mining(mining: str) -> str:
    if mining not in MINING:
        raise InvalidInputError(f"mining: expected one of {', '.join(MINING)}, got {mining!r}")
    return mining


__all__ = [
    "ArcFaceLoss",
    "CombinedMarginLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "MarginSoftmaxLoss",
    "NormSoftmaxLoss",
    "SoftmaxLoss",
    "SphereFaceLoss",
    "TripletLoss",
    "check_batch",
    "cosine_distances",
    "sphereface_psi",
]
