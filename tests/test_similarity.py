"""Similar tracks: exact search on literal vectors, features, filters, persistence, approximate recall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.demo.synthetic_features import clustered_features
from pipeline.serving import similarity
from pipeline.serving.errors import PublishError, UnknownTrackError
from pipeline.serving.features import DIM, FeatureCollector, Features, standardise
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


def literal_index() -> SimilarityIndex:
    """Five tracks on the unit circle (plus a featureless one) with known tempo, key and mode."""
    vectors = np.vstack((UNIT, np.zeros((1, 2), np.float32)))
    ids = np.array([c * 22 for c in "ABCDEF"], dtype="S22")
    features = Features(ids, vectors, np.array([100, 120, 130, np.nan, 100, 100], np.float32),
                        np.array([0, 0, 5, 0, -1, 0], np.int8), np.array([1, 1, 1, 0, 1, 1], np.int8))
    return SimilarityIndex("2026-11-26", features, np.zeros(2, np.float32), np.ones(2, np.float32))


def ids(neighbours) -> list[str]:
    return [n.track_id[0] for n in neighbours]


def test_similar_excludes_the_track_and_applies_filters():
    index = literal_index()
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


def recall_at_10(index: SimilarityIndex, queries: np.ndarray, filters: Filters = NO_FILTERS) -> float:
    hits = 0
    for row in queries:
        mask = index.filter_mask(row, filters)
        candidates = np.flatnonzero(mask) if mask is not None else None
        rows, _ = exact_search(index.vectors, index.vectors[row], 11, rows=candidates)
        exact = [r for r in rows[0].tolist() if r != row][:10]
        found = [index.row_of(n.track_id) for n in index.similar(index.ids[row].decode(), 10, filters)]
        assert mask is None or all(mask[found])
        hits += len(set(found) & set(exact)) / max(1, len(exact))
    return hits / len(queries)


@pytest.fixture(scope="module")
def clustered_index() -> SimilarityIndex:
    return SimilarityIndex.build(clustered_features(5000, seed=3), "2026-11-26", approximate=True)


def test_approximate_recall_at_10(clustered_index):
    assert clustered_index.ann is not None and clustered_index.ann.nlist > 16
    queries = np.random.default_rng(1).choice(len(clustered_index), 200, replace=False)
    assert recall_at_10(clustered_index, queries) >= 0.9


def test_approximate_search_with_filters(clustered_index, monkeypatch):
    monkeypatch.setattr(similarity, "EXACT_BELOW", 0)  # force the approximate path even for small subsets
    queries = np.random.default_rng(2).choice(len(clustered_index), 100, replace=False)
    assert recall_at_10(clustered_index, queries, Filters(tempo_min=90, tempo_max=150)) >= 0.9
    assert recall_at_10(clustered_index, queries, Filters(same_key=True)) >= 0.9


def test_save_and_load_round_trip(clustered_index, tmp_path):
    path = clustered_index.save(tmp_path / "index-2026-11-26.npz")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    loaded = SimilarityIndex.load(path)
    assert loaded.version == "2026-11-26" and loaded.ann is not None
    for row in (0, 17, 4999):
        tid = clustered_index.ids[row].decode()
        same_key = Filters(same_key=True)
        assert loaded.similar(tid, 10, same_key) == clustered_index.similar(tid, 10, same_key)
        assert loaded.similar(tid, 10) == clustered_index.similar(tid, 10)


def test_small_catalogues_get_no_approximate_index():
    assert SimilarityIndex.build(clustered_features(500, seed=4), "2026-11-26").ann is None
