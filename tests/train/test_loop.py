"""Training runs end to end: digits learn, photo folders train heads and fine-tune image encoders,
and what comes out plugs into `gallery build --model torchscript:...`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.datasets import load_digits

from gallery import Gallery
from gallery.cli import main
from gallery.embed import get_encoder
from gallery.errors import GalleryError, InvalidInputError
from gallery.train import (
    DigitsCNN,
    ProjectionHead,
    class_split,
    export_encoder,
    fit,
    make_loss,
    read_encoder_metadata,
    seed_everything,
    train_encoder,
)

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"the shared real photos are not at {FACES}")


def test_a_short_digits_run_beats_the_untrained_model(tmp_path):
    d = load_digits()
    x, y = (d.images / 16.0).astype(np.float32)[:, None], d.target
    split = class_split(y, val_fraction=0.5, seed=0)  # 5 classes to learn from, 5 unseen ones to validate on
    seed_everything(0)
    model = DigitsCNN(dim=4)  # small enough that the untrained network is far from perfect
    loss = make_loss("arcface", num_classes=len(split.train_classes), dim=4)
    r = fit(model, loss, (x[split.train], y[split.train]), (x[split.val], y[split.val]), epochs=5, metric="recall@1",
            patience=None, checkpoint_dir=tmp_path / "ckpt", progress=False)
    untrained = r.history[0]["val"]["recall@1"]
    assert r.best_score > untrained + 0.05  # measured over seeds 0-2: 0.34-0.43 untrained, 0.55-0.68 trained
    assert set(split.train_classes).isdisjoint(split.val_classes)
    assert len(list((tmp_path / "ckpt").glob("*"))) >= 1  # a checkpoint per epoch


@needs_faces
def test_head_on_photos_plugs_into_build(tmp_path):
    r = train_encoder(FACES / "gallery", tmp_path / "head.pt", loss="nsl", epochs=2, batch_size=8, val_fraction=0.4,
                      workers=0, progress=False)
    meta = read_encoder_metadata(tmp_path / "head.pt")
    assert meta["input"] == "vectors" and meta["base_model"] == "dlib-resnet" and meta["training"]["loss"] == "nsl"
    assert len(r.history) >= 2
    assert any(w.startswith("only 3 training identities (2 for validation): too few") for w in r.warnings), r.warnings
    g = Gallery.from_photos(FACES / "gallery", tmp_path / "g", model=f"torchscript:{tmp_path / 'head.pt'}",
                            workers=0, progress=False)
    assert g.model == "dlib-resnet+head"
    (photo,) = g.search_images(FACES / "probes" / "obama1.jpg", threshold=0.0)
    assert photo.faces[0].identity == "obama"
    (photo,) = g.search_images(FACES / "misc" / "lin-manuel-miranda.png")  # no measured threshold: say so in the answer
    provenance = photo.faces[0].result.to_dict()["threshold_provenance"]
    assert provenance["source"] == "fallback" and "run `gallery calibrate`" in provenance["warning"]


class TinyFaceNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.fc = torch.nn.Linear(8 * 27 * 27, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@needs_faces
def test_finetune_an_image_encoder_on_photos(tmp_path):
    torch.manual_seed(0)
    export_encoder(TinyFaceNet(), tmp_path / "init.pt", input="image", input_shape=[3, 112, 112])
    before = get_encoder(f"torchscript:{tmp_path / 'init.pt'}")
    r = train_encoder(FACES / "gallery", tmp_path / "tuned.pt", mode="finetune", init=tmp_path / "init.pt",
                      loss="arcface", epochs=2, batch_size=8, val_fraction=0.4, patience=None, workers=0, progress=False)
    assert r.encoder["input"] == "image" and r.encoder["input_shape"] == [3, 112, 112]
    after = get_encoder(f"torchscript:{tmp_path / 'tuned.pt'}")
    assert after.dim == 16 and after.chip == before.chip and after.fingerprint != before.fingerprint
    assert all(np.isfinite(h["loss"]) for h in r.history[1:])
    last = torch.load(tmp_path / "tuned.checkpoints" / "last.pt", weights_only=True)
    init = {k.removeprefix("model."): v for k, v in torch.jit.load(str(tmp_path / "init.pt")).state_dict().items()}
    assert set(last["model"]) == set(init)
    moved = [k for k, v in last["model"].items() if not torch.equal(v, init[k])]
    assert moved, "fine-tuning changed no weight of the image encoder"


@needs_faces
def test_finetune_on_photos_needs_an_image_encoder(tmp_path):
    with pytest.raises(InvalidInputError, match="needs --init an exported image encoder"):
        train_encoder(FACES / "gallery", tmp_path / "x.pt", mode="finetune", workers=0, progress=False)


def test_cli_trains_a_head_on_vectors(tmp_path):
    from gallery.store import write_labelled_vectors
    from gallery.synthetic import synthetic_gallery

    s = synthetic_gallery(60, 4, 32, genuine=0.6, seed=1)
    write_labelled_vectors(tmp_path / "v.parquet", s.vectors, s.identities)
    r = CliRunner().invoke(main, ["train", str(tmp_path / "v.parquet"), "--out", str(tmp_path / "h.pt"), "--loss", "cosface",
                                  "--epochs", "3", "--dim", "16", "--base-model", "dlib-resnet"])
    assert r.exit_code == 0, r.output
    assert "h.pt: 32-d vectors -> 16-d; validation map@r" in r.output
    meta = read_encoder_metadata(tmp_path / "h.pt")
    assert meta["dim"] == 16 and meta["base_model"] == "dlib-resnet"
    history = json.loads((tmp_path / "h.checkpoints" / "history.json").read_text())
    assert history["epochs_run"] == 3 or history["stopped_early"]


# --- resuming: checkpoints hold tensors only, the rest is JSON beside them -------------------------------------

@pytest.fixture(scope="module")
def vectors():
    """Labelled 16-d vectors of 24 identities, split into 16 training and 8 validation identities."""
    from gallery.synthetic import synthetic_gallery

    s = synthetic_gallery(24, 5, 16, genuine=0.5, seed=3)
    y = np.asarray(s.identities)
    split = class_split(y, val_fraction=0.34, seed=0)
    x = np.asarray(s.vectors, dtype=np.float32)
    return (x[split.train], y[split.train]), (x[split.val], y[split.val])


class Interrupted(Exception):
    pass


def train(vectors, ckpt, *, loss="arcface", stop_at=None, **kw):
    """A 4-epoch head run with dropout and partial FC (so torch, numpy and SparseAdam state all matter);
    ``stop_at`` interrupts it during that epoch, after the previous epoch's checkpoint."""
    def on_epoch(epoch, model):
        if epoch == stop_at:
            raise Interrupted

    seed_everything(0)
    model = ProjectionHead(16, 8, hidden=(32,), dropout=0.2)
    crit = make_loss(loss, num_classes=16, dim=8, **({"partial_fc": 0.5} if loss == "arcface" else {}))
    args = {"epochs": 4, "batch_size": 16, "patience": None, "checkpoint_dir": ckpt, "on_epoch": on_epoch,
            "progress": False, **kw}
    return fit(model, crit, *vectors, **args)


