"""Request and response models of the lookup API, for validation and the OpenAPI document.

The attributes model is generated from ``attributes.avsc`` (field names, types, nullability
and ``doc`` strings), so the API documents exactly what the warehouse stores and never drifts
from it.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeline.formats import ATTRIBUTES, raw_schema

MAX_BATCH = 1000
_PRIMITIVES: dict[str, Any] = {"double": float, "float": float, "int": int, "long": int, "string": str,
                               "boolean": bool}


def _python_type(avro_type: Any) -> Any:
    if isinstance(avro_type, list):  # ["null", T]: optional
        (inner,) = [t for t in avro_type if t != "null"]
        return _python_type(inner) | None
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array":
            return list[_python_type(avro_type["items"])]
        if avro_type["type"] == "map":
            return dict[str, _python_type(avro_type["values"])]
        if avro_type["type"] == "record":  # e.g. attributes format 2's null_reasons entries {field, reason}
            return dict[str, Any]
    return _PRIMITIVES[avro_type]


@functools.cache
def attributes_model() -> type[BaseModel]:
    """A pydantic model with one field per ``TrackAttributes`` field (description = the schema's doc)."""
    fields = {f["name"]: (_python_type(f["type"]), Field(None if "default" in f else ..., description=f.get("doc")))
              for f in raw_schema(ATTRIBUTES)["fields"]}
    return create_model("TrackAttributes", __config__=ConfigDict(extra="allow"), **fields)


TrackAttributes = attributes_model()


class TrackResponse(BaseModel):
    snapshot: str = Field(description="Snapshot version (date) the answer comes from.")
    attributes: TrackAttributes  # type: ignore[valid-type]


class BatchRequest(BaseModel):
    ids: list[str] = Field(description=f"Track ids (22-character base62), at most {MAX_BATCH}.",
                           max_length=MAX_BATCH)


class BatchResponse(BaseModel):
    snapshot: str
    tracks: dict[str, TrackAttributes] = Field(description="Attributes by track id, for the ids found.")  # type: ignore[valid-type]
    missing: list[str] = Field(description="Requested ids the snapshot does not hold.")


class NeighbourModel(BaseModel):
    track_id: str
    score: float = Field(description="Cosine similarity of the feature vectors, -1..1 (1 = identical).")
    tempo: float | None = Field(description="Tempo, BPM (the analyzer's, else the beat grid's).")
    key: int | None = Field(description="Pitch class 0=C..11=B (the analyzer's, else estimated).")
    mode: int | None = Field(description="1 = major, 0 = minor.")


class SimilarResponse(BaseModel):
    snapshot: str
    track_id: str
    k: int
    filters: dict[str, Any]
    similar: list[NeighbourModel] = Field(description="Most similar tracks first; the track itself excluded.")


class SnapshotResponse(BaseModel):
    version: str = Field(description="The active snapshot date being served.")
    records: int | None = Field(description="Verified record count of the active version.")
    store: str = Field(description="Store type: sqlite, redis or cassandra.")
    similarity_index: bool = Field(description="Whether the similarity index of this version is available.")
