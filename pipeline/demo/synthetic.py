"""A deterministic synthetic Echo Nest / Spotify catalogue: analysis documents, daily dumps, S3 objects.

Why: the demo, the tests and the benchmarks need a realistic, evolving source without network
access or licensed data. Everything is a pure function of the seed (numpy ``Generator`` objects
seeded from ``(seed, day)`` or ``(seed, track_id, version)``, never global random state), so any
failure replays byte for byte. Documents are generated on demand; only ids and a few truth
arrays are held, so 100k-track benchmarks fit in memory.
"""

from __future__ import annotations

import base64
import calendar
import datetime as dt
import gzip
import hashlib
import json
import zlib
from collections.abc import Set
from dataclasses import dataclass, field

import numpy as np
import orjson

# Krumhansl-Kessler key profiles (tonic first), the ones the key estimate uses: the ground truth the
# synthetic pitch vectors are drawn around.
from pipeline.attributes.maths import KK_MAJOR, KK_MINOR

BASE62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
MALFORMED_KINDS = ("not_json", "truncated", "wrong_shape_list", "no_segments", "pitches_11", "nan", "empty")
# Keys {id}.json | {id}.json.gz (gzip body) | {id}.json with Content-Encoding: gzip.
STORAGE_KINDS = ("plain", "gzip-key", "gzip-encoding")
# Per-segment spread of timbre coefficients, measured on a real 4.0.0 document.
TIMBRE_SD = np.array([8.0, 58, 54, 29, 31, 15, 28, 13, 25, 12, 8, 18])
TIMBRE_MEAN_SD = np.array([0.0, 45, 35, 25, 25, 15, 15, 10, 10, 6, 6, 8])
NEVER = np.iinfo(np.int32).max
_WORDS = ("Midnight Golden Electric Paper Silent Neon Wild Broken Velvet Hollow Crystal Café Años Heart "
          "River Satellite Engine Garden Mirror Echo Signal Horizon Ocean Tokyo Reykjavík Sommar").split()
_NAMES = "Ana José Zoë Kenji Søren Łukasz Amara Nina Luis Björk Ife Mateo Priya Oskar Chloé Tariq".split()


def kk_profile(key: int, mode: int) -> np.ndarray:
    """The KK profile of a key (0=C..11=B) and mode (1=major, 0=minor), rotated so index 0 is C."""
    return np.roll(KK_MAJOR if mode else KK_MINOR, key)


def key_mode_from_chroma(chroma: np.ndarray) -> tuple[int, int]:
    """The (key, mode) whose KK profile correlates best with a mean chroma vector."""
    best = max((np.corrcoef(chroma, kk_profile(k, m))[0, 1], k, m) for m in (1, 0) for k in range(12))
    return best[1], best[2]


