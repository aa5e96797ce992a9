"""Cross-entropy of a linear layer's output, loss(hidden @ W^T, targets), without building the logits.

For N tokens, hidden size D and vocabulary V the logits take N*V floats (8192 x 128256 fp32 is 4 GiB)
and their gradient as many again, far more than the model's activations. Cut the tokens into chunks:
for each chunk c, with z = h_c W^T upcast to fp32 (fp64 for fp64 inputs; for bf16/fp16 inputs the matmul's own
result, accumulated in fp32 and rounded to the inputs' dtype, as a GPU's bf16 matmul gives it),

    loss_i = (1 - eps) (lse_i - z_{i,y_i}) + eps (lse_i - mean_k z_{i,k}),    lse_i = log sum_k e^{z_{i,k}}
    G      = softmax(z) - (1 - eps) onehot(y) - eps / V      (0 on an ignored token's row)
    dh_c   = G W,        dW += G^T h_c

and drop z: G, dh and dW are the gradients of the summed loss. The loss is a scalar, so its upstream gradient is one
number: the gradients are made in the forward pass and only multiplied, in the backward one, by it and by 1 / N_kept
for the mean (a scale per chunk would be one more pass over the logits); three matmuls in all (the minimum).
Peak extra memory: one chunk of logits plus the gradients of h and W, which training needs anyway.
On a GPU the chunk goes through the Triton kernel of ``triton_cross_entropy`` instead: z stays in the
inputs' dtype (bf16) and the kernel overwrites it with G in place, reading it twice and writing it once.

``chunk_rows_for_budget``: a chunk of c tokens over a vocabulary of V needs c * V * bytes_per_element bytes per
logits-sized buffer; with ``buffers`` such buffers alive at once the largest chunk that fits ``budget_bytes`` is

    c = min(n_tokens, floor(budget_bytes / (buffers * V * bytes_per_element))),

and a budget smaller than one row (c = 0) is an error.
"""
from functools import partial

import torch

from . import _inputs


