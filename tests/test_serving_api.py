"""The lookup API as a real uvicorn process on loopback, checked against the published snapshot."""

from __future__ import annotations

import httpx
import pytest

from pipeline import layout
from pipeline.serving.features import FeatureCollector, standardise
from pipeline.serving.publish import publish_snapshot
from tests.serving_support import (
    DAY1,
    DAY2,
    attribute_records,
    make_warehouse,
    open_store,
    running_api,
    store_settings,
    stored_records,
    write_snapshot,
)

pytest_plugins = ["tests.serving_support"]

V1, V2 = layout.format_date(DAY1), layout.format_date(DAY2)
ABSENT = "0" * 22


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(request, tmp_path_factory):
    """(base URL, snapshot records by id, store kind, tmp folder) of an API serving DAY1."""
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    wh = make_warehouse(tmp / "warehouse")
    write_snapshot(wh, DAY1, attribute_records(300, 1))
    write_snapshot(wh, DAY2, attribute_records(150, 2))
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = store_settings(request.param, tmp, url)
    with open_store(request.param, settings) as store:
        publish_snapshot(wh, DAY1, store, tmp / "index")
        with running_api(request.param, settings, tmp / "index", tmp / "api.log") as base:
            with httpx.Client(base_url=base, timeout=10) as client:
                yield client, stored_records(wh, DAY1), (wh, store, tmp)


def test_snapshot_and_openapi(served):
    client, records, _ = served
    assert client.get("/snapshot").json()["version"] == V1
    assert client.get("/snapshot").json()["records"] == len(records)
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/tracks/{track_id}", "/tracks", "/tracks:batch", "/tracks/{track_id}/similar", "/snapshot"} <= set(paths)


def test_one_track_is_the_snapshot_record(served):
    client, records, _ = served
    for track_id in list(records)[:25]:
        response = client.get(f"/tracks/{track_id}")
        assert response.status_code == 200
        assert response.json() == {"snapshot": V1, "attributes": records[track_id]}


def test_batches(served):
    client, records, _ = served
    ids = list(records)[:40]
    expected = {"snapshot": V1, "tracks": {t: records[t] for t in ids}, "missing": [ABSENT]}
    assert client.get("/tracks", params={"ids": ",".join([*ids, ABSENT])}).json() == expected
    assert client.post("/tracks:batch", json={"ids": [*ids, ABSENT]}).json() == expected


@pytest.mark.parametrize("path", ["/tracks/short", "/tracks/" + "!" * 22, "/tracks/" + "a" * 23,
                                  "/tracks/" + "a" * 21 + "é/similar", "/tracks?ids=abc", "/tracks?ids=",
                                  "/tracks/{id}/similar?k=0", "/tracks/{id}/similar?k=101",
                                  "/tracks/{id}/similar?tempo_min=150&tempo_max=100",
                                  "/tracks/{id}/similar?tempo_min=fast", "/tracks/{id}/similar?tempo_min=inf",
                                  "/tracks/{id}/similar?tempo_max=Infinity", "/tracks/{id}/similar?tempo_min=nan",
                                  "/tracks/{id}%0A", "/tracks/{id}%0A/similar", "/tracks?ids={id}%0A",
                                  "/tracks/%20{id}", "/tracks/{id}%00"])
def test_malformed_requests_are_400(served, path):
    client, records, _ = served
    assert client.get(path.replace("{id}", next(iter(records)))).status_code == 400


def test_an_id_with_a_trailing_newline_is_400_naming_the_control_character_not_404(served):
    """``re.match`` with ``$`` accepted "X\\n", which then answered 404 for a track that does exist."""
    client, records, _ = served
    response = client.get(f"/tracks/{next(iter(records))}%0A")
    assert response.status_code == 400
    assert "whitespace or control characters" in response.text, response.text


