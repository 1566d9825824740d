"""The training loop: seeded batches, tqdm progress, validation each epoch, early stopping, checkpoints.

:func:`fit` trains any encoder with any loss of :mod:`gallery.train.losses` on in-memory tensors;
:func:`train_encoder` is the ``gallery train`` command: labelled vectors in, a TorchScript encoder out.

>>> result = fit(model, ArcFaceLoss(n_classes, 64), (x_train, y_train), (x_val, y_val), epochs=20)  # doctest: +SKIP
>>> result.history[-1]["val"]["map@r"]                                                               # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from ..errors import GalleryError, InvalidInputError
from ..metrics import pair_histograms, retrieval
from ..progress import progress_bar
from ..store.files import sha256_file, write_bytes_atomic
from .data import LabelledData, class_split, load_labelled_photos, load_labelled_vectors, pk_batches, shuffled_batches
from .export import export_encoder, load_encoder, read_encoder_metadata
from .losses import (
    ArcFaceLoss,
    ContrastiveLoss,
    CosFaceLoss,
    MarginSoftmaxLoss,
    NormSoftmaxLoss,
    SoftmaxLoss,
    SphereFaceLoss,
    TripletLoss,
)
from .models import ProjectionHead

LOG = logging.getLogger(__name__)

#: Names accepted by :func:`make_loss` and ``gallery train --loss``.
LOSSES = ("softmax", "nsl", "sphereface", "cosface", "arcface", "contrastive", "triplet")
#: Validation metrics that early stopping can follow (higher is better).
METRICS = ("map@r", "recall@1")
MODES = ("head", "finetune")

_SOFTMAX = {"softmax": SoftmaxLoss, "nsl": NormSoftmaxLoss, "sphereface": SphereFaceLoss, "cosface": CosFaceLoss,
            "arcface": ArcFaceLoss}


def make_loss(name: str, *, num_classes: int, dim: int, s: Optional[float] = None, m: Optional[float] = None,
              partial_fc: Optional[float] = None, mining: Optional[str] = None) -> nn.Module:
    """Build a loss by name; ``None`` leaves a parameter at the loss's default (its paper's value).

    ``m`` is the margin of every margin loss (SphereFace: the angle multiplier; contrastive and
    triplet: the distance margin); ``s`` the scale of the normalised softmaxes.
    """
    if name not in LOSSES:
        raise InvalidInputError(f"loss: expected one of {', '.join(LOSSES)}, got {name!r}")
    kw = {}
    if name in ("contrastive", "triplet"):
        for opt, v in (("s", s), ("partial_fc", partial_fc)):
            if v is not None:
                raise InvalidInputError(f"{opt}: does not apply to the {name} loss (it has no class centres)")
        if m is not None:
            kw["margin"] = m
        if mining is not None:
            kw["mining"] = mining
        return (ContrastiveLoss if name == "contrastive" else TripletLoss)(**kw)
    if mining is not None:
        raise InvalidInputError(f"mining: applies to the contrastive and triplet losses, not {name}")
    if name == "softmax":
        for opt, v in (("s", s), ("m", m)):
            if v is not None:
                raise InvalidInputError(f"{opt}: does not apply to the plain softmax loss (no scale, no margin)")
    if s is not None:
        kw["s"] = s
    if m is not None:
        if name == "nsl":
            raise InvalidInputError("m: the normalised softmax (nsl) has no margin; use cosface or arcface for one")
        kw["m"] = m
    return _SOFTMAX[name](num_classes, dim, partial_fc=partial_fc, **kw)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (batch order, initialisation, partial-FC draws)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(device: Optional[str]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def embed(model: nn.Module, x, *, batch_size: int = 1024, device: Optional[str] = None) -> np.ndarray:
    """Unit-norm float32 embeddings of the rows of ``x`` (model in eval mode, no gradients)."""
    dev = _device(device) if device is not None else next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, Tensor) else x
    was_training = model.training
    model.eval()
    out = [F.normalize(model(x[s : s + batch_size].to(dev)).float(), dim=1).cpu() for s in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


def evaluate(model: nn.Module, x, y, *, pairs: bool = False, batch_size: int = 1024) -> dict:
    """Recall@1, R-Precision and MAP@R of the model's embeddings of ``x`` (all-vs-all, Musgrave et al.);
    with ``pairs``, also the positive / negative mean inner products and their JSD (Oi et al.)."""
    e = embed(model, x, batch_size=batch_size)
    r = retrieval(e, np.asarray(y), recall_at=(1,), nmi=False)
    out = {"recall@1": r["recall@1"], "r_precision": r["r_precision"], "map@r": r["map@r"]}
    if pairs:
        h = pair_histograms(e, np.asarray(y))
        out.update({"jsd": h.jsd, "pos_mean": h.pos_mean, "neg_mean": h.neg_mean})
    return out


@dataclass
class TrainResult:
    """The trained model (best validation epoch), its loss, and one history row per epoch (0 = untrained)."""

    model: nn.Module
    loss: nn.Module
    history: list[dict]
    metric: str
    best_epoch: int
    best_score: Optional[float]
    stopped_early: bool = False
    encoder: dict = field(default_factory=dict)
    #: What makes the exported encoder doubtful (an untrained best epoch, too few identities).
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"metric": self.metric, "best_epoch": self.best_epoch, "best_score": self.best_score,
                "stopped_early": self.stopped_early, "epochs_run": len(self.history) - 1, "history": self.history}


def _as_xy(data, what: str) -> tuple[Tensor, np.ndarray]:
    if isinstance(data, LabelledData):
        x, y = data.x, data.y
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise InvalidInputError(f"{what}: expected (inputs, labels) or LabelledData") from None
    x = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))
    y = y.cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if len(x) != len(y) or y.ndim != 1:
        raise InvalidInputError(f"{what}: {len(x)} inputs but labels of shape {y.shape}; give one label per input")
    if not torch.isfinite(x).all():
        raise InvalidInputError(f"{what}: inputs contain NaN or inf")
    return x.float(), y


class CheckpointError(GalleryError):
    """A training checkpoint that is damaged, tampered with, or does not fit this run: resume refuses it."""


#: ``last.json``, beside ``last.pt`` (tensors only), holds the rest of a checkpoint and commits it.
CHECKPOINT_FORMAT = "gallery-train-checkpoint"
CHECKPOINT_VERSION = 1


def _save_tensors(obj: dict, path: Path) -> str:
    """Write ``obj`` (tensors, and containers of them) atomically; return the file's sha256."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _load_tensors(path: Path, sha256: Optional[str], dev: torch.device, keys: dict) -> dict:
    """Load a checkpoint's tensors without unpickling anything else (``weights_only``: no code can run).

    ``keys`` maps each required key to its type; ``sha256`` (from ``last.json``) ties the file to it.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; rerun without --resume to start afresh")
    if sha256 is not None and sha256_file(path) != sha256:
        raise CheckpointError(f"{path}: does not match the checksum in {path.with_name('last.json')} (damaged, "
                              "edited, or the run stopped while saving); rerun without --resume to start afresh")
    try:
        ck = torch.load(path, map_location=dev, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: holds objects other than tensors, which are refused because loading them "
                              "could run code; rerun without --resume to start afresh") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, zipfile and pickle errors for a damaged file
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({type(e).__name__}: {_one_line(e)}); "
                              "rerun without --resume to start afresh") from None
    if not isinstance(ck, dict) or any(not isinstance(ck.get(k), t) for k, t in keys.items()):
        raise CheckpointError(f"{path}: not a gallery training checkpoint (expected the keys {', '.join(keys)}); "
                              "rerun without --resume to start afresh")
    return ck


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_state(x):
    """numpy's and Python's generator states as JSON (arrays become lists, tuples lists)."""
    if isinstance(x, dict):
        return {k: _json_state(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_state(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _save_checkpoint(ckpt_dir: Path, tensors: dict, state: dict, best_sha256: str) -> None:
    """Write ``last.pt`` (tensors) and then ``last.json`` (everything else), each atomically.

    ``last.json`` is written last and records the sha256 of ``last.pt`` and ``best.pt``, so it commits
    the epoch: a stop between the writes leaves files that resume refuses, never a silently mixed state.
    """
    sha = _save_tensors(tensors, ckpt_dir / "last.pt")
    doc = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "last_sha256": sha,
           "best_sha256": best_sha256, "python_rng": _json_state(random.getstate()),
           "numpy_global_rng": _json_state(np.random.get_state(legacy=False)), **state}
    write_bytes_atomic(ckpt_dir / "last.json", json.dumps(doc, default=float).encode("utf-8"))


#: What ``last.json`` must hold, with the types json gives them.
_STATE_KEYS = {"epoch": int, "last_sha256": str, "best_sha256": str, "numpy_rng": dict, "numpy_global_rng": dict,
               "python_rng": list, "history": list, "best_epoch": int, "stale": int, "config": dict}


def _load_state(path: Path) -> dict:
    """Read and check ``last.json``; any fault is a one-line :class:`CheckpointError` naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing, so {path.with_suffix('.pt').name} beside it cannot be resumed "
                              "(written by an older gallery, or damaged); rerun without --resume to start afresh")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({_one_line(e)}); "
                              "rerun without --resume to start afresh") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a gallery training checkpoint; rerun without --resume to start afresh")
    if doc.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {doc.get('version')!r}, but this gallery reads version "
                              f"{CHECKPOINT_VERSION}; resume it with the gallery release that wrote it")
    bad = [k for k, t in _STATE_KEYS.items() if not isinstance(doc.get(k), t) or isinstance(doc.get(k), bool)]
    score = doc.get("best_score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        bad.append("best_score")
    if not bad and (doc["epoch"] < 1 or len(doc["history"]) != doc["epoch"] + 1
                    or not all(isinstance(row, dict) for row in doc["history"])):
        bad.append("history")
    if bad:
        raise CheckpointError(f"{path}: missing or malformed {', '.join(bad)}; the file was edited or damaged; "
                              "rerun without --resume to start afresh")
    return doc


def _check_config(path: Path, saved: dict, now: dict) -> None:
    """Refuse to resume under other options: the rest of the run would differ from the interrupted one."""
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
        new = ", ".join(f"{k}={now.get(k)!r}" for k in diff)
        raise InvalidInputError(f"resume: {path} was written by a run with {was}, but this run has {new}; resume "
                                "with the same options and data, or rerun without --resume to start afresh")


def _set_rng_states(path: Path, doc: dict, ck: dict, rng: np.random.Generator) -> None:
    """Restore every generator the run draws from, so a resumed run repeats the uninterrupted one."""
    try:
        rng.bit_generator.state = doc["numpy_rng"]
        g = doc["numpy_global_rng"]
        np.random.set_state({**g, "state": {**g["state"], "key": np.asarray(g["state"]["key"], dtype=np.uint32)}})
        version, internal, gauss = doc["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        torch.set_rng_state(ck["torch_rng"].cpu())
        cuda = ck["cuda_rng"]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([t.cpu() for t in cuda])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: a generator state is malformed ({_one_line(e)}); the file was edited or "
                              "damaged; rerun without --resume to start afresh") from None


def _lr_at(lr: float, epoch: int, epochs: int) -> float:
    """Cosine decay from ``lr`` over the run (epoch counts from 1)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(epochs, 1)))


def fit(
    model: nn.Module,
    loss: nn.Module,
    train,
    val=None,
    *,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    metric: str = "map@r",
    patience: Optional[int] = 5,
    seed: int = 0,
    device: Optional[str] = None,
    samples_per_class: int = 4,
    checkpoint_dir: Optional[Path] = None,
    resume: bool = False,
    eval_train: bool = False,
    pairs: bool = False,
    progress: bool = True,
    on_epoch: Optional[Callable[[int, nn.Module], dict]] = None,
) -> TrainResult:
    """Train ``model`` under ``loss`` and keep the epoch with the best validation ``metric``.

    ``train`` and ``val`` are ``(inputs, labels)`` (arrays or tensors) or :class:`LabelledData`; the
    validation classes should be disjoint from the training ones (:func:`class_split`). Labels of any
    kind are mapped to 0..C-1 for the loss, which must have at least C class centres. Softmax-style
    losses get shuffled batches; pair losses get P x K batches of ``samples_per_class`` rows per class.

    Each epoch: AdamW (SparseAdam for partial-FC centres) with a cosine learning-rate decay, then the
    validation metrics (Recall@1, R-Precision, MAP@R; with ``pairs`` also the JSD and mean inner
    products; with ``eval_train`` the same on the training set), a checkpoint in ``checkpoint_dir``,
    and early stopping after ``patience`` epochs without improvement. History row 0 is the untrained
    model. The returned model holds the best epoch's weights.

    A checkpoint is ``last.pt`` and ``best.pt``, tensors only, loaded with ``weights_only=True`` so a
    tampered file cannot run code, and ``last.json`` beside them: the generator states, history,
    options and the two files' sha256. ``resume`` continues from it and repeats the uninterrupted run
    exactly (same options and data, else :class:`InvalidInputError`); a damaged, edited or
    mismatched checkpoint is a :class:`CheckpointError`.
    """
    if metric not in METRICS:
        raise InvalidInputError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidInputError(f"{name}: expected a positive integer, got {v!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise InvalidInputError(f"lr: expected a positive learning rate, got {lr}")
    if patience is not None and patience < 1:
        raise InvalidInputError(f"patience: expected a positive number of epochs (or None), got {patience}")
    if resume and checkpoint_dir is None:
        raise InvalidInputError("resume: needs a checkpoint_dir to resume from")
    x_tr, y_raw = _as_xy(train, "train")
    _, y_tr = np.unique(y_raw, return_inverse=True)
    y_tr = y_tr.reshape(-1).astype(np.int64)
    n_classes = int(y_tr.max()) + 1 if len(y_tr) else 0
    softmax = isinstance(loss, MarginSoftmaxLoss)
    if softmax and loss.num_classes < n_classes:
        raise InvalidInputError(f"loss: has {loss.num_classes} class centres but the training set has {n_classes} "
                                f"classes; build it with num_classes={n_classes}")
    if len(x_tr) < 2:
        raise InvalidInputError(f"train: needs at least 2 samples, got {len(x_tr)}")
    val_xy = _as_xy(val, "val") if val is not None else None

    dev = _device(device)
    seed_everything(seed)
    for module in (model, loss):
        if any(t.device != dev for t in (*module.parameters(), *module.buffers())):
            module.to(dev)
    sparse = bool(getattr(loss, "sparse_grad", False))
    dense_params = list(model.parameters()) + [p for n, p in loss.named_parameters() if not (sparse and n == "weight")]
    optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(dense_params, lr=lr, weight_decay=weight_decay)]
    if sparse:
        optimizers.append(torch.optim.SparseAdam([loss.weight], lr=lr))
    rng = np.random.default_rng(seed)
    y_tr_t = torch.as_tensor(y_tr)

    def measure(epoch: int, train_loss: Optional[float], seconds: float) -> dict:
        row: dict = {"epoch": epoch, "loss": train_loss, "lr": _lr_at(lr, epoch, epochs) if epoch else None,
                     "seconds": round(seconds, 3)}
        if val_xy is not None:
            row["val"] = evaluate(model, *val_xy, pairs=pairs)
        if eval_train:
            row["train"] = evaluate(model, x_tr, y_tr, pairs=pairs)
        if on_epoch is not None:
            row.update(on_epoch(epoch, model) or {})
        return row

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best_score: Optional[float] = None
    best_epoch, start, stale = 0, 1, 0
    best_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(loss.state_dict()))
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "metric": metric,
              "patience": patience, "seed": seed, "samples_per_class": samples_per_class, "eval_train": eval_train,
              "pairs": pairs, "train_shape": list(x_tr.shape), "train_classes": n_classes,
              "val_shape": list(val_xy[0].shape) if val_xy is not None else None}
    best_sha = ""
    if resume and ckpt_dir is not None and ((ckpt_dir / "last.pt").is_file() or (ckpt_dir / "last.json").is_file()):
        doc = _load_state(ckpt_dir / "last.json")
        _check_config(ckpt_dir / "last.json", doc["config"], config)
        ck = _load_tensors(ckpt_dir / "last.pt", doc["last_sha256"], dev,
                           {"model": dict, "loss": dict, "optimizers": list, "torch_rng": Tensor, "cuda_rng": list})
        best = _load_tensors(ckpt_dir / "best.pt", doc["best_sha256"], dev, {"model": dict, "loss": dict})
        if len(ck["optimizers"]) != len(optimizers):
            raise CheckpointError(f"{ckpt_dir / 'last.pt'}: holds {len(ck['optimizers'])} optimizer states, this run "
                                  f"has {len(optimizers)} (another loss?); rerun without --resume to start afresh")
        for file, states in (("best.pt", (best["model"], best["loss"], [])),
                             ("last.pt", (ck["model"], ck["loss"], ck["optimizers"]))):
            try:  # best.pt first: it is loaded again at the end, so check now that it fits
                model.load_state_dict(states[0])
                loss.load_state_dict(states[1])
                for opt, st in zip(optimizers, states[2]):
                    opt.load_state_dict(st)
            except (RuntimeError, KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{ckpt_dir / file}: does not fit this model and loss ({_one_line(e)}); "
                                      "resume with the same model and options, or rerun without --resume") from None
        _set_rng_states(ckpt_dir / "last.json", doc, ck, rng)
        history, best_score, best_epoch, stale = doc["history"], doc["best_score"], doc["best_epoch"], doc["stale"]
        best_state, best_sha = (best["model"], best["loss"]), doc["best_sha256"]
        start = doc["epoch"] + 1
        LOG.info("resuming from %s after epoch %d", ckpt_dir / "last.pt", doc["epoch"])
    else:
        if ckpt_dir is not None:  # a fresh run: a stale last.json must not be resumed later
            for name in ("last.json", "last.pt"):
                (ckpt_dir / name).unlink(missing_ok=True)
        history.append(measure(0, None, 0.0))
        if val_xy is not None:
            best_score = history[0]["val"][metric]
        if ckpt_dir is not None:
            best_sha = _save_tensors({"model": best_state[0], "loss": best_state[1], "epoch": 0}, ckpt_dir / "best.pt")

    stopped = val_xy is not None and patience is not None and stale >= patience  # a finished run, resumed
    bar = progress_bar(bool(progress), iterable=range(start, epochs + 1) if not stopped else range(0), desc="epochs",
                       unit="epoch", initial=start - 1, total=epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = _lr_at(lr, epoch, epochs)
        model.train()
        loss.train()
        batches = list(shuffled_batches(len(y_tr), batch_size, rng) if softmax
                       else pk_batches(y_tr, batch_size, rng, k=samples_per_class))
        total, seen = 0.0, 0
        for rows in progress_bar(bool(progress), iterable=batches, desc=f"epoch {epoch}", unit="batch", leave=False):
            if len(rows) < 2:  # batch norm cannot train on one sample
                continue
            idx = torch.as_tensor(rows)
            xb, yb = x_tr[idx].to(dev), y_tr_t[idx].to(dev)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            value = loss(model(xb), yb)
            if not torch.isfinite(value):
                raise InvalidInputError(f"epoch {epoch}: the loss became {float(value.detach())}; lower --lr or --s")
            value.backward()
            for opt in optimizers:
                opt.step()
            total += float(value.detach()) * len(rows)
            seen += len(rows)
        row = measure(epoch, total / max(seen, 1), time.perf_counter() - t0)
        history.append(row)
        improved = False
        if val_xy is not None:
            score = row["val"][metric]
            if not math.isnan(score) and (best_score is None or math.isnan(best_score) or score > best_score):
                best_score, best_epoch, stale, improved = score, epoch, 0, True
                best_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(loss.state_dict()))
            else:
                stale += 1
            bar.set_postfix(loss=f"{row['loss']:.4f}", **{f"val_{metric}": f"{score:.4f}"})
            if patience is not None and stale >= patience:
                LOG.info("early stop after epoch %d: validation %s has not improved for %d epochs (best %.4f at %d)",
                         epoch, metric, stale, best_score, best_epoch)
                stopped = True
        else:
            best_epoch, improved = epoch, True
            best_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(loss.state_dict()))
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        LOG.info("epoch %d: %s", epoch, json.dumps({k: v for k, v in row.items() if k != "epoch"}))
        if ckpt_dir is not None:
            if improved:
                best_sha = _save_tensors({"model": best_state[0], "loss": best_state[1], "epoch": epoch},
                                         ckpt_dir / "best.pt")
            cuda_rng = torch.cuda.get_rng_state_all() if dev.type == "cuda" else []
            _save_checkpoint(ckpt_dir, {"model": model.state_dict(), "loss": loss.state_dict(),
                                        "optimizers": [o.state_dict() for o in optimizers],
                                        "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng},
                             {"epoch": epoch, "numpy_rng": rng.bit_generator.state, "history": history,
                              "best_score": best_score, "best_epoch": best_epoch, "stale": stale, "config": config},
                             best_sha)
        if stopped:
            break
    bar.close()
    model.load_state_dict(best_state[0])
    loss.load_state_dict(best_state[1])
    model.eval()
    return TrainResult(model, loss, history, metric, best_epoch, best_score, stopped)


def train_encoder(
    data: Path,
    out: Path,
    *,
    base_model: Optional[str] = None,
    workers: Optional[int] = None,
    labels: Optional[Path] = None,
    loss: str = "arcface",
    mode: str = "head",
    init: Optional[Path] = None,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    s: Optional[float] = None,
    m: Optional[float] = None,
    dim: Optional[int] = None,
    hidden: Sequence[int] = (256,),
    mining: Optional[str] = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    partial_fc: Optional[float] = None,
    metric: str = "map@r",
    patience: Optional[int] = 5,
    checkpoint_dir: Optional[Path] = None,
    resume: bool = False,
    vector_column: str = "vector",
    label_column: str = "identity",
    progress: bool = True,
) -> TrainResult:
    """Train an encoder on labelled vectors or photos and write it to ``out`` as a TorchScript encoder.

    ``data`` is a vector file (.parquet, .h5, or .npy with ``labels``) or a photo folder
    (``<identity>/<photos>``) or CSV, read through the face pipeline.

    ``mode="head"`` trains a small :class:`ProjectionHead` on frozen embeddings (cheap on a CPU: adapts
    a model's embeddings to a domain). For photos the embeddings come from ``base_model`` (default
    ``dlib-resnet``) and the exported head records it, so ``gallery build --model torchscript:OUT``
    embeds photos with the base model and then the head; for vectors, name the model that made them
    with ``base_model`` to make the head usable on photos. ``mode="finetune"`` trains every weight of
    the encoder in ``init`` (an exported encoder: of vectors of this dimension, or of image chips when
    ``data`` holds photos). Classes are split at random (``seed``) into disjoint training and validation
    sets; the epoch with the best validation ``metric`` is exported. Checkpoints go to
    ``checkpoint_dir`` (default: ``OUT`` without its suffix plus ``.checkpoints``) with ``history.json``.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    out = Path(out)
    data = Path(data)
    photos = data.is_dir() or data.suffix.lower() == ".csv"
    init_meta = read_encoder_metadata(init) if init is not None else None
    if photos and mode == "head":
        from ..embed import DEFAULT_MODEL, get_encoder

        base = get_encoder(base_model or DEFAULT_MODEL)
        base_model = base.spec
        d = load_labelled_photos(data, encoder=base, workers=workers, progress=progress)
    elif photos:
        if init_meta is None or init_meta["input"] != "image":
            raise InvalidInputError("init: fine-tuning on photos needs --init an exported image encoder "
                                    "(input 'image'); or train a head on a base model's embeddings with --mode head")
        from ..embed import ChipSpec

        c, h, w = init_meta["input_shape"]
        d = load_labelled_photos(data, chip=ChipSpec("arcface", int(h), 0.0), workers=workers, progress=progress)
    else:
        d = load_labelled_vectors(data, labels=labels, vector_column=vector_column, label_column=label_column)
    split = class_split(d.y, val_fraction=val_fraction, seed=seed)
    tr, va = d.subset(split.train), d.subset(split.val)
    if np.max(np.bincount(va.y)) < 2:
        raise InvalidInputError(f"{data}: no validation class has 2 or more vectors, so retrieval cannot be measured; "
                                f"raise --val-fraction (now {val_fraction}) or add vectors per identity")
    seed_everything(seed)
    if mode == "head":
        if init is not None:
            raise InvalidInputError("init: --init starts a fine-tune; use it with --mode finetune")
        model: nn.Module = ProjectionHead(d.dim, dim or d.dim, hidden=tuple(hidden))
    else:
        if init is None:
            raise InvalidInputError("init: --mode finetune trains an existing encoder; name it with --init MODEL.pt "
                                    "(an exported encoder), or use --mode head")
        enc, meta = load_encoder(init)
        if not photos and (meta["input"] != "vectors" or meta["input_shape"] != [d.dim]):
            raise InvalidInputError(f"{init}: takes {meta['input']} of shape {meta['input_shape']}, but {data} holds "
                                    f"{d.dim}-d vectors")
        if dim is not None and dim != meta["dim"]:
            raise InvalidInputError(f"dim: {init} outputs {meta['dim']}-d embeddings; drop --dim or use --mode head")
        model = enc.model if hasattr(enc, "model") else enc
    out_dim = int(embed(model, tr.x[:2]).shape[1])
    criterion = make_loss(loss, num_classes=len(split.train_classes), dim=out_dim, s=s, m=m, partial_fc=partial_fc,
                          mining=mining)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else out.with_name(out.stem + ".checkpoints")
    LOG.info("training %s (%s) on %d vectors of %d classes; validating on %d vectors of %d classes", loss, mode,
             len(tr), len(split.train_classes), len(va), len(split.val_classes))
    result = fit(model, criterion, tr, va, epochs=epochs, batch_size=batch_size, lr=lr, metric=metric,
                 patience=patience, seed=seed, checkpoint_dir=ckpt, resume=resume, progress=progress)
    training = {"gallery_version": __version__, "loss": loss, "mode": mode, "params": _loss_params(criterion),
                "data": str(data), "train_classes": int(len(split.train_classes)),
                "val_classes": int(len(split.val_classes)), "seed": seed, "metric": metric,
                "best_epoch": result.best_epoch, "best_score": result.best_score,
                "untrained_score": result.history[0]["val"][metric]}
    if photos and mode == "finetune":
        kind, shape, extra = "image", list(init_meta["input_shape"]), {}
    else:
        kind, shape = "vectors", [d.dim]
        extra = {"base_model": base_model or (init_meta or {}).get("base_model")}
    result.encoder = export_encoder(result.model, out, input=kind, input_shape=shape, metadata={"training": training, **extra})
    result.warnings = training_warnings(result, len(split.train_classes), len(split.val_classes))
    for message in result.warnings:
        LOG.warning("%s: %s", out, message)
    (ckpt / "history.json").write_text(json.dumps(result.summary(), indent=2, default=float), encoding="utf-8")
    return result


#: Fewer training identities than this rarely teach an encoder anything that holds for new people.
MIN_TRAIN_IDENTITIES = 20


def training_warnings(result: TrainResult, train_classes: int, val_classes: int) -> list[str]:
    """Why the exported encoder may not be worth using, in words a person acts on."""
    out = []
    if result.best_epoch == 0 and result.best_score is not None:
        out.append(f"the best validation {result.metric} ({result.best_score:.4f}) is the untrained encoder's "
                   "(epoch 0): the exported encoder is untrained; train on more identities, for more epochs, "
                   "or with another loss")
    if train_classes < MIN_TRAIN_IDENTITIES:
        out.append(f"only {train_classes} training identities ({val_classes} for validation): too few to learn an "
                   f"encoder that holds for new people (use at least {MIN_TRAIN_IDENTITIES}); the validation score "
                   "says little")
    return out


def _loss_params(loss: nn.Module) -> dict:
    keys = ("s", "m", "margin", "mining", "partial_fc")
    return {k: getattr(loss, k) for k in keys if getattr(loss, k, None) is not None}


__all__ = ["CheckpointError", "LOSSES", "METRICS", "MODES", "TrainResult", "embed", "evaluate", "fit", "make_loss",
           "seed_everything", "train_encoder"]
