"""The evaluation figures as PNG files; the only module that imports matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .. import metrics

Thumbnail = Callable[[int], Optional[np.ndarray]]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def pair_histograms(h: metrics.PairHistograms, path: Path) -> Path:
    """Positive and negative pair scores, raw counts and area-normalised (Oi et al.'s Figure 1)."""
    plt = _plt()
    centres = (h.edges[:-1] + h.edges[1:]) / 2
    width = np.diff(h.edges)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (pos, neg), title, ylabel in (
        (axes[0], (h.pos_counts, h.neg_counts), "raw counts", "pairs per bin (log)"),
        (axes[1], (h.pos, h.neg), "area-normalised", "density"),
    ):
        ax.bar(centres, neg, width=width, color="tab:red", alpha=0.55, label=f"negative pairs (n={h.n_neg:,})")
        ax.bar(centres, pos, width=width, color="tab:blue", alpha=0.55, label=f"positive pairs (n={h.n_pos:,})")
        ax.axvline(h.neg_mean, color="tab:red", ls="--", lw=1)
        ax.axvline(h.pos_mean, color="tab:blue", ls="--", lw=1)
        ax.set_xlabel("cosine similarity (inner product of unit vectors)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_xlim(-1, 1)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle(f"pair similarity distributions: means {h.pos_mean:.3f} / {h.neg_mean:.3f}, JSD {h.jsd:.3f} bits")
    return _save(fig, path)


def roc(curve: metrics.ROC, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    far = np.maximum(curve.far, 0.5 / curve.n_impostor)
    ax.semilogx(far, curve.tar, color="tab:blue")
    ax.set_xlim(1.0 / curve.n_impostor, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("TAR (true accept rate)")
    ax.set_title("ROC, 1:1 verification (accept iff score >= threshold)")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def det(curve: metrics.ROC, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ok = (curve.far > 0) & (curve.tar < 1)
    ax.loglog(curve.far[ok], 1 - curve.tar[ok], color="tab:purple")
    eer, _ = metrics.equal_error_rate(curve)
    ax.plot([eer], [eer], "o", color="black", label=f"EER {eer:.4f}")
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("FRR (false reject rate)")
    ax.set_title("DET, 1:1 verification")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def cmc(values: np.ndarray, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ranks = np.arange(1, len(values) + 1)
    ax.plot(ranks, values, "o-", color="tab:green")
    ax.set_xticks(ranks if len(ranks) <= 20 else ranks[:: max(1, len(ranks) // 10)])
    ax.set_ylim(min(values.min() - 0.02, 0.9) if len(values) else 0, 1.005)
    ax.set_xlabel("rank r")
    ax.set_ylabel("fraction of mated searches with the mate at rank <= r")
    ax.set_title("CMC, closed-set 1:N identification")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def fnir_fpir(outcomes: metrics.SearchOutcomes, path: Path) -> Path:
    plt = _plt()
    t, fp, fn = metrics.open_set_curve(outcomes)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    n_nm = max(len(outcomes.nonmated_best), 1)
    ok = fp > 0
    ax.semilogx(fp[ok], fn[ok], color="tab:orange")
    ax.set_xlim(min(1.0 / n_nm, 0.5), 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"FPIR (false positive identification rate, {len(outcomes.nonmated_best)} non-mated searches)")
    ax.set_ylabel("FNIR (rank 1, score >= threshold)")
    ax.set_title("open-set 1:N: FNIR against FPIR")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def similarity_grid(vectors: np.ndarray, labels: Sequence[str], path: Path, thumbnails: Optional[Sequence] = None) -> Path:
    """Cosine of every pair of a few records, with the records (faces when given) on both axes."""
    plt = _plt()
    S = vectors @ vectors.T
    n = len(vectors)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.75 * n))
    vmin = max(-1.0, np.floor(S.min() * 10) / 10)  # spread the colours over the scores present
    im = ax.imshow(S, cmap="viridis", vmin=vmin, vmax=1)
    for i in range(n):
        for j in range(n):
            dark = S[i, j] < vmin + 0.5 * (1 - vmin)
            ax.text(j, i, f"{S[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, shrink=0.6, pad=0.2, label="cosine similarity")
    names = [str(s)[:14] for s in labels]
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    if thumbnails is not None:
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        for i, img in enumerate(thumbnails):
            if img is None:
                continue
            zoom = 28.0 / max(img.shape[:2])
            for xy, box in (((i, -0.5), (i, -1.2)), ((-0.5, i), (-1.2, i))):
                ab = AnnotationBbox(OffsetImage(img, zoom=zoom), xy, xybox=box, frameon=False, annotation_clip=False)
                ax.add_artist(ab)
        ax.tick_params(axis="y", labelleft=False, labelright=True)  # the faces take the left margin
    ax.set_title("cosine similarity between records")
    return _save(fig, path)


def embedding_map(vectors: np.ndarray, labels: Sequence[str], path: Path, *, thumbnails: Optional[Sequence] = None,
                  seed: int = 0, max_identities: int = 20) -> Path:
    """A t-SNE map of the records, coloured by identity (faces as markers when given)."""
    from sklearn.manifold import TSNE

    plt = _plt()
    labels = np.asarray(labels).astype(str)
    perplexity = float(min(30, max(2, (len(vectors) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(vectors)
    names, codes = np.unique(labels, return_inverse=True)
    fig, ax = plt.subplots(figsize=(8.5, 6))
    cmap = plt.get_cmap("tab20")
    shown = np.argsort(-np.bincount(codes))[:max_identities]
    for c in range(len(names)):
        sel = codes == c
        kw = {"color": cmap(list(shown).index(c) % 20), "label": names[c]} if c in shown else {"color": "lightgray"}
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, **kw)
    if thumbnails is not None:
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        for (px, py), img, c in zip(xy, thumbnails, codes):
            if img is not None:
                edge = cmap(list(shown).index(c) % 20) if c in shown else "lightgray"
                ax.add_artist(AnnotationBbox(OffsetImage(img, zoom=24.0 / max(img.shape[:2])), (px, py), frameon=True,
                                             pad=0.15, bboxprops={"edgecolor": edge, "linewidth": 2}))
    if len(shown) <= 20:  # beside the map, where it hides no face
        ax.legend(fontsize=7, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(vectors)} gallery embeddings (cosine)")
    return _save(fig, path)
