"""The evaluation figures; the only module that imports matplotlib.

Each figure either shows its data readably, or says in the figure why it cannot. Axes are zoomed
to the data; the operating threshold is marked on the histograms, ROC, DET and FNIR/FPIR, and the
EER on ROC and DET. A rate of 0 has no place on a log axis and a rate below 1/n cannot be measured
from n trials, so log axes end in a gray band below 1/n where rates of 0 are drawn, and the legend
says so. Figures use matplotlib's object API (no pyplot state, so nothing leaks between calls) and
constrained layout, so titles, legends, colour bars and thumbnails never overlap. Each ``*_figure``
function returns a :class:`matplotlib.figure.Figure`; :func:`save` writes it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .. import metrics
from ..wording import counted

Thumbnail = Callable[[int], Optional[np.ndarray]]

#: The gray band at the low end of a log axis spans this factor below 1/n; rates of 0 sit in its middle.
ZERO_BAND = 3.0
THRESHOLD_COLOUR = "black"
EER_COLOUR = "tab:gray"
#: Below this many non-mated searches the FNIR/FPIR figure says how coarse FPIR is.
FEW_SEARCHES = 10
NO_GENUINE_PAIRS = ("no genuine pairs: every identity in the sample has one record, so 1:1 verification cannot be "
                    "measured (enrol two or more photos of some people)")
DPI = 110


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG."""
    fig.savefig(path, dpi=DPI)
    return Path(path)


def _say(ax, text: str, *, width: int = 48, y: float = 0.5) -> None:
    """Write why a plot is empty or partial across its axes (at height ``y``, in axes fractions)."""
    ax.text(0.5, y, textwrap.fill(text, width), transform=ax.transAxes, ha="center", va="center", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"}, zorder=10)


def _nothing_to_draw(ax, title: str, text: str) -> None:
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    _say(ax, text)


def _zero_band(ax, axis: str, n: int, what: str) -> float:
    """Make ``axis`` logarithmic from the band below 1/n up to 1; return where a rate of 0 is drawn."""
    lowest = 1.0 / n
    low, zero = lowest / ZERO_BAND, lowest / np.sqrt(ZERO_BAND)
    if axis == "x":
        ax.set_xscale("log")
        ax.set_xlim(low, 1.0)
        ax.axvspan(low, lowest, color="0.9", lw=0, zorder=0, label=f"{what} 0 (below 1/{n:,} = {lowest:.2g} is not measurable)")
    else:
        ax.set_yscale("log")
        ax.set_ylim(low, 1.0)
        ax.axhspan(low, lowest, color="0.9", lw=0, zorder=0, label=f"{what} 0 (below 1/{n:,} = {lowest:.2g} is not measurable)")
    return zero


def _on_log(rates: np.ndarray, zero: float) -> np.ndarray:
    return np.where(np.asarray(rates) > 0, rates, zero)


def _zoom_rates(ax, values: np.ndarray) -> None:
    """Linear rate axis zoomed to ``values`` (rates in [0, 1]), with a margin."""
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = max(0.04, 0.08 * (hi - lo))
    ax.set_ylim(max(-pad / 4, lo - pad), min(1.0 + pad / 4, hi + pad))  # a little room for marks at 0 and 1


def _legend(fig, ax, ncols: int = 1) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)


def _separation(curve: metrics.ROC) -> Optional[tuple[float, float]]:
    """(lowest genuine, highest impostor score) when every genuine pair outscores every impostor pair, else None."""
    first_impostor = int(np.argmax(curve.far > 0))
    if curve.tar[first_impostor - 1] < 1.0:
        return None
    lowest_genuine = float(curve.thresholds[int(np.argmax(curve.tar >= 1.0))])
    return lowest_genuine, float(curve.thresholds[first_impostor])


# ---------------------------------------------------------------------- 1:1 figures


