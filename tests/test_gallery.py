"""The Gallery API: exact and approximate identity search, enrolment, removal that erases, bad input."""

import numpy as np
import pytest

from gallery import (
    Gallery,
    GalleryError,
    GalleryNotFoundError,
    InvalidInputError,
    ModelMismatchError,
)
from gallery.enrolment import writer_lock
from gallery.synthetic import synthetic_gallery, synthetic_probes


def brute_force_identities(x, labels, q, k):
    """Top-k identities by best image score, with numpy only."""
    S = q @ x.T
    out = []
    for row in S:
        best = {}
        for score, lab in zip(row, labels):
            best[lab] = max(best.get(lab, -2.0), float(score))
        out.append(sorted(best.items(), key=lambda t: (-t[1], t[0]))[:k])
    return out


@pytest.fixture
def built(small_set, tmp_path):
    return Gallery.from_vectors(small_set.vectors, small_set.identities, tmp_path / "g", rows_per_shard=500, progress=False)


def test_flat_search_equals_brute_force_per_identity(built, small_set):
    q, _ = synthetic_probes(small_set, 30, 10, seed=1)
    expected = brute_force_identities(small_set.vectors, small_set.identities, q, 5)
    for result, want in zip(built.search(q, k=5), expected):
        assert [m.identity for m in result.matches] == [w[0] for w in want]
        assert [m.score for m in result.matches] == pytest.approx([w[1] for w in want], abs=1e-5)


def test_mean_of_top_n_equals_brute_force(built, small_set):
    q, _ = synthetic_probes(small_set, 10, 0, seed=2)
    S = q @ small_set.vectors.T
    for row, result in zip(S, built.search(q, k=3, aggregate="mean", top_n=2)):
        for m in result.matches:
            mine = np.sort(row[small_set.identities == m.identity])[::-1][:2]
            assert m.score == pytest.approx(mine.mean(), abs=1e-5)


def test_open_set_decision(built, small_set):
    q, labels = synthetic_probes(small_set, 50, 50, seed=3)
    results = built.search(q, k=1, threshold=0.55)
    assert all(r.threshold == 0.55 and r.threshold_source == "call" for r in results)
    known = sum(r.identity == lab for r, lab in zip(results[:50], labels[:50]))
    unknown = sum(r.identity is None for r in results[50:])
    assert known >= 45 and unknown >= 45
    assert all((r.identity is not None) == (r.best.score >= 0.55) for r in results)


def test_exactly_k_identities_even_when_one_identity_has_many_images(tmp_path, small_set):
    x = small_set.vectors[:300]
    labels = small_set.identities[:300].copy()
    crowd = small_set.vectors[0] + 0.05 * np.random.default_rng(0).standard_normal((60, x.shape[1])).astype(np.float32)
    g = Gallery.from_vectors(np.r_[x, crowd], np.r_[labels, ["crowd"] * 60], tmp_path / "g", progress=False)
    (result,) = g.search(small_set.vectors[:1], k=5)
    assert len(result.matches) == 5 and len({m.identity for m in result.matches}) == 5
    assert "crowd" in [m.identity for m in result.matches[:2]] and len(result.matches[0].records) >= 1


def test_ivfpq_agrees_with_flat_at_rank_one(tmp_path):
    data = synthetic_gallery(7000, 3, 64, genuine=0.6, seed=9)
    q, _ = synthetic_probes(data, 400, 0, seed=10)
    flat = Gallery.from_vectors(data.vectors, data.identities, tmp_path / "flat", index="flat", progress=False)
    ivf = Gallery.from_vectors(data.vectors, data.identities, tmp_path / "ivf", index="ivfpq", nlist=128, pq_m=32,
                               nprobe=64, rerank=8, progress=False)
    a = [r.matches[0].identity for r in flat.search(q, k=3)]
    b = [r.matches[0].identity for r in ivf.search(q, k=3)]
    assert np.mean(np.array(a) == np.array(b)) >= 0.99
    assert ivf.info()["ram_bytes"]["index"] < flat.info()["ram_bytes"]["index"] / 4


def test_add_vectors_enrols_without_retraining(tmp_path):
    data = synthetic_gallery(2000, 2, 32, genuine=0.7, seed=4)
    g = Gallery.from_vectors(data.vectors, data.identities, tmp_path / "g", index="ivfpq", nlist=32, progress=False)
    trained = g.manifest.index.trained_on
    newcomer = synthetic_gallery(1, 3, 32, genuine=0.9, seed=99)
    ids = g.add_vectors(newcomer.vectors, ["newcomer"] * 3)
    assert list(ids) == [4000, 4001, 4002]
    assert g.manifest.index.trained_on == trained and g.manifest.index.ntotal == 4003 and len(g) == 4003
    (r,) = g.search(newcomer.vectors[:1], k=1, nprobe=32)
    assert r.matches[0].identity == "newcomer" and set(r.matches[0].records) <= set(ids)
    assert Gallery.open(tmp_path / "g").search(newcomer.vectors[:1], k=1)[0].matches[0].identity == "newcomer"


