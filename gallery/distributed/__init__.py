"""The Ray engine: distributed photo embedding and 1:N search over identity shards held by Ray actors.

Optional: it needs the ``ray`` extra (``pip install 'gallery[ray]'``) and only this package imports
Ray, so the local engine never depends on it. Callers reach it through ``engine="ray"`` on
:meth:`gallery.Gallery.open`, :meth:`gallery.Gallery.from_photos` and the CLI's ``--engine ray``.
"""

from __future__ import annotations

from ..errors import GalleryError, InvalidInputError

ENGINES = ("local", "ray")
INSTALL_HINT = "pip install 'gallery[ray]'"


def check_engine(engine: str) -> None:
    """Raise a one-line error for an unknown engine, or for ``ray`` when Ray is not installed."""
    if engine not in ENGINES:
        raise InvalidInputError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if engine == "ray":
        require_ray()


def require_ray():
    """The ``ray`` module, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise GalleryError(f"the Ray engine needs the ray extra, which is not installed: {INSTALL_HINT}") from None
    return ray
