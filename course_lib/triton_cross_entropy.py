"""Cross-entropy over materialised logits as Triton kernels (notebook 10).

For logits z (N, V) and targets y (N,), with lse_n = log sum_k e^{z_nk}, label smoothing eps and
z-loss weight zeta, each kept row n (y_n != ignore_index) has

    loss_n = lse_n - (1 - eps) z[n, y_n] - eps * mean_k z_nk + zeta * lse_n^2
    dloss_n / dz_nk = softmax(z_n)_k (1 + 2 zeta lse_n) - (1 - eps) [k == y_n] - eps / V.

One Triton program handles one row, walking the vocabulary in blocks of BLOCK columns:

1. ``online_logsumexp``: a single pass keeping a running maximum m and a running sum s of
   e^{z - m}; when a block raises the maximum, s is rescaled by e^{m_old - m_new}. lse = m + log s.
2. ``cross_entropy_forward_kernel``: the row's loss and lse; with WRITE_GRAD it then makes
3. ``write_row_grad``, a second pass over the row now that lse is known, storing the gradient
   times the upstream factor dloss_n (the row's weight in the reduced loss), possibly into the
   logits buffer itself (in place: reading a block, then overwriting it).

Forward plus backward therefore read the logits twice and write them once. Arithmetic is fp32
(fp64 for fp64 logits) whatever the storage dtype. Ignored rows give loss 0 and gradient 0 and do
not count in the mean; when every target is ignored, "mean" is 0/0 = NaN and "sum" is 0, as in
``F.cross_entropy``.

Needs Triton (Linux, NVIDIA or AMD GPU). On CPU tensors it runs only under Triton's interpreter:
set TRITON_INTERPRET=1 before anything imports triton (slow: for tests). Without Triton, use the
pure-PyTorch ``course_lib.cross_entropy.cross_entropy`` or
``course_lib.fused_linear_cross_entropy.fused_linear_cross_entropy(..., backend="torch")``.
"""
import os

import torch

from . import _inputs

try:
    import triton
    import triton.language as tl
except ImportError as error:  # e.g. macOS: no Triton wheels
    raise ImportError("course_lib.triton_cross_entropy needs the `triton` package (Linux; pip install triton). "
                      "Without it use the pure-PyTorch course_lib.cross_entropy.cross_entropy, or "
                      "fused_linear_cross_entropy(..., backend='torch')") from error

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # read by triton.jit when the kernels below are defined


