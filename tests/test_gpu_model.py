"""The GPU time model (benchmarks/gpu_model.py): a lower bound made of the three matmuls at peak FLOP/s and each
method's passes over the logits at peak bandwidth."""
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_model  # noqa: E402

SHAPE = (8192, 4096, 128256)
EAGER, KERNEL, FUSED = gpu_model.LOGIT_PASSES


def test_the_three_matmuls_are_compute_bound_at_the_benchmark_shapes():
    N, D, V = SHAPE
    assert gpu_model.three_matmul_ms(*SHAPE) == pytest.approx(6 * N * D * V / gpu_model.H200.bf16_flops * 1e3)


def test_each_pass_over_the_logits_costs_their_bytes_at_the_bandwidth():
    N, D, V = SHAPE
    one_pass_ms = N * V * 2 / gpu_model.H200.bandwidth * 1e3
    assert gpu_model.bound_ms(KERNEL, *SHAPE) == pytest.approx(gpu_model.three_matmul_ms(*SHAPE) + 3 * one_pass_ms)
    assert gpu_model.bound_ms(EAGER, *SHAPE) - gpu_model.bound_ms(KERNEL, *SHAPE) == pytest.approx(3 * one_pass_ms)
    fp32 = gpu_model.bound_ms(KERNEL, *SHAPE, b=4)
    assert fp32 - gpu_model.bound_ms(KERNEL, *SHAPE) == pytest.approx(3 * one_pass_ms)  # twice the bytes a pass


def test_the_fused_loss_is_bounded_by_the_kernels_passes_chunk_by_chunk():
    assert gpu_model.bound_ms(FUSED, *SHAPE) == gpu_model.bound_ms(KERNEL, *SHAPE) > gpu_model.three_matmul_ms(*SHAPE)


def test_a_method_the_model_does_not_cover_has_no_bound():
    assert gpu_model.bound_ms("torch.compile (materialised logits)", *SHAPE) is None
