"""What machine a benchmark ran on, for its results (imported by the scripts beside it)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo with its family, model and widest vector unit, else what
    the platform module says. Virtual machines often report a bare vendor name ("AMD EPYC"), and two
    such machines can differ in whether FAISS's fast-scan and the BLAS run on AVX-512 or AVX2."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break
            fields[key.strip()] = value.strip()
    except OSError:
        fields = {}
    if "model name" not in fields:
        return platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, {simd})"
