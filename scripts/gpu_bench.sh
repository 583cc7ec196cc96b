#!/usr/bin/env bash
# One-shot GPU sweep: ViT-B/16 at 224, bf16 compute, training step; Flax vs timm on the same card.
#
#   OUT=/some/dir bash scripts/gpu_bench.sh
#
# Writes one JSON line per run to "$OUT/gpu_bench.jsonl", the log to "$OUT/gpu_bench.log", and prints
# a summary table. Runs in priority order inside a total budget (BENCH_BUDGET_S, default 450 s, for
# an 8-minute slot); each run is wrapped in `timeout` so a failure or a hang skips only that run.
# On CPU, test the logic with a tiny setting, e.g.
#   BENCH_VARIANT=Ti/4 BENCH_IMAGE_SIZE=32 BENCH_BATCHES="8 16" BENCH_STEPS=2 \
#     BENCH_EXTRA="--option=depth=1 --num-classes=10" BENCH_DTYPE=float32 PYTHON=venv/bin/python \
#     OUT=/tmp/gb bash scripts/gpu_bench.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-./gpu_bench_out}
mkdir -p "$OUT"
JSONL="$OUT/gpu_bench.jsonl"
LOG="$OUT/gpu_bench.log"
: >"$JSONL"
: >"$LOG"

VARIANT=${BENCH_VARIANT:-B/16}
SIZE=${BENCH_IMAGE_SIZE:-224}
DTYPE=${BENCH_DTYPE:-bfloat16}
STEPS=${BENCH_STEPS:-15}
read -r -a BATCHES <<<"${BENCH_BATCHES:-256 512}"
BUDGET=${BENCH_BUDGET_S:-450}
EXTRA=${BENCH_EXTRA:-}
PY=${PYTHON:-python}
START=$(date +%s)

# bench LIMIT_S LABEL ARGS...: one benchmark process, skipped when the budget cannot cover it.
bench() {
  local limit=$1 label=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if ((left < 30)); then
    echo "skip  $label (budget spent)" | tee -a "$LOG"
    return
  fi
  ((limit > left - 5)) && limit=$((left - 5))
  echo "=== $label (limit ${limit}s)" | tee -a "$LOG"
  # shellcheck disable=SC2086
  timeout -k 5 "$limit" "$PY" -m vit_jax.benchmark --variant="$VARIANT" --image-size="$SIZE" \
    --dtype="$DTYPE" --mode=train --steps="$STEPS" --warmup=3 --label="$label" --json="$JSONL" \
    $EXTRA "$@" >>"$LOG" 2>&1
  local rc=$?
  tail -n 4 "$LOG" | grep -v '^{' || true
  ((rc != 0)) && echo "FAILED $label: exit $rc (see $LOG)" | tee -a "$LOG"
}

"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import jax
print("jax", jax.__version__, jax.devices())
try:
    import torch, timm
    print("torch", torch.__version__, "timm", timm.__version__, "cuda", torch.cuda.is_available())
except Exception as e:  # noqa: BLE001
    print("no torch/timm:", e)
EOF

B0=${BATCHES[0]}
# Highest priority first: the headline Flax run, the timm baseline, then the sweep.
bench 150 "flax-cudnn-b$B0" --batch="$B0" --attn-impl=cudnn --measure-peak
bench 90 "timm-eager-b$B0" --batch="$B0" --vs-timm --skip-flax
bench 120 "flax-xla-b$B0" --batch="$B0" --attn-impl=xla
for B in "${BATCHES[@]:1}"; do
  bench 120 "flax-cudnn-b$B" --batch="$B" --attn-impl=cudnn
done
bench 200 "timm-compile-b$B0" --batch="$B0" --vs-timm --skip-flax --timm-compile
for B in "${BATCHES[@]:1}"; do
  bench 120 "flax-xla-b$B" --batch="$B" --attn-impl=xla
done

echo "=== summary ($(($(date +%s) - START)) s)"
"$PY" - "$JSONL" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"{'label':<22s} {'framework':<13s} {'batch':>5s} {'images/s':>9s} {'compile s':>9s} "
      f"{'TFLOP/s':>8s} {'MFU':>6s} {'mem GiB':>8s}")
for r in rows:
    mfu = f"{r['mfu']:6.1%}" if r.get("mfu") is not None else "     -"
    print(f"{r['label']:<22s} {r['framework']:<13s} {r['batch']:5d} {r['images_per_s']:9.1f} "
          f"{r['compile_s']:9.1f} {r['tflops']:8.1f} {mfu} {r['peak_memory_bytes'] / 2**30:8.2f}")
flax = [r for r in rows if r["framework"] == "flax"]
for name in ("timm", "timm-compile"):
    for ref in (r for r in rows if r["framework"] == name):
        same = [r for r in flax if r["batch"] == ref["batch"]]
        for tag, pool in (("same batch", same), ("any batch", flax)):
            if pool:
                best = max(pool, key=lambda r: r["images_per_s"])
                print(f"flax / {name} (batch {ref['batch']}), {tag}: "
                      f"{best['images_per_s'] / ref['images_per_s']:.2f}x ({best['label']})")
EOF