@triton.jit
def online_logsumexp(row_ptr, V, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """(log sum_k e^{z_k}, sum_k z_k) of one row of V logits, in one pass over blocks of BLOCK."""
    m = tl.full((), -3.0e38, ACC)  # finite: e^{m_old - m_new} stays 1, not NaN, while a row starts with -inf
    s = tl.zeros((), ACC)
    total = tl.zeros((), ACC)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        z = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
        total += tl.sum(tl.where(cols < V, z, 0.0), axis=0)
    return m + tl.log(s), total


@triton.jit
def write_row_grad(row_ptr, grad_row_ptr, y, lse, dloss, V, label_smoothing, z_loss,
                   ACC: tl.constexpr, BLOCK: tl.constexpr):
    """grad[k] = dloss * (softmax_k (1 + 2 z_loss lse) - (1 - eps) [k == y] - eps / V), block by block.

    grad_row_ptr may equal row_ptr: each block is read before it is overwritten.
    """
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        z = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(ACC)
        p = tl.exp(z - lse)
        g = p * (1 + 2 * z_loss * lse) - label_smoothing / V - tl.where(cols == y, 1 - label_smoothing, 0.0)
        tl.store(grad_row_ptr + cols, (g * dloss).to(grad_row_ptr.dtype.element_ty), mask=cols < V)


@triton.jit
def cross_entropy_forward_kernel(logits_ptr, logits_stride, targets_ptr, loss_ptr, lse_ptr,
                                 grad_ptr, grad_stride, dloss_ptr, dloss_stride,
                                 V, ignore_index, label_smoothing, z_loss,
                                 WRITE_GRAD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Row n: loss[n], lse[n]; with WRITE_GRAD also grad[n, :] = dloss[n] * dloss_n/dz_n."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * logits_stride
    y = tl.load(targets_ptr + row)
    keep = y != ignore_index
    lse, total = online_logsumexp(row_ptr, V, ACC, BLOCK)
    z_y = tl.load(row_ptr + y, mask=keep, other=0.0).to(ACC)
    loss = lse - (1 - label_smoothing) * z_y + z_loss * lse * lse
    if label_smoothing > 0:  # skipped when eps = 0: a -inf logit would make 0 * (-inf) = NaN
        loss -= label_smoothing * total / V
    tl.store(loss_ptr + row, tl.where(keep, loss, 0.0))
    tl.store(lse_ptr + row, lse)
    if WRITE_GRAD:
        dloss = tl.where(keep, tl.load(dloss_ptr + row * dloss_stride).to(ACC), 0.0)
        write_row_grad(row_ptr, grad_ptr + row * grad_stride, y, lse, dloss, V, label_smoothing, z_loss, ACC, BLOCK)


@triton.jit
def cross_entropy_backward_kernel(logits_ptr, logits_stride, targets_ptr, lse_ptr,
                                  grad_ptr, grad_stride, dloss_ptr, dloss_stride,
                                  V, ignore_index, label_smoothing, z_loss,
                                  ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Row n: grad[n, :] = dloss[n] * dloss_n/dz_n, from the lse saved by the forward kernel."""
    row = tl.program_id(0).to(tl.int64)
    y = tl.load(targets_ptr + row)
    lse = tl.load(lse_ptr + row).to(ACC)
    dloss = tl.where(y != ignore_index, tl.load(dloss_ptr + row * dloss_stride).to(ACC), 0.0)
    write_row_grad(logits_ptr + row * logits_stride, grad_ptr + row * grad_stride, y, lse, dloss,
                   V, label_smoothing, z_loss, ACC, BLOCK)


def default_block(V, dtype, on_gpu):
    """Vocabulary columns per step. On a GPU up to 16384 (a row of most vocabularies in one step), but 4096 for
    fp64, whose values take two registers each: at 16384 they spill (`make gpu-check` measures it). In the
    interpreter 1024, where NumPy's cost grows with the block."""
    return min(triton.next_power_of_2(V), (4096 if dtype == torch.float64 else 16384) if on_gpu else 1024)


def _launch_options(logits, block_size):
    block = block_size or default_block(logits.shape[1], logits.dtype, logits.is_cuda)
    acc = tl.float64 if logits.dtype == torch.float64 else tl.float32
    return dict(ACC=acc, BLOCK=block, num_warps=16 if block >= 8192 else 8 if block >= 2048 else 4)


def cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, dloss=None,
                          grad=None, block_size=None):
    """Per-row (loss, lse), both (N,) in fp32 (fp64 for fp64 logits), of logits (N, V) with unit last stride.

    With ``dloss`` (a 0-d tensor, or one value per row) the gradient dloss_n * dloss_n/dz_n is written
    in the same launch into ``grad`` (N, V), which may be ``logits`` itself (in place).
    """
    N, V = logits.shape
    if logits.stride(1) != 1 or targets.stride(0) != 1:
        raise ValueError(f"cross_entropy_forward: expected logits (N, V) with unit last stride and contiguous "
                         f"targets (N,), got strides {logits.stride()} and {targets.stride()}")
    acc = torch.promote_types(logits.dtype, torch.float32)
    loss, lse = (torch.empty(N, dtype=acc, device=logits.device) for _ in range(2))
    write = dloss is not None
    dloss = dloss if write else lse  # unused pointer when WRITE_GRAD is False
    grad = grad if write else logits
    if N:
        cross_entropy_forward_kernel[(N,)](
            logits, logits.stride(0), targets, loss, lse, grad, grad.stride(0), dloss,
            dloss.stride(0) if dloss.dim() else 0, V, ignore_index, float(label_smoothing), float(z_loss),
            WRITE_GRAD=write, **_launch_options(logits, block_size))
    return loss, lse


def cross_entropy_backward(logits, targets, lse, dloss, grad, ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
                           block_size=None):
    """Write dloss_n * dloss_n/dz_n into ``grad`` (N, V) (which may be ``logits``); dloss 0-d or (N,)."""
    N, V = logits.shape
    if N:
        cross_entropy_backward_kernel[(N,)](
            logits, logits.stride(0), targets, lse, grad, grad.stride(0), dloss, dloss.stride(0) if dloss.dim() else 0,
            V, ignore_index, float(label_smoothing), float(z_loss), **_launch_options(logits, block_size))
    return grad


class _TritonCrossEntropy(torch.autograd.Function):
    """For "mean" and "sum" the upstream gradient is one number, so the gradient is finished in the forward
    launch (the logits are read once more, not saved) and backward only multiplies it by that number (skipped
    when it is 1). For "none" each row has its own upstream gradient: forward saves the logits and lse, and
    backward runs the backward kernel.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, reduction, label_smoothing, z_loss, inplace, block_size):
        z, y = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        copied = z.stride(-1) != 1
        if copied:
            z = z.contiguous()  # the kernels walk a row with unit stride
        logits_2d = z if copied else logits  # saved whole, not as a view made here (autograd forbids that)
        options = dict(ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, block_size=block_size)
        ctx.options, ctx.inplace, ctx.reduction, ctx.shape = options, inplace, reduction, logits.shape
        kept = (y != ignore_index).sum()
        acc = torch.promote_types(logits.dtype, torch.float32)
        if reduction != "none" and ctx.needs_input_grad[0]:
            dloss = 1 / kept.to(acc) if reduction == "mean" else torch.ones((), dtype=acc, device=z.device)
            grad = z if inplace else torch.empty_like(z)
            loss, _ = cross_entropy_forward(z, y, dloss=dloss, grad=grad, **options)
            ctx.save_for_backward(logits_2d if inplace else grad)
        else:
            loss, lse = cross_entropy_forward(z, y, **options)
            ctx.save_for_backward(logits_2d, y, lse)
        if inplace and ctx.needs_input_grad[0] and not copied:
            torch.autograd.graph.increment_version(logits)  # an op that saved these logits now fails loudly
        if reduction == "none":
            return loss.reshape(targets.shape)
        return loss.sum() / kept if reduction == "mean" else loss.sum()  # all ignored: 0 / 0 = NaN, as PyTorch

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.reduction != "none":
            (grad,) = ctx.saved_tensors
            if not torch.equal(grad_loss, torch.ones_like(grad_loss)):  # one scalar synchronisation
                grad = grad.mul_(grad_loss) if ctx.inplace else grad * grad_loss
        else:
            z, y, lse = ctx.saved_tensors
            z = z.reshape(-1, z.shape[-1])
            grad = z if ctx.inplace else torch.empty_like(z)
            cross_entropy_backward(z, y, lse, grad_loss.reshape(-1), grad, **ctx.options)
        return grad.reshape(ctx.shape), None, None, None, None, None, None, None


def triton_cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                         inplace_backward=False, block_size=None):
    """``F.cross_entropy(logits, targets, ...)`` (+ z_loss * lse^2 per token) computed by the Triton kernels.

    logits: (..., V) floating, on a GPU (or on CPU under TRITON_INTERPRET=1); targets: (...) integer.
    Returns a scalar ("mean" over kept tokens, or "sum") or (...) for "none" (0 at ignored tokens), in fp32
    (fp64 for fp64 logits) whatever the logits' dtype. Every target ignored: "mean" is NaN, "sum" 0, and the
    gradient is 0. z_loss: weight of lse^2 (PaLM's auxiliary loss keeping log Z near 0).
    inplace_backward=True overwrites the logits with their gradient (no (N, V) gradient buffer is allocated):
    the logits' values are lost, and backward may run only once. block_size: vocabulary columns per block.
    """
    fn = "triton_cross_entropy"
    _inputs.as_float("logits", logits, fn)
    targets = _inputs.as_index("targets", targets, fn)
    if logits.dim() < 1 or tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"{fn}: expected logits (..., V) and targets (...) with the same leading shape, "
                         f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}")
    if reduction not in _inputs.REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_inputs.REDUCTIONS}, got {reduction!r}")
    label_smoothing = _inputs.number(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    z_loss = _inputs.number(fn, "z_loss", z_loss, low=0.0)
    if targets.device != logits.device:
        raise ValueError(f"{fn}: logits and targets must be on one device, got {logits.device} and {targets.device}")
    if not logits.is_cuda and not INTERPRETED:
        raise ValueError(f"{fn}: Triton kernels need GPU tensors, got {logits.device} (on CPU set TRITON_INTERPRET=1 "
                         "before importing triton, or use course_lib.cross_entropy.cross_entropy)")
    if block_size is not None and (block_size < 1 or block_size & (block_size - 1)):
        raise ValueError(f"{fn}: block_size must be a power of two, got {block_size}")
    V = logits.shape[-1]
    kept = targets[targets != ignore_index]
    if kept.numel() and (kept.min() < 0 or kept.max() >= V):
        raise ValueError(f"{fn}: targets must be in [0, {V}) or equal ignore_index={ignore_index}")
    return _TritonCrossEntropy.apply(logits, targets.contiguous(), ignore_index, reduction, label_smoothing, z_loss,
                                     inplace_backward, block_size)
