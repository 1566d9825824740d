"""Encoders by name: the shipped dlib model, a user's IResNet weights, TorchScript files; fingerprints guard mixing."""

import numpy as np
import pytest
import torch

from gallery.embed import ARCFACE_CHIP, FaceDetector, align_face, get_encoder, load_image
from gallery.embed.encoders import DlibResNet
from gallery.embed.iresnet import IResNet
from gallery.errors import InvalidInputError


@pytest.fixture(scope="module")
def dlib_model():
    return get_encoder("dlib-resnet")


def _chips(faces_dir, names, chip):
    det = FaceDetector("hog", landmarks=chip.landmarks)
    out = []
    for n in names:
        image = load_image(faces_dir / n)
        out.append(align_face(image, det.detect(image)[0], chip))
    return np.stack(out)


def test_dlib_resnet_separates_people(dlib_model, faces_dir):
    assert isinstance(dlib_model, DlibResNet) and dlib_model.dim == 128
    chips = _chips(faces_dir, ["gallery/obama/obama.jpg", "probes/obama1.jpg", "gallery/biden/biden.jpg"], dlib_model.chip)
    x = dlib_model.encode(chips)
    assert x.shape == (3, 128) and x.dtype == np.float32
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.05


def test_fingerprint_is_stable(dlib_model):
    assert get_encoder("dlib-resnet").fingerprint == dlib_model.fingerprint


def test_iresnet_weights_load_weights_only(tmp_path, faces_dir):
    torch.manual_seed(0)
    model = IResNet((2, 2, 2, 2)).eval()
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    enc = get_encoder(f"arcface-r18:{tmp_path / 'r18.pth'}", device="cpu")
    assert enc.name == "arcface-r18" and enc.dim == 512 and enc.chip == ARCFACE_CHIP
    chips = _chips(faces_dir, ["misc/obama_small.jpg"], enc.chip)
    got = enc.encode(chips)
    with torch.no_grad():
        x = torch.from_numpy(chips).permute(0, 3, 1, 2).float().sub(127.5).div(127.5)
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # another file with other weights is another model
    torch.manual_seed(1)
    torch.save(IResNet((2, 2, 2, 2)).state_dict(), tmp_path / "other.pth")
    assert get_encoder(f"arcface-r18:{tmp_path / 'other.pth'}", device="cpu").fingerprint != enc.fingerprint


def test_checkpoint_with_module_prefix_loads(tmp_path):
    state = {f"module.{k}": v for k, v in IResNet((2, 2, 2, 2)).state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "ddp.pth")
    assert get_encoder(f"arcface-r18:{tmp_path / 'ddp.pth'}", device="cpu").dim == 512


def test_wrong_depth_names_the_right_one(tmp_path):
    torch.save(IResNet((3, 4, 6, 3)).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(InvalidInputError, match=r"r34\.pth: not an IResNet-18 .*arcface-r34"):
        get_encoder(f"arcface-r18:{tmp_path / 'r34.pth'}")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(InvalidInputError, match=r"evil\.pth: not a weights-only state_dict"):
        get_encoder(f"arcface-r50:{tmp_path / 'evil.pth'}")


class ChipMean(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_any_torchscript_file(tmp_path, faces_dir):
    torch.jit.save(torch.jit.script(ChipMean()), str(tmp_path / "m.pt"))
    enc = get_encoder(f"torchscript:{tmp_path / 'm.pt'}", device="cpu")
    assert enc.dim == 6 and enc.chip == ARCFACE_CHIP
    chips = _chips(faces_dir, ["misc/obama_small.jpg"], enc.chip)
    x = (chips.astype(np.float32) - 127.5) / 127.5
    np.testing.assert_allclose(enc.encode(chips)[0, :3], x[0].mean(axis=(0, 1)), atol=1e-5)


def test_trained_head_follows_its_base_model(tmp_path, dlib_model, faces_dir):
    from gallery.train import ProjectionHead, export_encoder

    export_encoder(ProjectionHead(128, 32), tmp_path / "head.pt", input="vectors", input_shape=[128],
                   metadata={"base_model": "dlib-resnet"})
    enc = get_encoder(f"torchscript:{tmp_path / 'head.pt'}")
    assert enc.dim == 32 and enc.chip == dlib_model.chip and enc.name == "dlib-resnet+head"
    x = enc.encode(_chips(faces_dir, ["misc/obama_small.jpg"], enc.chip))
    assert x.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("facenet", "unknown model 'facenet'"),
    ("arcface-r100", "arcface-r100 needs its weights"),
    ("arcface-r50:/no/such/file.pth", "file.pth: model file not found"),
    ("dlib-resnet:/x.dat", "takes no file"),
    ("torchscript", "torchscript needs a file"),
])
def test_bad_model_specs(spec, message):
    with pytest.raises(InvalidInputError, match=message):
        get_encoder(spec)


def test_not_torchscript(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"junk")
    with pytest.raises(InvalidInputError, match=r"x\.pt: not a TorchScript file"):
        get_encoder(f"torchscript:{tmp_path / 'x.pt'}")


def test_head_of_an_unnamed_model_is_refused(tmp_path):
    from gallery.train import ProjectionHead, export_encoder

    export_encoder(ProjectionHead(128, 32), tmp_path / "head.pt", input="vectors", input_shape=[128])
    with pytest.raises(InvalidInputError, match="retrain it with --base-model"):
        get_encoder(f"torchscript:{tmp_path / 'head.pt'}")
