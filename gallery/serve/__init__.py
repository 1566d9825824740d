"""`gallery serve`: the engine as an HTTP service, with API keys on by default and a web page.

Optional: the web stack (FastAPI, uvicorn, python-multipart, swagger-ui-bundle) comes with the
``serve`` extra (``pip install 'gallery[serve]'``), and only :mod:`gallery.serve.app` and
:mod:`gallery.serve.server` import it, so the core never depends on it. Key management
(:mod:`gallery.serve.keys`) needs only the standard library.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import GalleryError
from .limits import Limits

INSTALL_HINT = "pip install 'gallery[serve]'"
#: The modules of the extra, by import name.
WEB_STACK = ("fastapi", "uvicorn", "python_multipart", "swagger_ui_bundle")


def require_web_stack() -> None:
    """Return when the serve extra is installed, else raise a one-line error with the install command."""
    for name in WEB_STACK:
        try:
            __import__(name)
        except ImportError:
            raise GalleryError(f"gallery serve needs the serve extra, which is not installed ({name} is missing): "
                               f"{INSTALL_HINT}") from None


def run_server(gallery_dir: Path | str, **options) -> None:
    """Serve the gallery in ``gallery_dir`` until interrupted; options as :func:`gallery.serve.server.serve`."""
    require_web_stack()
    from .server import serve

    serve(gallery_dir, **options)


__all__ = ["INSTALL_HINT", "Limits", "require_web_stack", "run_server"]
