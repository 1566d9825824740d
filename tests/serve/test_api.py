"""The HTTP API of `gallery serve`, through a real client against a real server on 127.0.0.1.

Every endpoint, every role, and every kind of bad input: bad input is answered with a 4xx and one
line of JSON, never a 500 or a traceback.
"""

from __future__ import annotations

import io
import socket
import struct
import zlib
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from gallery import Gallery

pytest.importorskip("httpx")
pytest.importorskip("fastapi")

pytestmark = pytest.mark.timeout(300)

ROLES = ("search", "enrol", "admin")
from gallery.search import MODEL_THRESHOLDS

DEFAULT = {"value": MODEL_THRESHOLDS["dlib-resnet"].value, "source": "model-default"}


def refused(response, status: int) -> str:
    """Assert ``response`` is a refusal with ``status`` and one line of JSON; return the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def files(*paths):
    return [("photos", (p.name, p.read_bytes())) for p in paths]


@pytest.fixture(scope="module")
def search(face_server):
    with face_server.client("search") as c:
        yield c


@pytest.fixture(scope="module")
def admin(face_server):
    with face_server.client("admin") as c:
        yield c


@pytest.fixture(scope="module")
def enrolled_vectors(face_server):
    """Record ids, labels and stored vectors of the server's gallery, read from its folder."""
    g = Gallery.open(face_server.root)
    ids, labels = g.records()
    return ids, labels, g.vectors_of(ids)


# ---------------------------------------------------------------- roles


ENDPOINTS = [  # method, path, role needed, request that passes the key check and changes nothing, its status
    ("GET", "/v1/auth", "search", {}, 200),
    ("GET", "/v1/info", "search", {}, 200),
    ("GET", "/v1/calibration", "search", {}, 200),
    ("GET", "/v1/identities", "search", {}, 200),
    ("GET", "/v1/records/0/thumbnail", "search", {}, 200),
    ("POST", "/v1/search/vectors", "search", {"data": {"a": "form"}}, 415),
    ("POST", "/v1/search/photos", "search", {"json": {}}, 415),
    ("POST", "/v1/identities/someone/vectors", "enrol", {"data": {"a": "form"}}, 415),
    ("POST", "/v1/identities/someone/photos", "enrol", {"json": {}}, 415),
    ("DELETE", "/v1/identities/nobody-at-all", "admin", {}, 404),
    ("POST", "/v1/calibration", "admin", {"data": {"a": "form"}}, 415),
    ("GET", "/v1/keys", "admin", {}, 200),
    ("POST", "/v1/keys", "admin", {"data": {"a": "form"}}, 415),
    ("DELETE", "/v1/keys/00000000", "admin", {}, 404),
]


@pytest.mark.parametrize("method,path,needed,harmless,allowed_status", ENDPOINTS, ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS])
def test_every_endpoint_needs_a_key_and_a_role_that_allows_it(face_server, method, path, needed, harmless, allowed_status):
    with face_server.client() as anonymous:
        assert "missing API key" in refused(anonymous.request(method, path, **harmless), 401)
        assert anonymous.request(method, path, **harmless).headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer gk_00000000_not-a-real-key"}
        assert "unknown or revoked" in refused(anonymous.request(method, path, headers=wrong, **harmless), 401)
        basic = {"Authorization": "Basic dXNlcjpwYXNz"}
        refused(anonymous.request(method, path, headers=basic, **harmless), 401)
    for role in ROLES:
        with face_server.client(role) as c:
            r = c.request(method, path, **harmless)
            if ROLES.index(role) < ROLES.index(needed):
                assert f"needs role {needed!r}" in refused(r, 403)
            else:
                assert r.status_code == allowed_status, r.text


def test_health_and_readiness_need_no_key(face_server):
    with face_server.client() as c:
        assert c.get("/v1/health").json() == {"status": "ok"}
        ready = c.get("/v1/ready").json()
        assert ready["ready"] is True and ready["generation"] >= 1


def test_auth_says_who_the_key_is(face_server):
    for role in ROLES:
        with face_server.client(role) as c:
            me = c.get("/v1/auth").json()
            assert me["auth"] is True and me["role"] == role and me["name"] == f"test {role}"
            assert face_server.keys[role].startswith(f"gk_{me['key']}_")


