#!/usr/bin/env bash
# Idempotent set-up of a git-ignored .venv (Python 3.11) with torch, detectron2 and the
# project. Re-running is cheap: a stamp file records the hash of this script and setup.py.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.vitdet-setup
want=$(cat scripts/setup_env.sh setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "vitdet needs Python 3.11 (set PYTHON=...)" >&2; exit 1; }
[ -x $VENV/bin/python ] || "$PYTHON" -m venv $VENV
PY=$VENV/bin/python
PIP="$PY -m pip --disable-pip-version-check"

# setuptools<82: detectron2's model_zoo imports pkg_resources, which 82 removed;
# torch 2.14.1 needs >= 77.0.3.
$PIP install -q -U pip wheel "setuptools>=77.0.3,<82"
# Pinned: pip takes both from local disk here; an unpinned torch is a multi-GB download.
$PIP install -q torch==2.14.1 torchvision==0.29.1

# The project and its declared dependencies (setup.py is the one place they are listed).
$PIP install -q -e ".[dev]"

# detectron2: keep an importable one (a user's source build); otherwise use the registry
# repackaging sal-detectron2==0.7.2 (upstream a59f0563), re-tagged pure Python without its
# cp310 _C library, which this project never needs.
if ! $PY -c 'import detectron2' 2>/dev/null; then
  D2_SHA=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.10 \
    -d "$work" sal-detectron2==0.7.2
  whl=$(ls "$work"/sal_detectron2-0.7.2-*.whl)
  echo "$D2_SHA  $whl" | sha256sum -c --quiet \
    || { echo "sal-detectron2 wheel hash mismatch" >&2; exit 1; }
  $PY -m wheel unpack -d "$work/unpacked" "$whl"
  root=$(ls -d "$work"/unpacked/*/)
  rm -f "$root"detectron2/_C*.so
  info=$(ls -d "$root"*.dist-info)
  sed -i -e 's/^Tag: .*/Tag: py3-none-any/' -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' \
    "$info/WHEEL"
  # Its numpy<2 pin is dropped: current opencv needs numpy 2 and the Mask R-CNN path runs on it.
  sed -i '/^Requires-Dist: numpy<2/d' "$info/METADATA"
  rm -f "$info/RECORD"
  mkdir -p "$work/out"
  $PY -m wheel pack -d "$work/out" "$root"
  $PIP install -q --no-deps "$work"/out/*.whl
fi
$PY -c 'import detectron2, torch; from detectron2.modeling import GeneralizedRCNN'
echo "$want" > "$STAMP"
echo "set-up done: $($PY -c 'import torch, detectron2; print("torch", torch.__version__, "detectron2", detectron2.__version__)')"
