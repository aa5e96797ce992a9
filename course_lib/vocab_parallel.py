"""Cross-entropy over a vocabulary split across devices (notebook 10): tensor parallelism's output layer.

Tensor-parallel training (Megatron-LM) splits the output projection W (V, D) by rows over k devices, so device i
holds the logits of a contiguous slice of the vocabulary, z^(i) = h W_i^T of shape (N, V_i), V_0 + ... + V_{k-1} = V,
slice i starting at column o_i = V_0 + ... + V_{i-1}. No device sees a whole row. Each computes, per row n,

    m_i = max_k z^(i)_nk,     s_i = sum_k e^{z^(i)_nk - m_i},
    t_i = z^(i)[n, y_n - o_i] if o_i <= y_n < o_i + V_i, else 0:

three numbers, and the devices combine them with the online log-sum-exp merge (the rescaling of notebook 10's
Exercise 1, over shards instead of blocks): an all-reduce of the maxima, then of the rescaled sums and of the target
parts,

    M = max_i m_i,     S = sum_i s_i e^{m_i - M},     lse = M + log S,     z_y = sum_i t_i,     l_n = lse - z_y.

A shard whose every logit in a row is -inf has m_i = -inf and s_i = 0; its factor e^{m_i - M} is then 0 (never
e^{-inf - (-inf)} = nan). Each device then writes its own slice of the gradient, needing only lse:

    d loss / d z^(i)_nk = (e^{z^(i)_nk - lse_n} - [o_i + k == y_n]) / N_valid   (0 on ignored rows).

So per token each device sends 3 numbers, not its V_i logits. The loss and the gradient equal those of the whole
(N, V) logits, ``F.cross_entropy`` of their concatenation, without ever concatenating them.

Arithmetic in float32 or better (float16/bfloat16 shards are upcast, float64 stays float64). Ignored rows have loss
and gradient exactly 0, whatever they hold (they are selected away); with no kept row the mean is nan, as
``F.cross_entropy``'s, and every gradient 0.
"""
import functools

import torch

from . import _inputs


def shard_offsets(widths):
    """The first global column of each shard: [0, V_0, V_0 + V_1, ...] for shards of widths V_0, V_1, ..."""
    offsets, start = [], 0
    for width in widths:
        offsets.append(start)
        start += width
    return offsets


def shard_statistics(shard, local_targets, keep):
    """One device's share, before any communication: (m, s, t), each (N,).

    shard (N, V_i) of logits (ignored rows already harmless); local_targets: y - o_i, the target's column within the
    shard (outside [0, V_i) when another shard owns it); keep: the rows that count. m is the row maximum (-inf for
    a row of -inf), s = sum e^{z - m} (0 for such a row), t the target logit where this shard owns it, else 0.
    """
    m = shard.amax(1).detach()  # a constant for autograd: lse's gradient is softmax either way
    s = (shard - torch.where(m == -torch.inf, 0.0, m)[:, None]).exp().sum(1)
    owns = keep & (local_targets >= 0) & (local_targets < shard.shape[1])
    picked = shard.gather(1, torch.where(owns, local_targets, 0)[:, None]).squeeze(1)
    return m, s, torch.where(owns, picked, 0.0)


def merge_statistics(maxima, sums, target_parts):
    """(lse, z_y), each (N,), from the k devices' (m_i, s_i, t_i): the all-reduces of max, of rescaled sum, of sum."""
    M = torch.stack(maxima).amax(0)
    S = sum(s * (m - M).exp() for m, s in zip(maxima, sums))  # m_i = -inf: a factor of 0, and s_i is 0 too
    return M + S.log(), sum(target_parts)


def vocab_parallel_cross_entropy(logit_shards, targets, ignore_index=-100):
    """Mean cross-entropy of logits given as k vocabulary shards; returns (loss, grad_shards).

    logit_shards: a list (or tuple) of k >= 1 floating tensors (N, V_i), V_i >= 1, the contiguous column slices of
    the (N, V) logits in order; targets: (N,) integer global class ids in [0, V) or ignore_index. loss: 0-d, the
    mean over kept rows of lse - z_y (nan with no kept row); grad_shards: a tuple of k tensors (N, V_i), slice i of
    (softmax(z) - onehot(y)) / N_valid, 0 on ignored rows. float32 (float64 if any shard is float64).
    """
    fn = "vocab_parallel_cross_entropy"
    if not isinstance(logit_shards, (list, tuple)) or len(logit_shards) == 0:
        empty = " (empty)" if isinstance(logit_shards, (list, tuple)) else ""
        raise ValueError(f"{fn}: logit_shards must be a non-empty list of (N, V_i) tensors, got "
                         f"{type(logit_shards).__name__}{empty}")
    shards = [_inputs.as_float(f"logit_shards[{i}]", s, fn) for i, s in enumerate(logit_shards)]
    acc = functools.reduce(torch.promote_types, [s.dtype for s in shards])
    y = _inputs.as_index("targets", targets, fn)
    if y.dim() != 1 or any(s.dim() != 2 or s.shape[0] != y.shape[0] or s.shape[1] < 1 for s in shards):
        raise ValueError(f"{fn}: expected shards (N, V_i) with V_i >= 1 and targets (N,), got shards "
                         f"{[tuple(s.shape) for s in shards]} and targets {tuple(y.shape)}")
    widths = [s.shape[1] for s in shards]
    keep = y != ignore_index
    kept = y[keep]
    if kept.numel() and (kept.min() < 0 or kept.max() >= sum(widths)):
        raise ValueError(f"{fn}: targets must be in [0, {sum(widths)}) (the shards' widths add up to "
                         f"{sum(widths)}) or equal ignore_index={ignore_index}")
    y = torch.where(keep, y, 0)
    shards = [torch.where(keep[:, None], s.to(acc), 0.0) for s in shards]  # select: an ignored row may hold nan
    offsets = shard_offsets(widths)
    maxima, sums, parts = zip(*(shard_statistics(s, y - o, keep) for s, o in zip(shards, offsets)))
    lse, z_y = merge_statistics(maxima, sums, parts)
    count = keep.sum()
    loss = torch.where(keep, lse - z_y, 0.0).sum() / count
    scale = 1.0 / count.clamp(min=1).to(acc)
    grads = []
    for s, o in zip(shards, offsets):
        own = (y - o)[:, None] == torch.arange(s.shape[1], device=s.device)  # this shard's columns of onehot(y)
        g = (s - lse[:, None]).exp() - own.to(acc)
        grads.append(torch.where(keep[:, None], g * scale, 0.0))
    return loss, tuple(grads)