def test_admin_makes_and_revokes_keys_and_the_server_obeys_at_once(face_server, admin):
    made = admin.post("/v1/keys", json={"role": "search", "name": "kiosk"}).json()
    assert made["role"] == "search" and made["key"].startswith("gk_")
    listed = admin.get("/v1/keys").json()
    assert made["id"] in {k["id"] for k in listed} and all("key" not in k and "sha256" not in k for k in listed)
    with face_server.client() as c:
        bearer = {"Authorization": f"Bearer {made['key']}"}
        assert c.get("/v1/info", headers=bearer).status_code == 200
        refused(c.delete("/v1/identities/obama", headers=bearer), 403)
        assert admin.delete(f"/v1/keys/{made['id']}").json()["id"] == made["id"]
        refused(c.get("/v1/info", headers=bearer), 401)
    assert "role" in refused(admin.post("/v1/keys", json={"role": "root"}), 422)


# ---------------------------------------------------------------- reading the gallery


def test_info_and_calibration_status_describe_the_gallery(search):
    info = search.get("/v1/info").json()
    assert info["records"] == 9 and info["identities"] == 5 and info["model"] == "dlib-resnet" and info["dim"] == 128
    assert {k: info["threshold"][k] for k in ("value", "source")} == DEFAULT and info["generation"] >= 1
    status = search.get("/v1/calibration").json()
    assert status["calibrated"] is False and status["calibration"] is None
    assert {k: status["threshold"][k] for k in ("value", "source")} == DEFAULT and status["identities"] == 5


def test_identities_come_sorted_a_page_at_a_time(search):
    first = search.get("/v1/identities", params={"limit": 2}).json()
    second = search.get("/v1/identities", params={"limit": 2, "offset": 2}).json()
    assert first["total"] == 5 and [i["identity"] for i in first["identities"]] == ["alex_lacamoire", "biden"]
    assert [i["identity"] for i in second["identities"]] == ["kit_harington", "obama"]
    assert first["identities"][1]["records"] == 2
    obama = search.get("/v1/identities", params={"prefix": "ob"}).json()
    assert obama["total"] == 1 and obama["identities"][0]["identity"] == "obama"
    assert search.get("/v1/identities", params={"offset": 10}).json()["identities"] == []
    refused(search.get("/v1/identities", params={"limit": 0}), 422)
    refused(search.get("/v1/identities", params={"offset": -1}), 422)


def test_thumbnails_are_the_enrolled_faces(search, enrolled_vectors):
    ids, labels, _ = enrolled_vectors
    r = search.get(f"/v1/records/{ids[list(labels).index('obama')]}/thumbnail", params={"size": 80})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (80, 80)
    assert "no thumbnail" in refused(search.get("/v1/records/999999/thumbnail"), 404)
    refused(search.get("/v1/records/0/thumbnail", params={"size": 5000}), 422)


def test_openapi_schema_and_its_docs_page_are_served_offline(face_server):
    with face_server.client() as c:
        schema = c.get("/v1/openapi.json").json()
        assert {"/v1/search/photos", "/v1/search/vectors", "/v1/identities", "/v1/identities/{identity}",
                "/v1/identities/{identity}/photos", "/v1/identities/{identity}/vectors", "/v1/info",
                "/v1/calibration", "/v1/health", "/v1/ready", "/v1/keys"} <= set(schema["paths"])
        assert "multipart/form-data" in schema["paths"]["/v1/search/photos"]["post"]["requestBody"]["content"]
        docs = c.get("/v1/docs")
        assert docs.status_code == 200 and "docs/assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
        assert c.get("/v1/docs/assets/swagger-ui-bundle.js").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and "static/app.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/static/app.js").status_code == 200


# ---------------------------------------------------------------- search