def make_track_ids(rng: np.random.Generator, n: int, exclude: Set[str] = frozenset()) -> list[str]:
    """``n`` unique 22-character base62 ids (Spotify's alphabet), none of them in ``exclude``."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        codes = np.ascontiguousarray(BASE62[rng.integers(0, 62, size=(n - len(out), 22))])
        for raw in codes.view("S22").ravel():
            text = raw.decode("ascii")
            if text not in seen and text not in exclude:
                seen.add(text)
                out.append(text)
    return out


def _fingerprint_string(rng: np.random.Generator) -> str:
    """A short zlib+urlsafe-base64 blob: starts with ``eJ`` like the real code/echoprint strings."""
    return base64.urlsafe_b64encode(zlib.compress(rng.bytes(int(rng.integers(30, 60))))).decode("ascii")


def _intervals(starts: np.ndarray, ends: np.ndarray, confidence: np.ndarray) -> list[dict]:
    """start/duration/confidence dicts; durations come from the rounded bounds, so tiles stay contiguous."""
    s = np.round(starts, 5)
    cols = (s.tolist(), np.round(np.round(ends, 5) - s, 5).tolist(), np.round(confidence, 3).tolist())
    return [{"start": a, "duration": b, "confidence": c} for a, b, c in zip(*cols, strict=True)]


def synth_analysis(rng: np.random.Generator, track_id: str, tempo: float, key: int, mode: int,
                   time_signature: int, duration: float, n_segments: int, *,
                   timestamp: int | None = None) -> dict:
    """A Spotify 4.0.0-shaped analysis whose beat grid, key and mode are recoverable ground truth.

    ``track_id`` is not stored in the document (real analyses do not carry it either); it is a
    parameter so callers seed ``rng`` from it and the signature reads like the real lookup.
    """
    duration = round(float(duration), 5)
    ibi = 60.0 / tempo
    t0 = float(rng.uniform(0.05, min(1.5, 2 * ibi)))
    n_beats = max(int((duration - t0) / ibi), 2)
    steps = ibi * (1 + rng.normal(0, 0.004, n_beats))
    starts = t0 + np.concatenate(([0.0], np.cumsum(steps[:-1])))
    keep = starts + steps <= duration
    starts, steps = starts[keep], steps[keep]
    ends = starts + steps
    beats = _intervals(starts, ends, rng.beta(2, 3, len(starts)))
    bar_idx = np.arange(0, len(starts), time_signature)
    bar_end = ends[np.minimum(bar_idx + time_signature - 1, len(starts) - 1)]
    bars = _intervals(starts[bar_idx], bar_end, rng.beta(2, 3, len(bar_idx)))
    half = starts + steps / 2
    tatums = _intervals(np.column_stack((starts, half)).ravel(), np.column_stack((half, ends)).ravel(),
                        np.repeat(rng.beta(2, 3, len(starts)), 2))

    loudness = float(np.clip(rng.normal(-9, 3), -30, -2))
    fade_in = round(float(rng.uniform(0, min(2.5, duration / 10))), 5)
    fade_out = round(max(fade_in, duration - float(rng.uniform(2, 12))), 5)
    # Sections start at bar lines (plus 0.0) and tile the track.
    n_sections = int(np.clip(round(duration / 28), 1, 20))
    picks = rng.choice(np.arange(1, len(bar_idx)), size=min(n_sections - 1, len(bar_idx) - 1), replace=False)
    sec_starts = np.concatenate(([0.0], np.sort(starts[bar_idx[picks]])))
    sec_ends = np.append(sec_starts[1:], duration)
    sections = _intervals(sec_starts, sec_ends, rng.uniform(0.3, 1, len(sec_starts)))
    sections[0]["confidence"] = 1.0
    for sec in sections:
        sec.update(loudness=round(loudness + float(rng.normal(0, 2)), 3),
                   tempo=round(tempo * (1 + float(rng.normal(0, 0.003))), 3),
                   tempo_confidence=round(float(rng.uniform(0, 1)), 3), key=key,
                   key_confidence=round(float(rng.uniform(0, 1)), 3), mode=mode,
                   mode_confidence=round(float(rng.uniform(0, 1)), 3), time_signature=time_signature,
                   time_signature_confidence=round(float(rng.uniform(0, 1)), 3))

    # Segments tile [0, duration] contiguously (rounded bounds, so durations add up exactly).
    w = rng.gamma(2.0, 1.0, n_segments)
    bounds = np.round(np.concatenate(([0.0], np.cumsum(w) / w.sum() * duration)), 5)
    bounds[-1] = duration
    seg_len = np.diff(bounds)
    mid = bounds[:-1] + seg_len / 2
    fade = -30 * (1 - np.clip(mid / max(fade_in, 1e-9), 0, 1)) - 30 * np.clip(
        (mid - fade_out) / max(duration - fade_out, 1e-9), 0, 1)
    l_max = np.clip(loudness + 4 + rng.normal(0, 3.5, n_segments) + fade, -60, 0)
    l_start = np.maximum(l_max - rng.gamma(2, 4, n_segments), -60)
    l_start[0] = -60.0
    l_max_time = seg_len * rng.beta(1.5, 4, n_segments)
    pitches = (kk_profile(key, mode) / 6.35) ** 2 * rng.lognormal(0, 0.45, (n_segments, 12))
    pitches /= pitches.max(axis=1, keepdims=True)
    timbre = rng.normal(rng.normal(0, TIMBRE_MEAN_SD), TIMBRE_SD, (n_segments, 12))
    timbre[:, 0] = (l_max + 60) * 0.7 + rng.normal(0, 3, n_segments)
    timbre = np.clip(timbre, [0] + [-150] * 11, [60] + [150] * 11)
    segments = _intervals(bounds[:-1], bounds[1:], rng.beta(1.2, 2, n_segments))
    cols = [np.round(a, n).tolist()
            for a, n in ((l_start, 3), (l_max_time, 5), (l_max, 3), (pitches, 3), (timbre, 3))]
    for seg, (ls, lmt, lm, p, t) in zip(segments, zip(*cols, strict=True), strict=True):
        seg.update(loudness_start=ls, loudness_max_time=lmt, loudness_max=lm, pitches=p, timbre=t)
    last = segments[-1]
    last.update(loudness_end=round(max(-60.0, last["loudness_max"] - float(rng.uniform(10, 40))), 3),
                pitches=last.pop("pitches"), timbre=last.pop("timbre"))  # keep the real key order

    conf = np.round(rng.uniform(0, 1, 5), 3).tolist()
    if timestamp is None:
        timestamp = int(rng.integers(1_450_000_000, 1_700_000_000))
    return {
        "meta": {"analyzer_version": "4.0.0", "platform": "Linux", "detailed_status": "OK", "status_code": 0,
                 "timestamp": int(timestamp), "analysis_time": round(float(rng.uniform(1, 12)), 5),
                 "input_process": "libvorbisfile L+R 44100->22050"},
        "track": {"num_samples": int(round(duration * 22050)), "duration": duration, "sample_md5": "",
                  "offset_seconds": 0, "window_seconds": 0, "analysis_sample_rate": 22050,
                  "analysis_channels": 1, "end_of_fade_in": fade_in, "start_of_fade_out": fade_out,
                  "loudness": round(loudness, 3), "tempo": round(float(tempo), 3),
                  "tempo_confidence": conf[0], "time_signature": time_signature,
                  "time_signature_confidence": conf[1], "key": key, "key_confidence": conf[2], "mode": mode,
                  "mode_confidence": conf[3], "codestring": _fingerprint_string(rng), "code_version": 3.15,
                  "echoprintstring": _fingerprint_string(rng), "echoprint_version": 4.12,
                  "synchstring": _fingerprint_string(rng), "synch_version": 1.0,
                  "rhythmstring": _fingerprint_string(rng), "rhythm_version": 1.0},
        "bars": bars, "beats": beats, "tatums": tatums, "sections": sections, "segments": segments,
    }


def _malformed_body(kind: str, doc: dict) -> bytes:
    """The bytes of a broken document of the given kind (see ``MALFORMED_KINDS``)."""
    if kind == "not_json":
        return b"<html>oops"
    if kind == "empty":
        return b""
    if kind == "truncated":
        full = orjson.dumps(doc)
        return full[: len(full) // 2]
    if kind == "wrong_shape_list":
        return orjson.dumps([doc["track"]])
    if kind == "no_segments":
        return orjson.dumps({k: v for k, v in doc.items() if k != "segments"})
    if kind == "pitches_11":
        seg = doc["segments"][len(doc["segments"]) // 2]
        seg["pitches"] = seg["pitches"][:11]
        return orjson.dumps(doc)
    if kind == "nan":
        doc["track"]["loudness"] = float("nan")
        return json.dumps(doc).encode("utf-8")  # the stdlib writes the (invalid JSON) literal NaN
    raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")


@dataclass(frozen=True)
class TrackTruth:
    """What the pipeline should find about one track on one day."""

    track_id: str
    tempo: float
    key: int
    mode: int
    time_signature: int
    duration: float
    n_segments: int
    added_day: int
    removed_day: int | None  # takedown day: absent from the dump from then on
    available_day: int | None  # day the current version's object appears in S3; None = never analysed
    malformed: str | None
    analysis_updated_at: int | None
    version: int
    storage: str
    in_dump: bool


@dataclass(frozen=True)
class ObjectSpec:
    """One S3 object: its key relative to the source prefix and a lazily generated body."""

    key: str
    track_id: str
    version: int
    content_encoding: str | None
    malformed: str | None
    sim: CatalogSimulation = field(compare=False, repr=False)

    def document(self) -> bytes:
        """The (possibly malformed) JSON bytes, before any gzip."""
        return self.sim.document_bytes(self.track_id, self.version)

    def body(self) -> bytes:
        """The stored bytes: gzip (with mtime 0, so deterministic) for ``.gz`` keys and Content-Encoding."""
        data = self.document()
        gzipped = self.key.endswith(".gz") or self.content_encoding == "gzip"
        return gzip.compress(data, compresslevel=6, mtime=0) if gzipped else data


@dataclass
class DayState:
    """The dump of one day (rows sorted by track_id) and the truth of every track added so far."""

    day: int
    date: dt.date
    rows: list[dict]
    truth: dict[str, TrackTruth]


@dataclass
class CatalogSimulation:
    """A catalog evolving day by day: new tracks, takedowns, late/never/malformed/re-analysed analyses.

    Day 0 holds ``initial_tracks``; the late/never/malformed/gzip shares apply to every added
    track, day 0 included, so a small simulation already exercises every path. Late tracks are
    in the dump (with their ``analysis_updated_at``) 1-5 days before their object exists.
    """

    seed: int
    start_date: dt.date
    initial_tracks: int
    daily_new_ratio: float = 0.03
    takedown_ratio: float = 0.005
    late_ratio: float = 0.05
    never_ratio: float = 0.01
    malformed_ratio: float = 0.005
    reanalysed_ratio: float = 0.0
    segments: int = 200
    gzip_ratio: float = 0.2
    _ids: list[str] = field(default_factory=list, init=False, repr=False)
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _cols: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _names: list[tuple[str | None, str | None]] = field(default_factory=list, init=False, repr=False)
    _history: dict[int, list[tuple[int, int]]] = field(default_factory=dict, init=False, repr=False)
    _last_day: int = field(default=-1, init=False, repr=False)

    def epoch(self, d: int) -> int:
        """Midnight UTC of day ``d``, epoch seconds."""
        return calendar.timegm((self.start_date + dt.timedelta(days=d)).timetuple())

    def _add_tracks(self, rng: np.random.Generator, n: int, d: int) -> None:
        ids = make_track_ids(rng, n, exclude=self._index.keys())
        u = rng.random(n)
        never = u < self.never_ratio
        late = ~never & (u < self.never_ratio + self.late_ratio)
        bad = (rng.random(n) < self.malformed_ratio) & ~never
        start = int((self._cols["malformed"] >= 0).sum()) if self._cols else 0
        malformed = np.full(n, -1)
        malformed[bad] = (start + np.arange(int(bad.sum()))) % len(MALFORMED_KINDS)  # cycle through kinds
        g = rng.random(n)
        past = rng.integers(86_400, 3 * 365 * 86_400, n) if d == 0 else rng.integers(0, 86_400, n)
        new = {
            "tempo": np.round(np.clip(rng.normal(118, 24, n), 62, 205), 3), "key": rng.integers(0, 12, n),
            "mode": (rng.random(n) < 0.65).astype(int),
            "ts": rng.choice([3, 4, 5, 7], n, p=[0.1, 0.85, 0.03, 0.02]),
            "duration": np.round(np.clip(rng.lognormal(np.log(210), 0.3, n), 30, 900), 5),
            "nseg": np.maximum(rng.poisson(self.segments, n), 8), "added": np.full(n, d),
            "removed": np.full(n, NEVER), "malformed": malformed,
            "avail": np.where(never, -1, np.where(late, d + rng.integers(1, 6, n), d)),
            "storage": np.where(g < self.gzip_ratio / 2, 1, np.where(g < self.gzip_ratio, 2, 0)),
            "updated0": np.where(never, -1, self.epoch(d) - past),
        }
        words, names = rng.integers(0, len(_WORDS), (n, 2)), rng.integers(0, len(_NAMES), (n, 2))
        for i, track_id in enumerate(ids):
            self._index[track_id] = len(self._ids)
            self._ids.append(track_id)
            artist = None if rng.random() < 0.01 else f"{_NAMES[names[i, 0]]} {_WORDS[names[i, 1]]}"
            self._names.append((f"{_WORDS[words[i, 0]]} {_WORDS[words[i, 1]]}", artist))
        self._cols = {k: np.concatenate((self._cols[k], v)) if self._cols else v for k, v in new.items()}

    def _advance(self, d: int) -> None:
        """Simulate days up to ``d``; day ``k`` only draws from ``(seed, k)``, so history never changes."""
        while self._last_day < d:
            k = self._last_day + 1
            rng = np.random.default_rng([self.seed, k])
            if k == 0:
                self._add_tracks(rng, self.initial_tracks, 0)
            else:
                c = self._cols
                alive = np.flatnonzero(c["removed"] == NEVER)
                gone = rng.choice(alive, self._count(rng, self.takedown_ratio, len(alive)), replace=False)
                c["removed"][gone] = k
                ok = np.flatnonzero((c["removed"] == NEVER) & (c["avail"] >= 0) & (c["avail"] < k)
                                    & (c["malformed"] < 0))
                n_re = min(self._count(rng, self.reanalysed_ratio, len(alive)), len(ok))
                for i in np.sort(rng.choice(ok, n_re, replace=False)).tolist():
                    self._history.setdefault(i, []).append((k, self.epoch(k) + int(rng.integers(0, 86_400))))
                self._add_tracks(rng, self._count(rng, self.daily_new_ratio, len(alive)), k)
            self._last_day = k

    @staticmethod
    def _count(rng: np.random.Generator, ratio: float, n: int) -> int:
        """``ratio * n`` with stochastic rounding, so small catalogs still see rare events on average."""
        x = ratio * n
        return int(x) + int(rng.random() < x - int(x))

    def _version(self, i: int, d: int) -> tuple[int, int | None, int | None]:
        """(version, analysis_updated_at, available_day) of track ``i`` as of day ``d``."""
        events = [e for e in self._history.get(i, ()) if e[0] <= d]
        if events:
            return len(events), events[-1][1], events[-1][0]
        avail, updated = int(self._cols["avail"][i]), int(self._cols["updated0"][i])
        return 0, (None if updated < 0 else updated), (None if avail < 0 else avail)

    def _key(self, i: int) -> str:
        return f"{self._ids[i]}.json.gz" if self._cols["storage"][i] == 1 else f"{self._ids[i]}.json"

    def day(self, d: int) -> DayState:
        """The dump rows of day ``d`` and the truth of every track added up to it."""
        self._advance(d)
        c = self._cols
        truth: dict[str, TrackTruth] = {}
        rows = []
        for i in np.flatnonzero(c["added"] <= d).tolist():
            version, updated, avail = self._version(i, d)
            removed = int(c["removed"][i])
            t = TrackTruth(self._ids[i], float(c["tempo"][i]), int(c["key"][i]), int(c["mode"][i]),
                           int(c["ts"][i]), float(c["duration"][i]), int(c["nseg"][i]), int(c["added"][i]),
                           None if removed == NEVER else removed, avail,
                           MALFORMED_KINDS[c["malformed"][i]] if c["malformed"][i] >= 0 else None,
                           updated, version, STORAGE_KINDS[c["storage"][i]], removed > d)
            truth[t.track_id] = t
            if t.in_dump:
                key = self._key(i) if avail is not None and c["storage"][i] == 1 else None
                title, artist = self._names[i]
                rows.append({"track_id": t.track_id, "analysis_key": key, "analysis_updated_at": updated,
                             "title": title, "artist": artist})
        rows.sort(key=lambda r: r["track_id"])
        return DayState(d, self.start_date + dt.timedelta(days=d), rows, truth)

    def objects_available(self, d: int) -> dict[str, ObjectSpec]:
        """Every object in S3 on day ``d`` (taken-down tracks keep theirs), by key, in key order."""
        self._advance(d)
        c = self._cols
        out = {}
        for i in np.flatnonzero((c["avail"] >= 0) & (c["avail"] <= d)).tolist():
            key = self._key(i)
            kind = int(c["malformed"][i])
            out[key] = ObjectSpec(key, self._ids[i], self._version(i, d)[0],
                                  "gzip" if c["storage"][i] == 2 else None,
                                  MALFORMED_KINDS[kind] if kind >= 0 else None, self)
        return dict(sorted(out.items()))

    def document_bytes(self, track_id: str, version: int) -> bytes:
        """The body of one version of a track's analysis, generated from (seed, track_id, version)."""
        i = self._index[track_id]
        c = self._cols
        timestamp = int(c["updated0"][i]) if version == 0 else self._history[i][version - 1][1]
        id_hash = int.from_bytes(hashlib.blake2b(track_id.encode("ascii"), digest_size=8).digest(), "big")
        rng = np.random.default_rng([self.seed, id_hash, version])
        doc = synth_analysis(rng, track_id, float(c["tempo"][i]), int(c["key"][i]), int(c["mode"][i]),
                             int(c["ts"][i]), float(c["duration"][i]), int(c["nseg"][i]), timestamp=timestamp)
        kind = int(c["malformed"][i])
        return _malformed_body(MALFORMED_KINDS[kind], doc) if kind >= 0 else orjson.dumps(doc)
