"""Several writers and readers on one gallery at once, in separate processes, for a bounded run.

Two writers each add a new identity and remove an earlier one of their own, in a loop; three readers
open the gallery afresh, search it and count it, over and over. At the end the gallery verifies, every
committed record is there exactly once, and no reader saw an error or a half-made generation.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gallery import Gallery
from gallery.synthetic import synthetic_gallery

pytestmark = pytest.mark.slow

ROUNDS = 12
READS = 40

WRITER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from gallery import Gallery
    root, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    log = open(sys.argv[4], "w")
    for i in range(rounds):
        label = f"{name}-{i}"
        x = rng.standard_normal((2, 32)).astype(np.float32)
        ids = Gallery.open(root, wait=60).add_vectors(x, [label, label], progress=False)
        log.write(json.dumps({"op": "add", "identity": label, "ids": ids.tolist()}) + "\\n"); log.flush()
        if i % 3 == 2:
            gone = f"{name}-{i - 2}"
            Gallery.open(root, wait=60).remove([gone])
            log.write(json.dumps({"op": "remove", "identity": gone}) + "\\n"); log.flush()
""")

READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from gallery import Gallery
    root, reads, probe = sys.argv[1], int(sys.argv[2]), np.load(sys.argv[3])
    seen = []
    for _ in range(reads):
        try:
            g = Gallery.open(root)
            (r,) = g.search(probe, k=1)
            seen.append({"generation": g.manifest.generation, "records": len(g), "index": g.manifest.index.ntotal,
                         "identities": len(g.identities), "best": r.matches[0].identity, "score": r.matches[0].score})
        except Exception as e:
            seen.append({"error": f"{type(e).__name__}: {e}"})
    print(json.dumps(seen))
""")


def test_two_writers_and_three_readers_leave_a_consistent_gallery(tmp_path):
    data = synthetic_gallery(100, 2, 32, genuine=0.7, seed=11)
    root = tmp_path / "g"
    Gallery.from_vectors(data.vectors, data.identities, root, rows_per_shard=16, progress=False)
    np.save(tmp_path / "probe.npy", data.vectors[:1])
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), name, str(ROUNDS), str(tmp_path / f"{name}.log")],
                                stderr=subprocess.PIPE, text=True) for name in ("w1", "w2")]
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(root), str(READS), str(tmp_path / "probe.npy")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for w in writers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    views = []
    for r in readers:
        out, err = r.communicate(timeout=300)
        assert r.returncode == 0, err
        views += json.loads(out)

    g = Gallery.open(root)
    g.verify()
    expected = {str(s): 2 for s in data.identities}
    added: dict[str, list[int]] = {}
    for name in ("w1", "w2"):
        for line in (tmp_path / f"{name}.log").read_text().splitlines():
            entry = json.loads(line)
            if entry["op"] == "add":
                expected[entry["identity"]] = 2
                added[entry["identity"]] = entry["ids"]
            else:
                del expected[entry["identity"]]
    ids, labels = g.records()
    assert len(set(ids.tolist())) == len(ids), "a record is stored twice"
    counts = dict(zip(*np.unique(labels.astype(str), return_counts=True)))
    assert {k: int(v) for k, v in counts.items()} == expected
    for identity in expected.keys() & added.keys():
        assert sorted(ids[labels.astype(str) == identity].tolist()) == sorted(added[identity])

    errors = [v["error"] for v in views if "error" in v]
    assert errors == []
    by_generation: dict[int, set] = {}
    for v in views:
        assert v["records"] == v["index"] == 2 * v["identities"], v
        assert v["best"] == str(data.identities[0]) and v["score"] > 0.999
        by_generation.setdefault(v["generation"], set()).add(v["records"])
    assert all(len(c) == 1 for c in by_generation.values()), by_generation
    assert max(by_generation) <= g.manifest.generation