def test_search_by_vectors_answers_each_row_with_its_generation(search, enrolled_vectors):
    ids, labels, x = enrolled_vectors
    answer = search.post("/v1/search/vectors", json={"vectors": x[[0, 5]].tolist(), "k": 3}).json()
    assert answer["generation"] >= 1 and len(answer["results"]) == 2
    for r, label in zip(answer["results"], labels[[0, 5]]):
        assert r["identity"] == label and r["known"] is True and len(r["matches"]) == 3
        assert r["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert r["threshold"] == DEFAULT["value"] and r["threshold_source"] == "model-default"
    first, second = np.flatnonzero(labels == "obama")[:2]
    blend = (x[first] + x[second]).tolist()  # obama between his two enrolled photos, neither of them
    for threshold, known in ((0.999, False), (0.5, True)):
        (r,) = search.post("/v1/search/vectors", json={"vectors": [blend], "k": 1, "threshold": threshold}).json()["results"]
        assert (r["threshold"], r["threshold_source"], r["known"]) == (threshold, "call", known)
        assert r["identity"] == ("obama" if known else None) and (r["matches"][0]["score"] >= threshold) == known


def test_search_by_photo_finds_each_face_and_rejects_the_stranger(search, faces_dir):
    answer = search.post("/v1/search/photos", params={"k": 3},
                         files=files(faces_dir / "probes/obama1.jpg", faces_dir / "misc/lin-manuel-miranda.png",
                                     faces_dir / "probes/kit_with_rose.jpg"))
    assert answer.status_code == 200, answer.text
    obama, stranger, couple = answer.json()["photos"]
    assert obama["source"] == "obama1.jpg" and [f["identity"] for f in obama["faces"]] == ["obama"]
    left, top, right, bottom = obama["faces"][0]["box"]
    assert 0 <= left < right <= 1480 and 0 <= top < bottom <= 832
    assert [f["identity"] for f in stranger["faces"]] == [None] and stranger["faces"][0]["known"] is False
    assert stranger["faces"][0]["matches"][0]["score"] < DEFAULT["value"]
    assert sorted(f["identity"] for f in couple["faces"]) == ["kit_harington", "rose_leslie"]
    assert all(f["threshold"] == DEFAULT["value"] and f["threshold_source"] == "model-default" for f in couple["faces"])


def test_photo_answers_carry_the_fields_and_values_of_the_cli_json(search, face_gallery, faces_dir):
    probe = faces_dir / "probes/obama_and_biden.jpg"
    served = search.post("/v1/search/photos", params={"k": 4}, files=files(probe)).json()["photos"][0]
    (local,) = face_gallery.search_images([probe], k=4, workers=0)
    expected = local.to_dict()  # what `gallery query --json` prints
    assert set(served) == set(expected) and served["error"] is None
    assert len(served["faces"]) == len(expected["faces"]) >= 2
    for got, want in zip(served["faces"], expected["faces"]):
        assert set(got) == set(want) | {"known"}
        assert got["box"] == want["box"] and got["identity"] == want["identity"]
        assert [m["identity"] for m in got["matches"]] == [m["identity"] for m in want["matches"]]
        assert [m["score"] for m in got["matches"]] == pytest.approx([m["score"] for m in want["matches"]], abs=1e-5)


def test_a_photo_without_a_face_is_answered_with_no_faces(search):
    blank = io.BytesIO()
    Image.new("RGB", (200, 150), "white").save(blank, format="PNG")
    answer = search.post("/v1/search/photos", files=[("photos", ("blank.png", blank.getvalue()))]).json()
    assert answer["photos"] == [{"source": "blank.png", "error": None, "faces": []}]


# ---------------------------------------------------------------- enrolment and removal


def every_file(root) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".log"))


def test_enrolled_vectors_are_found_at_once_and_removal_erases_them_from_every_file(face_server, admin, rng):
    x = rng.normal(size=(2, 128)).astype(np.float32)
    with face_server.client("enrol") as enrol:
        done = enrol.post("/v1/identities/ada lovelace/vectors", json={"vectors": x.tolist(), "sources": ["a", "b"]}).json()
        assert done["identity"] == "ada lovelace" and len(done["records"]) == 2
        found = enrol.post("/v1/search/vectors", json={"vectors": x[:1].tolist(), "k": 1}).json()
        assert found["generation"] == done["generation"] and found["results"][0]["identity"] == "ada lovelace"
        refused(enrol.delete("/v1/identities/ada lovelace"), 403)
    stored = Gallery.open(face_server.root).vectors_of(np.array(done["records"]))
    blob = every_file(face_server.root)
    assert b"ada lovelace" in blob and all(v.tobytes() in blob for v in stored)  # positive control

    removed = admin.delete("/v1/identities/ada lovelace").json()
    assert removed == {"identity": "ada lovelace", "generation": removed["generation"], "removed_records": 2}
    assert removed["generation"] > done["generation"]
    after = admin.post("/v1/search/vectors", json={"vectors": x[:1].tolist(), "k": 10}).json()
    assert after["generation"] == removed["generation"]
    assert "ada lovelace" not in {m["identity"] for m in after["results"][0]["matches"]}
    blob = every_file(face_server.root)
    assert b"ada lovelace" not in blob and not any(v.tobytes() in blob for v in stored)
    assert "no such identity: 'ada lovelace'" in refused(admin.delete("/v1/identities/ada lovelace"), 404)


