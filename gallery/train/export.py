"""Saving a trained encoder as TorchScript with its metadata, so the encoder registry can load it.

The file is a TorchScript module whose ``forward`` maps a float32 batch ``(N, *input_shape)`` to unit-norm
``(N, dim)`` embeddings, with a small JSON document stored inside the archive as ``gallery.json``::

    {"format": "gallery-encoder", "version": 1, "input": "vectors", "input_shape": [128], "dim": 64,
     "normalized": true, "training": {...}}

``input`` is ``"vectors"`` (a head over another model's embeddings) or ``"image"`` (an image encoder,
``input_shape`` = [C, H, W]). ``gallery build --model torchscript:model.pt`` and the Python API load it
through :func:`load_encoder`; the loss's class centres are not part of it.

TorchScript is deprecated in recent torch releases (it still loads everywhere and needs no Python
source), so its deprecation warnings are silenced here.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidInputError

LOG = logging.getLogger(__name__)

META_FILE = "gallery.json"
ENCODER_FORMAT = "gallery-encoder"
ENCODER_VERSION = 1
INPUT_KINDS = ("vectors", "image")


class NormalizedEncoder(nn.Module):
    """``model`` followed by L2 normalisation: what the gallery stores and searches."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.model(x), dim=1)


@contextmanager
def _quiet_jit() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


def export_encoder(model: nn.Module, path: Path, *, input: str, input_shape: Sequence[int],
                   metadata: Optional[dict] = None) -> dict:
    """Write ``model`` (normalised) as a TorchScript encoder with its metadata; return the metadata.

    The scripted module is checked against the eager one on a random batch before the file is written
    (under a temporary name, then renamed).
    """
    if input not in INPUT_KINDS:
        raise InvalidInputError(f"input: expected one of {', '.join(INPUT_KINDS)}, got {input!r}")
    shape = [int(v) for v in input_shape]
    if not shape or min(shape) < 1:
        raise InvalidInputError(f"input_shape: expected positive sizes, got {list(input_shape)}")
    path = Path(path)
    was_training = model.training
    # A ScriptModule (a fine-tuned export) is wrapped as it is: deep copies of one make non-leaf parameters.
    body = model.cpu() if isinstance(model, torch.jit.ScriptModule) else copy.deepcopy(model).cpu()
    wrapper = NormalizedEncoder(body).eval()
    probe = torch.rand(2, *shape)
    with torch.no_grad():
        expected = wrapper(probe)
    with _quiet_jit():
        scripted = torch.jit.script(wrapper)
        with torch.no_grad():
            got = scripted(probe)
        if not torch.allclose(got, expected, atol=1e-5):
            raise RuntimeError("the TorchScript encoder disagrees with the trained model")
        meta = {"format": ENCODER_FORMAT, "version": ENCODER_VERSION, "input": input, "input_shape": shape,
                "dim": int(expected.shape[1]), "normalized": True, **(metadata or {})}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.jit.save(scripted, str(tmp), _extra_files={META_FILE: json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)
    model.train(was_training)
    LOG.info("wrote %s: %s %s -> %d-d unit vectors", path, input, shape, meta["dim"])
    return meta


def read_encoder_metadata(path: Path) -> dict:
    """The ``gallery.json`` metadata of an exported encoder, read from the archive without loading the module."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith(f"/extra/{META_FILE}")), None)
            meta = json.loads(z.read(name)) if name else None
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise InvalidInputError(f"{path}: not a readable TorchScript encoder ({e})") from None
    return _check_meta(meta, path)


def load_encoder(path: Path, *, map_location: str = "cpu") -> tuple[torch.jit.ScriptModule, dict]:
    """Load an exported encoder and its metadata; raise on a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: encoder file not found")
    extra = {META_FILE: ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    except (RuntimeError, ValueError) as e:
        raise InvalidInputError(f"{path}: not a TorchScript file ({str(e).splitlines()[0]})") from None
    try:
        meta = json.loads(extra[META_FILE] or "null")
    except ValueError:
        meta = None
    return module, _check_meta(meta, path)


def _check_meta(meta, path: Path) -> dict:
    if not isinstance(meta, dict) or meta.get("format") != ENCODER_FORMAT:
        raise InvalidInputError(f"{path}: a TorchScript file without gallery metadata ({META_FILE}); "
                                "export it with gallery.train.export_encoder")
    if int(meta.get("version", 0)) > ENCODER_VERSION:
        raise InvalidInputError(f"{path}: encoder format version {meta['version']} is newer than this gallery "
                                f"release reads ({ENCODER_VERSION}); upgrade gallery")
    return meta


__all__ = ["ENCODER_FORMAT", "ENCODER_VERSION", "INPUT_KINDS", "META_FILE", "NormalizedEncoder", "export_encoder",
           "load_encoder", "read_encoder_metadata"]
