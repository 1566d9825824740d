"""Every figure shows its data readably or says in the figure why it cannot, and no library warning leaks.

Each test draws one figure from a small hand-made case, renders it with warnings turned into errors,
and checks what a reader would see: axis limits around the data, the operating threshold and EER as
artists, and the sentence that explains a degenerate case.
"""

import io
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnnotationBbox
from matplotlib.text import Text

from gallery import metrics
from gallery.evaluation import plots

T = 0.94


def rendered(fig):
    """``fig`` drawn to a PNG in memory with every warning an error (matplotlib warns when it draws)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(io.BytesIO(), format="png")
    return fig


def words(fig) -> str:
    """Every text in the figure (titles, labels, legends, notes), whitespace collapsed."""
    return " ".join(" ".join(t.get_text().split()) for t in fig.findobj(Text) if t.get_text())


def lines_labelled(ax, start: str) -> list[Line2D]:
    return [line for line in ax.get_lines() if str(line.get_label()).startswith(start)]


def histograms(pos, neg) -> metrics.PairHistograms:
    edges = np.linspace(-1, 1, metrics.DEFAULT_BINS + 1)
    pc, nc = np.histogram(pos, edges)[0], np.histogram(neg, edges)[0]
    width = np.diff(edges)

    def density(c):
        return c / (c.sum() * width) if c.sum() else np.zeros(len(c))

    return metrics.PairHistograms(density(pc), density(nc), edges, pc, nc,
                                  float(np.mean(pos)) if len(pos) else float("nan"), float(np.mean(neg)),
                                  metrics.jensen_shannon(pc, nc) if len(pos) else float("nan"))


@pytest.fixture(scope="module")
def face_like():
    """Scores as the real photos give them: all in 0.7..1.0, genuine above 0.93, impostors below 0.88."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.93, 1.0, 86), rng.uniform(0.74, 0.88, 167)


@pytest.fixture(scope="module")
def overlapping():
    rng = np.random.default_rng(1)
    return rng.normal(0.6, 0.1, 500).clip(-1, 1), rng.normal(0.0, 0.15, 5000).clip(-1, 1)


def roc_of(pos, neg) -> metrics.ROC:
    return metrics.roc(np.r_[pos, neg], np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)])


def test_histograms_zoom_to_the_scores_and_mark_the_threshold_and_eer(face_like):
    fig = rendered(plots.pair_histograms_figure(histograms(*face_like), threshold=T, source="model-default",
                                                eer_threshold=0.9))
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert 0.65 <= lo < 0.74 and 0.99 < hi <= 1.0
        (line,) = lines_labelled(ax, "operating threshold 0.940 (model-default)")
        assert list(line.get_xdata()) == [T, T]
        assert lines_labelled(ax, "EER threshold 0.900")


def test_histograms_without_positive_pairs_say_so(face_like):
    fig = rendered(plots.pair_histograms_figure(histograms([], face_like[1]), threshold=T, source="fallback"))
    assert "no positive pairs: every identity in the sample has one record" in words(fig)
    assert "nan" not in words(fig)


def test_roc_marks_the_operating_point_and_eer_and_zooms_to_the_curve(overlapping):
    curve = roc_of(*overlapping)
    fig = rendered(plots.roc_figure(curve, threshold=0.3, source="calibrated"))
    (ax,) = fig.axes
    far, tar = metrics.rates_at(curve, 0.3)
    (point,) = lines_labelled(ax, "operating threshold 0.300 (calibrated)")
    assert point.get_xdata()[0] == pytest.approx(far) and point.get_ydata()[0] == pytest.approx(tar)
    eer, _ = metrics.equal_error_rate(curve)
    (mark,) = lines_labelled(ax, f"EER {eer:.4f}")
    assert mark.get_ydata()[0] == pytest.approx(1 - eer)
    assert ax.get_xlim() == pytest.approx((1 / 5000 / plots.ZERO_BAND, 1.0))
    assert ax.get_ylim()[0] > 0 and ax.get_ylim()[1] <= 1.01


def test_roc_of_separated_scores_says_they_do_not_overlap_and_draws_far_0_in_the_band(face_like):
    curve = roc_of(*face_like)
    fig = rendered(plots.roc_figure(curve, threshold=T, source="model-default"))
    text = words(fig)
    assert "genuine and impostor scores do not overlap" in text and "TAR is 1 already at FAR 0" in text
    assert "FAR 0 (below 1/167 = 0.006 is not measurable)" in text
    (point,) = lines_labelled(fig.axes[0], "operating threshold")
    band_low, band_high = 1 / 167 / plots.ZERO_BAND, 1 / 167
    assert band_low < point.get_xdata()[0] < band_high  # FAR 0 at the threshold: inside the band


def test_det_of_separated_scores_keeps_its_axes_on_rates_and_says_why_there_is_no_curve(face_like):
    fig = rendered(plots.det_figure(roc_of(*face_like), threshold=T, source="model-default"))
    (ax,) = fig.axes
    assert 0 < ax.get_xlim()[0] < ax.get_xlim()[1] <= 1 and 0 < ax.get_ylim()[0] < ax.get_ylim()[1] <= 1
    assert "FAR and FRR are never both above 0" in words(fig) and "EER 0" in words(fig)
    assert lines_labelled(ax, "operating threshold 0.940") and lines_labelled(ax, "EER 0.0000")


