"""Concurrency on loopback: many searches at once while one client enrols and another removes.

A bounded load test against a real server: every search must come back, from a committed generation,
with whole changes only (an identity enrolled with two vectors shows both or neither; a removed one
never appears once its removal committed). Then calibration, which changes the threshold every search uses.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gallery import Gallery
from gallery.synthetic import synthetic_gallery

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
from servers import make_keys, start_server  # noqa: E402

pytestmark = pytest.mark.timeout(300)

SEARCHERS = 8
SEARCHES_EACH = 30
CHANGES = 6  # enrolments, and as many removals
DIM = 32


IDENTITIES = 1000


@pytest.fixture(scope="module")
def vectors_set():
    return synthetic_gallery(IDENTITIES, 2, DIM, genuine=0.8, seed=5)


@pytest.fixture(scope="module")
def vector_server(vectors_set, tmp_path_factory):
    """An ivfpq gallery: its searches re-rank from the shards' memory-mapped vectors, which a removal
    zero-fills when it commits, so a search overlapping a commit would answer with wrong scores."""
    root = tmp_path_factory.mktemp("vector-server") / "gallery"
    Gallery.from_vectors(vectors_set.vectors, vectors_set.identities, root, index="ivfpq", rows_per_shard=250,
                         progress=False)
    server = start_server(root, keys=make_keys(root))
    yield server
    server.stop()


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_searches_during_enrolments_and_removals_see_only_whole_committed_changes(vector_server, vectors_set):
    rng = np.random.default_rng(9)
    names = np.asarray(vectors_set.identities)
    victims = [str(s) for s in np.unique(names)[:CHANGES]]
    victim_probes = [vectors_set.vectors[np.flatnonzero(names == v)[0]] for v in victims]
    newcomers = []
    for i in range(CHANGES):
        v = unit(rng.normal(size=DIM))
        newcomers.append((f"newcomer-{i}", np.stack([v, unit(v + 0.05 * rng.normal(size=DIM))])))
    probes = np.stack(victim_probes + [vecs[0] for _, vecs in newcomers]).tolist()
    with vector_server.client("search") as c:
        initial = c.get("/v1/ready").json()["generation"]

    answers, writes, errors = [], [], []
    start = threading.Barrier(SEARCHERS + 2)

    def searcher(client_no: int) -> None:
        with vector_server.client("search") as http:
            start.wait()
            for seq in range(SEARCHES_EACH):
                r = http.post("/v1/search/vectors", json={"vectors": probes, "k": 3})
                if r.status_code != 200:
                    errors.append((r.status_code, r.text))
                    continue
                answers.append((client_no, seq, r.json()))

    def writer(role: str, requests) -> None:
        with vector_server.client(role) as http:
            start.wait()
            for kind, name, send in requests:
                time.sleep(0.05)  # spread the changes over the searching
                r = send(http)
                if r.status_code != 200:
                    errors.append((r.status_code, r.text))
                    continue
                writes.append((kind, name, r.json()["generation"]))

    enrolments = [("enrol", name, lambda h, n=name, x=vecs: h.post(f"/v1/identities/{n}/vectors", json={"vectors": x.tolist()}))
                  for name, vecs in newcomers]
    removals = [("remove", name, lambda h, n=name: h.delete(f"/v1/identities/{n}")) for name in victims]
    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(SEARCHERS)]
    threads += [threading.Thread(target=writer, args=("enrol", enrolments)),
                threading.Thread(target=writer, args=("admin", removals))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)

    assert errors == []
    assert len(answers) == SEARCHERS * SEARCHES_EACH and len(writes) == 2 * CHANGES
    committed = [g for _, _, g in writes]
    assert len(set(committed)) == len(committed) and min(committed) > initial  # one generation per change
    seen = [a["generation"] for _, _, a in answers]
    assert set(seen) <= {initial, *committed}, "a search answered from a generation no change committed"
    assert len(set(seen)) >= 3, "the searches did not overlap the changes; the test proved nothing"
    for client_no in range(SEARCHERS):  # a client's next search never goes back in time
        mine = [a["generation"] for c, _, a in sorted(answers, key=lambda t: t[1]) if c == client_no]
        assert mine == sorted(mine)

    for _, _, a in answers:
        g = a["generation"]
        for j, name in enumerate(victims):
            removed_at = next(w[2] for w in writes if w[1] == name)
            matched = {m["identity"] for r in a["results"] for m in r["matches"]}
            if g >= removed_at:
                assert name not in matched, f"{name} found at generation {g}, removed at {removed_at}"
            else:
                r = a["results"][j]
                assert r["identity"] == name and r["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        for j, (name, _) in enumerate(newcomers):
            enrolled_at = next(w[2] for w in writes if w[1] == name)
            r = a["results"][CHANGES + j]
            if g >= enrolled_at:
                assert r["identity"] == name and r["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
                assert len(r["matches"][0]["records"]) == 2, "half of an enrolment was visible"
            else:
                assert name not in {m["identity"] for m in r["matches"]}

    with vector_server.client("search") as c:
        info = c.get("/v1/info").json()
    assert info["generation"] == max(committed) and info["identities"] == IDENTITIES
    assert info["records"] == 2 * IDENTITIES and info["index"]["kind"] == "ivfpq"


def test_calibration_sets_the_threshold_every_search_then_uses(vector_server, vectors_set):
    with vector_server.client("admin") as admin:
        assert admin.get("/v1/calibration").json()["calibrated"] is False
        done = admin.post("/v1/calibration", json={"target_fpir": 0.025, "seed": 1})
        assert done.status_code == 200, done.text
        status = done.json()
        assert status["calibrated"] is True and status["threshold"]["source"] == "calibrated"
        assert status["calibration"]["protocol"] == "leave-identities-out" and status["calibration"]["target_fpir"] == 0.025
        assert admin.get("/v1/calibration").json()["threshold"] == status["threshold"]
        (r,) = admin.post("/v1/search/vectors", json={"vectors": vectors_set.vectors[:1].tolist()}).json()["results"]
        assert (r["threshold"], r["threshold_source"]) == (status["threshold"]["value"], "calibrated")

        rng = np.random.default_rng(2)
        enrolled = {i["identity"] for i in admin.get("/v1/identities", params={"limit": 1000}).json()["identities"]}
        rows = [i for i, s in enumerate(vectors_set.identities) if str(s) in enrolled][1::2][:100]
        mated = vectors_set.vectors[rows]
        strangers = unit(rng.normal(size=(100, DIM)))
        labels = [str(vectors_set.identities[i]) for i in rows] + ["-"] * 100
        body = {"target_fpir": 0.1, "probe_vectors": np.concatenate([mated, strangers]).tolist(), "probe_labels": labels}
        probed = admin.post("/v1/calibration", json=body).json()
        assert probed["calibration"]["protocol"] == "probes"
        assert (probed["calibration"]["n_mated"], probed["calibration"]["n_nonmated"]) == (100, 100)
        assert probed["generation"] > status["generation"]

        def refusal(body):
            r = admin.post("/v1/calibration", json=body)
            assert r.status_code == 422 and list(r.json()) == ["error"], r.text
            return r.json()["error"]

        assert "target_fpir" in refusal({"target_fpir": 0})
        assert "give both or neither" in refusal({"probe_vectors": mated.tolist()})
        assert "dimension" in refusal({"probe_vectors": [[1.0, 2.0]], "probe_labels": ["a"]})
    with vector_server.client("enrol") as enrol:
        assert enrol.post("/v1/calibration", json={}).status_code == 403
