"""Strip credentials out of URLs before a record stores them.

Echo Nest track profiles carry ``audio_summary.analysis_url``, a pre-signed S3 URL whose query
string holds an access key id and a signature (``?AWSAccessKeyId=AKIA...&Signature=...``); newer
pre-signed URLs carry ``X-Amz-Credential``/``X-Amz-Signature``/``X-Amz-Security-Token``. Expired or
not, they are credential material and the warehouse promises none. This module rewrites every
URL inside a text: credential query parameters and ``user:password@`` are dropped, the rest of the
URL is kept as written (path, other parameters, order), so the value stays useful.

It works on text (the JSON of ``extra`` values, summary strings) with one regex search, so a
document without ``://`` costs one substring test.
"""

from __future__ import annotations

import re

# Query parameters (compared lower-case) that carry a credential or a replayable signature.
CREDENTIAL_PARAMS = frozenset((
    "x-amz-credential", "x-amz-signature", "x-amz-security-token", "awsaccesskeyid", "signature",
    "x-goog-credential", "x-goog-signature", "googleaccessid", "sig", "key-pair-id", "policy",
    "access_token", "token", "api_key", "apikey", "client_secret", "password",
))
# A URL inside text or JSON text: stops at whitespace, quotes, backslashes (JSON escapes) and brackets.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'\\<>]+")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@?#]*@")


def _clean(url: str, removed: set[str]) -> str:
    match = _USERINFO.match(url)
    if match:
        removed.add("userinfo")
        url = match.group(1) + url[match.end():]
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    kept = []
    for pair in query.split("&"):
        name = pair.split("=", 1)[0]
        if name.lower() in CREDENTIAL_PARAMS:
            removed.add(name)
        else:
            kept.append(pair)
    if len(kept) == query.count("&") + 1:
        return url
    return base + ("?" + "&".join(kept) if kept else "") + hash_sep + fragment


def strip_credentials(text: str) -> tuple[str, list[str]]:
    """``text`` with credentials removed from every URL in it, and the names of what was removed."""
    if "://" not in text:
        return text, []
    removed: set[str] = set()
    cleaned = _URL.sub(lambda m: _clean(m.group(0), removed), text)
    return cleaned, sorted(removed)
