#!/usr/bin/env bash
# Every single-GPU benchmark in one go, for one call on a lent GPU machine.
#
#   bash benchmarks/sweep.sh OUT_DIR [kernels|models|all]
#
# kernels: benchmarks/kernel.py (checks + sweep + extras) and benchmarks/attention_layer.py;
# models: benchmarks/e2e.py. Each writes <name>-<gpu>.json and <name>.log under OUT_DIR; a
# script that fails or runs out of time does not stop the others (their JSON is written after
# each section, so a cut-off run keeps what it has).
set -u
out=${1:?usage: sweep.sh OUT_DIR [kernels|models|all]}
part=${2:-all}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
gpu=$(python3 -c "import torch; from dit_sparse.quality.environment import device_slug; \
print(device_slug(torch.device('cuda')))") || exit 1

bench() {  # bench NAME SECONDS ARGS...: run benchmarks/NAME.py under a time limit
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" python3 "$here/$name.py" --out "$out/$name-$gpu.json" "$@" \
        >"$out/$name.log" 2>&1
    echo "   exit $? after $((SECONDS - start))s"
    tail -n 40 "$out/$name.log"
}

nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
if [[ $part == kernels || $part == all ]]; then
    bench kernel 330
    bench attention_layer 200
fi
if [[ $part == models || $part == all ]]; then
    bench e2e 540
fi
