#!/usr/bin/env bash
# One command from a fresh clone: make .venv, install gallery with its dev, ray and serve extras (the tests
# run the Ray engine on a local cluster and `gallery serve` on loopback) and the CPU build of torch, then run the main job on data it makes itself (a synthetic gallery, built and searched).
# Usage: bash tools/install.sh [--no-demo]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -e ".[dev,ray,serve]"

if [ "${1:-}" = "--no-demo" ]; then
  exit 0
fi

echo "== demo: a synthetic gallery of 20,000 identities, searched with 5 known and 5 unknown probes"
rm -rf demo-gallery && mkdir -p demo-gallery/input
G=.venv/bin/gallery
$G synthesize demo-gallery/input/enrol.parquet --identities 20000 --images 3 --dim 128 \
   --probes demo-gallery/input/probes.parquet --n-probes 5
$G import-vectors demo-gallery/input/enrol.parquet -g demo-gallery/gallery
$G search-vectors demo-gallery/input/probes.parquet -g demo-gallery/gallery -k 3 --threshold 0.5
$G info -g demo-gallery/gallery

FACES=../shared/faces
if [ -d "$FACES/gallery" ]; then
  echo "== demo: a face gallery from the real photos in $FACES, then two probe photos"
  $G build "$FACES/gallery" -o demo-gallery/faces --overwrite
  $G query "$FACES/probes/kit_with_rose.jpg" "$FACES/misc/lin-manuel-miranda.png" -g demo-gallery/faces -k 3
fi
