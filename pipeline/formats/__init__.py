"""Avro schemas (``.avsc`` files in this package), parsed once, and their fingerprints."""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources

import fastavro
from fastavro.schema import to_parsing_canonical_form

ANALYSIS = "analysis"
TRACKS = "tracks"
CATALOG = "catalog"
LEDGER = "ledger"
IDS = "ids"
ATTRIBUTES = "attributes"
RECORD_INDEX = "record_index"


@functools.cache
def _text(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.avsc").read_text(encoding="utf-8")


def raw_schema(name: str) -> dict:
    """The schema as written in ``<name>.avsc`` (custom attributes such as ``dtype`` included).

    A fresh copy each call: fastavro's ``parse_schema`` mutates the dict it is given, and a
    shared, mutated dict would change the schema text written into file headers.
    """
    return json.loads(_text(name))


@functools.cache
def schema(name: str) -> dict:
    """The parsed schema, shared by every writer and reader of the process."""
    return fastavro.parse_schema(raw_schema(name))


def _sorted(value):
    """A copy with every mapping's keys in sorted order (lists keep their order: it is meaningful)."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


@functools.cache
def header_schema(name: str) -> dict:
    """The parsed schema with its keys in a canonical (sorted) order, for writers to put in file headers.

    fastavro writes ``json.dumps`` of the parsed schema into each header, and the key order of a
    parsed schema depends on ``PYTHONHASHSEED``; sorted keys give the same header, hence the same
    file bytes and checksums, in every process.
    """
    return _sorted(schema(name))


@functools.cache
def fingerprint(name: str) -> str:
    """SHA-256 of the schema's Parsing Canonical Form: equal fingerprints mean compatible bytes."""
    return schema_fingerprint(schema(name))


def schema_fingerprint(parsed: dict) -> str:
    """The same fingerprint for any parsed schema (e.g. the writer schema of a file)."""
    return hashlib.sha256(to_parsing_canonical_form(parsed).encode("utf-8")).hexdigest()