def pair_histograms_figure(h: metrics.PairHistograms, *, threshold: Optional[float] = None, source: str = "",
                           eer_threshold: Optional[float] = None):
    """Positive and negative pair scores, raw counts and area-normalised (Oi et al.'s Figure 1), zoomed to the
    scores present, with the operating threshold and the EER threshold marked."""
    fig = _figure(11, 4.6)
    axes = fig.subplots(1, 2)
    counts = h.pos_counts + h.neg_counts
    if counts.sum() == 0:
        for ax in axes:
            _nothing_to_draw(ax, "pair similarities", "no pairs: the sample holds fewer than two records")
        return fig
    centres = (h.edges[:-1] + h.edges[1:]) / 2
    width = np.diff(h.edges)
    used = np.flatnonzero(counts)
    marks = [v for v in (threshold, eer_threshold) if v is not None and np.isfinite(v)]
    lo = min([h.edges[used[0]]] + marks)
    hi = max([h.edges[used[-1] + 1]] + marks)
    pad = max(2 * width[0], 0.04 * (hi - lo))
    for ax, (pos, neg), title, ylabel in (
        (axes[0], (h.pos_counts, h.neg_counts), "raw counts", "pairs per bin (log)"),
        (axes[1], (h.pos, h.neg), "area-normalised", "density"),
    ):
        for values, n, colour, name in ((neg, h.n_neg, "tab:red", "negative"), (pos, h.n_pos, "tab:blue", "positive")):
            some = values > 0
            if some.any():
                ax.bar(centres[some], values[some], width=width[some], color=colour, alpha=0.55,
                       label=f"{name} pairs (n={n:,})")
        if h.n_neg:
            ax.axvline(h.neg_mean, color="tab:red", ls="--", lw=1, label=f"negative mean {h.neg_mean:.3f}")
        if h.n_pos:
            ax.axvline(h.pos_mean, color="tab:blue", ls="--", lw=1, label=f"positive mean {h.pos_mean:.3f}")
        if eer_threshold is not None and np.isfinite(eer_threshold):
            ax.axvline(eer_threshold, color=EER_COLOUR, ls=":", lw=1.5, label=f"EER threshold {eer_threshold:.3f}")
        if threshold is not None:
            ax.axvline(threshold, color=THRESHOLD_COLOUR, lw=1.5, label=f"operating threshold {threshold:.3f} ({source})")
        ax.set_xlim(max(-1.0, lo - pad), min(1.0, hi + pad))
        ax.set_xlabel("cosine similarity (inner product of unit vectors)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if not h.n_pos:
            _say(ax, "no positive pairs: every identity in the sample has one record, so there are no "
                     "genuine scores to show", width=36)
    if h.pos_counts.sum() or h.neg_counts.sum():
        axes[0].set_yscale("log")
    _legend(fig, axes[0], ncols=3)
    means = " / ".join(f"{m:.3f}" if np.isfinite(m) else "n/a" for m in (h.pos_mean, h.neg_mean))
    jsd = f", JSD {h.jsd:.3f} bits" if np.isfinite(h.jsd) else ""
    fig.suptitle(f"pair similarity distributions: positive / negative means {means}{jsd}")
    return fig


def _threshold_label(threshold: float, source: str, rates: str) -> str:
    return f"operating threshold {threshold:.3f} ({source}): {rates}"


def roc_figure(curve: Optional[metrics.ROC], *, threshold: Optional[float] = None, source: str = ""):
    """TAR against FAR (log), from 1/n impostor pairs; the operating point and the EER marked."""
    fig = _figure(6, 5.2)
    ax = fig.subplots()
    title = "ROC, 1:1 verification (accept iff score >= threshold)"
    if curve is None:
        _nothing_to_draw(ax, title, NO_GENUINE_PAIRS)
        return fig
    zero = _zero_band(ax, "x", curve.n_impostor, "FAR")
    at_zero = curve.far == 0
    ax.plot(_on_log(curve.far, zero), curve.tar, color="tab:blue", drawstyle="steps-post",
            label=f"ROC ({curve.n_genuine:,} genuine, {curve.n_impostor:,} impostor pairs)")
    shown = [curve.tar[at_zero].max(), curve.tar[~at_zero]]  # zoomed to the curve from the best TAR at FAR 0
    eer, _ = metrics.equal_error_rate(curve)
    ax.plot([_on_log([eer], zero)[0]], [1 - eer], "o", color=EER_COLOUR, label=f"EER {eer:.4f}")
    shown.append([1 - eer])
    if threshold is not None:
        f, t = metrics.rates_at(curve, threshold)
        ax.plot([_on_log([f], zero)[0]], [t], "*", ms=13, color=THRESHOLD_COLOUR, clip_on=False,
                label=_threshold_label(threshold, source, f"FAR {f:.3g}, TAR {t:.3f}"))
        shown.append([t])
    _zoom_rates(ax, np.concatenate([np.ravel(s) for s in shown]))
    split = _separation(curve)
    if split is not None:
        _say(ax, f"genuine and impostor scores do not overlap (lowest genuine {split[0]:.3f} > highest impostor "
                 f"{split[1]:.3f}): TAR is 1 already at FAR 0", width=44)
    ax.set_xlabel("FAR (false accept rate, log)")
    ax.set_ylabel("TAR (true accept rate)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    _legend(fig, ax)
    return fig


def det_figure(curve: Optional[metrics.ROC], *, threshold: Optional[float] = None, source: str = ""):
    """FRR against FAR, both log; rates of 0 drawn in the bands below 1/n; the operating point and the EER marked."""
    fig = _figure(6, 5.4)
    ax = fig.subplots()
    title = "DET, 1:1 verification"
    if curve is None:
        _nothing_to_draw(ax, title, NO_GENUINE_PAIRS)
        return fig
    zx = _zero_band(ax, "x", curve.n_impostor, "FAR")
    zy = _zero_band(ax, "y", curve.n_genuine, "FRR")
    frr = 1.0 - curve.tar
    ax.plot(_on_log(curve.far[1:], zx), _on_log(frr[1:], zy), color="tab:purple", drawstyle="steps-post", label="DET")
    eer, _ = metrics.equal_error_rate(curve)
    ax.plot([_on_log([eer], zx)[0]], [_on_log([eer], zy)[0]], "o", color=EER_COLOUR, label=f"EER {eer:.4f}")
    if threshold is not None:
        f, t = metrics.rates_at(curve, threshold)
        ax.plot([_on_log([f], zx)[0]], [_on_log([1 - t], zy)[0]], "*", ms=13, color=THRESHOLD_COLOUR, clip_on=False,
                label=_threshold_label(threshold, source, f"FAR {f:.3g}, FRR {1 - t:.3g}"))
    both = (curve.far > 0) & (frr > 0)
    split = _separation(curve)
    if split is not None:
        _say(ax, f"genuine and impostor scores do not overlap (lowest genuine {split[0]:.3f} > highest impostor "
                 f"{split[1]:.3f}): FAR and FRR are never both above 0, so the curve runs along the gray bands "
                 "of rate 0; EER 0", width=40)
    elif both.any():  # zoom to the part of the curve where both rates are measured
        ax.set_xlim(zx / np.sqrt(ZERO_BAND), min(1.0, curve.far[both].max() * 2))
        ax.set_ylim(zy / np.sqrt(ZERO_BAND), min(1.0, frr[both].max() * 2))
    ax.set_xlabel("FAR (false accept rate, log)")
    ax.set_ylabel("FRR (false reject rate, log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    _legend(fig, ax)
    return fig


# ---------------------------------------------------------------------- 1:N figures


def cmc_figure(values: np.ndarray, *, n_mated: int, gallery_identities: Optional[int] = None):
    """CMC(r): the fraction of mated searches with the mate at rank <= r, up to the gallery's identities."""
    fig = _figure(6, 4.8)
    ax = fig.subplots()
    title = "CMC, closed-set 1:N identification"
    if n_mated == 0 or len(values) == 0:
        _nothing_to_draw(ax, title, "no mated searches: none of the probes' identities is enrolled, so there is "
                                    "no rank of a mate to count")
        return fig
    last = len(values) if gallery_identities is None else max(1, min(len(values), gallery_identities))
    values = np.asarray(values)[:last]
    ranks = np.arange(1, last + 1)
    ax.plot(ranks, values, "o-", color="tab:green")
    ax.set_xticks(ranks if last <= 20 else ranks[:: max(1, last // 10)])
    _zoom_rates(ax, values)
    ax.set_xlabel("rank r")
    ax.set_ylabel("fraction of mated searches with the mate at rank <= r")
    ax.set_title(f"{title}\n{n_mated:,} mated searches" + (f", {gallery_identities:,} identities" if gallery_identities else ""))
    ax.grid(True, alpha=0.3)
    return fig


def fnir_fpir_figure(outcomes: metrics.SearchOutcomes, *, threshold: Optional[float] = None, source: str = ""):
    """Open-set 1:N: FNIR against FPIR (log), and both rates against the threshold, with the operating threshold.

    The right panel always has something to show; the left says when the non-mated searches are too few
    for FPIR to be read off below 1/n.
    """
    fig = _figure(11.5, 5.0)
    left, right = fig.subplots(1, 2)
    n_m, n_nm = len(outcomes.mated_rank), len(outcomes.nonmated_best)
    t, fp, fn = metrics.open_set_curve(outcomes)
    title = "FNIR against FPIR"
    if n_nm == 0 or n_m == 0:
        missing = ("no non-mated searches: FPIR cannot be measured (add probes of people who are not enrolled)"
                   if n_nm == 0 else "no mated searches: FNIR cannot be measured (add probes of enrolled people, or "
                                    "enrol two or more photos of some)")
        _nothing_to_draw(left, title, missing)
    else:
        zero = _zero_band(left, "x", n_nm, "FPIR")
        order = np.argsort(fp, kind="stable")
        few = len(t) <= 30
        left.plot(_on_log(fp[order], zero), fn[order], "o-" if few else "-", ms=4, color="tab:orange",
                  drawstyle="steps-post", label=f"{n_m:,} mated, {n_nm:,} non-mated searches")
        shown = [fn[fp == 0].min() if (fp == 0).any() else [], fn[fp > 0]]  # from the best FNIR at FPIR 0
        if threshold is not None:
            fpt, fnt = metrics.fpir(outcomes.nonmated_best, threshold), metrics.fnir(outcomes, threshold)
            left.plot([_on_log([fpt], zero)[0]], [fnt], "*", ms=13, color=THRESHOLD_COLOUR, clip_on=False,
                      label=f"at the operating threshold: FPIR {fpt:.3g}, FNIR {fnt:.3f}")
            shown.append([fnt])
        _zoom_rates(left, np.concatenate([np.ravel(s) for s in shown]))
        if n_nm < FEW_SEARCHES or len(np.unique(fp[fp > 0])) < 3:
            steps = "FPIR is 0 or 1" if n_nm == 1 else f"FPIR moves in steps of 1/{n_nm}"
            _say(left, f"{counted(n_nm, 'non-mated search', 'non-mated searches')}: {steps}, so FNIR at FPIR < "
                       f"{1 / n_nm:.2g} cannot be estimated; the right panel shows both rates against the threshold",
                 width=40, y=0.78)
        left.set_xlabel(f"FPIR (false positive identification rate, log; "
                        f"{counted(n_nm, 'non-mated search', 'non-mated searches')})")
        left.set_ylabel("FNIR (mate not at rank 1 with score >= threshold)")
        left.set_title(title)
        left.grid(True, which="both", alpha=0.3)
    _rates_against_threshold(right, t, fp, fn, n_m, n_nm, threshold, source)
    handles, labels = [], []
    for ax in (right, left):
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.append(h)
            labels.append(label)
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle("open-set 1:N identification")
    return fig


def _rates_against_threshold(ax, t, fp, fn, n_m: int, n_nm: int, threshold: Optional[float], source: str) -> None:
    ax.set_title("FPIR and FNIR against the threshold")
    if len(t) == 0:
        _nothing_to_draw(ax, "FPIR and FNIR against the threshold", "no searches returned a candidate")
        return
    if n_nm:
        ax.plot(t, fp, color="tab:red", drawstyle="steps-post", label=f"FPIR ({n_nm:,} non-mated)")
    if n_m:
        ax.plot(t, fn, color="tab:orange", drawstyle="steps-post", label=f"FNIR ({n_m:,} mated)")
    lo, hi = float(t.min()), float(t.max())
    if threshold is not None:
        ax.axvline(threshold, color=THRESHOLD_COLOUR, lw=1.5, label=f"operating threshold {threshold:.3f} ({source})")
        lo, hi = min(lo, threshold), max(hi, threshold)
    pad = max(0.01, 0.05 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("threshold (cosine; a search is matched iff its best score >= threshold)")
    ax.set_ylabel("rate")
    ax.grid(True, alpha=0.3)


# ---------------------------------------------------------------------- the gallery itself


def similarity_grid_figure(vectors: np.ndarray, labels: Sequence[str], *, title: str,
                           thumbnails: Optional[Sequence] = None, threshold: Optional[float] = None):
    """Cosine of every pair of a few records, with the records (faces when given) on both axes.

    ``title`` says which records these are (a sample, and how it was drawn); the threshold is marked
    on the colour bar.
    """
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    S = vectors @ vectors.T
    n = len(vectors)
    side = 2.2 + 0.6 * n
    fig = _figure(side + 2.0, side + (0.6 if thumbnails is not None else 0))
    ax = fig.subplots()
    vmin = max(-1.0, float(np.floor(min(S.min(), threshold if threshold is not None else 1.0) * 10) / 10))
    vmin = min(vmin, 0.9)
    im = ax.imshow(S, cmap="viridis", vmin=vmin, vmax=1)
    for i in range(n):
        for j in range(n):
            dark = S[i, j] < vmin + 0.5 * (1 - vmin)
            ax.text(j, i, f"{S[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    bar = fig.colorbar(im, ax=ax, shrink=0.7, label="cosine similarity")
    if threshold is not None and vmin <= threshold <= 1:
        bar.ax.axhline(threshold, color="red", lw=2)
        bar.set_label(f"cosine similarity (red: threshold {threshold:.3f})")
    names = [str(s)[:16] for s in labels]
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    if thumbnails is not None and any(img is not None for img in thumbnails):
        for i, img in enumerate(thumbnails):
            if img is None:
                continue
            zoom = 26.0 / max(img.shape[:2])
            for xy, offset in (((i, -0.5), (0, 18)), ((-0.5, i), (-18, 0))):  # above the columns, left of the rows
                ax.add_artist(AnnotationBbox(OffsetImage(img, zoom=zoom), xy, xybox=offset, boxcoords="offset points",
                                             frameon=False, annotation_clip=False))
        ax.tick_params(axis="y", labelleft=False, labelright=True)  # the faces take the left margin
    fig.suptitle(title, fontsize=10)
    return fig


def embedding_map_figure(vectors: np.ndarray, labels: Sequence[str], *, title: str,
                         thumbnails: Optional[Sequence] = None, seed: int = 0, max_identities: int = 20):
    """A t-SNE map of the records, coloured by identity (faces as markers when given)."""
    import matplotlib
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    fig = _figure(9, 6)
    ax = fig.subplots()
    if len(vectors) < 5:
        _nothing_to_draw(ax, title, f"{len(vectors)} records: a t-SNE map needs at least 5")
        return fig
    from sklearn.manifold import TSNE

    labels = np.asarray(labels).astype(str)
    perplexity = float(min(30, max(2, (len(vectors) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(vectors)
    names, codes = np.unique(labels, return_inverse=True)
    cmap = matplotlib.colormaps["tab20"]
    shown = list(np.argsort(-np.bincount(codes), kind="stable")[:max_identities])
    for c in range(len(names)):
        sel = codes == c
        kw = {"color": cmap(shown.index(c) % 20), "label": names[c]} if c in shown else {"color": "lightgray"}
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, **kw)
    if thumbnails is not None:
        for (px, py), img, c in zip(xy, thumbnails, codes):
            if img is not None:
                edge = cmap(shown.index(c) % 20) if c in shown else "lightgray"
                ax.add_artist(AnnotationBbox(OffsetImage(img, zoom=24.0 / max(img.shape[:2])), (px, py), frameon=True,
                                             pad=0.15, bboxprops={"edgecolor": edge, "linewidth": 2}))
    fig.legend(fontsize=7, markerscale=1.5, loc="outside right upper",
              title=None if len(names) <= max_identities else f"{max_identities} largest of {len(names)}\n(others gray)",
              title_fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return fig