def test_malformed_batch_bodies_are_400(served):
    client, records, _ = served
    assert client.post("/tracks:batch", json={"ids": ["nope"]}).status_code == 400
    assert client.post("/tracks:batch", json={"ids": [next(iter(records))] * 1001}).status_code == 400
    assert client.post("/tracks:batch", json={"wrong": []}).status_code == 400


def test_unknown_tracks_are_404(served):
    client, _, _ = served
    assert client.get(f"/tracks/{ABSENT}").status_code == 404
    assert client.get(f"/tracks/{ABSENT}/similar").status_code == 404


def reference_neighbours(records: dict[str, dict], track_id: str, k: int, keep=lambda r: True) -> list[str]:
    """Cosine neighbours computed independently of the index: plain numpy over every record."""
    collector = FeatureCollector(len(records))
    for record in records.values():
        collector.add(record)
    features = collector.finish()
    vectors, _, _ = standardise(features.raw)
    ids = [i.decode() for i in features.ids]
    scores = vectors @ vectors[ids.index(track_id)]
    ranked = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
    return [ids[i] for i in ranked if ids[i] != track_id and keep(records[ids[i]])][:k]


def test_similar_matches_exact_cosine(served):
    client, records, _ = served
    for track_id in list(records)[:5]:
        body = client.get(f"/tracks/{track_id}/similar", params={"k": 10}).json()
        assert [n["track_id"] for n in body["similar"]] == reference_neighbours(records, track_id, 10)
        scores = [n["score"] for n in body["similar"]]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.000001 for s in scores)


def test_similar_with_filters(served):
    client, records, _ = served
    track_id = next(iter(records))
    me = records[track_id]
    body = client.get(f"/tracks/{track_id}/similar", params={"k": 5, "same_key": "true"}).json()
    assert body["similar"] and all((n["key"], n["mode"]) == (me["key"], me["mode"]) for n in body["similar"])
    same = lambda r: (r["key"], r["mode"]) == (me["key"], me["mode"])  # noqa: E731
    assert [n["track_id"] for n in body["similar"]] == reference_neighbours(records, track_id, 5, same)
    body = client.get(f"/tracks/{track_id}/similar", params={"k": 8, "tempo_min": 100, "tempo_max": 130}).json()
    assert len(body["similar"]) == 8 and all(100 <= n["tempo"] <= 130 for n in body["similar"])
    in_range = lambda r: 100 <= r["tempo"] <= 130  # noqa: E731
    assert [n["track_id"] for n in body["similar"]] == reference_neighbours(records, track_id, 8, in_range)
    assert client.get(f"/tracks/{track_id}/similar", params={"tempo_min": 900}).json()["similar"] == []


def test_a_publish_flips_what_the_running_service_answers(served):
    client, records, (wh, store, tmp) = served
    day1_track = next(iter(records))
    day2 = stored_records(wh, DAY2)
    day2_track = next(iter(day2))
    assert client.get(f"/tracks/{day2_track}").status_code == 404
    publish_snapshot(wh, DAY2, store, tmp / "index")
    assert client.get("/snapshot").json()["version"] == V2
    assert client.get(f"/tracks/{day2_track}").json() == {"snapshot": V2, "attributes": day2[day2_track]}
    assert client.get(f"/tracks/{day1_track}").status_code == 404
    similar = client.get(f"/tracks/{day2_track}/similar").json()
    assert similar["snapshot"] == V2 and all(n["track_id"] in day2 for n in similar["similar"])


def test_nothing_published_is_503(tmp_path):
    settings = {"sqlite_path": str(tmp_path / "empty.sqlite")}
    with running_api("sqlite", settings, tmp_path, tmp_path / "api.log") as base:
        assert httpx.get(f"{base}/snapshot").status_code == 503
        assert httpx.get(f"{base}/tracks/{'a' * 22}").status_code == 503
        assert httpx.get(f"{base}/tracks/{'a' * 22}/similar").status_code == 503
