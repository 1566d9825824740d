"""Sharded search on a local Ray cluster gives the local engine's answers, and survives a dead shard actor."""

import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from gallery import Gallery
from gallery.cli import main
from gallery.distributed.sharded import ShardUnavailableError, merge_ranked, pack_ranked, shard_of
from gallery.synthetic import synthetic_gallery, synthetic_probes
from gallery.types import Match

pytestmark = pytest.mark.timeout(300)


def ranking(result):
    return [(m.identity, m.score) for m in result.matches]


def assert_same_answers(a: list, b: list):
    """Same identities in the same order, scores equal to float32 rounding (a restarted actor may sum in
    another order)."""
    assert [[n for n, _ in ranking(r)] for r in a] == [[n for n, _ in ranking(r)] for r in b]
    assert np.allclose([s for r in a for _, s in ranking(r)], [s for r in b for _, s in ranking(r)], atol=1e-6)


def assert_same_ranking(a, b):
    """Same scores in the same order; identities equal within each group of tied scores (the last group,
    cut by k, only in size)."""
    sa, sb = [s for _, s in ranking(a)], [s for _, s in ranking(b)]
    assert sa == sb
    groups = sorted(set(sa), reverse=True)
    for i, s in enumerate(groups):
        ia = {n for n, t in ranking(a) if t == s}
        ib = {n for n, t in ranking(b) if t == s}
        assert ia == ib or (i == len(groups) - 1 and len(ia) == len(ib))


