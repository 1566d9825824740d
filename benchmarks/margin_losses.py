"""Margin losses on scikit-learn's 8x8 digits, at CPU scale: the papers' 2-d feature figure and Oi et al.'s analysis.

1. Features: a small CNN (``gallery.train.DigitsCNN``) is trained on 70% of the digits with softmax, NSL,
   SphereFace, CosFace and ArcFace to 2-d embeddings, and the held-out 30% are plotted side by side, raw
   and as directions (the margin losses' tighter, better separated classes are the point of the
   SphereFace, CosFace and ArcFace papers' MNIST figures). Numbers: the angle of each held-out sample
   to its class's mean direction (median and 90th percentile), the smallest angle between two class
   directions, and nearest-class accuracy.
2. Oi et al.: NSL (s = 10) and ArcFace trained on half of the classes and validated on the other half
   (class-disjoint), 8-d embeddings, with Recall@1, MAP@R, the Jensen-Shannon divergence between the
   positive and negative pair-score histograms, and the mean positive and negative inner products on
   the training and validation sets after every epoch; then the same runs on random and on ordered
   class splits, compared in a table.

No downloads: the digits ship with scikit-learn. The script checks its answers (every model beats the
untrained one; the margins tighten the classes) and exits non-zero if they do not hold.

    .venv/bin/python benchmarks/margin_losses.py            # about 10 minutes on 1 CPU thread
    .venv/bin/python benchmarks/margin_losses.py --quick    # a smoke run (about 1 minute)

Writes ``benchmarks/results/margin_losses_features.png``, ``margin_losses_oi_curves.png``,
``margin_losses_splits.png`` and ``margin_losses.json``, and prints the markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from gallery.train import DigitsCNN, class_split, fit, make_loss, seed_everything  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

#: The 2-d figure's losses: (label, loss name, parameters). Same scale for the normalised ones, so only
#: the margin differs; SphereFace keeps the feature norm as its scale, as in its paper.
FEATURE_LOSSES = [
    ("Softmax", "softmax", {}),
    ("NSL (s=10)", "nsl", {"s": 10.0}),
    ("SphereFace (m=4)", "sphereface", {"m": 4.0}),
    ("CosFace (s=10, m=0.3)", "cosface", {"s": 10.0, "m": 0.3}),
    ("ArcFace (s=10, m=0.4)", "arcface", {"s": 10.0, "m": 0.4}),
]
#: SphereFace's annealing, sped up so lambda reaches lambda_min within this short run (the released
#: solver's base 1000 and power 1; gamma 1 instead of 0.12, since we take ~1,000 steps, not ~30,000).
SPHEREFACE_ANNEALING = {"gamma": 1.0, "lambda_min": 5.0}
OI_LOSSES = [("NSL (s=10)", "nsl", {"s": 10.0}), ("ArcFace (s=10, m=0.4)", "arcface", {"s": 10.0, "m": 0.4})]
#: Embedding size of the class-disjoint runs: at 64-d an untrained CNN already reaches Recall@1 0.98 on five
#: unseen digits (nothing to learn), at 8-d it does not, so training has something to show.
OI_DIM = 8


def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


def build_loss(name: str, params: dict, num_classes: int, dim: int):
    loss = make_loss(name, num_classes=num_classes, dim=dim, **params)
    if name == "sphereface":
        for k, v in SPHEREFACE_ANNEALING.items():
            setattr(loss, k, v)
    return loss


# ---------------------------------------------------------------------------------------------- 2-d features


def angles_to_centres(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the angle (degrees) to its class's mean direction; and the class mean directions."""
    u = f / np.linalg.norm(f, axis=1, keepdims=True)
    centres = np.stack([u[y == c].mean(0) for c in range(10)])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ang = np.degrees(np.arccos(np.clip((u * centres[y]).sum(1), -1, 1)))
    return ang, centres


def tightness(f: np.ndarray, y: np.ndarray) -> dict:
    ang, centres = angles_to_centres(f, y)
    theta = np.sort(np.degrees(np.arctan2(centres[:, 1], centres[:, 0])) % 360)
    gaps = np.diff(np.r_[theta, theta[0] + 360])
    u = f / np.linalg.norm(f, axis=1, keepdims=True)
    nearest = (u @ centres.T).argmax(1)
    return {"median_angle_deg": float(np.median(ang)), "p90_angle_deg": float(np.percentile(ang, 90)),
            "min_centre_gap_deg": float(gaps.min()), "nearest_centre_acc": float((nearest == y).mean())}


