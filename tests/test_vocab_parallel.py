"""course_lib.vocab_parallel (notebook 10): the cross-entropy of logits split into k vocabulary shards equals, in
fp64, F.cross_entropy of the whole logits in value, and autograd's gradient of it, slice by slice; the merge of the
(max, sum) pairs is the online log-sum-exp; the edges (+-1e4, a shard of -inf, all ignored, empty, low precision)."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import vocab_parallel as vp
from course_lib.grading import logits_cases, random_targets

CASES = logits_cases(num_classes=23, rows=9, seed=21, dtype=torch.float64)
IDS = [label for label, _ in CASES]
# k = 1, 2, 3, 7 shards of unequal widths (23 columns), one of width 1
WIDTHS = {"k=1": [23], "k=2": [16, 7], "k=3": [1, 12, 10], "k=7": [5, 1, 3, 4, 2, 6, 2]}


def _unsharded(logits, targets, ignore_index=-100):
    """F.cross_entropy of the whole logits, ignored rows selected away first, and its gradient by autograd."""
    keep = targets != ignore_index
    x = torch.where(keep[:, None], logits, 0.0).detach().requires_grad_(True)
    loss = F.cross_entropy(x, torch.where(keep, targets, 0).long(), reduction="none")
    mean = torch.where(keep, loss, 0.0).sum() / keep.sum()
    if not bool(keep.any()):
        return mean.detach(), torch.zeros_like(logits)
    (grad,) = torch.autograd.grad(mean, x)
    return mean.detach(), grad


def _close(got, want, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("logits", [x for _, x in CASES], ids=IDS)
@pytest.mark.parametrize("widths", list(WIDTHS.values()), ids=list(WIDTHS))
def test_equals_the_unsharded_loss_and_gradient(logits, widths):
    targets = random_targets(logits, seed=22, ignore_index=-100, ignore_fraction=0.3)
    loss, grads = vp.vocab_parallel_cross_entropy(list(logits.split(widths, dim=1)), targets)
    want, want_grad = _unsharded(logits, targets)
    _close(loss, want)
    assert isinstance(grads, tuple) and [g.shape[1] for g in grads] == widths
    _close(torch.cat(grads, dim=1), want_grad)
    assert loss.dtype == torch.float64 and all(g.dtype == torch.float64 for g in grads)


def test_offsets_are_the_running_sum_of_the_widths():
    assert vp.shard_offsets([5, 1, 3]) == [0, 5, 6]
    assert vp.shard_offsets([7]) == [0]


def test_the_merge_is_the_online_logsumexp_of_the_pieces():
    z = 3 * torch.randn(4, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(23))
    pieces = z.split([4, 7], dim=1)
    keep = torch.ones(4, dtype=torch.bool)
    stats = [vp.shard_statistics(p, torch.full((4,), -1), keep) for p in pieces]
    for (m, s, t), p in zip(stats, pieces):
        _close(m, p.amax(1))
        _close(s, (p - p.amax(1, keepdim=True)).exp().sum(1))
        assert bool((t == 0).all())  # target -1: no shard owns it
    lse, _ = vp.merge_statistics(*zip(*stats))
    _close(lse, torch.logsumexp(z, -1))
    # without the rescaling e^{m_i - M} the sum is wrong unless every shard has the same maximum
    unscaled = torch.stack([m for m, _, _ in stats]).amax(0) + sum(s for _, s, _ in stats).log()
    assert not torch.allclose(unscaled, lse)


def test_a_shard_holding_every_target_and_the_target_at_each_boundary():
    z = torch.randn(6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(24))
    widths = [3, 4, 3]
    for targets in (torch.tensor([3, 4, 5, 6, 3, 6]), torch.tensor([0, 2, 3, 6, 7, 9])):  # shard 1 owns all; edges
        loss, grads = vp.vocab_parallel_cross_entropy(list(z.split(widths, 1)), targets)
        want, want_grad = _unsharded(z, targets)
        _close(loss, want)
        _close(torch.cat(grads, 1), want_grad)


def test_a_row_whose_whole_shard_is_minus_inf_gives_a_factor_of_zero_not_nan():
    z = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(25))
    z[1, 4:] = -math.inf   # row 1: shard 1 (columns 4..8) entirely -inf
    z[2, :4] = -math.inf   # row 2: shard 0 entirely -inf
    z[3, 1:] = -math.inf   # row 3: one finite logit, the target's
    targets = torch.tensor([8, 0, 5, 0])
    loss, grads = vp.vocab_parallel_cross_entropy(list(z.split([4, 5], 1)), targets)
    want, want_grad = _unsharded(z, targets)
    assert bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
    _close(loss, want)
    _close(torch.cat(grads, 1), want_grad)
    assert grads[1][1].abs().max().item() == 0.0 and grads[0][3, 0].item() == 0.0  # p = 1 at the target: 1 - 1


def test_extreme_logits_on_different_shards():
    z = torch.tensor([[1e4, 0.0, -1e4, 3.0], [-1e4, -1e4, 1e4, 1e4 - 1.0]], dtype=torch.float64)
    targets = torch.tensor([3, 2])
    loss, grads = vp.vocab_parallel_cross_entropy([z[:, :1], z[:, 1:3], z[:, 3:]], targets)
    want, want_grad = _unsharded(z, targets)
    _close(loss, want, rtol=1e-12, atol=1e-9)
    _close(torch.cat(grads, 1), want_grad)


def test_ignored_rows_are_exactly_zero_whatever_they_hold_and_all_ignored_is_nan_with_zero_gradients():
    z = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(26))
    z[1] = math.nan
    z[2, :3] = -math.inf
    z[2, 3:] = math.inf
    targets = torch.tensor([4, -100, -100, 1])
    loss, grads = vp.vocab_parallel_cross_entropy(list(z.split([2, 4], 1)), targets)
    want, want_grad = _unsharded(z[[0, 3]], targets[[0, 3]])
    _close(loss, want)
    _close(torch.cat(grads, 1)[[0, 3]], want_grad)
    assert all(bool((g[1:3] == 0).all()) for g in grads)
    loss, grads = vp.vocab_parallel_cross_entropy(list(z.split([2, 4], 1)), torch.full((4,), -100))
    assert math.isnan(loss.item()) and all(bool((g == 0).all()) for g in grads)


def test_an_empty_batch():
    empty = torch.zeros(0, dtype=torch.long)
    loss, grads = vp.vocab_parallel_cross_entropy([torch.zeros(0, 3), torch.zeros(0, 2)], empty)
    assert math.isnan(loss.item()) and [tuple(g.shape) for g in grads] == [(0, 3), (0, 2)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_shards_are_computed_in_float32(dtype):
    z = (3 * torch.randn(5, 30, generator=torch.Generator().manual_seed(27))).to(dtype)
    targets = random_targets(z.float(), seed=28, ignore_index=-100, ignore_fraction=0.2)
    loss, grads = vp.vocab_parallel_cross_entropy(list(z.split([11, 19], 1)), targets)
    want, want_grad = _unsharded(z.double(), targets)  # the same rounded logits, in float64
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    _close(loss, want.float(), rtol=1e-6, atol=1e-6)
    _close(torch.cat(grads, 1), want_grad.float(), rtol=1e-5, atol=1e-7)


def test_shards_as_views_int32_targets_and_a_custom_ignore_index():
    wide = torch.randn(5, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(29))
    z = wide[:, :12]  # rows of 13 in memory: each shard a non-contiguous view
    targets = torch.tensor([3, 1, 3, 11, 0], dtype=torch.int32)
    loss, grads = vp.vocab_parallel_cross_entropy(list(z.split([5, 7], 1)), targets, ignore_index=3)
    want, want_grad = _unsharded(z, targets.long(), ignore_index=3)
    _close(loss, want)
    _close(torch.cat(grads, 1), want_grad)


def test_the_loss_is_differentiable_by_autograd_to_the_same_gradient():
    z = 2 * torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(30))
    targets = torch.tensor([8, 0, -100, 4])
    shards = [p.clone().requires_grad_(True) for p in z.split([2, 3, 4], 1)]
    loss, grads = vp.vocab_parallel_cross_entropy(shards, targets)
    loss.backward()
    for shard, grad in zip(shards, grads):
        _close(shard.grad, grad.detach())


@pytest.mark.parametrize("shards, targets, message", [
    ([], torch.tensor([0]), "non-empty list"),
    (torch.zeros(2, 3), torch.tensor([0, 1]), "non-empty list"),
    ([torch.zeros(2, 3), torch.zeros(3, 2)], torch.tensor([0, 1]), "expected shards"),
    ([torch.zeros(2, 3), torch.zeros(2, 0)], torch.tensor([0, 1]), "expected shards"),
    ([torch.zeros(2, 3), torch.zeros(2, 2)], torch.tensor([0, 5]), r"targets must be in \[0, 5\)"),
    ([torch.zeros(2, 3, dtype=torch.long)], torch.tensor([0, 1]), "floating"),
    ([torch.zeros(2, 3)], torch.tensor([0.0, 1.0]), "integer tensor"),
])
def test_bad_inputs_raise_value_errors_naming_the_expectation(shards, targets, message):
    with pytest.raises(ValueError, match=message):
        vp.vocab_parallel_cross_entropy(shards, targets)
