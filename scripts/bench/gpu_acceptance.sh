#!/usr/bin/env bash
# GPU acceptance, ONE script for whoever gets a GPU (aim: under 8 minutes on one H100). Not run on the
# CPU machines this project is built on. Needs a Python with CUDA torch, vLLM and this package:
#   pip install -e '.[vllm,serve]' && pip install pytest openai
#   bash scripts/bench/gpu_acceptance.sh            # PY=python HBM_GBS=3350 (H100 SXM; 2039 for a PCIe A100)
# Prints, at the end, one table:
#   1. the vLLM engine tests and the serve tests against the vLLM server, on CUDA;
#   2. a Llama-2-7b-shaped GAMA (random bf16 weights, reference layout) through --engine hf and --engine vllm
#      at batch 1/16/64: clips/s, tokens/s, decode ms/step against the HBM bound (Llama weight bytes /
#      bandwidth), identical greedy answers (bf16: not expected to be all identical);
#      fusionaudio serve with 64 clients vs sequential, both engines;
#   3. a few training steps (accelerate, bf16, LoRA, gradient checkpointing) with peak memory.
# Each step has its own time limit; a step that fails or times out is reported and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
HBM_GBS=${HBM_GBS:-3350}
OUT=${OUT:-gpu_acceptance_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" FUSIONAUDIO_CACHE="$OUT/cache"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

step() {  # step NAME LIMIT_S COMMAND...: run, keep the output, note the status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  printf '%-10s exit %-3s %4ss  (%s)\n' "$name" "$rc" "$((SECONDS - t0))" "$OUT/$name.txt" >>"$OUT/summary.txt"
}

: >"$OUT/summary.txt"
"$PY" - <<'EOF' | tee "$OUT/device.txt"
import torch, vllm
print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; vllm {vllm.__version__}; "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF

# 1. tests (the engine tests use float32 models on CPU for --engine hf and vLLM on CUDA)
step tests 150 "$PY" -m pytest -q -x tests/engine_vllm tests/serve/test_serve.py -k vllm
# 2. the 7B through both engines (in-process generation at 1/16/64, then serve with 64 clients)
step engines 330 "$PY" scripts/bench/bench_engines.py --models 7b --device cuda --dtype bfloat16 \
  --batches 1,16,64 --new_tokens 32 --hbm_gbs "$HBM_GBS" --clients 64 --serve_requests 192 --serve_tokens 64 \
  --skip infer
# 3. training: accelerate bf16 + LoRA + gradient checkpointing on the 7B, peak memory
step train 120 "$PY" scripts/bench/bench_train.py --preset gama-llama2-7b --device cuda --micro_batches 1,4 \
  --steps 3 --gradient_checkpointing true --bf16 true --engine --output "$OUT/train.json"

echo
echo "================ GPU acceptance ================"
cat "$OUT/device.txt"
cat "$OUT/summary.txt"
echo "-- tests:"
tail -n 3 "$OUT/tests.txt"
echo "-- engines (7B, bf16):"
sed -n '/== model/,$p' "$OUT/engines.txt"
echo "-- training (7B):"
tail -n 12 "$OUT/train.txt"
