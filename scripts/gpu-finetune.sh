#!/usr/bin/env bash
# The GPU measurement of fine-tuning: a larger base (Qwen2.5-1.5B-Instruct from the hub, bf16),
# LoRA on the Paris tour, reporting seconds per step and peak GPU memory next to the CPU figures
# (README, "Fine-tuning"). Needs a CUDA machine with the hub reachable (or the model in HF_HOME).
#   bash scripts/gpu-finetune.sh [extra `guide finetune` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-runs}
$PY -m guide finetune --tour paris --preset gpu --no-publish --run-dir "$OUT/finetune-paris-gpu" "$@"
$PY - "$OUT/finetune-paris-gpu/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["training"]
print(f"| device | base | steps | s/step | examples/step | peak GiB |\n|---|---|---|---|---|---|\n"
      f"| {r['device']} | {r['base']['name']} | {t['steps']} | {t['seconds_per_step']} | "
      f"{r['config']['grad_accum']} | {t['peak_memory_gib']} |")
PY
