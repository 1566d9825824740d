"""Exact inner-product top-k as blocked matrix products (numpy's BLAS on the CPU, torch on a GPU): sgemm speed.

The OpenBLAS bundled in the faiss-cpu wheel can run at a small fraction of the machine's
matrix-multiply throughput (it picks its kernel by CPU detection, which misfires on some
virtual CPUs), so flat search and the k-means assignment of IVF training do not use it: a block
of queries times a block of the database, a top-k per block (torch), and a merge. On a GPU the
products are torch's; on the CPU numpy's (its OpenBLAS), which on the AMD EPYC we measure on ran
1.5-2.6x faster than torch's MKL (129 against 89 GFLOP/s at 1024 x 65536 x 512, idle; more at
small query blocks: ``benchmarks/README.md``, "search_scale.py"). Both write into one reused
score buffer, which torch and numpy share without a copy.

Ties are broken by storage position (the earlier vector first), the rule of a stable sort of
``-scores``: each block's ``top-(k+1)`` certifies that no unselected score equals the k-th
(rows where it does are re-sorted in full, which near-duplicate photos make real), and merges
use stable sorts. So float32 answers equal a numpy ``argsort(-S, kind="stable")`` brute force
whenever the two compute the same scores.

The scores returned are not the block products' own: a BLAS sums a dot product in an order that
depends on the shapes it is given, so the same query and vector could score 1 ulp apart alone
and in a batch, or in a whole gallery and in one of its shards, and an inclusive threshold would
then accept one and not the other. Each returned (query, vector) pair is scored again in float64
and rounded to float32, and the top-k is re-sorted by that score, earlier rows first among equal
ones. The rounding hides the float64 sum's own order (it could show only for a sum within about
1e-16 of a float32 rounding boundary), and the score is closer to the true cosine.

>>> import numpy as np
>>> xb = np.eye(4, dtype=np.float32)
>>> D, I = exact_search(xb, xb[[2]], 2)
>>> I.tolist()
[[2, 0]]
"""

from __future__ import annotations

from typing import Optional

import numpy as np

#: Queries per matrix product: with :data:`DB_BLOCK` the score block (1024 x 65536 floats, 256 MB,
#: written into one reused buffer) measured fastest of 256-2048 x 8k-64k on 2 cores at d=512.
Q_BLOCK = 1024
#: Database rows per matrix product.
DB_BLOCK = 65_536
#: Queries re-scored together in float64 (their (block, k, d) float64 copy of the k best rows stays small).
RESCORE_BLOCK = 64


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is an install requirement
        raise ImportError("exact search needs torch: pip install torch") from None
    return torch


def as_tensor(x, device: str = "cpu", dtype: str = "float32"):
    """``x`` (an array or a tensor) as a torch tensor on ``device`` (a zero-copy view of a float32 array on the CPU)."""
    torch = _torch()
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t.to(device=device, dtype=getattr(torch, dtype))


def exact_search(
    xb,
    xq,
    k: int,
    *,
    ids: Optional[np.ndarray] = None,
    device: str = "cpu",
    dtype: str = "float32",
    q_block: int = Q_BLOCK,
    db_block: int = DB_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) of ``xq @ xb.T`` per query, best first; ties go to the earlier row.

    ``xb`` is a (n, d) array or a torch tensor already on its device (keep one to search it
    repeatedly); ``xq`` an array or tensor.
    ``ids[row]`` names each row (default: the row number). With ``k > n`` the missing slots hold id
    -1 and score -inf. ``dtype="float16"`` (for GPUs) scores in half precision: faster, not exact.
    """
    torch = _torch()
    xb_t = xb if isinstance(xb, torch.Tensor) else as_tensor(xb, device, dtype)
    n = int(xb_t.shape[0])
    xq_t = as_tensor(xq, str(xb_t.device), str(xb_t.dtype).removeprefix("torch."))
    nq, kk = len(xq), int(min(k, n))
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)
    if nq == 0 or kk <= 0:
        return D, I
    q_block = max(q_block, q_block * db_block // max(n, 1))  # a small database: more queries per product
    with torch.inference_mode():
        for s in range(0, nq, q_block):
            q = xq_t[s : s + q_block]
            _, p = _top_k_blocks(torch, xb_t, q, kk, db_block)
            v, p = _rescored(torch, xb_t, q, p)
            D[s : s + len(v), :kk] = v.cpu().numpy()
            I[s : s + len(v), :kk] = p.cpu().numpy()
    if ids is not None:
        ids = np.asarray(ids, dtype=np.int64)
        I[:, :kk] = ids[I[:, :kk]]
    return D, I


def rescored(xq: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each query of ``xq`` (nq, d) scored against its own rows of ``x`` (nq, k, d): float32 products summed
    in float64 and rounded to float32, the scores :func:`exact_search` returns, so that one (query, vector)
    pair scores the same whichever index found it (module docstring)."""
    return np.matmul(x.astype(np.float64), xq.astype(np.float64)[:, :, None])[:, :, 0].astype(np.float32)


