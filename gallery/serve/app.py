"""The HTTP routes of `gallery serve` (FastAPI): parse, check the caller's key, run one service call off the event loop.

Bodies are parsed by the routes themselves, after the key is checked, so an anonymous client cannot
make the server read its uploads, and every refusal is one line of JSON (see :mod:`.problems`).
The OpenAPI schema is at ``/v1/openapi.json``, its docs page at ``/v1/docs`` (Swagger UI served from
the ``swagger-ui-bundle`` package, so it works offline), the web page at ``/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from ..errors import GalleryError
from . import schemas
from .keys import KeyStore, check_role, role_allows
from .limits import BodyLimit, BodyTooLarge, Limits
from .live import LiveGallery
from .photos import Upload, upload_name
from .problems import ApiError, one_line, status_of
from .service import Service
from .threads import one_kernel_thread

LOG = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: The web page loads only its own script, style and the thumbnails it fetches (as blob: URLs).
PAGE_POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

DESCRIPTION = """1:N identification as a service: who, among the enrolled identities, is in this photo or vector?

Every request but health and readiness needs `Authorization: Bearer KEY` (`gallery keys create --role ROLE`).
Roles: **search** searches and reads; **enrol** may also enrol; **admin** may also remove, calibrate and manage keys.
Answers carry the fields of the CLI's `--json`, the decision (`known`) and the gallery `generation` they were computed on.
Refusals are `{"error": "..."}` with a 4xx status."""


def _refusals(*codes: int) -> dict:
    text = {400: "Malformed request", 401: "Missing or unknown API key", 403: "The key's role may not do this",
            404: "Not found", 409: "Conflicting change", 413: "Too large", 415: "Wrong content type", 422: "Invalid values"}
    return {c: {"model": schemas.Error, "description": text[c]} for c in codes}


def _json_body(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


PHOTOS_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["photos"],
    "properties": {"photos": {"type": "array", "items": {"type": "string", "format": "binary"},
                              "description": "One or more photos (every file part of the request is taken)."}}}}}}}


def _describe(e: ValidationError) -> ApiError:
    errors = e.errors()
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"malformed JSON: {first['msg']}")
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ApiError(422, f"{where}: {first['msg']}{more}")


def _parse(body: bytes, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise _describe(e) from None


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body as ``model``: 415 unless it is JSON, 400 when malformed, 422 when a field is wrong."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "send the body as application/json")
    body = await request.body()
    return await run_in_threadpool(_parse, body, model)


async def read_uploads(request: Request, limits: Limits) -> list[Upload]:
    """Every file part of a multipart body, in order: 415 unless multipart/form-data."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(415, "send the photos as multipart/form-data file parts (curl -F photos=@face.jpg)")
    try:
        form = await request.form(max_files=limits.max_photos, max_fields=32)
    except HTTPException as e:
        if "Too many files" in str(e.detail):
            raise ApiError(413, f"photos: more files than the limit of {limits.max_photos} per request") from None
        raise ApiError(400, f"multipart body: {e.detail}") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        return [Upload(upload_name(f.filename, i), await f.read()) for i, f in enumerate(files, start=1)]
    finally:
        await form.close()


async def answer(call: Callable, *args, **kwargs) -> Response:
    """Run a blocking service call in a worker thread and send its dict as JSON (encoded there too)."""
    def run() -> bytes:
        one_kernel_thread()
        return json.dumps(call(*args, **kwargs), allow_nan=False, separators=(",", ":")).encode()

    return Response(await run_in_threadpool(run), media_type="application/json")