def test_enrolled_photos_make_a_stranger_known_until_removed(face_server, admin, faces_dir):
    stranger = faces_dir / "misc/lin-manuel-miranda.png"
    with face_server.client("enrol") as enrol:
        before = enrol.post("/v1/search/photos", files=files(stranger)).json()
        assert before["photos"][0]["faces"][0]["identity"] is None
        blank = io.BytesIO()
        Image.new("RGB", (120, 90), "white").save(blank, format="JPEG")
        done = enrol.post("/v1/identities/lin_manuel/photos",
                          files=files(stranger) + [("photos", ("blank.jpg", blank.getvalue()))]).json()
        assert len(done["records"]) == 1 and done["generation"] > before["generation"]
        assert [(p["source"], p["enrolled"], p["reason"]) for p in done["photos"]] == [
            ("lin-manuel-miranda.png", True, None), ("blank.jpg", False, "no face found")]
        known = enrol.post("/v1/search/photos", files=files(stranger)).json()
        face = known["photos"][0]["faces"][0]
        assert known["generation"] == done["generation"]
        assert face["identity"] == "lin_manuel" and face["matches"][0]["score"] > 0.99
        listed = enrol.get("/v1/identities", params={"prefix": "lin"}).json()["identities"]
        assert listed == [{"identity": "lin_manuel", "records": 1, "first_record": done["records"][0]}]
        only_blank = [("photos", ("blank.jpg", blank.getvalue()))]
        assert "no face found" in refused(enrol.post("/v1/identities/nobody/photos", files=only_blank), 422)
    assert admin.delete("/v1/identities/lin_manuel").json()["removed_records"] == 1
    again = admin.post("/v1/search/photos", files=files(stranger)).json()
    assert again["photos"][0]["faces"][0]["identity"] is None


# ---------------------------------------------------------------- bad input


