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
from gallery.errors import InvalidInputError
from gallery.train import DigitsCNN, class_split, export_encoder, fit, make_loss, read_encoder_metadata, seed_everything, train_encoder

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
    g = Gallery.from_photos(FACES / "gallery", tmp_path / "g", model=f"torchscript:{tmp_path / 'head.pt'}",
                            workers=0, progress=False)
    assert g.model == "dlib-resnet+head"
    (photo,) = g.search_images(FACES / "probes" / "obama1.jpg", threshold=0.0)
    assert photo.faces[0].identity == "obama"


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
    last = torch.load(tmp_path / "tuned.checkpoints" / "last.pt", weights_only=False)
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