def features_experiment(x, y, *, epochs: int, seed: int, progress: bool) -> tuple[list[dict], dict]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_tr = int(0.7 * len(y))
    tr, te = perm[:n_tr], perm[n_tr:]
    rows, feats = [], {}
    for label, name, params in FEATURE_LOSSES:
        seed_everything(seed)
        model = DigitsCNN(2)
        loss = build_loss(name, params, 10, 2)
        t = time.perf_counter()
        r = fit(model, loss, (x[tr], y[tr]), (x[te], y[te]), epochs=epochs, batch_size=64, lr=3e-3, patience=None,
                seed=seed, progress=progress)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            f = model(torch.as_tensor(x[te])).numpy()
        row = {"loss": label, "name": name, "params": params, "epochs": epochs, "seconds": round(seconds, 1),
               **tightness(f, y[te]), "recall@1": r.history[-1]["val"]["recall@1"],
               "map@r": r.history[-1]["val"]["map@r"], "untrained_recall@1": r.history[0]["val"]["recall@1"]}
        rows.append(row)
        W = loss.weight.detach().numpy()
        feats[label] = (f, W / np.linalg.norm(W, axis=1, keepdims=True))
        print(f"  {label:<24} R@1 {row['recall@1']:.3f}  median angle {row['median_angle_deg']:.1f} deg  "
              f"p90 {row['p90_angle_deg']:.1f} deg  min gap {row['min_centre_gap_deg']:.1f} deg  ({seconds:.0f} s)",
              flush=True)
    return rows, {"feats": feats, "labels": y[te]}


