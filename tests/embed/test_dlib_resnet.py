"""dlib's face ResNet in torch: its weights read from dlib's own file, its descriptors equal to dlib's."""

import warnings

import numpy as np
import pytest
import torch

from gallery.embed import get_encoder
from gallery.embed import dlib_resnet
from gallery.embed.dlib_file import DlibFormatError, read_dlib_network
from gallery.embed.dlib_resnet import DlibFaceResNet, add_zero_padded, dlib_face_resnet, load_dlib_weights
from gallery.embed.encoders import DlibResNet, DlibResNetNative, _dlib_model_file
from gallery.errors import InvalidInputError


@pytest.fixture(scope="module")
def dat_file():
    return _dlib_model_file()


@pytest.fixture(scope="module")
def layers(dat_file):
    return read_dlib_network(dat_file)


def test_reader_finds_dlibs_network_in_forward_order(layers):
    kinds = [layer.kind for layer in layers]
    assert kinds[0] == "input" and kinds[-2:] == ["fc", "loss"]
    assert kinds.count("con") == kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    first = layers[1]
    assert first.tensors["filters"].shape == (32, 3, 7, 7) and first.fields["stride_y"] == 2
    assert first.fields["padding_y"] == 0  # dlib does not pad strided convolutions
    assert layers[0].fields["nr"] == 150 and round(layers[0].fields["avg_red"], 3) == 122.782
    assert layers[-2].tensors["weights"].shape == (256, 128) and "biases" not in layers[-2].tensors
    assert layers[-1].fields["margin"] == pytest.approx(0.04)  # the metric loss it was trained with
    assert kinds == DlibFaceResNet().dlib_layer_kinds()


def test_reader_rejects_truncated_and_foreign_files(dat_file, tmp_path):
    data = dat_file.read_bytes()
    (tmp_path / "cut.dat").write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match=r"cut\.dat: not a dlib network file \(truncated"):
        read_dlib_network(tmp_path / "cut.dat")
    (tmp_path / "photo.dat").write_bytes(b"\xff\xd8\xff\xe0 a JPEG, say")
    with pytest.raises(DlibFormatError, match=r"photo\.dat: not a dlib network file"):
        read_dlib_network(tmp_path / "photo.dat")
    with pytest.raises(InvalidInputError, match="model file not found"):
        read_dlib_network(tmp_path / "missing.dat")


def test_a_different_network_is_refused_by_name(layers):
    with pytest.raises(InvalidInputError, match="not dlib's face recognition ResNet .layer 5 is con, expected tag"):
        load_dlib_weights(DlibFaceResNet(), layers[:5] + layers[6:], source="net.dat")


def test_unequal_branches_add_as_if_zero_padded():
    a = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)  # block output: more channels, smaller
    b = torch.ones(1, 1, 4, 4)  # pooled shortcut
    out = add_zero_padded(a, b)
    want = np.zeros((1, 2, 4, 4), np.float32)
    want[:, :, :3, :3] += a.numpy()
    want[:, :1] += 1
    np.testing.assert_array_equal(out.numpy(), want)


def test_torch_descriptor_equals_dlibs_on_every_face(every_face):
    """On the very chips dlib cuts, dlib's own compute_face_descriptor and the torch port agree."""
    chips = np.stack([native for _, _, native, _ in every_face])
    ours = get_encoder("dlib-resnet", device="cpu").encode(chips)
    theirs = get_encoder("dlib-resnet-native").encode(chips)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    worst = int(cosine.argmin())
    assert cosine.min() >= 0.9999, f"{every_face[worst][0]}: cosine {cosine.min():.6f}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(theirs, axis=1), rtol=1e-4)


def test_batches_give_the_same_descriptors_as_single_chips(every_face):
    enc = DlibResNet(device="cpu", batch_size=4)
    chips = np.stack([ours for _, _, _, ours in every_face[:9]])
    together = enc.encode(chips)
    alone = np.concatenate([enc.encode(c[None]) for c in chips])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_native_and_torch_are_different_models_to_a_gallery():
    torch_enc, native = get_encoder("dlib-resnet", device="cpu"), get_encoder("dlib-resnet-native")
    assert isinstance(native, DlibResNetNative) and native.chip == torch_enc.chip  # both on the chip dlib cuts
    assert torch_enc.fingerprint != native.fingerprint
    assert get_encoder("dlib-resnet", device="cpu").fingerprint == torch_enc.fingerprint


def test_converted_weights_are_cached_and_a_damaged_cache_is_rebuilt(dat_file, tmp_path, monkeypatch):
    monkeypatch.setenv("GALLERY_CACHE", str(tmp_path / "cache"))
    first = dlib_face_resnet(dat_file)
    (cached,) = (tmp_path / "cache").glob("dlib-face-resnet-*.pt")

    def no_reading(path):
        raise AssertionError("the cached weights should have been used")

    monkeypatch.setattr(dlib_resnet, "read_dlib_network", no_reading)
    again = dlib_face_resnet(dat_file)
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name

    monkeypatch.undo()
    monkeypatch.setenv("GALLERY_CACHE", str(tmp_path / "cache"))
    cached.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cached weights"):
        rebuilt = dlib_face_resnet(dat_file)
    assert torch.equal(rebuilt.fc.weight, first.fc.weight)
    assert cached.stat().st_size > 1_000_000


def test_an_unwritable_cache_only_costs_a_warning(dat_file, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("GALLERY_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot cache converted weights"):
        model = dlib_face_resnet(dat_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(model.stem.weight, dlib_face_resnet(dat_file).stem.weight)
