"""Bytes of a source object → the analysis JSON object, or an ``InvalidDocumentError`` with a reason.

Handles plain and gzip bodies (``.json.gz`` keys, ``Content-Encoding: gzip`` or the
gzip magic number), caps the decompressed size (a gzip bomb or a runaway file is
rejected, not loaded), rejects NaN/Infinity literals (orjson refuses them), and
unwraps the shapes seen in the wild: a bare analysis, an Echo Nest track profile
``{"analysis": {...}, ...}`` and ``{"response": {"track": {"analysis": {...}}}}``.
"""

from __future__ import annotations

import zlib

import orjson

from pipeline.errors import InvalidDocumentError
from pipeline.formats.analysis import to_record
from pipeline.formats.fastdecode import fast_record
from pipeline.source.limits import BodyTooLarge

GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(body: bytes, max_bytes: int) -> bytes:
    """Inflate every member of a gzip body (concatenated members are valid gzip, RFC 1952), capped."""
    out = bytearray()
    rest = body
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise InvalidDocumentError(f"corrupt gzip body: {exc}") from exc
        if len(out) > max_bytes:
            raise BodyTooLarge(f"document inflates to more than the {max_bytes}-byte cap")
        if not inflater.eof:
            raise InvalidDocumentError("truncated gzip body")
        rest = inflater.unused_data
        if rest and rest[:2] != GZIP_MAGIC:
            raise InvalidDocumentError(f"{len(rest)} bytes of garbage after the gzip data")
    return bytes(out)


def decode_body(body: bytes, *, key: str = "", content_encoding: str | None = None,
                max_bytes: int = 64 * 1024 * 1024) -> dict:
    """Decode one source object into its JSON object (wrappers not yet removed)."""
    return parse_json(read_body(body, key=key, content_encoding=content_encoding, max_bytes=max_bytes))


def body_to_record(body: bytes, *, key: str, content_encoding: str | None, max_bytes: int, track_id: str,
                   updated: int | None) -> dict:
    """A source object → its analysis record; ``InvalidDocumentError`` (or ``BodyTooLarge``) as ``decode_body``,
    ``unwrap`` and ``to_record`` in turn would raise it.

    A plain bare analysis takes ``fast_record`` (simdjson, no Python object per number); anything it
    declines is decoded by orjson and converted by ``to_record``, which word every rejection.
    """
    text = read_body(body, key=key, content_encoding=content_encoding, max_bytes=max_bytes)
    record = fast_record(text, track_id=track_id, source_key=key, source_updated_at=updated)
    if record is None:
        analysis, wrapper = unwrap(parse_json(text))
        record = to_record(analysis, track_id=track_id, source_key=key, source_updated_at=updated, wrapper=wrapper)
    return record


def read_body(body: bytes, *, key: str = "", content_encoding: str | None = None,
              max_bytes: int = 64 * 1024 * 1024) -> bytes:
    """The JSON text of a source object: size-capped, inflated if gzip (``fastdecode`` parses it too)."""
    if not body:
        raise InvalidDocumentError("empty document")
    if len(body) > max_bytes:
        raise BodyTooLarge(f"document is {len(body)} bytes, over the {max_bytes}-byte cap")
    gzipped = body[:2] == GZIP_MAGIC or key.endswith(".gz") or (content_encoding or "").lower() == "gzip"
    if gzipped and body[:2] == GZIP_MAGIC:
        body = _gunzip(body, max_bytes)
    return body


def parse_json(text: bytes) -> dict:
    """The JSON object of ``read_body``'s text, or ``InvalidDocumentError`` saying why not."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidDocumentError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidDocumentError(f"document is a JSON {type(doc).__name__}, expected an object")
    return doc


def unwrap(doc: dict) -> tuple[dict, dict | None]:
    """Split a document into (analysis, wrapper-without-analysis or None)."""
    if "segments" in doc:
        return doc, None
    response = doc.get("response")
    if isinstance(response, dict) and isinstance(response.get("track"), dict):
        track = response["track"]
        if isinstance(track.get("analysis"), dict):
            wrapper = {**doc, "response": {**response, "track": {k: v for k, v in track.items() if k != "analysis"}}}
            return track["analysis"], wrapper
    if isinstance(doc.get("analysis"), dict):
        return doc["analysis"], {k: v for k, v in doc.items() if k != "analysis"}
    keys = ", ".join(sorted(doc)[:8]) or "none"
    raise InvalidDocumentError(f"not an audio analysis: no 'segments' (top-level keys: {keys})")
