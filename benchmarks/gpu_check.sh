#!/usr/bin/env bash
# The GPU check: run on a machine with CUDA, from the repository root, in the project's venv.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# 1. The parity suite with its CUDA forms: for each fixture model, the whole report, the pair
#    statistics, one layer's decomposition and every intervention mode on cuda against the CPU
#    (tables within 1e-4 relative, logits within 1e-5), plus the dtype guards and the lint.
# 2. `rope-interp report` on the built-in model in bfloat16 on cuda and in float32 on the CPU
#    with the same corpus and seed, and every table compared (benchmarks/compare_tables.py).
# Budget: a few minutes on one GPU (the CPU float32 report is the slow part: ~5 min on 16 cores).
set -euo pipefail
OUT="${1:-out/gpu_check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1

python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (torch %s); nothing to check." % torch.__version__)
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
PY

echo "== 1. parity suite on cuda"
python -m pytest -q -rs tests/test_parity.py tests/test_device_boundary.py tests/test_spec.py \
    2>&1 | tee "$OUT/parity.txt"

echo "== 2. report: bfloat16 on cuda vs float32 on the CPU"
BUDGET=(--tokens 2048 --seq-len 256 --ablation-tokens 1024 --analysis-tokens 1024 --bootstrap 200 --seed 0)
/usr/bin/env time -p rope-interp report --device cuda --dtype bfloat16 "${BUDGET[@]}" \
    --out "$OUT/report_cuda_bf16.html" --save-tables "$OUT/cuda_bf16" 2>&1 | tail -n 25
/usr/bin/env time -p rope-interp report --device cuda --dtype float32 "${BUDGET[@]}" \
    --out "$OUT/report_cuda_f32.html" --save-tables "$OUT/cuda_f32" 2>&1 | tail -n 25
/usr/bin/env time -p rope-interp report --device cpu --dtype float32 "${BUDGET[@]}" \
    --out "$OUT/report_cpu_f32.html" --save-tables "$OUT/cpu_f32" 2>&1 | tail -n 25

echo "== float32: cuda vs cpu (should agree to ~1e-4)"
python benchmarks/compare_tables.py "$OUT/cpu_f32" "$OUT/cuda_f32" --tolerance 1e-3 \
    | tee "$OUT/compare_cuda_f32.txt"
echo "== bfloat16 on cuda vs float32 on cpu (bf16 rounding: u = 3.9e-3)"
python benchmarks/compare_tables.py "$OUT/cpu_f32" "$OUT/cuda_bf16" --tolerance 0.05 \
    | tee "$OUT/compare_cuda_bf16.txt" || echo "(some tables beyond 5 % of their scale: see above)"
