"""Shared fixtures, and one XLA compilation cache for the whole run."""

import os
import shutil
import tempfile

import jax
import pytest

_CACHE = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """Many tests, in this process and in the `pgjax` subprocesses they start (which inherit
    the environment), compile the same small programs: they share one persistent compilation
    cache, every program cached however short its compile. A cache hit loads the executable
    that the first compile built, so results are the same bits. A cache set in the
    environment is used as it is; otherwise a fresh one is made and removed at the end."""
    if _CACHE not in os.environ:
        os.environ[_CACHE] = config._pgjax_cache = tempfile.mkdtemp(prefix="pgjax-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
    path = getattr(config, "_pgjax_cache", None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def uncached_subprocesses(monkeypatch):
    """The subprocesses this test starts compile for real: a cache hit would leave no compile
    to interrupt."""
    monkeypatch.delenv(_CACHE)


@pytest.fixture
def highest_precision():
    """Full float32 matmuls: tests that compare gradients must not ride on TF32 or bf16 passes
    (the default on GPU and TPU); on CPU this changes nothing."""
    with jax.default_matmul_precision("highest"):
        yield
