"""Notebook 10's graded tests must reject plausible wrong answers and accept right ones.

The kernel exercises' wrong answers are Triton kernels with the bug (a ``tl.constexpr`` switch picks it, so
each compiled variant contains only its own bug); they run under Triton's interpreter on CPU (conftest sets
TRITON_INTERPRET=1 before triton is imported).
"""
import math

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from conftest import load_exercises
from mutants import Exercise, mutant_tests

ASSIGNMENT = "10_gpu_lab_fused_cross_entropy"


def _block(V, block_size):
    return block_size or min(triton.next_power_of_2(V), 1024)


# ------------------------------------------------------------------ online_logsumexp

_NOT_CONSTEXPR = -3.0e38  # a plain float: the interpreter reads it, the compiler refuses (tl.constexpr(...) would do)


@triton.jit
def _row_lse_variant(row_ptr, V, BLOCK: tl.constexpr, BUG: tl.constexpr):
    """One row's online log-sum-exp, with the named bug planted (any other BUG: none)."""
    if BUG == "start at -inf":
        m = tl.full((), float("-inf"), tl.float32)
    else:
        m = tl.full((), -3.0e38, tl.float32)
    if BUG == "a global that is not constexpr":
        m = tl.full((), _NOT_CONSTEXPR, tl.float32)
    s = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        if BUG == "pad with 0":
            z = tl.load(row_ptr + cols, mask=cols < V, other=0.0).to(tl.float32)
        elif BUG == "unmasked load":  # right values: tl.where drops what was read past the row, not the read
            z = tl.where(cols < V, tl.load(row_ptr + cols).to(tl.float32), float("-inf"))
        else:
            z = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        if BUG == "float() of a block max":
            m_new = tl.maximum(m, float(tl.max(z, axis=0)))
        else:
            m_new = tl.maximum(m, tl.max(z, axis=0))
        if BUG == "no max subtraction":
            s = s + tl.sum(tl.exp(z), axis=0)
        elif BUG == "no rescaling":
            s = s + tl.sum(tl.exp(z - m_new), axis=0)
        elif BUG == "bf16 accumulation":
            s = (s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)).to(tl.bfloat16).to(tl.float32)
        else:
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
        if BUG == "break after the last block":
            if start + BLOCK >= V:
                break
    if BUG == "no max subtraction":
        lse = tl.log(s)
    else:
        lse = m + tl.log(s)
    return lse


@triton.jit
def _lse_variant(x_ptr, out_ptr, row_stride, V, BLOCK: tl.constexpr, BUG: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    tl.store(out_ptr + row, _row_lse_variant(x_ptr + row * row_stride, V, BLOCK, BUG))


def _lse_launcher(bug):
    def online_logsumexp(x, block_size=None):
        N, V = x.shape
        out = torch.empty(N, dtype=torch.float32, device=x.device)
        if N:  # a kernel that steps rows by V reads the wrong rows of a view of wider rows (in bounds: fewer, shorter)
            row_stride = V if bug == "rows stepped by V" else x.stride(0)
            _lse_variant[(N,)](x, out, row_stride, V, BLOCK=_block(V, block_size), BUG=bug)
        return out
    return online_logsumexp


@triton.jit
def _lse_two_pass(x_ptr, out_ptr, row_stride, V, BLOCK: tl.constexpr):
    row_ptr = x_ptr + tl.program_id(0).to(tl.int64) * row_stride
    m = tl.full((), -3.0e38, tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        m = tl.maximum(m, tl.max(tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32), axis=0))
    s = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        s += tl.sum(tl.exp(tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32) - m), axis=0)
    tl.store(out_ptr + tl.program_id(0), m + tl.log(s))


@triton.jit
def _lse_exp2(x_ptr, out_ptr, row_stride, V, BLOCK: tl.constexpr):
    """Base-2 online softmax, as tuned kernels write it: e^x = 2^(x log2 e)."""
    LOG2E: tl.constexpr = 1.4426950408889634
    row_ptr = x_ptr + tl.program_id(0).to(tl.int64) * row_stride
    m = tl.full((), -3.0e38, tl.float32)
    s = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        z = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32) * LOG2E
        m_new = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp2(m - m_new) + tl.sum(tl.exp2(z - m_new), axis=0)
        m = m_new
    tl.store(out_ptr + tl.program_id(0), (m + tl.log2(s)) / LOG2E)


def _lse_with(kernel):
    def online_logsumexp(x, block_size=None):
        N, V = x.shape
        out = torch.empty(N, dtype=torch.float32, device=x.device)
        if N:
            kernel[(N,)](x, out, x.stride(0), V, BLOCK=_block(V, block_size))
        return out
    return online_logsumexp


@triton.jit
def _lse_list_of_maxima(x_ptr, out_ptr, row_stride, V, BLOCK: tl.constexpr):
    """Two passes, the first keeping each block's maximum in a Python list: the interpreter's Python has lists."""
    row_ptr = x_ptr + tl.program_id(0).to(tl.int64) * row_stride
    maxima = []
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        maxima.append(tl.max(tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32), axis=0))
    m = tl.full((), -3.0e38, tl.float32)
    for block_max in maxima:
        m = tl.maximum(m, block_max)
    s = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        s += tl.sum(tl.exp(tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32) - m), axis=0)
    tl.store(out_ptr + tl.program_id(0), m + tl.log(s))


def _lse_not_a_power_of_two(x, block_size=None):
    """The whole row in one block of V columns: tl.arange needs a power of 2 (the interpreter says so as well)."""
    N, V = x.shape
    out = torch.empty(N, dtype=torch.float32, device=x.device)
    _lse_variant[(N,)](x, out, x.stride(0), V, BLOCK=block_size or min(V, 1024), BUG="none")
    return out


def lse_calls_torch_logsumexp(x, block_size=None):
    return torch.logsumexp(x.float(), dim=-1)


# ------------------------------------------------------------------ cross_entropy_forward

