#!/usr/bin/env bash
# The accelerator checks and figures in one short run: the step limits add up to 590 s.
#
# For a lent GPU machine: bare, no internet, its python3 already has a CUDA build of JAX, flax,
# optax, chex, orbax, torch, scipy, pytest. Nothing is installed: the checkout goes on PYTHONPATH.
#   bash benchmarks/gpu.sh                  # -> benchmarks/results/gpu.json (+ gpu/*.log, *.json)
#   GPU_QUICK=1 bash benchmarks/gpu.sh      # smoke sizes (how CI-like machines check the script)
#   GPU_CEILING=1 bash benchmarks/gpu.sh    # only the γ-ceiling study at n = 200 (its own 540 s)
#   GPU_SYNTH=1 bash benchmarks/gpu.sh      # only SynthSAEBench-16k as one program (5 architectures
#                                           # x L0 x 3 seeds, width 4,096), budgeted to 10,000
#                                           # steps of 1,024 (its own 540 s; 195,313 = 200M samples
#                                           # is the published run: drop --steps)
#   GPU_BIG=1 bash benchmarks/gpu.sh        # only the widest Top-k SAE one device holds, and on a
#                                           # multi-GPU machine one as many times wider, its
#                                           # latents split over every device (its own 400 s)
# The ceiling study needs the pure-Python `cma` package, which the bare machine lacks: install it
# here with `pip install --no-deps --target build/gpu-py cma` and carry build/gpu-py along.
# It assumes no GPU: on a CPU-only machine every step runs on the CPU. CI never depends on it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${GPU_OUT:-benchmarks/results}
LOGS="$OUT/gpu"
mkdir -p "$LOGS"
QUICK=${GPU_QUICK:-}
smoke=${QUICK:+--smoke}
: > "$LOGS/steps.tsv"

step() {  # step NAME SECONDS CMD...: run with a time limit, log, record status and seconds
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s%N)
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  local dt=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$LOGS/steps.tsv"  # milliseconds
  tail -n 3 "$LOGS/$name.log"
}

if [ -d build/gpu-py ]; then export PYTHONPATH="$PYTHONPATH:$PWD/build/gpu-py"; fi

step devices 20 "$PY" -c "import jax; print(jax.default_backend(), jax.devices())"
if [ -n "${GPU_CEILING:-}" ]; then
  # Toy models with n = 200 features in 20 dimensions, d_sae ∈ {n, 4n}, 20 fresh seeds.
  plan=(--plan gpu); [ -n "$QUICK" ] && plan=(--smoke)
  step gamma_ceiling 540 "$PY" experiments/gamma_ceiling.py "${plan[@]}" --no-progress \
    --out "$LOGS/gamma_ceiling"
  exit 0
fi
if [ -n "${GPU_SYNTH:-}" ]; then
  plan=(--plan gpu --steps 10000); [ -n "$QUICK" ] && plan=(--smoke)
  step synthbench 540 "$PY" experiments/synthbench.py "${plan[@]}" --truth ours --no-progress \
    --out "$LOGS/synthbench"
  exit 0
fi
if [ -n "${GPU_BIG:-}" ]; then
  step big_dictionary 380 "$PY" benchmarks/bench_big_dictionary.py $smoke \
    --out "$LOGS/big_dictionary.json"
  exit 0
fi
# The library's own logic checks, on 4 forced CPU devices as in CI (1 vs 4 devices agree, sweep ==
# separate runs, torch parity): tests/conftest.py pins them to the CPU.
step tests 105 "$PY" -m pytest -q -x -p no:cacheprovider \
  "tests/test_sweep.py::test_sweep_equals_separate_runs" \
  "tests/test_sweep.py::test_member_axis_over_4_devices_equals_1_device" \
  "tests/test_train.py::test_one_and_four_devices_agree" tests/test_torch_parity.py
# The same properties on the accelerator itself.
step accelerator_checks 60 "$PY" benchmarks/gpu_checks.py "$LOGS/checks.json"
step train_step 90 "$PY" benchmarks/bench_train_step.py $smoke --bf16 --out "$LOGS/train_step.json"
step auxk 45 "$PY" benchmarks/bench_auxk.py $smoke --out "$LOGS/auxk.json"
if [ -n "$QUICK" ]; then sweep_size=(--smoke); else sweep_size=(--steps 500); fi
step sweep 80 "$PY" benchmarks/bench_sweep.py "${sweep_size[@]}" --out "$LOGS/sweep.json"
step vs_torch 90 "$PY" benchmarks/bench_vs_torch.py $smoke --out "$LOGS/vs_torch.json"
step closed_form 30 "$PY" benchmarks/bench_closed_form.py $smoke --out "$LOGS/closed_form.json"
# Top-k dense against the sparse path and ReLU at 4096 x 131072 (issue 35: the figure the "auto"
# rule needs on an accelerator), with lax.top_k against approx_max_k at that width, and the
# compiled step's memory (device buffers, with and without AuxK).
sparse=(--plan gpu); [ -n "$QUICK" ] && sparse=(--smoke)
step sparse_step 45 "$PY" benchmarks/bench_sparse_step.py "${sparse[@]}" --out "$LOGS/sparse_step.json"
step memory 25 "$PY" benchmarks/bench_memory.py $smoke --out "$LOGS/memory.json"

"$PY" - "$LOGS" "$OUT/gpu.json" <<'PYEOF'
import json, pathlib, sys
logs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
steps = {}
for line in (logs / "steps.tsv").read_text().splitlines():
  name, rc, ms = line.split("\t")
  steps[name] = {"exit": int(rc), "seconds": round(int(ms) / 1000, 1),
                 "timed_out": int(rc) in (124, 137),
                 "log_tail": (logs / f"{name}.log").read_text()[-1500:]}
  f = logs / f"{name}.json"
  if f.exists():
    steps[name]["result"] = json.loads(f.read_text())
checks = logs / "checks.json"
record = {"steps": steps, "checks": json.loads(checks.read_text()) if checks.exists() else None,
          "ok": all(s["exit"] == 0 for s in steps.values())}
out.write_text(json.dumps(record, indent=1))
print(f"wrote {out}: " + ", ".join(f"{k} {'ok' if v['exit'] == 0 else 'exit ' + str(v['exit'])} "
                                   f"({v['seconds']} s)" for k, v in steps.items()))
sys.exit(0 if record["ok"] else 1)
PYEOF
