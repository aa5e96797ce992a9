"""Fused linear cross-entropy equals F.cross_entropy(h @ W.T) in value and gradients, without the logits.

Every test runs both backends: "torch" (chunks in plain PyTorch) and "triton" (the Triton kernel per chunk;
without a GPU under Triton's interpreter, TRITON_INTERPRET=1, set here before triton is imported).
"""
import functools
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from course_lib import fused_linear_cross_entropy as module
from course_lib.memory_budget import PeakMemory

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(params=["torch", "triton"], autouse=True)
def backend(request, monkeypatch):
    """Runs each test once per backend, through the module's own name, so the tests below need no change."""
    if request.param == "triton" and importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    monkeypatch.setitem(globals(), "fused_linear_cross_entropy",
                        functools.partial(module.fused_linear_cross_entropy, backend=request.param))
    return request.param


fused_linear_cross_entropy = module.fused_linear_cross_entropy  # replaced by the fixture above in each test


def _problem(N=37, D=8, V=53, scale=1.0, dtype=torch.float64, seed=0, ignore_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g, dtype=torch.float64) * scale
    weight = torch.randn(V, D, generator=g, dtype=torch.float64)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.rand(N, generator=g) < ignore_fraction] = -100
    return hidden.to(dtype), weight.to(dtype), targets


def _both(hidden, weight, targets, **kwargs):
    """(loss, grad_hidden, grad_weight) from the fused version and from F.cross_entropy in fp64."""
    results = []
    for fn, dtype in ((fused_linear_cross_entropy, hidden.dtype), (None, torch.float64)):
        h, w = (t.detach().to(dtype).requires_grad_() for t in (hidden, weight))
        loss = fn(h, w, targets, **kwargs) if fn else F.cross_entropy(h @ w.T, targets, **{
            k: v for k, v in kwargs.items() if k != "chunk_rows"})
        (loss * 1.7).backward()  # an upstream gradient other than 1 must reach both inputs
        results.append((loss.detach(), h.grad, w.grad))
    return results


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(reduction="sum"),
    dict(label_smoothing=0.1),
    dict(label_smoothing=0.3, reduction="sum", ignore_index=-100),
    dict(chunk_rows=5),     # 37 tokens: a ragged last chunk
    dict(chunk_rows=1),
    dict(chunk_rows=1000),  # one chunk
])
def test_matches_pytorch_in_float64(kwargs, backend):
    (loss, gh, gw), (ref_loss, ref_gh, ref_gw) = _both(*_problem(), **kwargs)
    atol = 1e-9 if backend == "torch" else 1e-7  # the Triton kernel gets label_smoothing as an fp32 scalar
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert torch.allclose(gh, ref_gh, rtol=1e-6, atol=atol) and torch.allclose(gw, ref_gw, rtol=1e-6, atol=atol)