def test_det_zooms_to_where_both_rates_are_measured(overlapping):
    curve = roc_of(*overlapping)
    fig = rendered(plots.det_figure(curve, threshold=0.3, source="calibrated"))
    (ax,) = fig.axes
    frr = 1 - curve.tar
    both = (curve.far > 0) & (frr > 0)
    assert ax.get_xlim()[1] <= min(1.0, 2 * curve.far[both].max()) and ax.get_ylim()[1] <= min(1.0, 2 * frr[both].max())
    eer, _ = metrics.equal_error_rate(curve)
    (mark,) = lines_labelled(ax, "EER")
    assert mark.get_xdata()[0] == pytest.approx(eer) == pytest.approx(mark.get_ydata()[0])


@pytest.mark.parametrize("figure", [plots.roc_figure, plots.det_figure])
def test_roc_and_det_without_genuine_pairs_say_so(figure):
    fig = rendered(figure(None, threshold=T, source="fallback"))
    assert "no genuine pairs: every identity in the sample has one record" in words(fig)


def outcomes(mated_scores, nonmated_best) -> metrics.SearchOutcomes:
    m = np.asarray(mated_scores, float)
    return metrics.SearchOutcomes(np.ones(len(m)), m, np.asarray(nonmated_best, float))


def test_fnir_fpir_with_few_non_mated_searches_says_what_cannot_be_estimated():
    fig = rendered(plots.fnir_fpir_figure(outcomes([0.97, 0.95, 0.99, 0.93], [0.90, 0.85, 0.88]), threshold=T,
                                          source="model-default"))
    text = words(fig)
    assert "3 non-mated searches: FPIR moves in steps of 1/3, so FNIR at FPIR < 0.33 cannot be estimated" in text
    left, right = fig.axes
    assert lines_labelled(left, "at the operating threshold: FPIR 0, FNIR 0.250")
    (line,) = lines_labelled(right, "operating threshold 0.940 (model-default)")
    assert list(line.get_xdata()) == [T, T]
    lo, hi = right.get_xlim()
    assert 0.8 < lo < 0.85 and 0.99 < hi < 1.05  # zoomed to the scores, not -1..1


def test_fnir_fpir_zooms_its_fnir_axis_to_the_curve():
    rng = np.random.default_rng(2)
    fig = rendered(plots.fnir_fpir_figure(outcomes(rng.uniform(0.6, 0.9, 200), rng.uniform(0.1, 0.55, 200)),
                                          threshold=0.5, source="calibrated"))
    left, _ = fig.axes
    assert left.get_ylim()[1] < 0.1  # FNIR is 0 beyond FPIR 0 here; a 0..1 axis would flatten it onto the axis
    assert "cannot be estimated" not in words(fig)


@pytest.mark.parametrize("mated, nonmated, message, plotted", [
    ([0.9, 0.8], [], "no non-mated searches: FPIR cannot be measured", "FNIR (2 mated)"),
    ([], [0.5, 0.4], "no mated searches: FNIR cannot be measured", "FPIR (2 non-mated)"),
])
def test_fnir_fpir_without_one_kind_of_search_says_which_and_still_plots_the_other(mated, nonmated, message, plotted):
    fig = rendered(plots.fnir_fpir_figure(outcomes(mated, nonmated), threshold=T, source="fallback"))
    assert message in words(fig)
    _, right = fig.axes
    assert [line.get_label() for line in right.get_lines()] == [plotted, "operating threshold 0.940 (fallback)"]


def test_cmc_without_mated_searches_says_so_and_stops_at_the_gallery_size():
    assert "no mated searches: none of the probes' identities is enrolled" in words(
        rendered(plots.cmc_figure(np.zeros(0), n_mated=0)))
    fig = rendered(plots.cmc_figure(np.r_[0.75, 0.75, np.ones(18)], n_mated=4, gallery_identities=5))
    (ax,) = fig.axes
    (curve,) = ax.get_lines()
    assert list(curve.get_xdata()) == [1, 2, 3, 4, 5] and 0.6 < ax.get_ylim()[0] < 0.75


def test_similarity_grid_keeps_thumbnails_clear_of_the_title_and_marks_the_threshold():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    faces = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(10)]
    title = "cosine similarity in a sample of 10 of the gallery's 23 records: 2 records of each of 5 identities"
    fig = rendered(plots.similarity_grid_figure(x, [f"p{i // 2}" for i in range(10)], title=title, thumbnails=faces,
                                                threshold=0.5))
    assert title in words(fig)
    renderer = FigureCanvasAgg(fig).get_renderer()
    top = fig._suptitle.get_window_extent(renderer)
    boxes = [a.get_window_extent(renderer) for a in fig.findobj(AnnotationBbox)]
    assert len(boxes) == 20 and not any(top.overlaps(b) for b in boxes)
    colourbar = fig.axes[1]
    assert [list(line.get_ydata()) for line in colourbar.get_lines()] == [[0.5, 0.5]]


def test_a_map_of_too_few_records_says_so():
    x = np.eye(3, 8)
    fig = rendered(plots.embedding_map_figure(x, ["a", "b", "c"], title="t-SNE of all 3 gallery embeddings"))
    assert "3 records: a t-SNE map needs at least 5" in words(fig)
