"""The JSON the API reads and writes, as pydantic models: requests are validated with them, and both
appear in the OpenAPI schema (``/v1/openapi.json``) and its docs page (``/v1/docs``)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    # NaN and Infinity are not JSON; Python's parser would take them, this refuses them
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class VectorSearch(_Request):
    vectors: list[list[float]] = Field(description="Query embeddings, one row each, of the gallery's dimension.")
    k: int = Field(5, description="Identities per query (1 to the server's --max-k).")
    threshold: Optional[float] = Field(None, description="Open-set threshold (cosine) for this call; default: the gallery's.")


class VectorEnrolment(_Request):
    vectors: list[list[float]] = Field(description="Embeddings of this identity, one row each.")
    sources: Optional[list[str]] = Field(None, description="Where each vector came from (stored with it).")


class CalibrationRequest(_Request):
    target_fpir: float = Field(1e-3, description="Accepted fraction of unknown people wrongly matched to someone.")
    probe_vectors: Optional[list[list[float]]] = Field(
        None, description="Labelled probes; without them a random part of the identities is left out to play the unknown people.")
    probe_labels: Optional[list[Optional[str]]] = Field(
        None, description="One per probe: an enrolled identity makes a mated search, anything else (or '-', null) a non-mated one.")
    holdout: float = Field(0.2, gt=0.0, lt=1.0, description="Without probes: the fraction of identities left out.")
    seed: int = 0


class KeyRequest(_Request):
    role: str = Field(description="search, enrol or admin.")
    name: str = Field("", max_length=200, description="Who or what the key is for.")


# ---------------------------------------------------------------------- answers (for the schema)


class Error(BaseModel):
    error: str = Field(description="One line that says what was wrong.")


class MatchOut(BaseModel):
    identity: str
    score: float = Field(description="Cosine similarity in [-1, 1] of the identity's best record.")
    records: list[int]
    record_scores: list[float]


class ResultOut(BaseModel):
    identity: Optional[str] = Field(description="The decided identity, or null for unknown.")
    known: bool = Field(description="score >= threshold for the best match.")
    threshold: float
    threshold_source: str = Field(description="call, calibrated, model-default or fallback.")
    matches: list[MatchOut]


class FaceOut(ResultOut):
    box: list[int] = Field(description="left, top, right, bottom in pixels of the upright photo.")


class PhotoOut(BaseModel):
    source: str
    error: Optional[str]
    faces: list[FaceOut] = Field(description="Largest first.")


class Threshold(BaseModel):
    value: float
    source: str


class VectorAnswer(BaseModel):
    generation: int = Field(description="The committed gallery generation the answer was computed on.")
    threshold: Threshold
    results: list[ResultOut]


class PhotoAnswer(BaseModel):
    generation: int
    threshold: Threshold
    photos: list[PhotoOut]


class Enrolled(BaseModel):
    identity: str
    generation: int
    records: list[int] = Field(description="Record ids of what was enrolled.")
    photos: Optional[list[dict]] = Field(None, description="Photo enrolment: per photo, faces found and whether one was enrolled.")


class Removed(BaseModel):
    identity: str
    generation: int
    removed_records: int


class IdentityOut(BaseModel):
    identity: str
    records: int
    first_record: int


class IdentityPage(BaseModel):
    generation: int
    total: int
    offset: int
    limit: int
    prefix: str
    identities: list[IdentityOut]


class Caller(BaseModel):
    auth: bool = Field(description="False when the server runs with --insecure-no-auth.")
    key: Optional[str] = Field(description="The key's id.")
    name: Optional[str]
    role: str


class KeyOut(BaseModel):
    id: str
    role: str
    name: str
    created: float


class NewKey(KeyOut):
    key: str = Field(description="The key itself: shown this once, never stored.")
