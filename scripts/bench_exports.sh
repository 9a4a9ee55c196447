#!/usr/bin/env bash
# Export MODEL to every desktop-runnable target at one tile and bench them against PyTorch eager.
# Usage: scripts/bench_exports.sh MODEL [TILE] [extra zoo export args, e.g. --untrained]
# EXPORT_ONLY=1: build the artifacts, skip the bench.
# Writes exports/bench/<model>/<target>-<precision>/ and results/bench_<model>_<tile>.json.
set -euo pipefail
model=$1; tile=${2:-256}; shift; shift || true
zoo=${ZOO:-.venv/bin/zoo}
root=exports/bench/$model
mkdir -p "$root" results
targets=()
for cell in executorch-xnnpack:fp32 executorch-xnnpack:int8 tflite:fp32 tflite:int8 onnx:fp32 onnx:int8; do
  target=${cell%%:*}; precision=${cell##*:}
  out=$root/$target-$precision
  calibration=(); [ "$precision" = int8 ] && calibration=(--calibration auto --calib-images 16)
  if [ ! -f "$out/manifest.json" ]; then
    "$zoo" export "$model" --target "$target" --precision "$precision" --tile "${tile}x${tile}" \
      "${calibration[@]}" "$@" -o "$out" || { echo "export $cell failed" >&2; continue; }
  fi
  targets+=("$out")
done
[ "${EXPORT_ONLY:-0}" = 1 ] && exit 0
untrained=(); for arg in "$@"; do [ "$arg" = --untrained ] && untrained=(--untrained); done
"$zoo" bench "$model" "${targets[@]}" "${untrained[@]}" --size "${tile}x${tile}" \
  --json "results/bench_${model}_${tile}.json"
