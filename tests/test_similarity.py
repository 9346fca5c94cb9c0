"""Similar tracks: exact search on literal vectors, features, filters, persistence, approximate recall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.demo.synthetic_features import clustered_features
from pipeline.serving.errors import PublishError, UnknownTrackError
from pipeline.serving.features import DIM, SCALE, FeatureCollector, Features, standardise
from pipeline.serving.similarity import NO_FILTERS, Filters, SimilarityIndex, exact_search

UNIT = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6], [-1, 0]], dtype=np.float32)


@pytest.mark.parametrize("block", [1, 2, 65536])
def test_exact_search_on_literal_vectors(block):
    rows, scores = exact_search(UNIT, np.array([[1, 0], [0, 1]]), 3, block=block)
    assert rows.tolist() == [[0, 3, 2], [1, 2, 3]]
    np.testing.assert_allclose(scores, [[1, 0.8, 0.6], [1, 0.8, 0.6]], rtol=1e-6)
    rows, _ = exact_search(UNIT, np.array([1, 0]), 3, rows=np.array([1, 2, 4]), block=block)
    assert rows.tolist() == [[2, 1, 4]]
    assert exact_search(UNIT, np.array([1, 0]), 10, block=block)[0].shape == (1, 5)


def test_exact_search_breaks_ties_by_row():
    twins = np.array([[0, 1], [1, 0], [1, 0], [1, 0]], dtype=np.float32)
    assert exact_search(twins, np.array([1, 0]), 2, block=1)[0].tolist() == [[1, 2]]


def test_standardise_centres_scales_and_normalises():
    raw = np.full((4, DIM), 5.0, dtype=np.float32)  # constant columns carry no information
    raw[:, 0] = [1, 2, 3, np.nan]
    raw[3, :] = np.nan  # a track with no features at all
    vectors, mean, std = standardise(raw)
    assert mean[0] == pytest.approx(2) and std[1] == 0
    assert np.all(vectors[:, 1:] == 0) and np.all(vectors[3] == 0)
    assert vectors[:3, 0].tolist() == [-1, 0, 1]  # one non-zero dimension: unit norm keeps only its sign


def record(track_id: str, **fields) -> dict:
    return {"track_id": track_id, "tempo": 120.0, "key": 1, "mode": 1, **fields}


def test_feature_collector_grows_sorts_and_falls_back():
    collector = FeatureCollector(capacity=1)
    for tid, extra in (("C" * 22, {}), ("A" * 22, {"tempo": None, "beat_tempo": 90.0}),
                       ("B" * 22, {"key": None, "estimated_key": 7, "mode": None})):
        collector.add(record(tid, **extra))
    features = collector.finish()
    assert [i.decode() for i in features.ids] == ["A" * 22, "B" * 22, "C" * 22]
    assert features.tempo.tolist() == [90, 120, 120]
    assert features.key.tolist() == [1, 7, 1] and features.mode.tolist() == [1, -1, 1]
    assert features.raw[0, 36] == pytest.approx(math.log2(90))
    assert np.isnan(features.raw[0, 0])  # no timbre_mean: missing, not zero


def test_feature_collector_rejects_broken_snapshots():
    collector = FeatureCollector()
    with pytest.raises(PublishError, match="not a 22-character"):
        collector.add(record("short"))
    collector.add(record("A" * 22))
    collector.add(record("A" * 22))
    with pytest.raises(PublishError, match="duplicate"):
        collector.finish()


def literal_index(tmp_path) -> SimilarityIndex:
    """Five tracks on the unit circle (plus a featureless one) with known tempo, key and mode.

    The vectors live in the first two dimensions; statistics of mean 0 and std = the group scale
    make the standardisation an identity, so the index searches exactly these vectors.
    """
    vectors = np.zeros((6, DIM), np.float32)
    vectors[:5, :2] = UNIT
    ids = np.array([c * 22 for c in "ABCDEF"], dtype="S22")
    features = Features(ids, vectors, np.array([100, 120, 130, np.nan, 100, 100], np.float32),
                        np.array([0, 0, 5, 0, -1, 0], np.int8), np.array([1, 1, 1, 0, 1, 1], np.int8))
    return SimilarityIndex.build(features, "2026-11-26", tmp_path / "index-2026-11-26",
                                 stats=(np.zeros(DIM, np.float32), SCALE.copy()))


def ids(neighbours) -> list[str]:
    return [n.track_id[0] for n in neighbours]


def test_similar_excludes_the_track_and_applies_filters(tmp_path):
    index = literal_index(tmp_path)
    assert ids(index.similar("A" * 22, 3)) == ["D", "C", "B"]
    assert ids(index.similar("A" * 22, 10, Filters(tempo_min=120, tempo_max=130))) == ["C", "B"]  # inclusive
    assert ids(index.similar("A" * 22, 10, Filters(tempo_min=90))) == ["C", "B", "E"]  # unknown tempo never passes
    assert ids(index.similar("A" * 22, 10, Filters(same_key=True))) == ["B"]  # D: other mode; F: featureless
    assert index.similar("E" * 22, 10, Filters(same_key=True)) == []  # query key unknown
    assert index.similar("F" * 22, 3) == []  # no features: no meaningful neighbours
    first = index.similar("A" * 22, 1)[0]
    assert (first.score, first.tempo, first.key, first.mode) == (pytest.approx(0.8), None, 0, 0)
    with pytest.raises(UnknownTrackError):
        index.similar("Z" * 22)


def exact_neighbours(index: SimilarityIndex, track_id: str, k: int, filters: Filters = NO_FILTERS) -> list[str]:
    """The reference: every live row of every segment scored by plain numpy, filtered, best first."""
    seg, row = index.locate(track_id)
    query = np.asarray(seg.vectors[row])
    scored = []
    for s, dead in index.segments:
        rows = np.arange(s.listed)
        if dead is not None:
            rows = np.setdiff1d(rows, dead)
        keep = np.ones(len(rows), bool)
        if filters.tempo_min is not None:
            keep &= s.tempo[rows] >= filters.tempo_min
        if filters.tempo_max is not None:
            keep &= s.tempo[rows] <= filters.tempo_max
        if filters.same_key:
            keep &= (s.key[rows] == seg.key[row]) & (s.mode[rows] == seg.mode[row])
        rows = rows[keep]
        scores = np.asarray(s.vectors[rows]) @ query
        scored += [(float(sc), bytes(s.ids[r]).decode()) for sc, r in zip(scores, rows, strict=True)]
    scored.sort(key=lambda t: -t[0])
    return [t for _, t in scored if t != track_id][:k]


def recall_at_10(index: SimilarityIndex, track_ids: list[str], filters: Filters = NO_FILTERS) -> float:
    hits = 0.0
    for track_id in track_ids:
        exact = exact_neighbours(index, track_id, 10, filters)
        found = [n.track_id for n in index.similar(track_id, 10, filters)]
        hits += len(set(found) & set(exact)) / max(1, len(exact))
    return hits / len(track_ids)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> tuple[Features, SimilarityIndex]:
    features = clustered_features(20_000, seed=3)
    raw = features.raw.copy()
    index = SimilarityIndex.build(features, "2026-11-26", tmp_path_factory.mktemp("ivf") / "index-2026-11-26",
                                  buckets=4)
    return Features(features.ids, raw, features.tempo, features.key, features.mode), index


def sample_ids(features: Features, n: int, seed: int) -> list[str]:
    return [features.ids[i].decode() for i in np.random.default_rng(seed).choice(len(features), n, replace=False)]


def test_approximate_recall_at_10(clustered):
    features, index = clustered
    assert index.base.nlist > 16
    assert recall_at_10(index, sample_ids(features, 100, 1)) >= 0.9


def test_approximate_search_with_filters(clustered):
    features, index = clustered
    queries = sample_ids(features, 60, 2)
    assert recall_at_10(index, queries, Filters(tempo_min=90, tempo_max=150)) >= 0.9
    assert recall_at_10(index, queries, Filters(same_key=True)) >= 0.9


def test_the_index_is_the_same_when_opened_again(clustered):
    features, index = clustered
    reopened = SimilarityIndex.open(index.directory)
    assert reopened.version == "2026-11-26" and len(reopened) == len(features)
    assert not list(index.directory.parent.glob(".*"))  # no temporary folder or spill left behind
    for track_id in sample_ids(features, 5, 3):
        same_key = Filters(same_key=True)
        assert reopened.similar(track_id, 10, same_key) == index.similar(track_id, 10, same_key)
        assert reopened.similar(track_id, 10) == index.similar(track_id, 10)


def test_every_track_is_found_by_id(clustered):
    features, index = clustered
    for i in range(0, len(features), 97):
        seg, row = index.locate(features.ids[i].decode())
        assert seg.ids[row] == features.ids[i]
    assert index.locate("0" * 22) is None


def test_small_catalogues_are_one_list_searched_exactly(tmp_path):
    index = SimilarityIndex.build(clustered_features(500, seed=4), "2026-11-26", tmp_path / "index-2026-11-26")
    assert index.base.nlist == 1
    track_id = index.base.ids[0].decode()
    assert [n.track_id for n in index.similar(track_id, 10)] == exact_neighbours(index, track_id, 10)