def truncated_jpeg(faces_dir) -> bytes:
    data = (faces_dir / "probes/obama1.jpg").read_bytes()
    return data[: len(data) // 3]


def png_bomb(side: int) -> bytes:
    """A valid grey PNG of side x side pixels, all zero: a few hundred KB that decode to side**2 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        parts.append(z.compress(row))
    parts.append(z.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bombs():
    return {"over Pillow's own limit": png_bomb(15_000), "over the server's --max-pixels": png_bomb(2_500)}


def test_bad_photos_are_refused_with_one_line_naming_the_file(search, faces_dir, bombs):
    assert "notes.txt: not an image" in refused(
        search.post("/v1/search/photos", files=[("photos", ("notes.txt", b"just some text\n"))]), 400)
    assert "half.jpg: corrupt or truncated image" in refused(
        search.post("/v1/search/photos", files=[("photos", ("half.jpg", truncated_jpeg(faces_dir)))]), 400)
    assert "empty.jpg: empty file" in refused(search.post("/v1/search/photos", files=[("photos", ("empty.jpg", b""))]), 400)
    for what, bomb in bombs.items():
        assert len(bomb) < 2 << 20, what  # small enough to pass the upload limit: the pixel guard must catch it
        message = refused(search.post("/v1/search/photos", files=[("photos", ("bomb.png", bomb))]), 413)
        assert "bomb.png" in message and "pixels" in message
    good = faces_dir / "probes/obama1.jpg"
    mixed = files(good) + [("photos", ("notes.txt", b"text"))]
    assert "notes.txt" in refused(search.post("/v1/search/photos", files=mixed), 400)  # whole request refused
    assert "no file parts" in refused(search.post("/v1/search/photos", files={"note": (None, "no file")}), 422)
    too_many = files(*[good] * 5)
    assert "the limit of 4 per request" in refused(search.post("/v1/search/photos", files=too_many), 413)


def test_wrong_content_types_are_refused(search, faces_dir):
    assert "multipart/form-data" in refused(search.post("/v1/search/photos", json={"photos": []}), 415)
    assert "multipart/form-data" in refused(
        search.post("/v1/search/photos", content=(faces_dir / "probes/obama1.jpg").read_bytes(),
                    headers={"content-type": "image/jpeg"}), 415)
    assert "application/json" in refused(search.post("/v1/search/vectors", content=b'{"vectors": [[1]]}',
                                                     headers={"content-type": "text/plain"}), 415)


@pytest.mark.parametrize("body,status,says", [
    (b'{"vectors": [[0.1, 0.2]', 400, "malformed JSON"),
    (b"", 400, "malformed JSON"),
    (b'{"vectors": [[NaN' + b", 1.0" * 127 + b"]]}", 422, "vectors.0.0: Input should be a finite number"),
    (b'{"vectors": [[Infinity' + b", 1.0" * 127 + b"]]}", 422, "finite number"),
    (b'{"vectors": [[1e39' + b", 1.0" * 127 + b"]]}", 422, "NaN or inf"),
    (b'{"vectors": [[1.0, 2.0]]}', 422, "dimension 2 does not match the gallery's dimension 128"),
    (b'{"vectors": [[1.0, 2.0], [1.0]]}', 422, "rows have different lengths"),
    (b'{"vectors": []}', 422, "no rows"),
    (b'{"vectors": [[' + b", ".join([b"0.0"] * 128) + b"]]}", 422, "zero vector"),
    (b'{"vectors": "abc"}', 422, "vectors"),
    (b'{"vector": [[1.0]]}', 422, "vectors: Field required"),
    (b'{"vectors": [[1.0]], "k": 0}', 422, "k: must be an integer from 1 to 10"),
    (b'{"vectors": [[1.0]], "k": 11}', 422, "k: must be an integer from 1 to 10"),
    (b'{"vectors": [[1.0]], "k": "five"}', 422, "k:"),
    (b'{"vectors": [[1.0]], "threshold": 2}', 422, "threshold: must be a cosine from -1 to 1"),
    (b"[1, 2, 3]", 422, "body"),
])
def test_bad_vector_searches_get_a_4xx_that_says_what_is_wrong(search, body, status, says):
    r = search.post("/v1/search/vectors", content=body, headers={"content-type": "application/json"})
    assert says in refused(r, status)


def test_k_out_of_range_in_a_photo_search(search, faces_dir):
    for k, says in (("0", "k: must be an integer from 1 to 10"), ("11", "from 1 to 10"), ("abc", "k: Input should be a valid integer")):
        assert says in refused(search.post("/v1/search/photos", params={"k": k}, files=files(faces_dir / "probes/obama1.jpg")), 422)


def test_bad_enrolments_change_nothing(face_server, search):
    before = search.get("/v1/info").json()
    with face_server.client("enrol") as enrol:
        x = np.ones((1, 128)).tolist()
        assert "dimension 3" in refused(enrol.post("/v1/identities/x/vectors", json={"vectors": [[1, 2, 3]]}), 422)
        assert "sources" in refused(enrol.post("/v1/identities/x/vectors", json={"vectors": x, "sources": ["a", "b"]}), 422)
        assert "identity: must not be empty" in refused(enrol.post("/v1/identities/%20/vectors", json={"vectors": x}), 422)
        assert "control characters" in refused(enrol.post("/v1/identities/a%07b/vectors", json={"vectors": x}), 422)
        refused(enrol.post("/v1/identities/x/photos", files=[("photos", ("a.txt", b"text"))]), 400)
    after = search.get("/v1/info").json()
    assert (after["generation"], after["records"]) == (before["generation"], before["records"])


def raw_request(url: str, head: bytes, body_parts=()) -> bytes:
    """Send a request over a plain socket (to control the headers exactly); return what the server answers."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head)
        try:
            for part in body_parts:
                s.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is already on its way
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_uploads_over_the_size_limit_are_refused_before_they_are_read(face_server):
    key = face_server.keys["search"].encode()
    declared = (b"POST /v1/search/photos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
                b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 3000000\r\n"
                b"Expect: 100-continue\r\n\r\n")
    answer = raw_request(face_server.url, declared)  # refused on the declared length: no body was sent
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 2097152 bytes" in answer
    chunked = (b"POST /v1/search/photos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
               b"\r\nContent-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
    part = b"--b\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"big.jpg\"\r\n\r\n" + b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(part), part)] + [b"10000\r\n" + b"x" * 65536 + b"\r\n"] * 40  # ~2.6 MB, no length
    answer = raw_request(face_server.url, chunked, chunks)
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit" in answer


def test_unknown_paths_and_methods_are_json_too(search):
    assert refused(search.get("/v1/nothing-here"), 404) == "Not Found"
    refused(search.put("/v1/info"), 405)


def test_the_server_logged_no_traceback(face_server):
    """Runs after the bad-input tests of this module: none of them reached the catch-all."""
    assert "Traceback" not in face_server.output() and "internal error" not in face_server.output()