def _rescored(torch, xb, q, p):
    """float32 scores of rows ``p`` (ranked by (-score, row)) for each query of ``q``, summed in float64,
    and the rows re-ranked by them; a stable sort keeps the given order among equal scores."""
    out_v, out_p = [], []
    for s in range(0, len(q), RESCORE_BLOCK):
        rows = p[s : s + RESCORE_BLOCK]
        v = torch.bmm(xb[rows].double(), q[s : s + RESCORE_BLOCK, :, None].double())[:, :, 0].float()
        v, order = torch.sort(v, dim=1, descending=True, stable=True)
        out_v.append(v)
        out_p.append(torch.gather(rows, 1, order))
    return torch.cat(out_v), torch.cat(out_p)


def _top_k_blocks(torch, xb, q, k: int, db_block: int):
    """Per query row of ``q``: the ``k`` best (scores, row numbers of ``xb``), ordered by (-score, row)."""
    best_v = best_p = None
    buf = torch.empty((len(q), min(db_block, int(xb.shape[0]))), dtype=q.dtype, device=q.device)
    on_cpu = q.device.type == "cpu" and q.dtype == torch.float32
    qn, xbn = (q.numpy(), xb.numpy()) if on_cpu else (None, None)
    for b in range(0, int(xb.shape[0]), db_block):
        block = xb[b : b + db_block]
        S = buf if len(block) == buf.shape[1] else torch.empty((len(q), len(block)), dtype=q.dtype, device=q.device)
        if on_cpu:
            np.matmul(qn, xbn[b : b + db_block].T, out=S.numpy())
        else:
            torch.matmul(q, block.T, out=S)
        v, p = _block_top_k(torch, S, k)
        p = p + b
        if best_v is None:
            best_v, best_p = v, p
            continue
        v, p = torch.cat([best_v, v], 1), torch.cat([best_p, p], 1)  # earlier rows first: ties keep them
        v, order = torch.sort(v, dim=1, descending=True, stable=True)
        best_v, best_p = v[:, :k], torch.gather(p, 1, order[:, :k])
    return best_v, best_p


def _block_top_k(torch, S, k: int):
    """Top-``k`` of each row of a score block, ordered by (-score, column), exact under ties."""
    width = int(S.shape[1])
    if k == 1:  # max returns the first of equal maxima
        v, p = torch.max(S, dim=1, keepdim=True)
        return v, p
    if width <= k:
        v, p = torch.sort(S, dim=1, descending=True, stable=True)
        return v, p
    v, p = torch.topk(S, k + 1, dim=1, sorted=True)
    straddle = torch.nonzero(v[:, k - 1] == v[:, k]).flatten()  # the k-th score ties an unselected one
    v, p = v[:, :k], p[:, :k]
    p, order = torch.sort(p, dim=1)
    v = torch.gather(v, 1, order)
    v, order = torch.sort(v, dim=1, descending=True, stable=True)
    p = torch.gather(p, 1, order)
    if len(straddle):
        sv, sp = torch.sort(S[straddle], dim=1, descending=True, stable=True)
        v[straddle], p[straddle] = sv[:, :k], sp[:, :k]
    return v, p
