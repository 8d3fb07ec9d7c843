"""Config variants side by side: training throughput, compile time and program memory.

    python -m benchmarks.variants [--seeds 16] [--variants base unroll=8 loss_chunks=10 ...]

Each variant is the default config with `field=value` overrides ("base": none; several fields
joined by commas: "unroll=8,loss_chunks=10"). For every seed count, each variant's jitted
`train_chunk` of `--updates` updates is compiled once, then all variants run in turn
`--repeats` times (round-robin, so load drifts hit them alike); the best time counts. Prints one
line per variant with its ratio to the first (none if the first failed), and writes JSON (with
versions and git commit) after every seed count. A variant that does not fit in device memory
is recorded as such.
"""

import argparse
import dataclasses
import functools
import os
import time
from pathlib import Path

import jax

import pgjax
from benchmarks.run import compile_timed, error_text
from pgjax import runs
from pgjax.train import init_state, train_chunk


def parse_variant(text: str) -> dict:
    """'unroll=8,loss_chunks=10' -> {'unroll': 8, 'loss_chunks': 10}; 'base' -> {}.

    Tuples are written with dashes (hidden=64-64), booleans as true/false.
    """
    if text == "base":
        return {}
    defaults = {f.name: f.default for f in dataclasses.fields(pgjax.Config)}
    overrides = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in defaults or not value:
            raise SystemExit(f"error: bad variant {text!r} (want field=value[,field=value])")
        default = defaults[name]
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"error: {name} takes true or false, got {value!r}")
            overrides[name] = value.lower() == "true"
        elif isinstance(default, tuple):
            overrides[name] = tuple(int(x) for x in value.split("-"))
        else:
            overrides[name] = type(default)(value)
    return overrides


def compile_variant(config: pgjax.Config, seeds: int, updates: int):
    """(compiled vmapped train_chunk, its input state, compile seconds, temp MiB)."""
    keys = pgjax.seed_keys(0, seeds)
    state = jax.jit(jax.vmap(functools.partial(init_state, config)))(keys)
    chunk = jax.vmap(lambda s: train_chunk(config, s, updates))
    fn, lower_s, compile_s = compile_timed(jax.jit(chunk), state)
    memory = fn.memory_analysis()
    temp_mib = memory.temp_size_in_bytes / 2**20 if memory is not None else None
    return fn, state, lower_s + compile_s, temp_mib


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[16])
    parser.add_argument("--variants", nargs="+", default=["base", "loss_chunks=10"])
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--tag", default="variants")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = {name: parse_variant(name) for name in args.variants}
    result = {"updates": args.updates, "repeats": args.repeats, "rows": [],
              "xla_flags": os.environ.get("XLA_FLAGS", ""), **runs.provenance()}
    print("device", jax.devices()[0], "jax", jax.__version__, "XLA_FLAGS", result["xla_flags"],
          flush=True)

    for seeds in args.seeds:
        compiled, rows = {}, {}
        for name, overrides in variants.items():
            config = pgjax.Config(**overrides).validate()
            row = {"seeds": seeds, "variant": name, "steps_per_update": config.steps_per_update}
            try:
                fn, state, row["compile_s"], row["temp_mib"] = compile_variant(
                    config, seeds, args.updates
                )
                jax.block_until_ready(fn(state))  # warm-up
                compiled[name] = (fn, state)
            except jax.errors.JaxRuntimeError as err:  # out of device memory
                row["error"] = error_text(err)
            rows[name] = row
        times = {name: [] for name in compiled}
        for _ in range(args.repeats):
            for name, (fn, state) in list(compiled.items()):
                t = time.perf_counter()
                try:
                    jax.block_until_ready(fn(state))
                except jax.errors.JaxRuntimeError as err:
                    rows[name]["error"] = error_text(err)
                    del compiled[name], times[name]
                    continue
                times[name].append(time.perf_counter() - t)
        first = None  # the first variant's throughput, if it ran
        for i, (name, row) in enumerate(rows.items()):
            if name in times:
                best = min(times[name])
                row["seconds"] = best
                row["steps_per_s"] = seeds * args.updates * row["steps_per_update"] / best
                first = row["steps_per_s"] if i == 0 else first
                row["ratio_to_first"] = row["steps_per_s"] / first if first else None
                ratio = f"x{row['ratio_to_first']:.2f}" if first else "x  - "
                temp = f"{row['temp_mib']:9.1f} MiB" if row["temp_mib"] is not None else "-"
                print(f"seeds {seeds:6d} {name:28s} {row['steps_per_s'] / 1e6:10.2f}M steps/s "
                      f"{ratio}  compile {row['compile_s']:5.1f} s  temp {temp}", flush=True)
            else:
                print(f"seeds {seeds:6d} {name:28s} failed: {row['error']}", flush=True)
            result["rows"].append(row)
        runs.write_json(args.out / f"{args.tag}.json", result)


if __name__ == "__main__":
    main()
