#!/usr/bin/env bash
# The device check: RAGAR on one accelerator, beside the CPU of the same machine (docs/SCALING.md).
#
#   scripts/device-check.sh prepare   # here, after `make demo`: export the inputs and wheels into .device/
#   scripts/device-check.sh           # on the GPU machine, from the repository root (.device/ carried)
#   scripts/device-check.sh --quick   # seconds per figure: checks the script, not the card
#   scripts/device-check.sh recipe OUT BUDGET_S   # the 128-px generator recipe from .device/pairs
#                                     # (ragar.generation.recipe; docs/GENERATION.md), packed into $OUT
#
# The GPU machine needs torch, transformers, accelerate, safetensors, numpy, pillow and httpx; the rest
# (diffusers, efficientnet-lite-pytorch, pydantic, starlette, uvicorn) comes as wheels in .device/wheels,
# installed into a private folder. With the device tool:
#   run(command="bash scripts/device-check.sh", carry=[".device"], timeout_s=540)
# It prints one table and writes benchmarks/results/device-<card>.json (and a copy into $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "prepare" ]]; then
    shift
    PY=${PYTHON:-.venv/bin/python}
    exec "$PY" -m benchmarks.device_export --demo "${DEMO:-runs/demo}" --out .device "$@"
fi

if [[ ! -f .device/meta.json ]]; then
    echo "no .device/meta.json: run 'scripts/device-check.sh prepare' where the project is installed" >&2
    exit 2
fi
if ! "$PY" -c "import diffusers, pydantic, starlette, uvicorn, efficientnet_lite_pytorch" 2>/dev/null; then
    SITE=${DEVICE_SITE:-/tmp/ragar-device-site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        .device/wheels/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [[ "${1:-}" == "recipe" ]]; then
    RUN=${2:?recipe OUT BUDGET_S}
    "$PY" -m ragar.generation.recipe --pairs "${PAIRS:-.device/pairs}" --out "$RUN" --budget-s "${3:-320}" "${@:4}"
    if [[ -n "${OUT:-}" ]]; then  # what comes back: the float16 pipeline, logs and sample grids, in <16 MB parts
        (cd "$RUN" && tar -cf - pipeline recipe.json ./*/training.json ./generator/samples-*.png) \
            | split -b 15000000 - "$OUT/recipe.tar."
    fi
    exit 0
fi
exec "$PY" -m benchmarks.device_check "$@"
