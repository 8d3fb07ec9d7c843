"""Shared fixtures."""

import jax
import pytest


@pytest.fixture
def highest_precision():
    """Full float32 matmuls: tests that compare gradients must not ride on TF32 or bf16 passes
    (the default on GPU and TPU); on CPU this changes nothing."""
    with jax.default_matmul_precision("highest"):
        yield