class SecurityHeaders:
    """ASGI middleware: no sniffing, no referrer, and no caching of API answers (they hold biometric data)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        api = scope["path"].startswith("/v1/") and not scope["path"].startswith("/v1/docs")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return _error(e.status, e.message, headers)

    @app.exception_handler(GalleryError)
    async def gallery_error(request: Request, e: GalleryError):
        status = status_of(e)
        if status >= 500:
            LOG.error("%s %s: %s", request.method, request.url.path, e)
        return _error(status, str(e))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, e: BodyTooLarge):
        return _error(413, str(e), {"Connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("query", "path", "body")) or "request"
        return _error(422, f"{where}: {first['msg']}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return _error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        LOG.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "internal error; the server's log has the details")


def create_app(live: LiveGallery, keys: Optional[KeyStore], limits: Limits = Limits()) -> FastAPI:
    """The service over ``live``; ``keys=None`` serves without authentication (``--insecure-no-auth``)."""
    service = Service(live, limits)
    app = FastAPI(title="gallery", version=__version__, description=DESCRIPTION,
                  openapi_url="/v1/openapi.json", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    _install_error_handlers(app)
    bearer = HTTPBearer(auto_error=False, description="An API key from `gallery keys create --role ROLE`.")

    def needs(role: str):
        async def caller(request: Request,
                         credentials: Optional[HTTPAuthorizationCredentials] = Security(bearer)) -> schemas.Caller:
            if keys is None:
                return schemas.Caller(auth=False, key=None, name=None, role="admin")
            header = request.headers.get("authorization", "")
            if not header:
                raise ApiError(401, "missing API key: send the header Authorization: Bearer KEY")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "the Authorization header must be: Bearer KEY")
            key = keys.verify(token.strip())
            if key is None:
                raise ApiError(401, "unknown or revoked API key")
            if not role_allows(key.role, role):
                raise ApiError(403, f"a key with role {key.role!r} may not do this; it needs role {role!r}")
            return schemas.Caller(auth=True, key=key.id, name=key.name, role=key.role)

        return Depends(caller)

    search_role, enrol_role, admin_role = needs("search"), needs("enrol"), needs("admin")

    # ------------------------------------------------------------------ probes of the service itself

    @app.get("/v1/health", tags=["service"], summary="Liveness: the process answers")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/ready", tags=["service"], summary="Readiness: the gallery is loaded and its folder is there",
             responses={503: {"model": schemas.Error}})
    async def ready():
        generation = await run_in_threadpool(lambda: live.generation)
        if not live.root.is_dir():
            return _error(503, f"{live.root}: the gallery folder is gone")
        return {"ready": True, "generation": generation}

    @app.get("/v1/auth", tags=["service"], summary="Who the key is and what its role allows",
             response_model=schemas.Caller, responses=_refusals(401))
    async def whoami(caller: schemas.Caller = search_role):
        return caller

    # ------------------------------------------------------------------ search

    @app.post("/v1/search/vectors", tags=["search"], summary="Search by embeddings (JSON)",
              responses={200: {"model": schemas.VectorAnswer}, **_refusals(400, 401, 403, 413, 415, 422)},
              openapi_extra=_json_body(schemas.VectorSearch))
    async def search_vectors(request: Request, caller: schemas.Caller = search_role):
        q = await read_json(request, schemas.VectorSearch)
        return await answer(service.search_vectors, q.vectors, q.k, q.threshold)

    @app.post("/v1/search/photos", tags=["search"], summary="Search every face of one or more photos (multipart)",
              responses={200: {"model": schemas.PhotoAnswer}, **_refusals(400, 401, 403, 413, 415, 422)},
              openapi_extra=PHOTOS_BODY)
    async def search_photos(request: Request, k: int = Query(5, description="Identities per face."),
                            threshold: Optional[float] = Query(None, description="Open-set threshold for this call."),
                            caller: schemas.Caller = search_role):
        uploads = await read_uploads(request, limits)
        return await answer(service.search_photos, uploads, k, threshold)

    # ------------------------------------------------------------------ identities

    @app.get("/v1/identities", tags=["identities"], summary="Enrolled identities, sorted, a page at a time",
             response_model=schemas.IdentityPage, responses=_refusals(401, 403, 422))
    async def identities(offset: int = Query(0), limit: int = Query(100), prefix: str = Query(""),
                         caller: schemas.Caller = search_role):
        return await answer(service.identities, offset, limit, prefix)

    @app.post("/v1/identities/{identity:path}/vectors", tags=["identities"], summary="Enrol embeddings for an identity",
              responses={200: {"model": schemas.Enrolled}, **_refusals(400, 401, 403, 409, 413, 415, 422)},
              openapi_extra=_json_body(schemas.VectorEnrolment))
    async def enrol_vectors(identity: str, request: Request, caller: schemas.Caller = enrol_role):
        body = await read_json(request, schemas.VectorEnrolment)
        return await answer(service.enrol_vectors, identity, body.vectors, body.sources)

    @app.post("/v1/identities/{identity:path}/photos", tags=["identities"],
              summary="Enrol photos for an identity (the largest face of each)",
              responses={200: {"model": schemas.Enrolled}, **_refusals(400, 401, 403, 409, 413, 415, 422)},
              openapi_extra=PHOTOS_BODY)
    async def enrol_photos(identity: str, request: Request, caller: schemas.Caller = enrol_role):
        uploads = await read_uploads(request, limits)
        return await answer(service.enrol_photos, identity, uploads)

    @app.delete("/v1/identities/{identity:path}", tags=["identities"],
                summary="Remove an identity and erase its records from the gallery's files",
                responses={200: {"model": schemas.Removed}, **_refusals(401, 403, 404, 409)})
    async def remove(identity: str, caller: schemas.Caller = admin_role):
        return await answer(service.remove, identity)

    @app.get("/v1/records/{record_id}/thumbnail", tags=["identities"], summary="The enrolled face of a record (PNG)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}, **_refusals(401, 403, 404, 422)})
    async def thumbnail(record_id: int, size: int = Query(96), caller: schemas.Caller = search_role):
        png = await run_in_threadpool(service.thumbnail_png, record_id, size)
        return Response(png, media_type="image/png")

    # ------------------------------------------------------------------ the gallery

    @app.get("/v1/info", tags=["gallery"], summary="Counts, model, index, threshold, disk and RAM",
             responses=_refusals(401, 403))
    async def info(caller: schemas.Caller = search_role):
        return await answer(service.info)

    @app.get("/v1/calibration", tags=["gallery"], summary="Whether the gallery is calibrated, and the threshold searches use",
             responses=_refusals(401, 403))
    async def calibration(caller: schemas.Caller = search_role):
        return await answer(service.calibration)

    @app.post("/v1/calibration", tags=["gallery"], summary="Calibrate the open-set threshold for a target FPIR",
              responses=_refusals(400, 401, 403, 415, 422), openapi_extra=_json_body(schemas.CalibrationRequest))
    async def calibrate(request: Request, caller: schemas.Caller = admin_role):
        c = await read_json(request, schemas.CalibrationRequest)
        return await answer(service.calibrate, c.target_fpir, holdout=c.holdout, seed=c.seed,
                            probe_rows=c.probe_vectors, probe_labels=c.probe_labels)

    # ------------------------------------------------------------------ keys

    def key_store() -> KeyStore:
        if keys is None:
            raise ApiError(409, "the server runs with --insecure-no-auth: it checks no keys, so there are none to manage")
        return keys

    @app.get("/v1/keys", tags=["keys"], summary="Every API key (never the keys themselves)",
             response_model=list[schemas.KeyOut], responses=_refusals(401, 403, 409))
    async def list_keys(caller: schemas.Caller = admin_role):
        return [k.public() for k in await run_in_threadpool(lambda: key_store().keys())]

    @app.post("/v1/keys", tags=["keys"], summary="Make a key; the answer holds it, shown this once",
              response_model=schemas.NewKey, responses=_refusals(400, 401, 403, 409, 415, 422),
              openapi_extra=_json_body(schemas.KeyRequest))
    async def create_key(request: Request, caller: schemas.Caller = admin_role):
        r = await read_json(request, schemas.KeyRequest)
        try:
            check_role(r.role)
        except GalleryError as e:
            raise ApiError(422, f"role: {e}") from None
        token, key = await run_in_threadpool(lambda: key_store().create(r.role, name=r.name))
        return {**key.public(), "key": token}

    @app.delete("/v1/keys/{key_id}", tags=["keys"], summary="Revoke a key", response_model=schemas.KeyOut,
                responses=_refusals(401, 403, 404, 409))
    async def revoke_key(key_id: str, caller: schemas.Caller = admin_role):
        store = key_store()
        if key_id not in {k.id for k in store.keys()}:
            raise ApiError(404, f"no key with id {key_id!r}")
        return (await run_in_threadpool(store.revoke, key_id)).public()

    # ------------------------------------------------------------------ docs and the web page

    app.mount("/v1/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/v1/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="openapi.json", title="gallery API",  # relative: works behind a path prefix
                                   swagger_js_url="docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="docs/assets/swagger-ui.css",
                                   swagger_favicon_url="docs/assets/favicon-32x32.png")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

    return app
