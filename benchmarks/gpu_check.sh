#!/usr/bin/env bash
# pgjax benchmark suite on one GPU (H100 / H200): one prepared run of at most ~9 minutes.
#
# The GPU image has jax, flax, optax, chex, matplotlib, numpy, pyyaml, tqdm and rich, but not
# gymnax or its other dependencies; `pip show gymnax` requires flax, gymnasium, jax, matplotlib and
# seaborn, and gymnax imports seaborn at import time (environments/misc/pong.py), so seaborn's
# pandas comes too, and six for gymnax's MNIST loader (python-dateutil 4 no longer brings it).
# A run's summary takes rliable's bootstrap: rliable, arch, statsmodels and what they import.
# Python 3.12 wheels, about 28 MB, made on a dev machine in .whl/ (ignored by git):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#     gymnax==1.0.1 gymnasium==1.3.0 cloudpickle==2.1.0 farama-notifications==0.0.4 \
#     seaborn==0.13.2 pytz==2026.6 tzdata==2026.6 six==1.17.0 patsy==1.0.3 formulaic==1.2.2 \
#     interface-meta==2.0.1 narwhals==2.29.0
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl pandas==2.3.3 arch==7.2.0 statsmodels==0.15.0 \
#     wrapt==2.5.2
#   python3 -m pip wheel --no-deps -w .whl rliable==1.2.0  # no wheel on PyPI; pure Python
#
# Run from the repository root with .whl/ beside it (the device tool: carry [".whl"]):
#
#   bash benchmarks/gpu_check.sh                          # variants, trace, xla: ~6 min
#   STEPS="speed solve" bash benchmarks/gpu_check.sh      # the suite recorded before, ~6 min
#   STEPS=minatar bash benchmarks/gpu_check.sh            # the 10M-step MinAtar study
#
# A dry run of this script on a CPU at tiny sizes (Python 3.12 with jax, flax, optax, chex):
#   SMOKE=1 PYTHON=/path/to/python3.12 OUT=/tmp/smoke bash benchmarks/gpu_check.sh
#
# Steps, in this order (STEPS names a subset, default "variants trace xla"; nvidia-smi, install
# and import always run, ~30 s):
#   variants  benchmarks.variants -> variants.json: the default config, the gradient in 10 time
#             chunks, and that with unroll 8, at 1024, 4096 and 16384 seeds × 64 envs
#             (throughput, compile seconds, program temp memory; a variant that does not fit is
#             recorded); JSON written after each seed count.
#   trace     benchmarks.trace -> gpu_trace.json: one update at 1024 seeds under jax.profiler,
#             kernels per rollout step and the top kernels by time.
#   xla       benchmarks.variants (base, unroll 8; 1024 seeds) in three processes: no XLA flags,
#             command buffers (CUDA graphs) that also take while loops and conditionals, and
#             while-loop double buffering -> variants_xla_{none,cmdbuf,double}.json. The rollout
#             is 500 sequential steps of small kernels, which is what CUDA graphs are for.
#   speed     benchmarks.run -> gpu_speed.json/.md, gpu_speed_scaling.png: env-only ceiling at
#             1024 and 4096 seeds × 64 envs and at 16k / 131k envs; training throughput at 1024
#             and 4096 seeds on CartPole-v1 and at 1024 seeds on Breakout-MinAtar; the update
#             profile at 1024 seeds.
#   solve     benchmarks.run -> gpu_solve.json/.md: time to IQM ≥ 475 at 1024 seeds (with the
#             chunk program's compile seconds); the default config's whole run at 1024 seeds
#             under matmul precision default, bfloat16 and float32 (throughput, final return,
#             compile seconds).
#   minatar   scripts/reproduce.py --configs experiments/minatar: every game at 10.24M steps,
#             16 seeds, MLP and CNN, without and with an entropy bonus of 0.1, the CNN with
#             0.03 on Asterix, Breakout and SpaceInvaders, on Asterix the MLP with GAE and
#             γ 0.999, and the MLP 256-256 of gymnax's PPO-MLP with each game's bonus (the
#             CNN and MLP bonus variants first, -> minatar/results-partial.md)
#             -> minatar/results.md (and figures/),
#             with each final policy evaluated greedy and sampled (100 episodes); runs in
#             minatar/runs, finished ones without their checkpoints. Finished runs are reused
#             and an unfinished one continues from its newest checkpoint (at most 5 min old),
#             so a call cut short by the deadline is continued by carrying minatar/runs back.
#   suites    scripts/reproduce.py --configs experiments/suites at 1M steps per seed, 16 seeds
#             (brax, craftax, jumanji, navix, xminigrid: their wheels must be in .whl too,
#             `pip download` of pgjax's [envs] extra) -> suites/results.md, runs in
#             suites/runs (SUITES_RUNS), reused or continued as minatar's are.
# Also nvidia-smi.txt and log.txt (everything printed). Each step has its own timeout, cut to
# what is left of a 560 s deadline (a full run may cut solve short: split it over two calls
# with STEPS then); benchmarks.run writes its JSON after every measurement and stops starting
# new ones 25 s before its timeout, so a slow part loses only itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/pgjax-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# 4096 seeds × 64 envs × 500 steps holds ~60 GB per update; let XLA use more than 75% of an H100.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
T0=$SECONDS
DEADLINE=${DEADLINE:-560}  # seconds for the whole script