def without_timings(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("loss", ["arcface", "triplet"])
def test_an_interrupted_run_resumed_ends_as_the_uninterrupted_run(vectors, tmp_path, loss):
    whole = train(vectors, tmp_path / "whole", loss=loss)
    with pytest.raises(Interrupted):
        train(vectors, tmp_path / "cut", loss=loss, stop_at=3)
    assert json.loads((tmp_path / "cut" / "last.json").read_text())["epoch"] == 2
    resumed = train(vectors, tmp_path / "cut", loss=loss, resume=True)
    assert without_timings(resumed.history) == without_timings(whole.history)
    assert (resumed.best_epoch, resumed.best_score) == (whole.best_epoch, whole.best_score)
    for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_tensors_load_with_weights_only(vectors, tmp_path):
    train(vectors, tmp_path)
    for name in ("last.pt", "best.pt"):
        torch.load(tmp_path / name, weights_only=True)
    state = json.loads((tmp_path / "last.json").read_text())
    assert state["epoch"] == 4 and len(state["history"]) == 5


def _leave_marker(path):
    Path(path).write_text("code from the checkpoint ran")


class RunsCode:
    """Unpickling this calls ``_leave_marker``: a stand-in for a tampered checkpoint's payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return _leave_marker, (self.marker,)


@pytest.mark.parametrize("sidecar_edited_too", [False, True], ids=["pt-only", "pt-and-json"])
def test_resume_refuses_a_checkpoint_that_would_run_code(vectors, tmp_path, sidecar_edited_too):
    ckpt, marker = tmp_path / "ckpt", tmp_path / "marker"
    with pytest.raises(Interrupted):
        train(vectors, ckpt, stop_at=2)
    torch.save({"model": RunsCode(marker), "x": torch.zeros(1)}, ckpt / "last.pt")
    if sidecar_edited_too:  # the attacker fixes the checksum too, so only weights_only stands in the way
        from gallery.store.files import sha256_file

        state = json.loads((ckpt / "last.json").read_text())
        state["last_sha256"] = sha256_file(ckpt / "last.pt")
        (ckpt / "last.json").write_text(json.dumps(state))
    with pytest.raises(GalleryError, match="last.pt") as e:
        train(vectors, ckpt, resume=True)
    assert "\n" not in str(e.value)
    assert ("objects other than tensors" if sidecar_edited_too else "checksum") in str(e.value)
    assert not marker.exists(), "resume unpickled the checkpoint's payload"
    torch.load(ckpt / "last.pt", weights_only=False)  # the file was armed: a full unpickle runs its code
    assert marker.exists()


def _drop(path):
    path.unlink()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_history(path):
    state = json.loads(path.read_text())
    state["history"] = "rewritten"
    path.write_text(json.dumps(state))


def _garble_rng(path):
    state = json.loads(path.read_text())
    state["numpy_rng"] = {"bit_generator": "PCG64", "state": "?"}
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("name, damage", [
    ("last.json", _drop), ("last.json", _truncate), ("last.json", lambda p: p.write_bytes(b"\xff\x00 not json")),
    ("last.json", _garble_history), ("last.json", _garble_rng), ("last.pt", _truncate), ("last.pt", _drop),
    ("best.pt", _truncate), ("best.pt", _drop),
], ids=["json-missing", "json-truncated", "json-binary", "json-history", "json-rng", "pt-truncated", "pt-missing",
        "best-truncated", "best-missing"])
def test_a_damaged_checkpoint_is_a_one_line_error_naming_the_file(vectors, tmp_path, name, damage):
    with pytest.raises(Interrupted):
        train(vectors, tmp_path, stop_at=3)
    damage(tmp_path / name)
    with pytest.raises(GalleryError) as e:
        train(vectors, tmp_path, resume=True)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / name) in message and "--resume" in message


def test_resume_under_other_options_is_refused(vectors, tmp_path):
    with pytest.raises(Interrupted):
        train(vectors, tmp_path, stop_at=2)
    with pytest.raises(InvalidInputError, match=r"lr=0\.001.*lr=0\.01"):
        train(vectors, tmp_path, resume=True, lr=0.01)


def test_cli_resume_with_a_missing_sidecar_prints_one_line(tmp_path):
    from gallery.store import write_labelled_vectors
    from gallery.synthetic import synthetic_gallery

    s = synthetic_gallery(30, 4, 16, genuine=0.6, seed=1)
    write_labelled_vectors(tmp_path / "v.parquet", s.vectors, s.identities)
    args = ["train", str(tmp_path / "v.parquet"), "--out", str(tmp_path / "h.pt"), "--epochs", "2"]
    assert CliRunner().invoke(main, args).exit_code == 0
    (tmp_path / "h.checkpoints" / "last.json").unlink()
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 1 and r.exception is not None and isinstance(r.exception, SystemExit)
    (line,) = r.output.strip().splitlines()
    assert line.startswith("Error: ") and "last.json: missing" in line


def test_resuming_a_run_that_stopped_early_trains_no_further(vectors, tmp_path):
    first = train(vectors, tmp_path, epochs=12, patience=1, lr=0.05)
    assert first.stopped_early and len(first.history) < 13
    again = train(vectors, tmp_path, epochs=12, patience=1, lr=0.05, resume=True)
    assert again.stopped_early and without_timings(again.history) == without_timings(first.history)
    assert again.best_epoch == first.best_epoch


def test_an_encoder_whose_best_epoch_is_the_untrained_one_comes_with_a_warning():
    from gallery.train.loop import TrainResult, training_warnings

    untrained = TrainResult(model=None, loss=None, history=[{"epoch": 0}], metric="map@r", best_epoch=0, best_score=0.31)
    assert training_warnings(untrained, 50, 12) == [
        "the best validation map@r (0.3100) is the untrained encoder's (epoch 0): the exported encoder is untrained; "
        "train on more identities, for more epochs, or with another loss"]
    trained = TrainResult(model=None, loss=None, history=[], metric="map@r", best_epoch=4, best_score=0.6)
    assert training_warnings(trained, 50, 12) == []
