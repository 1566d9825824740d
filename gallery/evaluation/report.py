"""Writing an evaluation: metrics.json, the PNG figures, and a report in Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import plots
from ..wording import counted
from .evaluate import Evaluation, sample_identities

GRID_IDENTITIES = 6
MAP_RECORDS = 1000

FIGURES = (
    ("histograms.png", "Positive and negative pair similarities"),
    ("roc.png", "ROC (1:1)"),
    ("det.png", "DET (1:1)"),
    ("cmc.png", "CMC (closed-set 1:N)"),
    ("fnir_fpir.png", "FNIR against FPIR (open-set 1:N)"),
    ("similarity_grid.png", "Similarity grid"),
    ("embedding_map.png", "t-SNE map of the gallery"),
)


def grid_records(ev: Evaluation) -> tuple[np.ndarray, str]:
    """The records of the similarity grid (two of each of the first few identities that have two), and a
    title that says what they are: all the records, or which sample of them."""
    names, codes = np.unique(ev.labels, return_inverse=True)
    pairs = np.flatnonzero(np.bincount(codes) >= 2)
    rows: list[int] = []
    for c in pairs[:GRID_IDENTITIES]:
        rows.extend(np.flatnonzero(codes == c)[:2])
    how = f"2 records of each of {counted(min(len(pairs), GRID_IDENTITIES), 'identity', 'identities')}"
    if not rows:
        rows = list(range(min(len(ev.labels), 2 * GRID_IDENTITIES)))
        how = "the first records (no identity has two)"
    total = ev.summary["gallery"]["records"]
    if len(rows) >= total:
        return np.asarray(rows, np.int64), f"cosine similarity between all {total} records"
    return (np.asarray(rows, np.int64),
            f"cosine similarity in a sample of {len(rows)} of the gallery's {total} records: {how}")


def _map_title(shown: int, summary: dict) -> str:
    total = summary["gallery"]["records"]
    if shown >= total:
        return f"t-SNE of all {total} gallery embeddings (cosine)"
    return f"t-SNE of a sample of {shown} of the gallery's {total} embeddings (whole identities, cosine)"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _summary_rows(s: dict) -> list[tuple[str, str]]:
    r, d, v, i = s["retrieval"], s["distribution"], s["verification"], s["identification"]
    rows = [
        ("records / identities (sampled)", f"{s['sample']['records']} / {s['sample']['identities']}"),
        ("Recall@1", _fmt(r.get("recall@1"))),
        ("R-Precision", _fmt(r.get("r_precision"))),
        ("MAP@R", _fmt(r.get("map@r"))),
        ("NMI", _fmt(r.get("nmi"))),
        ("positive / negative mean cosine", f"{d['pos_mean']:.4f} / {d['neg_mean']:.4f}"),
        ("JSD (bits)", _fmt(d["jsd"])),
        ("EER (1:1)", "n/a (no genuine pairs)" if v["eer"] is None else f"{v['eer']:.4f} at cosine {v['eer_threshold']:.4f}"),
    ]
    missing_far = "n/a (no genuine pairs)" if v["eer"] is None else "n/a (too few impostor pairs)"
    for far, x in v["tar_at_far"].items():
        rows.append((f"TAR @ FAR {far}", missing_far if x is None else f"{x['tar']:.4f} (threshold {x['threshold']:.4f})"))
    rows.append(("1:N protocol", f"{i['protocol']}: {i['n_mated']} mated, {i['n_nonmated']} non-mated searches, "
                                 f"{i['gallery_identities']} identities"))
    for rank, x in i["cmc"].items():
        rows.append((f"CMC {rank}", _fmt(x)))
    for fp, x in i["fnir_at_fpir"].items():
        rows.append((f"FNIR @ FPIR {fp}", "n/a (too few non-mated searches)" if x is None
                     else f"n/a (no mated searches; threshold {x['threshold']:.4f})" if x["fnir"] is None
                     else f"{x['fnir']:.4f} (threshold {x['threshold']:.4f})"))
    if "operating_point" in s:
        rows.append(("operating threshold", _operating_point_text(s["operating_point"])))
    return rows


def _operating_point_text(op: dict) -> str:
    """``0.9400 (model-default): FAR 0.0000, TAR 0.9767 on pairs; FPIR 0.0000, FNIR 0.2500 on searches``."""
    pairs = "no genuine pairs" if op["far"] is None else f"FAR {op['far']:.4f}, TAR {op['tar']:.4f} on pairs"
    fpir = "FPIR n/a (no non-mated searches)" if op["fpir"] is None else f"FPIR {op['fpir']:.4f}"
    fnir = "FNIR n/a (no mated searches)" if op["fnir"] is None else f"FNIR {op['fnir']:.4f}"
    return f"{op['threshold']:.4f} ({op['source']}): {pairs}; {fpir}, {fnir} on searches"


def write_report(
    ev: Evaluation,
    out_dir: Path,
    *,
    thumbnail: Optional[Callable[[int], Optional[np.ndarray]]] = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write metrics.json, the figures, report.md and report.html into ``out_dir``; returns their paths.

    ``thumbnail(record_id)`` may return an RGB image of a record (a face) to draw on the grid and map.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json"}
    paths["metrics"].write_text(json.dumps(ev.summary, indent=2, default=float) + "\n", encoding="utf-8")
    t, source = (ev.threshold, ev.threshold_source) if np.isfinite(ev.threshold) else (None, "")
    eer_t = ev.summary["verification"]["eer_threshold"]
    i = ev.summary["identification"]
    grid, grid_title = grid_records(ev)
    thumbs = (lambda rows: [thumbnail(int(ev.record_ids[r])) for r in rows]) if thumbnail else (lambda rows: None)
    shown = sample_identities(ev.record_ids, ev.labels, MAP_RECORDS, seed)
    drawings = {
        "histograms.png": lambda: plots.pair_histograms_figure(ev.histograms, threshold=t, source=source, eer_threshold=eer_t),
        "roc.png": lambda: plots.roc_figure(ev.roc, threshold=t, source=source),
        "det.png": lambda: plots.det_figure(ev.roc, threshold=t, source=source),
        "cmc.png": lambda: plots.cmc_figure(ev.cmc, n_mated=i["n_mated"], gallery_identities=i["gallery_identities"]),
        "fnir_fpir.png": lambda: plots.fnir_fpir_figure(ev.outcomes, threshold=t, source=source),
        "similarity_grid.png": lambda: plots.similarity_grid_figure(ev.vectors[grid], ev.labels[grid], title=grid_title,
                                                                    thumbnails=thumbs(grid), threshold=t),
        "embedding_map.png": lambda: plots.embedding_map_figure(ev.vectors[shown], ev.labels[shown],
                                                                title=_map_title(len(shown), ev.summary),
                                                                thumbnails=thumbs(shown), seed=seed),
    }
    for name, draw in drawings.items():
        paths[name] = plots.save(draw(), out / name)
    rows = _summary_rows(ev.summary)
    figures = [(name, title) for name, title in FIGURES if name in paths]
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(_markdown(ev.summary, rows, figures), encoding="utf-8")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(_html(ev.summary, rows, figures, out), encoding="utf-8")
    return paths


def _markdown(summary: dict, rows, figures) -> str:
    g = summary["gallery"]
    lines = [f"# Evaluation of `{g['path']}`", "",
             f"Model `{g['model']}`, {g['records']} records of {g['identities']} identities. "
             "Scores are cosine similarities; a match is score >= threshold.", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    for name, title in figures:
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    return "\n".join(lines) + "\n"


def _html(summary: dict, rows, figures, out: Path) -> str:
    g = summary["gallery"]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    imgs = "".join(
        f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,"
        f"{base64.b64encode((out / name).read_bytes()).decode('ascii')}'/>"
        for name, title in figures
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>gallery evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td{padding:2px 12px}"
        "img{max-width:100%}table{border-collapse:collapse}tr:nth-child(even){background:#f2f2f2}</style></head><body>"
        f"<h1>Evaluation of {html.escape(g['path'])}</h1><p>Model <code>{html.escape(g['model'])}</code>, "
        f"{g['records']} records of {g['identities']} identities. Scores are cosine similarities; a match is "
        f"score &gt;= threshold.</p><table>{table}</table>{imgs}</body></html>\n"
    )
