"""The Triton cross-entropy kernels equal F.cross_entropy in value and gradient.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, set here before
triton is imported; never on a GPU machine). Shapes stay small: the interpreter is slow.
Tolerances: fp64 logits are computed in fp64, but label_smoothing and z_loss reach the kernel as fp32
scalars (relative error ~3e-8 on their terms); fp32 logits are computed in fp32; bf16/fp16 logits are
accumulated in fp32 and their gradient is rounded to bf16/fp16 once, and once more for "mean"/"sum" when it is
multiplied by the upstream gradient: relative error <= 2 ulp per entry (the interpreter truncates to bf16,
where a GPU rounds to nearest: 2 ulp = 2^-6 for bf16, 2^-10 for fp16).
"""
import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from course_lib.triton_cross_entropy import cross_entropy_forward, triton_cross_entropy  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _problem(N=13, V=300, scale=3.0, dtype=torch.float64, seed=0, ignore_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, V, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.rand(N, generator=g) < ignore_fraction] = -100
    targets[0] = min(1, V - 1)  # at least one kept token
    return logits.to(dtype).to(DEVICE), targets.to(DEVICE)


def _upstream(loss, seed=1):
    """A random upstream gradient of loss's shape (1.7 for a scalar): it must reach the logits."""
    if loss.dim() == 0:
        return torch.tensor(1.7, dtype=loss.dtype, device=loss.device)
    return torch.randn(loss.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(loss)


def _both(logits, targets, reference=None, **kwargs):
    """(loss, grad) from the Triton version at logits' dtype and from ``reference`` (F.cross_entropy) in fp64."""
    reference = reference or F.cross_entropy
    x = logits.detach().clone().requires_grad_()
    loss = triton_cross_entropy(x * 1, targets, **kwargs)  # x * 1: in-place mode may overwrite its input
    loss.backward(_upstream(loss))
    ref_x = logits.detach().double().requires_grad_()
    ref_kwargs = {k: v for k, v in kwargs.items() if k not in ("block_size", "inplace_backward")}
    ref = reference(ref_x, targets, **ref_kwargs)
    ref.backward(_upstream(ref))
    return (loss.detach(), x.grad), (ref.detach(), ref_x.grad)


def _close(got, want, rtol, atol):
    assert got.shape == want.shape
    assert torch.allclose(got.double(), want, rtol=rtol, atol=atol), (got.double() - want).abs().max().item()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("inplace_backward", [False, True])
def test_matches_pytorch_in_float64(reduction, label_smoothing, inplace_backward):
    (loss, grad), (ref, ref_grad) = _both(*_problem(), reduction=reduction, label_smoothing=label_smoothing,
                                          inplace_backward=inplace_backward, block_size=64)  # 300 = 4 * 64 + 44
    _close(loss, ref, 1e-7, 1e-9)
    _close(grad, ref_grad, 1e-7, 1e-9)


@pytest.mark.parametrize("dtype, rtol, grad_rtol", [
    (torch.float32, 1e-5, 1e-5), (torch.bfloat16, 1e-5, 2 ** -6), (torch.float16, 1e-5, 2 ** -10)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_low_precision_logits_are_accumulated_in_float32(dtype, rtol, grad_rtol, reduction):
    logits, targets = _problem(dtype=dtype)  # the reference sees the same rounded logits, in fp64
    (loss, grad), (ref, ref_grad) = _both(logits, targets, reduction=reduction, label_smoothing=0.1, block_size=128)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    _close(loss, ref, rtol, 1e-5)
    _close(grad, ref_grad, grad_rtol, 1e-7)  # entry by entry: only the roundings to dtype may differ


def test_extreme_logits():
    logits, targets = _problem(scale=1e4)  # random +-1e4
    (loss, grad), (ref, ref_grad) = _both(logits, targets, block_size=64)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    _close(loss, ref, 1e-12, 0)
    _close(grad, ref_grad, 0, 1e-12)
    (loss, grad), (ref, ref_grad) = _both(logits.float(), targets, reduction="none", block_size=64)
    _close(loss, ref, 1e-6, 1e-2)  # fp32: lse and z_y ~1e4, so absolute error ~1e-3
    _close(grad, ref_grad, 1e-5, 1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_minus_infinity_masks_on_other_classes(dtype):
    logits, targets = _problem(ignore_fraction=0.0, dtype=dtype)
    targets = targets.clone()
    mask = torch.rand(logits.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    mask[:, :128] = True  # the first two blocks of every row start at -inf: the online maximum must cope
    mask[torch.arange(len(targets)), targets] = False
    targets[1] = 200
    mask[1] = True
    mask[1, 200] = False  # a row with a single finite logit: loss 0, gradient 0
    logits = logits.masked_fill(mask.to(DEVICE), float("-inf"))
    (loss, grad), (ref, ref_grad) = _both(logits, targets, reduction="none", block_size=64)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all() and loss[1] == 0 and not grad[1].any()
    _close(loss, ref, 1e-6, 1e-6)
    _close(grad, ref_grad, 1e-2 if dtype == torch.bfloat16 else 1e-6, 1e-7)


@pytest.mark.parametrize("N, V, block_size", [(1, 1, 16), (1, 17, 16), (3, 33, 16), (2, 257, 256), (2, 255, None)])
def test_ragged_sizes(N, V, block_size):
    logits, targets = _problem(N=N, V=V, ignore_fraction=0.0)
    (loss, grad), (ref, ref_grad) = _both(logits, targets, reduction="sum", block_size=block_size)
    _close(loss, ref, 1e-12, 1e-12)
    _close(grad, ref_grad, 1e-12, 1e-12)


def test_log_sum_exp_of_the_forward_kernel():
    logits, targets = _problem(N=5, V=100)
    logits[2, :90] = float("-inf")
    loss, lse = cross_entropy_forward(logits, targets, block_size=16)
    assert lse.dtype == torch.float64
    _close(lse, torch.logsumexp(logits, -1), 1e-14, 0)
    _close(loss, F.cross_entropy(logits, targets, reduction="none"), 1e-12, 1e-12)


@pytest.mark.parametrize("inplace_backward", [False, True])
def test_every_target_ignored_like_pytorch(inplace_backward):
    logits, _ = _problem(N=4, V=50)
    targets = torch.full((4,), -100, device=DEVICE)
    (loss, grad), (ref, ref_grad) = _both(logits, targets, inplace_backward=inplace_backward)
    assert torch.isnan(loss) and torch.isnan(ref)  # mean over no token: 0 / 0
    assert torch.equal(grad, ref_grad) and not grad.any()
    for reduction in ("sum", "none"):
        (loss, grad), (ref, ref_grad) = _both(logits, targets, reduction=reduction, inplace_backward=inplace_backward)
        assert torch.equal(loss, ref) and not loss.any() and not grad.any()


def test_other_ignore_index_and_a_single_token():
    logits, targets = _problem(N=3, V=40, ignore_fraction=0.0)
    targets[1:] = 7
    (loss, grad), (ref, ref_grad) = _both(logits, targets, ignore_index=7, block_size=16)
    _close(loss, ref, 1e-12, 1e-12)
    _close(grad, ref_grad, 1e-12, 1e-12)
    assert not grad[1:].any() and grad[0].any()
    (loss, grad), (ref, ref_grad) = _both(logits[:1], targets[:1])
    _close(loss, ref, 1e-12, 1e-12)
    _close(grad, ref_grad, 1e-12, 1e-12)


def _with_z_loss(logits, targets, z_loss, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """The plain formula: cross-entropy + z_loss * logsumexp(z)^2 per kept token, then reduced."""
    keep = targets != ignore_index
    per_token = F.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing,
                                ignore_index=ignore_index) + z_loss * torch.logsumexp(logits, -1) ** 2 * keep
    if reduction == "none":
        return per_token
    return per_token.sum() / keep.sum() if reduction == "mean" else per_token.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_z_loss_against_the_plain_formula(reduction):
    logits, targets = _problem(scale=5.0)
    logits += 3.0  # lse well away from 0, so the z-loss term and its gradient matter
    (loss, grad), (ref, ref_grad) = _both(logits, targets, reference=_with_z_loss, reduction=reduction,
                                          z_loss=1e-2, label_smoothing=0.1, block_size=64)
    _close(loss, ref, 1e-7, 1e-9)
    _close(grad, ref_grad, 1e-7, 1e-9)
    assert not torch.allclose(ref, F.cross_entropy(logits, targets, reduction=reduction, label_smoothing=0.1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck(reduction):
    logits, targets = _problem(N=4, V=7, scale=1.0, ignore_fraction=0.3)
    targets[2] = -100
    assert torch.autograd.gradcheck(
        lambda z: triton_cross_entropy(z, targets, reduction=reduction, label_smoothing=0.1, z_loss=0.05, block_size=4),
        (logits.requires_grad_(),))


def test_leading_dimensions_and_non_contiguous_logits():
    logits, targets = _problem(N=12, V=30)
    logits3, targets3 = logits.reshape(3, 4, 30).transpose(0, 1), targets.reshape(3, 4).T  # (4, 3, 30)

    def reference(z, y, **kwargs):
        return F.cross_entropy(z.reshape(-1, 30), y.reshape(-1), **kwargs).reshape(y.shape)
    (loss, grad), (ref, ref_grad) = _both(logits3, targets3, reference, reduction="none", block_size=16)
    assert loss.shape == (4, 3)
    _close(loss, ref, 1e-12, 1e-12)
    _close(grad, ref_grad, 1e-12, 1e-12)
    wide = torch.cat([logits, logits], 1)[:, ::2]  # last stride 2: copied to a contiguous buffer first
    (loss, grad), (ref, ref_grad) = _both(wide, targets, inplace_backward=True, block_size=16)
    _close(loss, ref, 1e-12, 1e-12)
    _close(grad, ref_grad, 1e-12, 1e-12)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_in_place_mode_leaves_the_gradient_in_the_logits_buffer(reduction):
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(9, 6, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_()
    weight = torch.randn(70, 6, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_()
    targets = torch.randint(0, 70, (9,), generator=g).to(DEVICE)
    logits = hidden @ weight.T  # the matmul saves its inputs, not its output: overwriting it is safe
    ref_logits = logits.detach().clone().requires_grad_()
    ref = F.cross_entropy(ref_logits, targets, reduction=reduction)
    ref.backward(_upstream(ref))
    ref_hidden_grad = ref_logits.grad @ weight.detach()
    loss = triton_cross_entropy(logits, targets, reduction=reduction, inplace_backward=True, block_size=16)
    pointer = logits.data_ptr()
    loss.backward(_upstream(loss))
    _close(logits.detach(), ref_logits.grad, 1e-12, 1e-12)  # the buffer now holds dloss/dlogits
    assert logits.data_ptr() == pointer
    _close(hidden.grad, ref_hidden_grad, 1e-12, 1e-12)


def test_in_place_mode_refuses_logits_another_op_needs():
    logits, targets = _problem(N=4, V=20)
    x = logits.requires_grad_()
    loss = triton_cross_entropy(x.exp() + 0, targets, inplace_backward=True)
    loss.backward()  # fine: the overwritten tensor, exp(x) + 0, is needed by no backward
    y = x.exp()  # exp saves its output for its backward: overwriting it must not go unnoticed
    loss = triton_cross_entropy(y, targets, inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_no_gradient_is_made_when_none_is_needed():
    logits, targets = _problem(N=4, V=20)
    before = logits.clone()
    loss = triton_cross_entropy(logits, targets, inplace_backward=True)  # logits do not require grad
    assert torch.equal(logits, before) and torch.allclose(loss, F.cross_entropy(logits, targets))


@pytest.mark.parametrize("args, kwargs, message", [
    ((torch.zeros(4, 5), torch.zeros(3, dtype=torch.long)), {}, r"same leading shape"),
    ((torch.zeros(4, 5), torch.zeros(4)), {}, "integer tensor"),
    ((torch.zeros(4, 5, dtype=torch.long), torch.zeros(4, dtype=torch.long)), {}, "floating"),
    ((torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)), {"reduction": "avg"}, "reduction must be one of"),
    ((torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)), {"label_smoothing": 1.5}, r"label_smoothing must lie"),
    ((torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)), {"z_loss": -1.0}, "z_loss must be >= 0"),
    ((torch.zeros(4, 5), torch.full((4,), 5)), {}, r"in \[0, 5\)"),
    ((torch.zeros(4, 5), torch.full((4,), -1)), {}, r"in \[0, 5\)"),
    ((torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)), {"block_size": 12}, "power of two"),
])
def test_bad_inputs_are_explained(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        triton_cross_entropy(*(a.to(DEVICE) for a in args), **kwargs)


def test_the_forward_launcher_wants_unit_stride_rows():
    logits, targets = _problem(N=4, V=20)
    with pytest.raises(ValueError, match="unit last stride"):
        cross_entropy_forward(logits.T.contiguous().T, targets)
    with pytest.raises(ValueError, match="contiguous"):
        cross_entropy_forward(logits, torch.stack([targets, targets], 1)[:, 0])