def _chunk_rows(n_tokens, vocab_size, hidden_size, min_elements=1 << 24):
    """Rows per chunk, a power of two: a chunk of logits about as big as the hidden states (Liger's rule of
    thumb), or, if more, about ``min_elements`` logits (64 MiB of fp32: on a CPU a thin chunk makes slow matmuls and
    reads and writes all of dW once more) but at most 1/8 of the tokens."""
    chunks = max(1, -(-vocab_size // hidden_size))
    liger = 1 << (max(1, -(-n_tokens // chunks)) - 1).bit_length()
    floor = 1 << (max(1, min(min_elements // vocab_size, n_tokens // 8)).bit_length() - 1)
    return max(liger, floor)


def _torch_chunk(h, weight, y, keep, label_smoothing, buffer):
    """(G, summed loss) of one chunk in plain PyTorch, G = dloss/dz of the summed loss, made over ``buffer``.

    The matmul writes the logits into the buffer (fp32, fp64 for fp64 inputs; bf16/fp16 logits are upcast into it:
    upcasting h and W first would be more exact, but would copy W, V x D, for every chunk). Then three passes
    over it: the row maxima m; the softmax p in place (PyTorch's kernel works row by row, so each row's passes
    run in cache); the maxima of p. At a row's largest logit p = e^{m - lse} >= 1/V, so lse = m - log max_k p
    is read back without cancellation, and G = p - (1 - eps) onehot(y) - eps / V overwrites p.
    """
    V = weight.shape[0]
    z = buffer[:len(y)]
    if h.dtype == z.dtype:
        torch.mm(h, weight.T, out=z)
    else:
        z.copy_(h @ weight.T)
    rows, y_safe = torch.arange(len(y), device=y.device), y.masked_fill(~keep, 0)
    z_y, m = z[rows, y_safe], z.amax(-1)                          # read before z is overwritten
    mean = z.mean(-1) if label_smoothing else 0.0
    p = torch.softmax(z, -1, out=z)
    lse = m - p.amax(-1).log()
    loss = (1 - label_smoothing) * (lse - z_y) + label_smoothing * (lse - mean)
    if label_smoothing:
        p.sub_(label_smoothing / V)
    p[rows, y_safe] -= 1 - label_smoothing
    p[rows[~keep]] = 0                                            # an ignored token sends no gradient
    return p.to(h.dtype), torch.where(keep, loss, 0).sum()


def _triton_chunk(h, weight, y, keep, label_smoothing, ignore_index):
    """(G, summed loss) of one chunk: logits in the inputs' dtype, overwritten by G in one Triton launch."""
    from .triton_cross_entropy import cross_entropy_forward

    z = h @ weight.T
    one = torch.ones((), device=z.device)  # G of the summed loss
    loss, _ = cross_entropy_forward(z, y, ignore_index, label_smoothing, dloss=one, grad=z)
    return z, loss.sum()


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, reduction, label_smoothing, chunk_rows, backend):
        kept = targets != ignore_index
        count = kept.sum()
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
        # the gradients of the summed loss; backward scales them by d loss / d (summed loss) and the upstream one
        one = torch.ones((), dtype=acc, device=hidden.device)
        ctx.dloss = one / count.clamp_min(1) if reduction == "mean" else one
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        if backend == "triton":
            chunk = partial(_triton_chunk, ignore_index=ignore_index)
        else:  # one logits buffer for every chunk, not one allocation each
            chunk = partial(_torch_chunk, buffer=torch.empty(min(chunk_rows, len(targets)), weight.shape[0], dtype=acc,
                                                             device=hidden.device))
        for start in range(0, hidden.shape[0], chunk_rows):
            h, y, keep = (t[start:start + chunk_rows] for t in (hidden, targets, kept))
            g, loss = chunk(h, weight, y, keep, label_smoothing)
            total += loss
            torch.mm(g, weight, out=grad_hidden[start:start + chunk_rows])
            if g.dtype == acc:
                grad_weight.addmm_(g.T, h)
            else:  # bf16/fp16 matmul, accumulated in fp32
                grad_weight += g.T @ h
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        if reduction == "mean":  # every target ignored: 0 / 0 = NaN, as F.cross_entropy returns
            return total / count
        return total

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_loss * ctx.dloss
        return grad_hidden * scale.to(grad_hidden.dtype), grad_weight * scale.to(grad_weight.dtype), \
            None, None, None, None, None, None


def _triton_usable(device):
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def fused_linear_cross_entropy(hidden, weight, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                               chunk_rows=None, backend=None):
    """F.cross_entropy(hidden @ weight.T, targets, ...) without materialising the (N, V) logits.

    hidden (N, D), weight (V, D), targets (N,) int; reduction "mean" (over kept tokens; NaN when every
    target is ignored, like F.cross_entropy) or "sum". The log-sum-exp, the loss and dloss/dz are computed in fp32 for
    any input dtype, from logits the matmul makes in the inputs' dtype (bf16 inputs: bf16 logits, upcast); the
    gradients come back in the inputs' dtypes. chunk_rows: tokens per chunk (default: a chunk of logits about
    the size of hidden, and at least 16M of them, at most 1/8 of the tokens). backend: "torch" (runs anywhere),
    "triton" (the kernel of course_lib.triton_cross_entropy makes the loss and dloss/dz in place in a chunk of logits
    kept in the inputs' dtype; GPU, or CPU under TRITON_INTERPRET=1), or None: "triton" for CUDA tensors when
    Triton is installed, else "torch".
    """
    fn = "fused_linear_cross_entropy"
    for name, x in (("hidden", hidden), ("weight", weight)):
        _inputs.as_float(name, x, fn)  # validates only: the matmuls stay in the inputs' dtype (bf16 on a GPU)
    targets = _inputs.as_index("targets", targets, fn).contiguous()
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1] or targets.shape != hidden.shape[:1]:
        raise ValueError(f"{fn}: expected hidden (N, D), weight (V, D) and targets (N,), got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)} and {tuple(targets.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{fn}: reduction must be 'mean' or 'sum' (the logits are never kept for 'none'), "
                         f"got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must lie in [0, 1], got {label_smoothing}")
    kept = targets[targets != ignore_index]
    if kept.numel() and (kept.min() < 0 or kept.max() >= weight.shape[0]):
        raise ValueError(f"{fn}: targets must be in [0, {weight.shape[0]}) or equal ignore_index={ignore_index}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"{fn}: hidden and weight must share a dtype, got {hidden.dtype} and {weight.dtype}")
    if backend not in (None, "torch", "triton"):
        raise ValueError(f"{fn}: backend must be None, 'torch' or 'triton', got {backend!r}")
    backend = backend or ("triton" if _triton_usable(hidden.device) else "torch")
    if backend == "triton" and not hidden.is_cuda:
        from .triton_cross_entropy import INTERPRETED  # ImportError naming backend="torch" without Triton
        if not INTERPRETED:
            raise ValueError(f"{fn}: backend='triton' needs GPU tensors (or TRITON_INTERPRET=1 set before importing "
                             f"triton), got {hidden.device}; backend='torch' runs anywhere")
    rows = chunk_rows or _chunk_rows(*hidden.shape[:1], *weight.shape)
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, reduction, label_smoothing, rows,
                                          backend)


def chunk_rows_for_budget(n_tokens, vocab_size, budget_bytes, bytes_per_element=4, buffers=2):
    """Largest number of tokens per chunk whose ``buffers`` (chunk, vocab_size) buffers fit ``budget_bytes``.

    All arguments are positive integers; returns an int in [1, n_tokens]. Raises ValueError when not even one
    row fits (budget_bytes < buffers * vocab_size * bytes_per_element).
    """
    values = dict(n_tokens=n_tokens, vocab_size=vocab_size, budget_bytes=budget_bytes,
                  bytes_per_element=bytes_per_element, buffers=buffers)
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"chunk_rows_for_budget: {name} must be a positive integer, got {value!r}")
    row = buffers * vocab_size * bytes_per_element
    if budget_bytes < row:
        raise ValueError(f"chunk_rows_for_budget: a budget of {budget_bytes} bytes holds no row: one row of "
                         f"{buffers} buffer(s) over {vocab_size} classes needs {row} bytes")
    return min(n_tokens, budget_bytes // row)


def logits_bytes(n_tokens, vocab_size, bytes_per_element):
    """Bytes of one (n_tokens, vocab_size) logits tensor: n_tokens * vocab_size * bytes_per_element."""
    return n_tokens * vocab_size * bytes_per_element