@triton.jit
def _forward_variant(z_ptr, y_ptr, loss_ptr, lse_ptr, row_stride, V, ignore_index, BLOCK: tl.constexpr,
                     BUG: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = z_ptr + row * row_stride
    lse = _row_lse_variant(row_ptr, V, BLOCK, BUG)
    y = tl.load(y_ptr + row)
    keep = y != ignore_index
    if BUG == "target logit loaded without the mask":  # an ignored row reads column -100: before its row
        z_y = tl.load(row_ptr + y).to(tl.float32)
    else:
        z_y = tl.load(row_ptr + y, mask=keep, other=0.0).to(tl.float32)
    loss = lse - z_y
    if BUG == "sign flipped":
        loss = z_y - lse
    if BUG == "loss rounded to bf16":
        loss = loss.to(tl.bfloat16).to(tl.float32)
    if BUG == "ignored rows keep their loss":
        tl.store(loss_ptr + row, loss)
    else:
        tl.store(loss_ptr + row, tl.where(keep, loss, 0.0))
    tl.store(lse_ptr + row, lse)


def _forward_launcher(bug):
    def cross_entropy_forward(logits, targets, ignore_index=-100, block_size=None):
        N, V = logits.shape
        loss = torch.empty(N, dtype=torch.float32, device=logits.device)
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)
        if N:
            _forward_variant[(N,)](logits, targets.contiguous(), loss, lse, logits.stride(0), V, ignore_index,
                                   BLOCK=_block(V, block_size), BUG=bug)
        return loss, lse
    return cross_entropy_forward


@triton.jit
def _forward_two_pass_target_in_sweep(z_ptr, y_ptr, loss_ptr, lse_ptr, row_stride, V, ignore_index,
                                      BLOCK: tl.constexpr):
    """Max first, then the sum, picking up z[y] during the sweep instead of loading it separately."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = z_ptr + row * row_stride
    y = tl.load(y_ptr + row)
    m = tl.full((), -3.0e38, tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        m = tl.maximum(m, tl.max(tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32), axis=0))
    s = tl.zeros((), tl.float32)
    z_y = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        z = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        s += tl.sum(tl.exp(z - m), axis=0)
        z_y += tl.sum(tl.where(cols == y, z, 0.0), axis=0)
    lse = m + tl.log(s)
    tl.store(loss_ptr + row, tl.where(y != ignore_index, lse - z_y, 0.0))
    tl.store(lse_ptr + row, lse)


def forward_two_pass(logits, targets, ignore_index=-100, block_size=None):
    N, V = logits.shape
    loss = torch.zeros(N, dtype=torch.float32, device=logits.device)
    lse = torch.zeros(N, dtype=torch.float32, device=logits.device)
    if N:
        _forward_two_pass_target_in_sweep[(N,)](logits, targets, loss, lse, logits.stride(0), V, ignore_index,
                                                BLOCK=_block(V, block_size))
    return loss, lse


def forward_uses_exercise_one(logits, targets, ignore_index=-100, block_size=None):
    """lse from an online log-sum-exp kernel, the target's logit gathered in PyTorch: also right."""
    lse = _lse_with(_lse_two_pass)(logits, block_size)
    keep = targets != ignore_index
    z_y = logits.gather(1, torch.where(keep, targets, 0)[:, None]).squeeze(1).float()
    return torch.where(keep, lse - z_y, 0.0), lse


def forward_calls_cross_entropy(logits, targets, ignore_index=-100, block_size=None):
    z = logits.float()
    return F.cross_entropy(z, targets, ignore_index=ignore_index, reduction="none"), torch.logsumexp(z, -1)


# ------------------------------------------------------------------ cross_entropy_backward