@pytest.fixture(scope="module")
def flat_dir(small_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded") / "flat"
    Gallery.from_vectors(small_set.vectors, small_set.identities, root, index="flat", rows_per_shard=500, progress=False)
    return root


@pytest.fixture(scope="module")
def sharded_flat(ray_cluster, flat_dir):
    g = Gallery.open(flat_dir, engine="ray", shards=3)
    yield g
    g.close()


def test_shard_of_keeps_each_identity_whole_and_spreads_them(small_set):
    labels = np.unique(small_set.identities)
    shards = shard_of(labels, 4)
    assert np.array_equal(shards, shard_of(labels, 4)) and set(shards.tolist()) == {0, 1, 2, 3}
    assert np.bincount(shards).min() > len(labels) / 4 * 0.7
    per_record = shard_of(small_set.identities, 4)
    for name in labels[:50]:
        assert len(set(per_record[small_set.identities == name].tolist())) == 1


def test_every_record_lives_in_exactly_one_shard(sharded_flat, small_set):
    stats = sharded_flat.info()["engine"]["shards"]
    assert len(stats) == 3 and sum(s["records"] for s in stats) == len(small_set.vectors)
    assert sum(s["identities"] for s in stats) == len(np.unique(small_set.identities))
    assert len({s["pid"] for s in stats}) == 3  # one actor process per shard


def test_sharded_flat_returns_the_local_flat_identities_and_scores(sharded_flat, flat_dir, small_probes):
    local = Gallery.open(flat_dir)
    xq, _ = small_probes
    for k in (1, 5, 20):
        for a, b in zip(local.search(xq, k=k), sharded_flat.search(xq, k=k)):
            assert_same_ranking(a, b)
            assert [m.records[0] for m in a.matches[:1]] == [m.records[0] for m in b.matches[:1]]  # the best image


def test_mean_of_top_n_images_ranks_at_least_the_local_engines_candidates(sharded_flat, flat_dir, small_probes):
    """Each shard draws its candidate identities from its own nearest records, a superset of the local
    engine's: every local answer that scores within the sharded top k is in it, and no rank scores lower."""
    local = Gallery.open(flat_dir)
    xq, _ = small_probes
    for a, b in zip(local.search(xq, k=5, aggregate="mean", top_n=2), sharded_flat.search(xq, k=5, aggregate="mean", top_n=2)):
        assert ranking(a)[0] == pytest.approx(ranking(b)[0])
        assert all(sb >= sa - 1e-6 for (_, sa), (_, sb) in zip(ranking(a), ranking(b)))
        assert {n for n, s in ranking(a) if s > ranking(b)[-1][1] + 1e-6} <= {n for n, _ in ranking(b)}


def test_open_set_decisions_are_identical_after_the_merge(sharded_flat, flat_dir, small_probes):
    local = Gallery.open(flat_dir)
    xq, truth = small_probes
    for threshold in (None, 0.3, 0.5, 0.7):
        a, b = local.search(xq, k=3, threshold=threshold), sharded_flat.search(xq, k=3, threshold=threshold)
        assert [r.identity for r in a] == [r.identity for r in b]
        assert {(r.threshold, r.threshold_source) for r in a} == {(r.threshold, r.threshold_source) for r in b}
    decided = sharded_flat.search(xq, k=1, threshold=0.5)
    assert any(r.identity is None for r in decided) and any(r.identity is not None for r in decided)
    assert all((r.identity is not None) == (r.best.score >= 0.5) for r in decided)


def test_merge_takes_the_k_best_over_all_shards_with_their_records():
    one = [[Match("a", 0.9, (4, 5), (0.9, 0.2)), Match("c", 0.5, (7,), (0.5,))], []]
    two = [[Match("b", 0.7, (1,), (0.7,)), Match("d", 0.1, (2,), (0.1,))], [Match("e", 0.3, (9,), (0.3,))]]
    merged = merge_ranked([pack_ranked(one), pack_ranked(two)], 3)
    assert merged == [[one[0][0], two[0][0], one[0][1]], [two[1][0]]]
    tied = merge_ranked([pack_ranked([[Match("x", 0.5)]]), pack_ranked([[Match("y", 0.5)]])], 1)
    assert tied == [[Match("x", 0.5)]]  # a tie goes to the earlier shard, as a stable merge would


def test_sharded_ivfpq_agrees_with_local_flat_at_rank_1(ray_cluster, tmp_path):
    data = synthetic_gallery(10_000, 3, 64, genuine=0.7, seed=3)
    xq, _ = synthetic_probes(data, 2000, 0, seed=4)
    root = tmp_path / "ivf"
    local = Gallery.from_vectors(data.vectors, data.identities, root, index="ivfpq", nlist=64, pq_m=32, nprobe=48,
                                 progress=False)
    flat = Gallery.from_vectors(data.vectors, data.identities, tmp_path / "flat", index="flat", progress=False)
    exact = [r.best.identity for r in flat.search(xq, k=1)]
    with Gallery.open(root, engine="ray", shards=3) as sharded:
        assert sharded.info()["index"]["kind"] == "ivfpq"
        answers = [r.best.identity for r in sharded.search(xq, k=10)]
        narrow = [r.best.identity for r in sharded.search(xq, k=10, nprobe=2, recheck_nprobe=1, threshold=0.65)]
        rechecked = [r.best.identity for r in sharded.search(xq, k=10, nprobe=2, recheck_nprobe=64, threshold=0.65)]  # after the merge
    narrow_agreement = np.mean([a == b for a, b in zip(narrow, exact)])
    rechecked_agreement = np.mean([a == b for a, b in zip(rechecked, exact)])
    assert narrow_agreement < 0.95 and rechecked_agreement >= 0.99, (narrow_agreement, rechecked_agreement)
    agreement = np.mean([a == b for a, b in zip(answers, exact)])
    assert agreement >= 0.999, agreement
    local_agreement = np.mean([r.best.identity == b for r, b in zip(local.search(xq, k=10), exact)])
    assert agreement >= local_agreement - 0.001  # each shard re-ranks its own candidates: never worse


def test_a_killed_shard_actor_is_restarted_from_its_files_and_the_query_answered(sharded_flat, flat_dir, small_probes):
    xq, _ = small_probes
    expected = Gallery.open(flat_dir).search(xq, k=5)
    before = sharded_flat.info()["engine"]["shards"][1]["pid"]
    os.kill(before, signal.SIGKILL)
    assert_same_answers(sharded_flat.search(xq, k=5), expected)
    after = sharded_flat.info()["engine"]["shards"][1]["pid"]
    assert after != before


def test_a_shard_actor_killed_during_a_search_does_not_change_the_answer(sharded_flat, flat_dir, small_probes):
    xq = np.repeat(small_probes[0], 50, axis=0)  # 4000 queries: a search that lasts
    expected = Gallery.open(flat_dir).search(xq, k=5)
    pid = sharded_flat.info()["engine"]["shards"][2]["pid"]
    out = {}
    search = threading.Thread(target=lambda: out.setdefault("r", sharded_flat.search(xq, k=5)))
    search.start()
    time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    search.join()
    assert_same_answers(out["r"], expected)


def test_a_shard_that_cannot_come_back_is_an_error_naming_it(ray_cluster, small_set, small_probes, tmp_path):
    root = tmp_path / "g"
    Gallery.from_vectors(small_set.vectors, small_set.identities, root, index="flat", progress=False)
    g = Gallery.open(root, engine="ray", shards=2)
    shutil.move(root / "shards", tmp_path / "elsewhere")  # the files a restart would load from
    os.kill(g.info()["engine"]["shards"][0]["pid"], signal.SIGKILL)
    with pytest.raises(ShardUnavailableError, match=r"shard 0 of 2 is unavailable .* no partial answer"):
        g.search(small_probes[0], k=3)
    g.close()


def test_changes_written_through_the_sharded_gallery_reach_its_shards(ray_cluster, small_set, tmp_path, rng):
    root = tmp_path / "g"
    Gallery.from_vectors(small_set.vectors, small_set.identities, root, index="flat", progress=False)
    with Gallery.open(root, engine="ray", shards=2) as g:
        newcomer = rng.standard_normal((2, small_set.dim)).astype(np.float32)
        g.add_vectors(newcomer, ["newcomer", "newcomer"])
        assert g.search(newcomer[:1], k=1)[0].best.identity == "newcomer"
        g.remove(["newcomer"])
        assert g.search(newcomer[:1], k=1)[0].best.identity != "newcomer"
        assert sum(s["records"] for s in g.info()["engine"]["shards"]) == len(small_set.vectors)


def test_a_change_made_by_another_process_is_picked_up(sharded_flat, flat_dir, small_set, tmp_path):
    root = tmp_path / "g"
    shutil.copytree(flat_dir, root)
    with Gallery.open(root, engine="ray", shards=2) as g:
        Gallery.open(root).remove([str(small_set.identities[0])])
        assert str(small_set.identities[0]) not in {m.identity for m in g.search(small_set.vectors[:1], k=5)[0].matches}


def test_cli_search_vectors_on_the_ray_engine_prints_the_local_table(ray_cluster, flat_dir, small_probes, tmp_path):
    queries = tmp_path / "q.npy"
    np.save(queries, small_probes[0][:10])
    runner = CliRunner()
    local = runner.invoke(main, ["search-vectors", str(queries), "-g", str(flat_dir), "-k", "3", "--json"])
    ray = runner.invoke(main, ["search-vectors", str(queries), "-g", str(flat_dir), "-k", "3", "--json",
                               "--engine", "ray", "--shards", "2"])
    assert local.exit_code == 0 and ray.exit_code == 0, ray.output

    def answers(output):  # a shard may list more of a match's images; identities, decisions and scores (to 1e-5: a
        # shard sums its matrix products in another order) agree
        rows = [json.loads(line) for line in output.splitlines()]
        return [(r["identity"], r["threshold"], [(m["identity"], round(m["score"], 5)) for m in r["matches"]]) for r in rows]

    assert len(answers(ray.output)) == 10 and answers(ray.output) == answers(local.output)
