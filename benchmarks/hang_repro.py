"""Watchdog check for the vmapped-program hang on CPU (jax 0.10.2).

Cause, found later in gdb on a hung `scripts/reproduce.py` (16 seeds of Asterix-MinAtar): the
vmapped init's `nn.initializers.orthogonal` lowers to batched LAPACK QR custom calls
(lapack_sgeqrf_ffi / sorgqr); their ParallelBatchMap schedules work on XLA's CPU thread pool from
inside a thunk running on that pool, and with 2 cores every worker ended up waiting. The key type
was a bystander. pgjax now builds orthogonal weights with jnp Gram-Schmidt (no custom call;
tests/test_policies.py checks the lowered program), so the cases below cannot hit it any more.
The earlier search, which never caught it:

Report: on jax/jaxlib 0.10.2 (CPU, 2 shared cores), `jax.jit(jax.vmap(roll))(states, keys)` (a
pgjax rollout vmapped over 16 seeds) was said to hang once in `block_until_ready`. The process sat
at 0% CPU, the XLA/Eigen workers waited on condition variables, and it happened with
`jax.random.key(0, impl="unsafe_rbg")` keys. The same program with threefry2x32 keys ran fine.

What was run (jax 0.10.2, under `timeout 120`, load average 3-8 on 2 cores from other jobs). Nothing
hung: every run below exited 0.
  * that exact script in fresh processes: 31 runs with unsafe_rbg and 11 with threefry2x32, plus
    4 (unsafe_rbg) and 2 (threefry2x32) more under the XLA and config variants below;
  * 100 back-to-back unsafe_rbg rollouts in one process; 60 on a single core (taskset -c 0, which
    gives 1 Eigen thread) for each of unsafe_rbg and threefry2x32;
  * 60 init+rollout pairs dispatched asynchronously before one block;
  * vmapped `train_step` x40 (unsafe_rbg and rbg); `jit(vmap(make_train))` x30 in one process
    plus 3 fresh processes with unsafe_rbg; the default threefry pgjax training 5/5 runs;
  * rollout without the outer jit and without vmap, for both impls;
  * pure-JAX versions (raw `lax.rng_bit_generator` in scan/while_loop, and `jax.random.uniform` /
    `normal` / `categorical` on keys split inside a vmapped scan) for unsafe_rbg, rbg and
    threefry, with 1-256 seeds and 64-16384 draws per step. One run (256 seeds x 4096 draws, raw
    rng_bit_generator) did reach the 120 s timeout. It used CPU the whole time (its first call
    took 13.9 s and it made 10 of them), so it was slow, not hung.
  * `--xla_cpu_multi_thread_eigen=false` and `jax_threefry_partitionable` True/False changed
    nothing (there was no hang to avoid). `--xla_cpu_use_thunk_runtime=false` is "no longer
    supported" in 0.10.2: XLA prints a warning and ignores it. A bare
    `intra_op_parallelism_threads=1` in XLA_FLAGS is a fatal error when it comes first. After a
    `--` flag it is silently ignored, so it does nothing.

Unrelated to hangs: under jax.vmap, rbg and unsafe_rbg draw every row's bits from keys[0] only.
This is the batching rule for rng_bit_generator (jax PR #20094). So results differ from a per-seed
loop, and changing keys[1:] changes nothing. threefry2x32 matches the per-seed loop.

This script runs each case in its own subprocess under a timeout, one at a time. On a timeout it
saves `py-spy dump --native` (if py-spy is installed), prints HANG and exits 1. It exits 0 when
nothing hangs, and 1 if a case hangs or fails.
Usage: python benchmarks/hang_repro.py [timeout_s=120]
"""

import shutil
import subprocess
import sys

MINIMAL = """
import jax, jax.numpy as jnp
from jax import lax
def f(key):  # a vmapped scan that splits keys, samples, and runs a small matmul
    w = jax.random.normal(key, (4, 64))
    def body(c, k):
        ka, kb = jax.random.split(k)
        h = jnp.tanh((jax.random.normal(ka, (64, 4)) + c) @ w)
        return c + 0.001 * jnp.mean(jax.random.categorical(kb, h[:, :2])), None
    return lax.scan(body, 0.0, jax.random.split(key, 500))[0]
keys = jax.random.split(jax.random.key(0, impl="{impl}"), 16)
g = jax.jit(jax.vmap(f))
for _ in range(20):
    jax.block_until_ready(g(keys))
"""

PGJAX = """
import functools, jax, jax.numpy as jnp, pgjax
from pgjax.train import make_networks, init_state
cfg = pgjax.Config()
keys = jax.random.split(jax.random.key(0, impl="{impl}"), 16)
st = jax.jit(jax.vmap(functools.partial(init_state, cfg)))(keys)
nets = make_networks(cfg)
def roll(state, key):
    pol = functools.partial(nets.policy.apply, state.params["policy"])
    return jnp.sum(pgjax.rollout(key, nets.env, pol, state.runner, cfg.num_steps)[1].reward)
jax.block_until_ready(jax.jit(jax.vmap(roll))(st, keys))
"""

CASES = [("minimal", MINIMAL, "unsafe_rbg"), ("pgjax_rollout", PGJAX, "unsafe_rbg"),
         ("pgjax_rollout", PGJAX, "threefry2x32")]


def main() -> int:
    timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    import jax

    print(f"jax {jax.__version__}, backend {jax.default_backend()}", flush=True)
    hung = False
    for name, code, impl in CASES:
        p = subprocess.Popen([sys.executable, "-c", code.format(impl=impl)])
        try:
            rc = p.wait(timeout=timeout)
            print(f"{name:14s} {impl:13s} rc={rc}", flush=True)
            hung |= rc != 0
        except subprocess.TimeoutExpired:
            if shutil.which("py-spy"):
                dump = subprocess.run(["py-spy", "dump", "--native", "--pid", str(p.pid)],
                                      capture_output=True, text=True).stdout
                open(f"hang_{name}_{impl}.pyspy.txt", "w").write(dump)
            p.kill()
            p.wait()
            print(f"{name:14s} {impl:13s} HANG (no exit after {timeout:.0f} s)", flush=True)
            hung = True
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