def test_extreme_logits_stay_finite_and_exact():
    hidden, weight, targets = _problem(scale=3e3)  # logits of order 1e4
    (loss, gh, gw), (ref_loss, ref_gh, ref_gw) = _both(hidden, weight, targets)
    assert torch.isfinite(loss) and torch.allclose(loss, ref_loss, rtol=1e-6)
    assert torch.allclose(gh, ref_gh, rtol=1e-6, atol=1e-6) and torch.allclose(gw, ref_gw, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_low_precision_inputs_are_accumulated_in_float32(dtype, rtol):
    hidden, weight, targets = _problem(N=64, D=32, V=300, dtype=dtype)
    (loss, gh, gw), (ref_loss, ref_gh, ref_gw) = _both(hidden, weight, targets, chunk_rows=8)
    assert loss.dtype == torch.float32 and gh.dtype == gw.dtype == dtype
    assert torch.allclose(loss.double(), ref_loss, rtol=rtol)
    for got, want in ((gh, ref_gh), (gw, ref_gw)):  # compared as whole tensors: bf16 rounds each entry
        assert (got.double() - want).norm() <= rtol * want.norm()


def test_every_target_ignored_gives_nan_mean_and_zero_gradients_like_pytorch():
    hidden, weight, _ = _problem()
    targets = torch.full((37,), -100)
    (loss, gh, gw), (ref_loss, ref_gh, ref_gw) = _both(hidden, weight, targets)
    assert torch.isnan(loss) and torch.isnan(ref_loss)
    assert torch.equal(gh, ref_gh) and torch.equal(gw, ref_gw) and not gh.any()
    (loss, _, _), _ = _both(hidden, weight, targets, reduction="sum")
    assert loss.item() == 0.0


def test_a_single_token():
    (loss, gh, gw), (ref_loss, ref_gh, ref_gw) = _both(*_problem(N=1, ignore_fraction=0.0))
    assert torch.allclose(loss, ref_loss) and torch.allclose(gh, ref_gh) and torch.allclose(gw, ref_gw)


def test_gradcheck():
    hidden, weight, targets = _problem(N=6, D=3, V=7)
    assert torch.autograd.gradcheck(lambda h, w: fused_linear_cross_entropy(h, w, targets, chunk_rows=4),
                                    (hidden.requires_grad_(), weight.requires_grad_()))


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0  # bytes (Triton's interpreter copies tensors as bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def test_the_full_logits_never_exist():
    N, D, V = 512, 16, 2048
    hidden, weight, targets = _problem(N=N, D=D, V=V, dtype=torch.float32)
    hidden.requires_grad_(), weight.requires_grad_()
    with _LargestTensor() as seen:
        fused_linear_cross_entropy(hidden, weight, targets).backward()
    # the default chunk holds at most 1/8 of the tokens
    assert seen.largest <= 4 * N * V // 8, f"a tensor of {seen.largest} bytes; the logits have {4 * N * V}"
    with _LargestTensor() as seen:
        F.cross_entropy(hidden @ weight.T, targets).backward()
    assert seen.largest >= 4 * N * V  # the check above can fail: the plain version does build them


@pytest.mark.parametrize("args, kwargs, message", [
    ((torch.zeros(4, 3), torch.zeros(5, 2), torch.zeros(4, dtype=torch.long)), {}, r"hidden \(N, D\), weight \(V, D\)"),
    ((torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4, dtype=torch.long)), {"reduction": "none"}, "never kept"),
    ((torch.zeros(4, 3), torch.zeros(5, 3), torch.full((4,), 5)), {}, r"in \[0, 5\)"),
    ((torch.zeros(4, 3), torch.zeros(5, 3).double(), torch.zeros(4, dtype=torch.long)), {}, "share a dtype"),
    ((torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4)), {}, "integer tensor"),
])
def test_bad_inputs_are_explained(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fused_linear_cross_entropy(*args, **kwargs)


def test_fused_lce_in_budget_where_the_materialised_logits_are_not():
    N, D, V = 128, 8, 512
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(N, D, generator=g, requires_grad=True), torch.randn(V, D, generator=g, requires_grad=True)
    y = torch.randint(0, V, (N,), generator=g)
    budget = 32 * 1024
    rows = module.chunk_rows_for_budget(N, V, budget)
    assert rows == 8
    grads = 2 * (N * D + V * D) * 4  # saved in forward, returned (scaled) in backward
    with PeakMemory() as fused:
        module.fused_linear_cross_entropy(h, w, y, chunk_rows=rows, backend="torch").backward()
    h.grad = w.grad = None
    with PeakMemory() as eager:
        F.cross_entropy(h @ w.T, y).backward()
    assert fused.peak <= grads + budget + 8 * 1024
    assert eager.peak > module.logits_bytes(N, V, 4) * 2


@pytest.mark.parametrize("args, rows", [
    ((1000, 100, 8000), 10),              # 8000 // (2 * 100 * 4)
    ((1000, 100, 7999), 9),               # floor, never over budget
    ((5, 100, 10 ** 9), 5),               # at most every token
    ((1000, 100, 8000, 2), 20),           # bf16 elements
    ((1000, 100, 8000, 4, 1), 20),        # one buffer
    ((1, 128256, 2 * 128256 * 4), 1),
])
def test_chunk_rows_for_budget(args, rows):
    assert module.chunk_rows_for_budget(*args) == rows


def test_chunk_rows_for_budget_errors():
    with pytest.raises(ValueError, match="holds no row"):
        module.chunk_rows_for_budget(10, 100, 799)
    for bad in ((0, 100, 8000), (10, 100, 8000.0), (10, True, 8000)):
        with pytest.raises(ValueError, match="positive integer"):
            module.chunk_rows_for_budget(*bad)