def plot_features(rows: list[dict], data: dict, path: Path) -> None:
    cmap = plt.get_cmap("tab10")
    y = data["labels"]
    n = len(rows)
    fig = plt.figure(figsize=(3.3 * n, 6.9))
    for i, row in enumerate(rows):
        f, W = data["feats"][row["loss"]]
        ax = fig.add_subplot(2, n, i + 1)
        for c in range(10):
            ax.scatter(f[y == c, 0], f[y == c, 1], s=4, color=cmap(c), alpha=0.7, linewidths=0, label=str(c))
        lim = np.percentile(np.abs(f), 99) * 1.1
        for c in range(10):
            ax.plot([0, W[c, 0] * lim], [0, W[c, 1] * lim], color=cmap(c), lw=0.8, alpha=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.set_title(row["loss"], fontsize=9)
        if i == 0:
            ax.set_ylabel("raw 2-d features\n(lines: class centres)", fontsize=8)
        ring = fig.add_subplot(2, n, n + i + 1)
        u = f / np.linalg.norm(f, axis=1, keepdims=True)
        r = 1.0 + np.random.default_rng(0).uniform(-0.06, 0.06, len(u))
        for c in range(10):
            ring.scatter(u[y == c, 0] * r[y == c], u[y == c, 1] * r[y == c], s=3, color=cmap(c), alpha=0.7,
                         linewidths=0)
        ring.add_patch(plt.Circle((0, 0), 1.0, fill=False, lw=0.4, color="0.6"))
        ring.text(0, 0, f"spread: median {row['median_angle_deg']:.1f}°\n90th pct {row['p90_angle_deg']:.1f}°\n"
                        f"min gap {row['min_centre_gap_deg']:.1f}°\nR@1 {row['recall@1']:.3f}",
                  ha="center", va="center", fontsize=7.5)
        ring.set_xlim(-1.15, 1.15)
        ring.set_ylim(-1.15, 1.15)
        ring.set_aspect("equal")
        ring.set_xticks([])
        ring.set_yticks([])
        if i == 0:
            ring.set_ylabel("normalised features\n(directions, radius jittered)", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(c), label=str(c)) for c in range(10)]
    fig.legend(handles=handles, loc="lower center", ncol=10, fontsize=8, frameon=False, title="digit",
               title_fontsize=8)
    fig.suptitle("Held-out digits embedded in 2-d by a CNN trained with each loss", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ Oi et al.


def oi_run(x, y, label: str, name: str, params: dict, *, ordered: bool, split_seed: int, seed: int, epochs: int,
           dim: int, pairs: bool, progress: bool) -> dict:
    sp = class_split(y, val_fraction=0.5, seed=split_seed, ordered=ordered)
    seed_everything(seed)
    model = DigitsCNN(dim)
    loss = build_loss(name, params, len(sp.train_classes), dim)
    r = fit(model, loss, (x[sp.train], y[sp.train]), (x[sp.val], y[sp.val]), epochs=epochs, batch_size=64, lr=1e-3,
            patience=None, seed=seed, eval_train=True, pairs=pairs, progress=progress)
    return {"loss": label, "ordered": ordered, "split_seed": None if ordered else split_seed, "seed": seed,
            "train_classes": sp.train_classes.tolist(), "val_classes": sp.val_classes.tolist(),
            "history": r.history, "best_epoch": r.best_epoch}


def plot_oi(runs: list[dict], path: Path) -> None:
    panels = [("recall@1", "Recall@1"), ("map@r", "MAP@R"), ("jsd", "JSD (bits)"), ("means", "mean inner product")]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.0))
    colours = {run["loss"]: plt.get_cmap("tab10")(i) for i, run in enumerate(runs)}
    for run in runs:
        h = run["history"]
        ep = [row["epoch"] for row in h]
        c = colours[run["loss"]]
        for ax, (key, title) in zip(axes, panels):
            if key == "means":
                for part, ls in (("train", "-"), ("val", "--")):
                    ax.plot(ep, [row[part]["pos_mean"] for row in h], ls, color=c, lw=1.6)
                    ax.plot(ep, [row[part]["neg_mean"] for row in h], ls, color=c, lw=0.9, alpha=0.6)
            else:
                for part, ls in (("train", "-"), ("val", "--")):
                    ax.plot(ep, [row[part][key] for row in h], ls, color=c, lw=1.4,
                            label=f"{run['loss']}, {'train' if part == 'train' else 'validation'}")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
    axes[3].text(0.02, 0.02, "thick: positive pairs, thin: negative pairs\nsolid: train, dashed: validation",
                 transform=axes[3].transAxes, fontsize=7.5, va="bottom")
    axes[0].legend(fontsize=7.5, loc="lower right")
    fig.suptitle("Digits, class-disjoint: 5 training classes, 5 validation classes (random split, seed 0); "
                 f"{OI_DIM}-d embeddings", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def split_summary(runs: list[dict]) -> list[dict]:
    """Per loss and split kind: validation MAP@R and Recall@1 at the last epoch, mean and std over runs."""
    out = []
    for label in dict.fromkeys(r["loss"] for r in runs):
        for ordered in (False, True):
            sel = [r for r in runs if r["loss"] == label and r["ordered"] == ordered]
            if not sel:
                continue
            last = [r["history"][-1]["val"] for r in sel]
            first = [r["history"][0]["val"] for r in sel]
            row = {"loss": label, "split": "ordered" if ordered else "random", "runs": len(sel)}
            for key in ("map@r", "recall@1"):
                v = np.array([m[key] for m in last])
                row[f"val_{key}_mean"], row[f"val_{key}_std"] = float(v.mean()), float(v.std())
                row[f"val_{key}_runs"] = [round(float(t), 4) for t in v]
                row[f"untrained_{key}_mean"] = float(np.mean([m[key] for m in first]))
                best = np.array([max(h["val"][key] for h in r["history"][1:]) for r in sel])
                row[f"best_val_{key}_mean"], row[f"best_val_{key}_std"] = float(best.mean()), float(best.std())
            out.append(row)
    return out


def plot_splits(runs: list[dict], path: Path) -> None:
    labels = list(dict.fromkeys(r["loss"] for r in runs))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, label in enumerate(labels):
        for j, ordered in enumerate((False, True)):
            v = [r["history"][-1]["val"]["map@r"] for r in runs if r["loss"] == label and r["ordered"] == ordered]
            xpos = i * 3 + j
            ax.scatter(np.full(len(v), xpos) + np.linspace(-0.15, 0.15, len(v)), v, s=22,
                       color="tab:blue" if not ordered else "tab:red")
            ax.errorbar(xpos + 0.35, np.mean(v), yerr=np.std(v), fmt="_", color="k", capsize=3)
    ax.set_xticks([i * 3 + j for i in range(len(labels)) for j in (0, 1)])
    ax.set_xticklabels([f"{label}\n{'random' if j == 0 else 'ordered'}" for label in labels for j in (0, 1)], fontsize=8)
    ax.set_ylabel("validation MAP@R (last epoch)")
    ax.set_title("Random class splits (5 seeds, blue) against the ordered split 0-4 / 5-9 (5 seeds, red)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- tables


def features_table(rows: list[dict]) -> str:
    lines = ["| loss | median angle to class direction | 90th percentile | smallest angle between classes | "
             "nearest-class accuracy | Recall@1 | MAP@R |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['loss']} | {r['median_angle_deg']:.1f}° | {r['p90_angle_deg']:.1f}° | "
                     f"{r['min_centre_gap_deg']:.1f}° | {r['nearest_centre_acc']:.3f} | {r['recall@1']:.3f} | "
                     f"{r['map@r']:.3f} |")
    return "\n".join(lines)


def oi_table(run: dict, every: int) -> str:
    lines = ["| epoch | train R@1 | train MAP@R | train JSD | val R@1 | val MAP@R | val JSD | "
             "val pos. mean | val neg. mean |", "|---|---|---|---|---|---|---|---|---|"]
    for row in run["history"]:
        if row["epoch"] % every and row["epoch"] != run["history"][-1]["epoch"]:
            continue
        t, v = row["train"], row["val"]
        lines.append(f"| {row['epoch']} | {t['recall@1']:.3f} | {t['map@r']:.3f} | {t['jsd']:.3f} | {v['recall@1']:.3f} | "
                     f"{v['map@r']:.3f} | {v['jsd']:.3f} | {v['pos_mean']:.3f} | {v['neg_mean']:.3f} |")
    return "\n".join(lines)


def splits_table(rows: list[dict]) -> str:
    lines = ["| loss | class split | runs | untrained val MAP@R | val MAP@R, last epoch | val MAP@R, best epoch | "
             "val Recall@1, last epoch | MAP@R per run (last epoch) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['loss']} | {r['split']} | {r['runs']} | {r['untrained_map@r_mean']:.3f} | "
                     f"{r['val_map@r_mean']:.3f} ± {r['val_map@r_std']:.3f} | "
                     f"{r['best_val_map@r_mean']:.3f} ± {r['best_val_map@r_std']:.3f} | "
                     f"{r['val_recall@1_mean']:.3f} ± {r['val_recall@1_std']:.3f} | "
                     f"{', '.join(f'{v:.3f}' for v in r['val_map@r_runs'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main


def check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        failures.append(what)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few epochs and seeds: a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny models)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    feat_epochs, oi_epochs, n_seeds = (8, 6, 2) if args.quick else (60, 30, 5)
    x, y = digits()
    t0 = time.perf_counter()
    failures: list[str] = []

    print(f"1. 2-d features, {feat_epochs} epochs per loss", flush=True)
    feat_rows, feat_data = features_experiment(x, y, epochs=feat_epochs, seed=args.seed, progress=False)
    plot_features(feat_rows, feat_data, args.out / "margin_losses_features.png")
    by = {r["name"]: r for r in feat_rows}
    for r in feat_rows:
        check(r["recall@1"] > r["untrained_recall@1"], f"{r['loss']}: Recall@1 above the untrained model's", failures)
    if not args.quick:
        for name in ("cosface", "arcface", "sphereface"):
            check(by[name]["p90_angle_deg"] < by["nsl"]["p90_angle_deg"],
                  f"{by[name]['loss']}: 90th-percentile angle below NSL's (the margin tightens the classes)", failures)

    print(f"2. Oi et al.: class-disjoint digits, {oi_epochs} epochs, {n_seeds} random splits and {n_seeds} seeds "
          "of the ordered split", flush=True)
    curves, split_runs = [], []
    for label, name, params in OI_LOSSES:
        for k in range(n_seeds):
            for ordered in (False, True):
                run = oi_run(x, y, label, name, params, ordered=ordered, split_seed=args.seed + k, seed=args.seed + k,
                             epochs=oi_epochs, dim=OI_DIM, pairs=True, progress=False)
                split_runs.append(run)
                if k == 0 and not ordered:
                    curves.append(run)
                v = run["history"][-1]["val"]
                print(f"  {label:<22} {'ordered' if ordered else 'random '} seed {k}: val classes {run['val_classes']} "
                      f"MAP@R {v['map@r']:.3f} R@1 {v['recall@1']:.3f}", flush=True)
    plot_oi(curves, args.out / "margin_losses_oi_curves.png")
    plot_splits(split_runs, args.out / "margin_losses_splits.png")
    splits = split_summary(split_runs)
    for run in curves:
        h = run["history"]
        check(h[-1]["train"]["map@r"] > h[0]["train"]["map@r"], f"{run['loss']}: training MAP@R rises", failures)
        check(max(row["val"]["recall@1"] for row in h[1:]) > h[0]["val"]["recall@1"],
              f"{run['loss']}: validation Recall@1 rises above the untrained model's", failures)

    every = max(1, oi_epochs // 6)
    report = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
                    platform.machine(), "threads": args.threads},
        "quick": args.quick, "seconds": round(time.perf_counter() - t0, 1),
        "features": feat_rows,
        "oi_curves": [{k: v for k, v in run.items()} for run in curves],
        "splits": splits,
        "split_runs": [{k: v for k, v in run.items() if k != "history"} | {"final_val": run["history"][-1]["val"]}
                       for run in split_runs],
        "failures": failures,
    }
    (args.out / "margin_losses.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print("\n### 2-d features (held-out digits)\n")
    print(features_table(feat_rows))
    for run in curves:
        print(f"\n### {run['loss']}: per epoch (random split, val classes {run['val_classes']})\n")
        print(oi_table(run, every))
    print("\n### Random against ordered class splits\n")
    print(splits_table(splits))
    print(f"\n{report['seconds']:.0f} s; figures and margin_losses.json in {args.out}")
    if failures:
        print(f"FAILED: {len(failures)} check(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
