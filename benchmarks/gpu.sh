#!/usr/bin/env bash
# The GPU benchmark on a lent machine without network (see benchmarks/README.md, "On a lent GPU machine").
#   bash benchmarks/gpu.sh wheels   here, with PyPI: nnsight and its dependencies as CPython 3.12 wheels in
#                                   .bench-wheels/ (about 10 MB; git-ignored, carried to the device)
#   bash benchmarks/gpu.sh run      there: installs those wheels (if carried) beside the machine's own torch and
#                                   transformers, then prints the table, also written to $OUT/bench-h200.txt
# The device's Python (3.12) already has torch, transformers, huggingface-hub, pyyaml, tqdm, pandas, psutil,
# safetensors and tokenizers, so only what nnsight adds travels. TransformerLens needs datasets and pyarrow
# (too large to carry): its rows print n/a there.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=.bench-wheels

case "${1:-}" in
  wheels)
    rm -rf "$wheels"
    python3 -m pip download -q --dest "$wheels" --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      nnsight==0.8.1 cloudpickle greenlet httpx httpcore anyio h11 sniffio pydantic pydantic-core \
      annotated-types typing-inspection websocket-client zstandard
    du -sh "$wheels"
    ;;
  run)
    export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    if [ -d "$wheels" ]; then
      site="$(mktemp -d)"
      python3 -m pip install -q --no-index --no-deps --target "$site" "$wheels"/*.whl
      export PYTHONPATH="$site:$PWD"  # the tool processes inherit it
    fi
    set -o pipefail
    timeout "${BENCH_TIMEOUT:-540}" python3 -m benchmarks.run --device cuda "${@:2}" 2>&1 | tee "${OUT:-.}/bench-h200.txt"
    ;;
  *)
    echo "usage: bash benchmarks/gpu.sh wheels | run [benchmarks.run options]" >&2
    exit 2
    ;;
esac