left() { echo $((DEADLINE - (SECONDS - T0))); }
budget() {  # soft budget for benchmarks.run: its step's timeout less 25 s
  local l
  l=$(left)
  ((l > $1)) && l=$1
  echo $((l - 25))
}
step() {  # step NAME SECONDS CMD...: run CMD with a hard timeout, report its time and status
  local name=$1 limit=$2 rem rc
  shift 2
  rem=$(left)
  ((limit > rem)) && limit=$rem
  if ((limit < 10)); then
    echo "=== [$((SECONDS - T0)) s] $name SKIPPED: only ${rem} s left"
    return
  fi
  echo "=== [$((SECONDS - T0)) s] $name (timeout ${limit} s)"
  timeout -k 5 "$limit" "$@"
  rc=$?
  ((rc == 124)) && echo "=== $name: TIMED OUT after ${limit} s"
  echo "=== [$((SECONDS - T0)) s] $name done, exit $rc"
}

PY=${PYTHON:-python3}
STEPS=${STEPS:-variants trace xla}
for s in $STEPS; do
  case $s in
    variants | trace | xla | speed | solve | minatar | suites) ;;
    *) echo "unknown step '$s' in STEPS (variants trace xla speed solve minatar suites)"
       exit 2 ;;
  esac
done
want() { [[ " $STEPS " == *" $1 "* ]]; }
VARIANTS=(--variants base loss_chunks=10 unroll=8,loss_chunks=10)
if [ "${SMOKE:-0}" = 1 ]; then
  SPEED=(--seeds 1 2 --ceiling-envs 256 --minatar-seeds 1 --updates 1 --repeats 1
         --profile-seeds 2 --profile-repeats 1 --profile-map-batch 1)
  SOLVE=(--solve-seeds 4 --precision-seeds 2)
  VARIANTS+=(--seeds 2 --updates 1 --repeats 1)
  TRACE_SEEDS=2
  XLA_RUN=(--seeds 2 --updates 1 --repeats 1)
  MINATAR=(--seeds 2 --budget 16384 --eval 2)
else
  SPEED=(--seeds 1024 4096 --ceiling-envs 16384 131072 --minatar-seeds 1024 --updates 3
         --repeats 3 --profile-seeds 1024 --profile-repeats 3 --profile-map-batch 64)
  SOLVE=(--solve-seeds 1024 --precision-seeds 1024)
  VARIANTS+=(--seeds 1024 4096 16384 --updates 3 --repeats 3)
  TRACE_SEEDS=1024
  XLA_RUN=(--seeds 1024 --updates 3 --repeats 3)
  MINATAR=(--seeds 16 --eval 100)
fi
MINATAR_RUNS=${MINATAR_RUNS:-$OUT/minatar/runs}
declare -A XLA_SETS=(
  [none]=""
  [cmdbuf]="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1"
  [double]="--xla_gpu_enable_while_loop_double_buffering=true"
)

{
  step nvidia-smi 15 bash -c "nvidia-smi > '$OUT/nvidia-smi.txt' && cat '$OUT/nvidia-smi.txt'"
  step install 45 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  step import 30 "$PY" -c "import jax, gymnax, pgjax; print(jax.__version__, jax.devices())"
  want variants && step variants 200 "$PY" -m benchmarks.variants --out "$OUT" \
    "${VARIANTS[@]}"
  want trace && step trace 90 "$PY" -m benchmarks.trace --out "$OUT" --tag gpu_trace \
    --seeds "$TRACE_SEEDS"
  if want xla; then
    for name in none cmdbuf double; do
      XLA_FLAGS="${XLA_SETS[$name]}" step "xla-$name" 75 "$PY" -m benchmarks.variants \
        --out "$OUT" --tag "variants_xla_$name" --variants base unroll=8 "${XLA_RUN[@]}"
    done
  fi
  want speed && step speed 160 "$PY" -m benchmarks.run --out "$OUT" --tag gpu_speed \
    --budget "$(budget 160)" --parts ceiling train profile "${SPEED[@]}"
  want solve && step solve 200 "$PY" -m benchmarks.run --out "$OUT" --tag gpu_solve \
    --budget "$(budget 200)" --parts solve precision --solve-chunk 4 \
    --precisions default bfloat16 float32 "${SOLVE[@]}"
  if want minatar; then
    mkdir -p "$OUT/minatar"
    # The variants that lift Breakout, Freeway and Asterix on CPU first, then the rest.
    step minatar "$(left)" "$PY" scripts/reproduce.py --configs experiments/minatar \
      --runs "$MINATAR_RUNS" --table "$OUT/minatar/results.md" "${MINATAR[@]}" \
      --variants "CNN + MLP 64-64, entropy 0.1" "CNN + MLP 64-64, entropy 0.03" \
      "MLP 64-64, entropy 0.1" "asterix:MLP 64-64, GAE, gamma 0.999, entropy 0.03"
    step minatar "$(left)" "$PY" scripts/reproduce.py --configs experiments/minatar \
      --runs "$MINATAR_RUNS" --table "$OUT/minatar/results.md" "${MINATAR[@]}"
    # Finished runs (evaluated) keep no checkpoints; an unfinished one keeps them to continue.
    for run in "$MINATAR_RUNS"/*/; do
      if [ -f "$run/summary.json" ]; then rm -rf "$run/checkpoints"; fi
    done
  fi
  if want suites; then
    mkdir -p "$OUT/suites"
    step suites "$(left)" "$PY" scripts/reproduce.py --configs experiments/suites \
      --runs "${SUITES_RUNS:-$OUT/suites/runs}" --table "$OUT/suites/results.md" \
      --budget 1000000 --seeds 16
  fi
  echo "=== [$((SECONDS - T0)) s] all done; files in $OUT:"
  ls -la "$OUT"
} 2>&1 | tee "$OUT/log.txt"