def test_vectors_from_another_model_are_refused_and_nothing_written(built, small_set):
    before = (built.root / "manifest.json").read_bytes()
    files = sorted(p.name for p in (built.root / "shards").iterdir())
    with pytest.raises(ModelMismatchError, match="holds 'external' embeddings; vectors from model 'arcface' cannot be mixed in"):
        built.add_vectors(small_set.vectors[:2], ["a", "b"], model="arcface")
    assert (built.root / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in (built.root / "shards").iterdir()) == files


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda x, y: (x[:, :-1], y), None),
        (lambda x, y: (np.where(np.arange(len(x))[:, None] == 3, np.nan, x), y), "row 3 contains NaN or inf"),
        (lambda x, y: (np.where(np.arange(len(x))[:, None] == 5, 0.0, x), y), "row 5 is a zero vector"),
        (lambda x, y: (x, y[:-1]), "labels for"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, small_set, mutate, message):
    x, y = mutate(small_set.vectors[:20].copy(), list(small_set.identities[:20]))
    g = Gallery.from_vectors(small_set.vectors[:20], small_set.identities[:20], tmp_path / "ok", progress=False)
    if message is None:  # wrong dimension, on add
        with pytest.raises(InvalidInputError, match="dimension 63 does not match the gallery's dimension 64"):
            g.add_vectors(x, y)
        assert len(Gallery.open(tmp_path / "ok")) == 20
        return
    with pytest.raises(InvalidInputError, match=message):
        Gallery.from_vectors(x, y, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_unknown_folder_and_existing_gallery(tmp_path, built, small_set):
    with pytest.raises(GalleryNotFoundError, match="no such gallery folder"):
        Gallery.open(tmp_path / "nowhere")
    with pytest.raises(GalleryError, match="already holds a gallery"):
        Gallery.from_vectors(small_set.vectors[:5], small_set.identities[:5], built.root, progress=False)


def test_overwrite_replaces_and_erases_the_old_files(built, small_set):
    old = {p.name for p in (built.root / "shards").iterdir()}
    g = Gallery.from_vectors(small_set.vectors[:30], ["x"] * 30, built.root, overwrite=True, progress=False)
    assert g.identities == ["x"] and len(g) == 30
    assert not old & {p.name for p in (built.root / "shards").iterdir()}


def test_hdf5_gallery(tmp_path, small_set):
    g = Gallery.from_vectors(small_set.vectors, small_set.identities, tmp_path / "h", shard_format="hdf5",
                             rows_per_shard=700, progress=False)
    assert [s.file.endswith(".h5") for s in g.manifest.shards] == [True, True, True]
    q = small_set.vectors[:5]
    assert [r.matches[0].identity for r in Gallery.open(tmp_path / "h").search(q, k=1)] == list(small_set.identities[:5])


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_remove_erases_the_identity_from_every_file(tmp_path, small_set, fmt):
    secret = "identity-to-forget-7f3a9c"
    x = small_set.vectors[:400].copy()
    labels = small_set.identities[:400].copy()
    labels[100:103] = secret
    g = Gallery.from_vectors(x, labels, tmp_path / "g", shard_format=fmt, rows_per_shard=150, progress=False)

    def everything():
        return b"".join(p.read_bytes() for p in sorted((tmp_path / "g").rglob("*")) if p.is_file())

    blob = everything()
    assert secret.encode() in blob and x[101].tobytes() in blob  # positive control: the test can see them
    assert g.remove([secret]) == 3
    blob = everything()
    assert secret.encode() not in blob
    for row in (100, 101, 102):
        assert x[row].tobytes() not in blob
    assert x[99].tobytes() in blob and x[103].tobytes() in blob  # neighbours in the same shard survive
    for shard in g.manifest.shards:
        records = g._store.read(shard)
        assert secret not in set(records.identities)
    assert secret not in g.identities and len(g) == 397
    assert all(secret not in [m.identity for m in r.matches] for r in g.search(x[100:103], k=10))


def test_remove_unknown_identity_changes_nothing(built):
    before = (built.root / "manifest.json").read_bytes()
    with pytest.raises(InvalidInputError, match="no such identities: nobody; nothing was removed"):
        built.remove(["nobody", built.identities[0]])
    assert (built.root / "manifest.json").read_bytes() == before


def test_rebuild_index_changes_kind_and_keeps_answers(built, small_set):
    q, labels = synthetic_probes(small_set, 100, 0, seed=7)
    before = [r.matches[0].identity for r in built.search(q, k=1)]
    spec = built.rebuild_index("ivfpq", nlist=16, pq_m=32)
    assert spec.kind == "ivfpq" and built.manifest.index.factory == "IVF16,PQ32x4fs"
    after = [r.matches[0].identity for r in built.search(q, k=1, nprobe=16)]
    assert np.mean(np.array(before) == np.array(after)) >= 0.98
    built.rebuild_index("flat")
    assert [r.matches[0].identity for r in built.search(q, k=1)] == before
    assert len(list((built.root / "index").iterdir())) == 1  # old index files are gone


def test_info_reports_counts_index_threshold_and_sizes(built):
    info = built.info()
    assert (info["records"], info["identities"], info["shards"]) == (1800, 600, 4)
    assert info["index"]["kind"] == "flat" and info["index"]["ntotal"] == 1800
    assert info["threshold"] == {"value": 0.5, "source": "fallback"}
    assert info["disk_bytes"] > 1800 * 64 * 4 * 2
    assert info["ram_bytes"]["per_vector"] >= 64 * 4


def test_verify_catches_a_damaged_file(built):
    built.verify()
    shard = built.root / built.manifest.shards[1].file
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match="checksum mismatch"):
        Gallery.open(built.root).verify()


def test_one_writer_at_a_time(built, small_set):
    with writer_lock(built.root):
        with pytest.raises(GalleryError, match="another process is writing to this gallery"):
            built.add_vectors(small_set.vectors[:1], ["late"])


def test_bad_search_arguments(built):
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        built.search(np.ones((1, 64)), k=0)
    with pytest.raises(InvalidInputError, match="queries: dimension 3"):
        built.search(np.ones((1, 3)))