@triton.jit
def _backward_variant(z_ptr, y_ptr, lse_ptr, grad_ptr, row_stride, grad_stride, V, ignore_index, scale,
                      BLOCK: tl.constexpr, BUG: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    y = tl.load(y_ptr + row)
    lse = tl.load(lse_ptr + row).to(tl.float32)
    if BUG == "ignored rows not zeroed":
        weight = scale
    else:
        weight = tl.where(y != ignore_index, scale, 0.0)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        if BUG == "unmasked load":
            z = tl.where(cols < V, tl.load(z_ptr + row * row_stride + cols).to(tl.float32), float("-inf"))
        else:
            z = tl.load(z_ptr + row * row_stride + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        if BUG == "no onehot":
            g = tl.exp(z - lse) * weight
        else:
            g = (tl.exp(z - lse) - tl.where(cols == y, 1.0, 0.0)) * weight
        if BUG == "unmasked store":  # the lanes past V write into the next row, or past the tensor's end
            tl.store(grad_ptr + row * grad_stride + cols, g.to(grad_ptr.dtype.element_ty))
        else:
            tl.store(grad_ptr + row * grad_stride + cols, g.to(grad_ptr.dtype.element_ty), mask=cols < V)
        if BUG == "break after the last block":
            if start + BLOCK >= V:
                break


def _backward_launcher(bug):
    def cross_entropy_backward(logits, targets, lse, ignore_index=-100, reduction="mean", inplace=False,
                               block_size=None):
        N, V = logits.shape
        if bug == "inplace ignored":
            grad = torch.empty_like(logits)
        elif bug == "always in place":
            grad = logits
        else:
            grad = logits if inplace else torch.empty_like(logits)
        kept = int((targets != ignore_index).sum())
        if bug == "no 1/N scale":
            scale = 1.0
        elif bug == "ignored rows counted in the mean":
            scale = 1.0 / max(N, 1) if reduction == "mean" else 1.0
        else:
            scale = 1.0 / max(kept, 1) if reduction == "mean" else 1.0
        if N:
            _backward_variant[(N,)](logits, targets.contiguous(), lse.contiguous(), grad, logits.stride(0),
                                    grad.stride(0), V, ignore_index, scale, BLOCK=_block(V, block_size), BUG=bug)
        return grad.clone() if bug == "in place, returns a copy" and inplace else grad
    return cross_entropy_backward


@triton.jit
def _backward_row_weights(z_ptr, y_ptr, lse_ptr, w_ptr, grad_ptr, row_stride, grad_stride, V, BLOCK: tl.constexpr):
    """Per-row weights from the launcher (0 for ignored rows); softmax first, the -1 at the target stored after."""
    row = tl.program_id(0).to(tl.int64)
    y = tl.load(y_ptr + row)
    lse = tl.load(lse_ptr + row)
    w = tl.load(w_ptr + row)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        z = tl.load(z_ptr + row * row_stride + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        tl.store(grad_ptr + row * grad_stride + cols, (tl.exp(z - lse) * w).to(grad_ptr.dtype.element_ty),
                 mask=cols < V)
    inside = (y >= 0) & (y < V)
    p_y = tl.load(grad_ptr + row * grad_stride + y, mask=inside, other=0.0).to(tl.float32)
    tl.store(grad_ptr + row * grad_stride + y, (p_y - w).to(grad_ptr.dtype.element_ty), mask=inside & (w != 0))


def backward_row_weights(logits, targets, lse, ignore_index=-100, reduction="mean", inplace=False, block_size=None):
    N, V = logits.shape
    keep = targets != ignore_index
    scale = 1.0 / max(int(keep.sum()), 1) if reduction == "mean" else 1.0
    weights = torch.where(keep, scale, 0.0).to(torch.float32)
    grad = logits if inplace else torch.empty_like(logits)
    if N:
        _backward_row_weights[(N,)](logits, targets, lse.float(), weights, grad, logits.stride(0), grad.stride(0),
                                    V, BLOCK=_block(V, block_size))
    return grad


def backward_calls_softmax(logits, targets, lse, ignore_index=-100, reduction="mean", inplace=False, block_size=None):
    keep = targets != ignore_index
    scale = 1.0 / max(int(keep.sum()), 1) if reduction == "mean" else 1.0
    g = torch.softmax(logits.float(), -1)
    g[torch.arange(len(targets)), torch.where(keep, targets, 0)] -= 1
    g = (g * torch.where(keep, scale, 0.0)[:, None]).to(logits.dtype)
    return logits.copy_(g) if inplace else g


# ------------------------------------------------------------------ fused_linear_cross_entropy

def _chunk(h, w, y, keep, scale, bug):
    z = h @ w.T
    y_safe = torch.where(keep, y, 0)
    z_y = z.gather(1, y_safe[:, None]).squeeze(1)
    if bug == "no max subtraction":
        e = z.exp()
        s = e.sum(1, keepdim=True)
        lse = s.log().squeeze(1)
    else:
        m = z.amax(1, keepdim=True)
        e = (z - m).exp()
        s = e.sum(1, keepdim=True)
        lse = (m + s.log()).squeeze(1)
    loss = torch.where(keep, lse - z_y, 0.0).sum()
    grad = e / s
    grad[torch.arange(len(y)), y_safe] -= 1
    grad_scale = 1.0 if bug == "gradient without 1/N" else scale
    return grad * torch.where(keep, grad_scale, 0.0).to(grad.dtype)[:, None], loss


class _FusedVariant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_size, bug):
        acc = hidden.dtype if bug == "logits in the input dtype" else torch.promote_types(hidden.dtype, torch.float32)
        if bug == "float64 throughout":
            acc = torch.float64
        w = weight.to(acc)
        keep = targets != ignore_index
        count = int(keep.sum())
        denominator = len(targets) if bug == "ignored tokens counted in the mean" else count
        scale = 1.0 / max(denominator, 1)
        grad_hidden = torch.zeros(hidden.shape, dtype=acc)
        grad_weight = torch.zeros(weight.shape, dtype=acc)
        total = torch.zeros((), dtype=acc)
        for start in range(0, hidden.shape[0], chunk_size):
            stop = start + chunk_size - 1 if bug == "chunk boundary off by one" else start + chunk_size
            h = hidden[start:stop].to(acc)
            grad, loss = _chunk(h, w, targets[start:stop], keep[start:stop], scale, bug)
            total += loss
            grad_hidden[start:stop] = grad @ w
            if bug == "d weight overwritten per chunk":
                grad_weight = grad.T @ h
            else:
                grad_weight += grad.T @ h
        ctx.save_for_backward(grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype))
        ctx.bug = bug
        out_dtype = torch.promote_types(hidden.dtype, torch.float32)
        return (total / denominator if denominator else total / 0.0).to(out_dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        if ctx.bug == "backward ignores grad_loss":  # right while the loss is backpropagated alone, with 1
            return grad_hidden, grad_weight, None, None, None, None
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None, None


def _fused(bug):
    def fused_linear_cross_entropy(hidden, weight, targets, ignore_index=-100, chunk_size=256, backend=None):
        return _FusedVariant.apply(hidden, weight, targets, ignore_index, chunk_size, bug)
    return fused_linear_cross_entropy


class _FusedRecompute(torch.autograd.Function):
    """Right, and a different design: save the inputs, recompute each chunk's logits in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_size):
        ctx.save_for_backward(hidden, weight, targets)
        ctx.ignore_index, ctx.chunk_size = ignore_index, chunk_size
        acc = torch.promote_types(hidden.dtype, torch.float32)
        keep = targets != ignore_index
        total = torch.zeros((), dtype=acc)
        for start in range(0, hidden.shape[0], chunk_size):
            z = hidden[start:start + chunk_size].to(acc) @ weight.to(acc).T
            y, k = targets[start:start + chunk_size], keep[start:start + chunk_size]
            m = z.max(1).values
            lse = m + (z - m[:, None]).exp().sum(1).log()
            total += torch.where(k, lse - z.gather(1, torch.where(k, y, 0)[:, None]).squeeze(1), 0.0).sum()
        return total / keep.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, targets = ctx.saved_tensors
        acc = torch.promote_types(hidden.dtype, torch.float32)
        keep = targets != ctx.ignore_index
        scale = grad_loss.to(acc) / keep.sum().clamp_min(1)
        grad_hidden = torch.empty(hidden.shape, dtype=acc)
        grad_weight = torch.zeros(weight.shape, dtype=acc)
        w = weight.to(acc)
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            h = hidden[start:start + ctx.chunk_size].to(acc)
            y, k = targets[start:start + ctx.chunk_size], keep[start:start + ctx.chunk_size]
            p = torch.softmax(h @ w.T, dim=1)
            p[torch.arange(len(y)), torch.where(k, y, 0)] -= 1
            p *= torch.where(k, scale, 0.0)[:, None]
            grad_hidden[start:start + ctx.chunk_size] = p @ w
            grad_weight += p.T @ h
        return grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype), None, None, None


def fused_recompute_in_backward(hidden, weight, targets, ignore_index=-100, chunk_size=256, backend=None):
    return _FusedRecompute.apply(hidden, weight, targets, ignore_index, chunk_size)


def fused_calls_cross_entropy(hidden, weight, targets, ignore_index=-100, chunk_size=256, backend=None):
    z = hidden.float() @ weight.float().T
    return F.cross_entropy(z, targets, ignore_index=ignore_index)


# ------------------------------------------------------------------ chunk_size_for_budget

def budget_ceil(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    row = buffers * vocab_size * bytes_per_element
    if budget_bytes < row:
        raise ValueError("no row fits")
    return min(n_tokens, -(-budget_bytes // row))


def budget_ignores_buffers(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    row = vocab_size * bytes_per_element
    if budget_bytes < row:
        raise ValueError("no row fits")
    return min(n_tokens, budget_bytes // row)


def budget_ignores_element_size(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    row = buffers * vocab_size * 4
    if budget_bytes < row:
        raise ValueError("no row fits")
    return min(n_tokens, budget_bytes // row)


def budget_not_clamped_to_tokens(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    row = buffers * vocab_size * bytes_per_element
    if budget_bytes < row:
        raise ValueError("no row fits")
    return budget_bytes // row


def budget_returns_zero(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    return min(n_tokens, budget_bytes // (buffers * vocab_size * bytes_per_element))


def budget_at_least_one(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    return max(1, min(n_tokens, budget_bytes // (buffers * vocab_size * bytes_per_element)))


def budget_by_search(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    rows = 0
    while rows < n_tokens and (rows + 1) * buffers * vocab_size * bytes_per_element <= budget_bytes:
        rows += 1
    if rows == 0:
        raise ValueError(f"{budget_bytes} bytes hold no row")
    return rows


def budget_by_floor(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    rows = math.floor(budget_bytes / (buffers * vocab_size * bytes_per_element))
    if rows < 1:
        raise ValueError("not even one row fits")
    return int(min(rows, n_tokens))


# ------------------------------------------------------------------ z_loss_cross_entropy and softcapped_cross_entropy

def _rows(logits, targets, ignore_index, dtype=None, select=True):
    """(z in float32 or better, ignored rows set to 0 unless select is False; safe targets; keep; count)."""
    acc = dtype or torch.promote_types(logits.dtype, torch.float32)
    keep = targets != ignore_index
    z = logits.to(acc)
    if select:
        z = torch.where(keep[:, None], z, 0.0)
    return z, torch.where(keep, targets, 0).long(), keep, keep.sum()


def _lse(z, subtract_max=True):
    if not subtract_max:
        return z.exp().sum(1).log()
    m = z.amax(1, keepdim=True)
    return (m + (z - m).exp().sum(1, keepdim=True).log()).squeeze(1)


def _onehot(y, V, dtype):
    return (y[:, None] == torch.arange(V)).to(dtype)


def _z_loss(bug):
    def z_loss_cross_entropy(logits, targets, z_loss=1e-4, ignore_index=-100):
        dtype = logits.dtype if bug == "in the input dtype" else torch.float64 if bug == "float64" else None
        z, y, keep, count = _rows(logits, targets, ignore_index, dtype, select=bug != "mask multiplied")
        lse = _lse(z, subtract_max=bug != "no max subtraction")
        ce = lse - z.gather(1, y[:, None]).squeeze(1)
        penalty = z_loss * lse ** 2
        factor = 1 + 2 * z_loss * lse
        if bug == "factor 2 missing":
            factor = 1 + z_loss * lse
        elif bug == "lse missing from the factor":
            factor = (1 + 2 * z_loss) * torch.ones_like(lse)
        p = (z - lse[:, None]).exp()
        scale = 1 / count.clamp(min=1)
        if bug == "square of the mean lse":
            mean_lse = torch.where(keep, lse, 0.0).sum() / count.clamp(min=1)
            loss = torch.where(keep, ce, 0.0).sum() / count + z_loss * mean_lse ** 2
            grad = (p * (1 + 2 * z_loss * mean_lse) - _onehot(y, z.shape[1], z.dtype)) * scale
            return loss, torch.where(keep[:, None], grad, 0.0)
        if bug == "z-loss on ignored rows too":
            loss = (torch.where(keep, ce, 0.0).sum() + penalty.sum()) / count
            grad = torch.where(keep[:, None], p * factor[:, None] - _onehot(y, z.shape[1], z.dtype),
                               p * (2 * z_loss * lse)[:, None]) * scale
            return loss, grad
        if bug == "z-loss over N, not N_valid":
            loss = torch.where(keep, ce, 0.0).sum() / count + torch.where(keep, penalty, 0.0).sum() / max(len(y), 1)
            grad = p * (1 / count.clamp(min=1) + 2 * z_loss * lse / max(len(y), 1))[:, None] \
                - _onehot(y, z.shape[1], z.dtype) / count.clamp(min=1)
            return loss, torch.where(keep[:, None], grad, 0.0)
        loss = torch.where(keep, ce + penalty, 0.0).sum() / count
        grad = (p * factor[:, None] - _onehot(y, z.shape[1], z.dtype)) * scale
        if bug == "mask multiplied":
            return (ce + penalty).mul(keep).sum() / count, grad * keep[:, None]
        grad = torch.where(keep[:, None], grad, 0.0)
        return (loss.to(logits.dtype), grad.to(logits.dtype)) if bug == "in the input dtype" else (loss, grad)
    return z_loss_cross_entropy


def z_loss_softmax_over_sum(logits, targets, z_loss=1e-4, ignore_index=-100):
    """Right: softmax as exp(z - m) / s, the loss as the mean cross-entropy plus the mean penalty."""
    z, y, keep, count = _rows(logits, targets, ignore_index)
    m = z.amax(1, keepdim=True)
    e = (z - m).exp()
    s = e.sum(1, keepdim=True)
    lse = (m + s.log()).squeeze(1)
    ce = torch.where(keep, lse - z.gather(1, y[:, None]).squeeze(1), 0.0).sum() / count
    loss = ce + z_loss * torch.where(keep, lse ** 2, 0.0).sum() / count
    grad = e / s * (1 + 2 * z_loss * lse)[:, None] - _onehot(y, z.shape[1], z.dtype)
    return loss, torch.where(keep[:, None], grad, 0.0) / count.clamp(min=1)


def z_loss_by_autograd(logits, targets, z_loss=1e-4, ignore_index=-100):
    z, y, keep, count = _rows(logits, targets, ignore_index)
    z = z.detach().requires_grad_(True)
    lse = _lse(z)
    loss = torch.where(keep, lse - z.gather(1, y[:, None]).squeeze(1) + z_loss * lse ** 2, 0.0).sum() / count
    (grad,) = torch.autograd.grad(loss, z) if bool(keep.any()) else (torch.zeros_like(z),)
    return loss.detach(), grad


def z_loss_calls_logsumexp(logits, targets, z_loss=1e-4, ignore_index=-100):
    z, y, keep, count = _rows(logits, targets, ignore_index)
    lse = torch.logsumexp(z, 1)
    loss = torch.where(keep, lse - z.gather(1, y[:, None]).squeeze(1) + z_loss * lse ** 2, 0.0).sum() / count
    grad = (z - lse[:, None]).exp() * (1 + 2 * z_loss * lse)[:, None] - _onehot(y, z.shape[1], z.dtype)
    return loss, torch.where(keep[:, None], grad, 0.0) / count.clamp(min=1)


def _softcap(bug):
    def softcapped_cross_entropy(logits, targets, cap=30.0, ignore_index=-100):
        if not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0):
            raise ValueError("cap must be a finite number > 0")
        dtype = torch.float64 if bug == "float64" else None
        z, y, keep, count = _rows(logits, targets, ignore_index, dtype, select=bug != "mask multiplied")
        if bug == "tanh by its exp formula":
            e = (2 * z / cap).exp()
            t = (e - 1) / (e + 1)
        elif bug == "z not divided by cap":
            t = torch.tanh(z)
        else:
            t = torch.tanh(z / cap)
        capped = cap * t
        if bug == "mask kept":
            capped = torch.where(z == -math.inf, -math.inf, capped)
        slope = 1 - t * t
        if bug == "tanh' without the square":
            slope = 1 - t
        elif bug == "no tanh' factor":
            slope = torch.ones_like(t)
        elif bug == "z not divided by cap":
            slope = cap * (1 - t * t)
        elif bug == "slope as 1 / cosh^2":
            slope = 1 / torch.cosh(z / cap) ** 2
        elif bug == "slope as (1 - t)(1 + t)":
            slope = (1 - t) * (1 + t)
        onehot = _onehot(y, z.shape[1], z.dtype)
        scale = 1 / count.clamp(min=1)
        if bug == "cap after the loss":
            lse = _lse(z)
            ce = lse - z.gather(1, y[:, None]).squeeze(1)
            loss = torch.where(keep, cap * torch.tanh(ce / cap), 0.0).sum() / count
            grad = ((z - lse[:, None]).exp() - onehot) * (1 - torch.tanh(ce / cap) ** 2)[:, None] * scale
            return loss, torch.where(keep[:, None], grad, 0.0)
        lse = _lse(capped, subtract_max=bug != "no max subtraction")
        ce = lse - capped.gather(1, y[:, None]).squeeze(1)
        if bug == "over N, not N_valid":
            scale = 1 / max(len(y), 1)
            loss = torch.where(keep, ce, 0.0).sum() / max(len(y), 1)
        else:
            loss = torch.where(keep, ce, 0.0).sum() / count
        grad = ((capped - lse[:, None]).exp() - onehot) * slope * scale
        if bug == "mask multiplied":
            return ce.mul(keep).sum() / count, grad * keep[:, None]
        return loss, torch.where(keep[:, None], grad, 0.0)
    return softcapped_cross_entropy


def softcap_calls_softmax(logits, targets, cap=30.0, ignore_index=-100):
    if not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0):
        raise ValueError("cap must be a finite number > 0")
    z, y, keep, count = _rows(logits, targets, ignore_index)
    t = torch.tanh(z / cap)
    capped = cap * t
    p = torch.softmax(capped, 1)
    loss = torch.where(keep, -p.gather(1, y[:, None]).squeeze(1).log(), 0.0).sum() / count
    grad = (p - _onehot(y, z.shape[1], z.dtype)) * (1 - t * t)
    return loss, torch.where(keep[:, None], grad, 0.0) / count.clamp(min=1)


def softcap_without_validating_cap(logits, targets, cap=30.0, ignore_index=-100):
    """Right values for a valid cap, but a cap <= 0 goes through (z / 0: nan and inf) instead of raising ValueError."""
    z, y, keep, count = _rows(logits, targets, ignore_index)
    t = torch.tanh(z / cap)
    capped = cap * t
    lse = _lse(capped)
    loss = torch.where(keep, lse - capped.gather(1, y[:, None]).squeeze(1), 0.0).sum() / count
    grad = ((capped - lse[:, None]).exp() - _onehot(y, z.shape[1], z.dtype)) * (1 - t * t)
    return loss, torch.where(keep[:, None], grad, 0.0) / count.clamp(min=1)


# ------------------------------------------------------------------ vocab_parallel_cross_entropy

def _vocab_parallel(bug):
    def vocab_parallel_cross_entropy(logit_shards, targets, ignore_index=-100):
        acc = torch.float64 if bug == "float64" else torch.promote_types(logit_shards[0].dtype, torch.float32)
        keep = targets != ignore_index
        y = torch.where(keep, targets, 0).long()
        shards = [torch.where(keep[:, None], s.to(acc), 0.0) for s in logit_shards]
        widths = [s.shape[1] for s in shards]
        offsets = [i * widths[0] for i in range(len(shards))] if bug == "equal widths assumed" else \
            [sum(widths[:i]) for i in range(len(shards))]
        maxima, sums, parts, local_lse = [], [], [], []
        for i, (s, o) in enumerate(zip(shards, offsets)):
            m = s.amax(1)
            base = m if bug == "no guard for a shard of -inf" else torch.where(m == -math.inf, 0.0, m)
            sums.append((s - base[:, None]).exp().sum(1))
            maxima.append(m)
            local_lse.append(m + sums[-1].log())
            local = y - o
            last = s.shape[1] if bug == "ownership end inclusive" else s.shape[1] - 1
            owns = keep & (local >= 0) & (local <= last)
            source = shards[0] if bug == "target read from shard 0 at the local index" else s
            index = torch.where(owns, local, 0).clamp(max=source.shape[1] - 1)
            if bug == "target from a flattened view":
                rows = torch.arange(len(y))
                picked = logit_shards[i].view(-1)[rows * s.shape[1] + index].to(acc)  # the shard as given
            else:
                picked = source.gather(1, index[:, None]).squeeze(1)
            parts.append(torch.where(owns, picked, 0.0))
        M = torch.stack(maxima).amax(0)
        if bug == "max of the shards' lse":
            lse = torch.stack(local_lse).amax(0)
        elif bug == "sums added without rescaling":
            lse = M + sum(sums).log()
        else:
            lse = M + sum(s * (m - M).exp() for m, s in zip(maxima, sums)).log()
        count = torch.tensor(len(y)) if bug == "ignored rows counted in the mean" else keep.sum()
        loss = torch.where(keep, lse - sum(parts), 0.0).sum() / count
        grads = []
        for s, o, own_lse in zip(shards, offsets, local_lse):
            row_lse = own_lse if bug == "gradient softmax over the shard only" else lse
            g = (s - row_lse[:, None]).exp() - ((y - o)[:, None] == torch.arange(s.shape[1])).to(acc)
            grads.append(torch.where(keep[:, None], g, 0.0) / count.clamp(min=1))
        if bug == "zeroes shard 0 in place after":
            with torch.no_grad():
                logit_shards[0].zero_()
        return loss, grads
    return vocab_parallel_cross_entropy


def vocab_parallel_online_over_shards(logit_shards, targets, ignore_index=-100):
    """Right: Exercise 1's running (m, s) carried from shard to shard, as a ring would pass it."""
    acc = torch.promote_types(logit_shards[0].dtype, torch.float32)
    keep = targets != ignore_index
    y = torch.where(keep, targets, 0).long()
    m = torch.full((len(y),), -3.0e38, dtype=acc)
    s = torch.zeros(len(y), dtype=acc)
    z_y = torch.zeros(len(y), dtype=acc)
    start = 0
    for shard in logit_shards:
        z = torch.where(keep[:, None], shard.to(acc), 0.0)
        m_new = torch.maximum(m, z.amax(1))
        s = s * (m - m_new).exp() + (z - m_new[:, None]).exp().sum(1)
        m = m_new
        inside = (y >= start) & (y < start + z.shape[1])
        z_y = z_y + torch.where(inside, z.gather(1, (y - start).clamp(0, z.shape[1] - 1)[:, None]).squeeze(1), 0.0)
        start += z.shape[1]
    lse = m + s.log()
    count = keep.sum()
    loss = torch.where(keep, lse - z_y, 0.0).sum() / count
    grads, start = [], 0
    for shard in logit_shards:
        z = torch.where(keep[:, None], shard.to(acc), 0.0)
        g = (z - lse[:, None]).exp() - ((y - start)[:, None] == torch.arange(z.shape[1])).to(acc)
        grads.append(torch.where(keep[:, None], g, 0.0) / count.clamp(min=1))
        start += z.shape[1]
    return loss, tuple(grads)


def vocab_parallel_merges_lses(logit_shards, targets, ignore_index=-100):
    """Right: each shard's own lse_i = m_i + log s_i, merged as M + log sum exp(lse_i - M)."""
    acc = torch.promote_types(logit_shards[0].dtype, torch.float32)
    keep = targets != ignore_index
    y = torch.where(keep, targets, 0).long()
    shards = [torch.where(keep[:, None], s.to(acc), 0.0) for s in logit_shards]
    lses, parts, start = [], [], 0
    for s in shards:
        m = s.amax(1)
        lses.append(m + (s - torch.where(m == -math.inf, 0.0, m)[:, None]).exp().sum(1).log())  # -inf shard: -inf
        inside = keep & (y >= start) & (y < start + s.shape[1])
        parts.append(torch.where(inside, s.gather(1, (y - start).clamp(0, s.shape[1] - 1)[:, None]).squeeze(1), 0.0))
        start += s.shape[1]
    stacked = torch.stack(lses)
    M = stacked.amax(0)
    lse = M + (stacked - M).exp().sum(0).log()
    count = keep.sum()
    loss = torch.where(keep, lse - sum(parts), 0.0).sum() / count
    grads, start = [], 0
    for s in shards:
        g = (s - lse[:, None]).exp() - ((y - start)[:, None] == torch.arange(s.shape[1])).to(acc)
        grads.append(torch.where(keep[:, None], g, 0.0) / count.clamp(min=1))
        start += s.shape[1]
    return loss, grads


def vocab_parallel_concatenates(logit_shards, targets, ignore_index=-100):
    """Right values, from the concatenated logits: what the exercise exists to avoid."""
    acc = torch.promote_types(logit_shards[0].dtype, torch.float32)
    widths = [s.shape[1] for s in logit_shards]
    z, y, keep, count = _rows(torch.cat(logit_shards, dim=1).to(acc), targets, ignore_index)
    lse = _lse(z)
    loss = torch.where(keep, lse - z.gather(1, y[:, None]).squeeze(1), 0.0).sum() / count
    grad = torch.where(keep[:, None], (z - lse[:, None]).exp() - _onehot(y, z.shape[1], z.dtype), 0.0)
    return loss, list((grad / count.clamp(min=1)).split(widths, dim=1))


# kernels the interpreter runs to the right values and Triton's compiler, or a GPU's memory, does not accept: each
# loses the exercise's compile point and only that (test_interpreter_only_kernels_lose_only_the_compile_point)
INTERPRETER_ONLY = {
    "test_online_logsumexp_compiles": {
        "block maxima in a Python list": _lse_with(_lse_list_of_maxima)},
    "test_cross_entropy_forward_compiles": {
        "a global that is not constexpr": _forward_launcher("a global that is not constexpr"),
        "target logit loaded without the mask": _forward_launcher("target logit loaded without the mask")},
    "test_cross_entropy_backward_compiles": {
        "unmasked load, tl.where after": _backward_launcher("unmasked load")},
}
VALUES_CELL = {"test_online_logsumexp_compiles": "test_online_logsumexp",
               "test_cross_entropy_forward_compiles": "test_cross_entropy_forward",
               "test_cross_entropy_backward_compiles": "test_cross_entropy_backward"}

EXERCISES = {
    "test_online_logsumexp": Exercise(
        "online_logsumexp",
        wrong={"no max subtraction": _lse_launcher("no max subtraction"),
               "running max does not rescale the sum": _lse_launcher("no rescaling"),
               "padding loaded as 0": _lse_launcher("pad with 0"),
               "bf16 accumulation": _lse_launcher("bf16 accumulation"),
               "running max starts at -inf": _lse_launcher("start at -inf"),
               "rows stepped by V, not x.stride(0)": _lse_launcher("rows stepped by V"),
               "calls torch.logsumexp": lse_calls_torch_logsumexp},
        right={"two passes (max, then sum)": _lse_with(_lse_two_pass), "base-2 exponentials": _lse_with(_lse_exp2)}),
    "test_online_logsumexp_compiles": Exercise(
        "online_logsumexp", wrong=INTERPRETER_ONLY["test_online_logsumexp_compiles"] | {
            "break after the last block": _lse_launcher("break after the last block"),
            "float() of a block max": _lse_launcher("float() of a block max"),
            "block of min(V, 1024) columns, not a power of 2": _lse_not_a_power_of_two,
            "unmasked load, tl.where after": _lse_launcher("unmasked load")},
        right={"two passes (max, then sum)": _lse_with(_lse_two_pass), "base-2 exponentials": _lse_with(_lse_exp2)}),
    "test_cross_entropy_forward": Exercise(
        "cross_entropy_forward",
        wrong={"no max subtraction": _forward_launcher("no max subtraction"),
               "running max does not rescale the sum": _forward_launcher("no rescaling"),
               "bf16 accumulation": _forward_launcher("bf16 accumulation"),
               "ignored rows keep their loss": _forward_launcher("ignored rows keep their loss"),
               "loss rounded to bf16": _forward_launcher("loss rounded to bf16"),
               "sign flipped": _forward_launcher("sign flipped"),
               "calls F.cross_entropy": forward_calls_cross_entropy},
        right={"two passes, target picked up in the sweep": forward_two_pass,
               "log-sum-exp kernel + gather": forward_uses_exercise_one}),
    "test_cross_entropy_forward_compiles": Exercise(
        "cross_entropy_forward", wrong=INTERPRETER_ONLY["test_cross_entropy_forward_compiles"] | {
            "unmasked load, tl.where after": _forward_launcher("unmasked load")},
        right={"log-sum-exp kernel + gather": forward_uses_exercise_one}),
    "test_cross_entropy_backward": Exercise(
        "cross_entropy_backward",
        wrong={"gradient missing the 1/N scale": _backward_launcher("no 1/N scale"),
               "ignored rows counted in the mean": _backward_launcher("ignored rows counted in the mean"),
               "ignored rows not zeroed": _backward_launcher("ignored rows not zeroed"),
               "no onehot": _backward_launcher("no onehot"),
               "inplace=True ignored": _backward_launcher("inplace ignored"),
               "always in place": _backward_launcher("always in place"),
               "in place, but returns a copy": _backward_launcher("in place, returns a copy"),
               "calls torch.softmax": backward_calls_softmax},
        right={"per-row weights, target fixed after": backward_row_weights,
               "the reference kernel with a different default block": _backward_launcher("none")}),
    "test_cross_entropy_backward_compiles": Exercise(
        "cross_entropy_backward",
        # run without the check, an unmasked store writes past the tensor: into the heap, which may crash the process
        wrong=INTERPRETER_ONLY["test_cross_entropy_backward_compiles"] | {
            "break after the last block": _backward_launcher("break after the last block"),
            "unmasked store": _backward_launcher("unmasked store")},
        right={"per-row weights, target fixed after": backward_row_weights}),
    "test_fused_linear_cross_entropy": Exercise(
        "fused_linear_cross_entropy",
        wrong={"chunk boundary off by one": _fused("chunk boundary off by one"),
               "ignored tokens counted in the mean": _fused("ignored tokens counted in the mean"),
               "gradient without 1/N": _fused("gradient without 1/N"),
               "d weight overwritten per chunk": _fused("d weight overwritten per chunk"),
               "logits in bf16": _fused("logits in the input dtype"),
               "no max subtraction": _fused("no max subtraction"),
               "backward ignores the upstream gradient": _fused("backward ignores grad_loss"),
               "calls F.cross_entropy": fused_calls_cross_entropy},
        right={"recompute the logits in backward": fused_recompute_in_backward,
               "float64 throughout": _fused("float64 throughout")}),
    "test_chunk_size_for_budget": Exercise(
        "chunk_size_for_budget",
        wrong={"rounds up": budget_ceil, "ignores the number of buffers": budget_ignores_buffers,
               "ignores bytes_per_element": budget_ignores_element_size,
               "not clamped to n_tokens": budget_not_clamped_to_tokens, "returns 0 when nothing fits": budget_returns_zero,
               "returns 1 when nothing fits": budget_at_least_one},
        right={"search": budget_by_search, "math.floor of a float division": budget_by_floor}),
    "test_z_loss_cross_entropy": Exercise(
        "z_loss_cross_entropy",
        wrong={"gradient missing the factor 2": _z_loss("factor 2 missing"),
               "gradient missing the lse: (1 + 2 zeta) p": _z_loss("lse missing from the factor"),
               "z-loss added to ignored rows": _z_loss("z-loss on ignored rows too"),
               "z-loss divided by N instead of N_valid": _z_loss("z-loss over N, not N_valid"),
               "zeta times the square of the mean lse": _z_loss("square of the mean lse"),
               "no max subtraction": _z_loss("no max subtraction"),
               "ignored rows multiplied by the mask (0 * nan)": _z_loss("mask multiplied"),
               "computed in the input dtype": _z_loss("in the input dtype"),
               "gradient by autograd": z_loss_by_autograd,
               "calls torch.logsumexp": z_loss_calls_logsumexp},
        right={"softmax as exp(z - m) / s, the two terms averaged apart": z_loss_softmax_over_sum,
               "float64 throughout": _z_loss("float64")}),
    "test_softcapped_cross_entropy": Exercise(
        "softcapped_cross_entropy",
        wrong={"gradient forgetting the tanh' factor": _softcap("no tanh' factor"),
               "tanh' as 1 - tanh, not squared": _softcap("tanh' without the square"),
               "cap applied after the loss": _softcap("cap after the loss"),
               "cap * tanh(z), z not divided by the cap": _softcap("z not divided by cap"),
               "tanh by its exp formula (nan at large |z|)": _softcap("tanh by its exp formula"),
               "masked classes kept at -inf": _softcap("mask kept"),
               "divided by N instead of N_valid": _softcap("over N, not N_valid"),
               "no max subtraction (overflows for a cap of 1000)": _softcap("no max subtraction"),
               "ignored rows multiplied by the mask (0 * nan)": _softcap("mask multiplied"),
               "cap <= 0 not rejected": softcap_without_validating_cap,
               "calls torch.softmax": softcap_calls_softmax},
        right={"slope as 1 / cosh^2(z / cap)": _softcap("slope as 1 / cosh^2"),
               "slope as (1 - t)(1 + t)": _softcap("slope as (1 - t)(1 + t)"),
               "float64 throughout": _softcap("float64")}),
    "test_vocab_parallel_cross_entropy": Exercise(
        "vocab_parallel_cross_entropy",
        wrong={"shard sums added without rescaling to the global max": _vocab_parallel("sums added without rescaling"),
               "the max of the shards' lse": _vocab_parallel("max of the shards' lse"),
               "target logit read from shard 0 at the local index":
                   _vocab_parallel("target read from shard 0 at the local index"),
               "gradient softmax over the shard only": _vocab_parallel("gradient softmax over the shard only"),
               "offsets i * V_0 (equal widths assumed)": _vocab_parallel("equal widths assumed"),
               "shard ownership off by one (y <= o_i + V_i)": _vocab_parallel("ownership end inclusive"),
               "no guard for a shard of only -inf (nan)": _vocab_parallel("no guard for a shard of -inf"),
               "ignored rows counted in the mean": _vocab_parallel("ignored rows counted in the mean"),
               "target gathered from shard.view(-1) (needs contiguous shards)":
                   _vocab_parallel("target from a flattened view"),
               "zeroes shard 0 in place after computing": _vocab_parallel("zeroes shard 0 in place after"),
               "concatenates the shards (torch.cat)": vocab_parallel_concatenates},
        right={"Exercise 1's running (m, s) carried from shard to shard": vocab_parallel_online_over_shards,
               "the shards' lse merged by a log-sum-exp": vocab_parallel_merges_lses,
               "float64 throughout": _vocab_parallel("float64")}),
}

mutant_tests(globals())


@pytest.mark.parametrize("test_id, label", [(t, label) for t, kernels in INTERPRETER_ONLY.items() for label in kernels],
                         ids=[f"{t}-{label}" for t, kernels in INTERPRETER_ONLY.items() for label in kernels])
def test_interpreter_only_kernels_lose_only_the_compile_point(test_id, label):
    """The interpreter gives them the right values: the exercise's own test cell passes them, its compile cell not."""
    notebook, exercise = load_exercises(ASSIGNMENT), EXERCISES[test_id]
    notebook.run_test(VALUES_CELL[test_id], **{exercise.function: INTERPRETER_ONLY[test_id][label]})
    with pytest.raises(AssertionError):
        notebook.run_test(test_id, **{exercise.function: INTERPRETER_ONLY[test_id][label]})


# ------------------------------------------------------------------ the budget test holds Exercise 4 to the budget

def lce_materialised(hidden, weight, targets, ignore_index=-100, chunk_size=256, backend=None):
    """Right values, but every logit at once (through autograd)."""
    acc = torch.promote_types(hidden.dtype, torch.float32)
    z = hidden.to(acc) @ weight.to(acc).T
    keep = targets != ignore_index
    m = z.amax(1, keepdim=True).detach()
    lse = (m + (z - m).exp().sum(1, keepdim=True).log()).squeeze(1)
    return torch.where(keep, lse - z.gather(1, torch.where(keep, targets, 0)[:, None]).squeeze(1), 0.0).sum() / keep.sum()


def lce_autograd_over_chunks(hidden, weight, targets, ignore_index=-100, chunk_size=256, backend=None):
    """Chunked, but with autograd recording every chunk: each chunk's logits are saved for backward."""
    keep = targets != ignore_index
    total = 0.0
    for start in range(0, len(targets), chunk_size):
        acc = torch.promote_types(hidden.dtype, torch.float32)
        z = hidden[start:start + chunk_size].to(acc) @ weight.to(acc).T
        y, k = targets[start:start + chunk_size], keep[start:start + chunk_size]
        m = z.amax(1, keepdim=True).detach()
        lse = (m + (z - m).exp().sum(1, keepdim=True).log()).squeeze(1)
        total = total + torch.where(k, lse - z.gather(1, torch.where(k, y, 0)[:, None]).squeeze(1), 0.0).sum()
    return total / keep.sum()


def lce_three_buffers(hidden, weight, targets, ignore_index=-100, chunk_size=256, backend=None):
    """An autograd.Function whose chunk keeps logits, exp and softmax alive together (no in-place ops)."""
    class ThreeBuffers(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden_in, weight_in):
            acc = torch.promote_types(hidden_in.dtype, torch.float32)
            hidden, weight = hidden_in.to(acc), weight_in.to(acc)
            keep = targets != ignore_index
            scale = 1.0 / max(int(keep.sum()), 1)
            grad_hidden, grad_weight = torch.empty_like(hidden), torch.zeros_like(weight)
            total = torch.zeros((), dtype=acc)
            for start in range(0, len(targets), chunk_size):
                h = hidden[start:start + chunk_size]
                y, k = targets[start:start + chunk_size], keep[start:start + chunk_size]
                z = h @ weight.T
                e = (z - z.amax(1, keepdim=True)).exp()
                p = e / e.sum(1, keepdim=True)
                lse = z.amax(1) + e.sum(1).log()
                total += torch.where(k, lse - z.gather(1, torch.where(k, y, 0)[:, None]).squeeze(1), 0.0).sum()
                p[torch.arange(len(y)), torch.where(k, y, 0)] -= 1
                p *= torch.where(k, scale, 0.0)[:, None]
                grad_hidden[start:start + chunk_size] = p @ weight
                grad_weight += p.T @ h
                del z, e, p
            ctx.save_for_backward(grad_hidden.to(hidden_in.dtype), grad_weight.to(weight_in.dtype))
            return total / keep.sum()

        @staticmethod
        def backward(ctx, grad_loss):
            grad_hidden, grad_weight = ctx.saved_tensors
            return grad_hidden * grad_loss, grad_weight * grad_loss

    return ThreeBuffers.apply(hidden, weight)


MEMORY_HUNGRY = {"materialised logits": lce_materialised, "autograd over the chunks": lce_autograd_over_chunks,
                 "three chunk-sized buffers": lce_three_buffers}


@pytest.mark.parametrize("label", list(MEMORY_HUNGRY))
def test_budget_cell_rejects_a_memory_hungry_fused_loss(label):
    with pytest.raises(AssertionError, match="at its peak"):
        load_exercises(ASSIGNMENT).run_test("test_chunk_size_for_budget",
                                            fused_linear_cross_entropy=MEMORY_HUNGRY[label])


HOLDS_N_BY_V = ("materialised logits", "autograd over the chunks")  # not fused at all: Exercise 4 rejects them too


@pytest.mark.parametrize("label", HOLDS_N_BY_V)
def test_a_fused_loss_that_holds_the_whole_logits_is_rejected_by_its_own_test(label):
    with pytest.raises(AssertionError, match="never builds"):
        load_exercises(ASSIGNMENT).run_test("test_fused_linear_cross_entropy",
                                            fused_linear_cross_entropy=MEMORY_HUNGRY[label])


@pytest.mark.parametrize("label", sorted(set(MEMORY_HUNGRY) - set(HOLDS_N_BY_V)))
def test_a_fused_loss_over_budget_but_chunked_passes_its_own_test(label):
    """Three chunk-sized buffers are fused, only wasteful: it fails the budget (Exercise 5), not Exercise 4."""
    load_exercises(ASSIGNMENT).run_test("test_fused_linear_cross_entropy", fused_linear_cross_entropy=MEMORY_HUNGRY[label])
