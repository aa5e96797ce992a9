"""Cross-entropy of a linear layer's output, loss(hidden @ W^T, targets), without building the logits.

For N tokens, hidden size D and vocabulary V the logits take N*V floats (8192 x 128256 fp32 is 4 GiB)
and their gradient as many again, far more than the model's activations. Cut the tokens into chunks:
for each chunk c, with z = h_c W^T in fp32 (fp64 for fp64 inputs),

    loss_i = (1 - eps) (lse_i - z_{i,y_i}) + eps (lse_i - mean_k z_{i,k}),    lse_i = log sum_k e^{z_{i,k}}
    dz     = (softmax(z) - (1 - eps) onehot(y) - eps / V) * scale
    dh_c   = dz W,        dW += dz^T h_c

and drop z. The loss is a scalar, so its upstream gradient is one number: the gradients are made in
the forward pass and only multiplied by it in the backward one, three matmuls in all (the minimum).
Peak extra memory: one chunk of logits plus the gradients of h and W, which training needs anyway.
"""
import torch

from . import _inputs


def _chunk_rows(n_tokens, vocab_size, hidden_size):
    """Rows per chunk so that a chunk of logits is about as big as the hidden states (Liger's rule of thumb)."""
    chunks = max(1, -(-vocab_size // hidden_size))
    return max(1, 1 << (max(1, -(-n_tokens // chunks)) - 1).bit_length())


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, reduction, label_smoothing, chunk_rows):
        V = weight.shape[0]
        kept = targets != ignore_index
        count = kept.sum()
        scale = 1.0 / count.clamp_min(1).item() if reduction == "mean" else 1.0
        grad_hidden = torch.empty_like(hidden)
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            h, y, keep = (t[start:start + chunk_rows] for t in (hidden, targets, kept))
            z = (h @ weight.T).to(acc)
            lse = torch.logsumexp(z, dim=-1)
            y_safe = y.masked_fill(~keep, 0)
            nll = lse - z.gather(1, y_safe[:, None]).squeeze(1)
            smooth = lse - z.mean(-1)
            total += torch.where(keep, (1 - label_smoothing) * nll + label_smoothing * smooth, 0).sum()
            dz = torch.softmax(z, dim=-1) - label_smoothing / V
            dz[torch.arange(len(y)), y_safe] -= 1 - label_smoothing
            dz *= keep[:, None] * scale  # an ignored token sends no gradient
            dz = dz.to(hidden.dtype)
            grad_hidden[start:start + chunk_rows] = dz @ weight
            grad_weight += (dz.T @ h).to(acc)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        if reduction == "mean":  # every target ignored: 0 / 0 = NaN, as F.cross_entropy returns
            return total / count
        return total

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss.to(grad_hidden.dtype), grad_weight * grad_loss.to(grad_weight.dtype), \
            None, None, None, None, None


def fused_linear_cross_entropy(hidden, weight, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                               chunk_rows=None):
    """F.cross_entropy(hidden @ weight.T, targets, ...) without materialising the (N, V) logits.

    hidden (N, D), weight (V, D), targets (N,) int; reduction "mean" (over kept tokens; NaN when every
    target is ignored, like F.cross_entropy) or "sum". Logits and the loss are computed in fp32 for any
    input dtype; the gradients come back in the inputs' dtypes. chunk_rows: tokens per chunk (default:
    a chunk of logits about the size of hidden).
    """
    fn = "fused_linear_cross_entropy"
    for name, x in (("hidden", hidden), ("weight", weight)):
        _inputs.as_float(name, x, fn)  # validates only: the matmuls stay in the inputs' dtype (bf16 on a GPU)
    targets = _inputs.as_index("targets", targets, fn)
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
    rows = chunk_rows or _chunk_rows(*hidden.shape[:1], *weight.shape)
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, reduction, label_smoothing, rows)
