"""Writing an evaluation: metrics.json, the PNG figures, and a report in Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import plots
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


def _grid_rows(ev: Evaluation) -> np.ndarray:
    names, codes = np.unique(ev.labels, return_inverse=True)
    rows = []
    for c in np.flatnonzero(np.bincount(codes) >= 2)[:GRID_IDENTITIES]:
        rows.extend(np.flatnonzero(codes == c)[:2])
    return np.asarray(rows if rows else np.arange(min(len(ev.labels), 2 * GRID_IDENTITIES)), dtype=np.int64)


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
        ("EER (1:1)", f"{v['eer']:.4f} at cosine {v['eer_threshold']:.4f}"),
    ]
    for far, x in v["tar_at_far"].items():
        rows.append((f"TAR @ FAR {far}", "n/a (too few impostor pairs)" if x is None else f"{x['tar']:.4f} (threshold {x['threshold']:.4f})"))
    rows.append(("1:N protocol", f"{i['protocol']}: {i['n_mated']} mated, {i['n_nonmated']} non-mated searches, "
                                 f"{i['gallery_identities']} identities"))
    for rank, x in i["cmc"].items():
        rows.append((f"CMC {rank}", _fmt(x)))
    for fp, x in i["fnir_at_fpir"].items():
        rows.append((f"FNIR @ FPIR {fp}", "n/a (too few non-mated searches)" if x is None else f"{x['fnir']:.4f} (threshold {x['threshold']:.4f})"))
    return rows


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
    paths["histograms.png"] = plots.pair_histograms(ev.histograms, out / "histograms.png")
    paths["roc.png"] = plots.roc(ev.roc, out / "roc.png")
    paths["det.png"] = plots.det(ev.roc, out / "det.png")
    if len(ev.cmc):
        paths["cmc.png"] = plots.cmc(ev.cmc, out / "cmc.png")
    if len(ev.outcomes.nonmated_best) and len(ev.outcomes.mated_rank):
        paths["fnir_fpir.png"] = plots.fnir_fpir(ev.outcomes, out / "fnir_fpir.png")
    grid = _grid_rows(ev)
    thumbs = (lambda rows: [thumbnail(int(ev.record_ids[r])) for r in rows]) if thumbnail else (lambda rows: None)
    paths["similarity_grid.png"] = plots.similarity_grid(ev.vectors[grid], ev.labels[grid], out / "similarity_grid.png", thumbs(grid))
    if len(ev.vectors) >= 5:
        rows = sample_identities(ev.record_ids, ev.labels, MAP_RECORDS, seed)
        paths["embedding_map.png"] = plots.embedding_map(ev.vectors[rows], ev.labels[rows], out / "embedding_map.png",
                                                         thumbnails=thumbs(rows), seed=seed)
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
