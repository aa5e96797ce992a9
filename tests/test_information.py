"""course_lib.information against torch.special.entr / xlogy, F.kl_div and Categorical in fp64 (notebook 03)."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import information as info


def _random_distributions(*shape, dim=-1, scale=3.0, zeros=0.0, seed=0, dtype=torch.float64):
    """Softmax of scaled normals along ``dim``; a fraction ``zeros`` of the entries set to exactly 0."""
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(*shape, generator=g, dtype=dtype)
    if zeros:
        drop = torch.rand(*shape, generator=g) < zeros
        drop &= logits < logits.amax(dim, keepdim=True)  # keep at least one entry per distribution
        logits = logits.masked_fill(drop, -math.inf)
    return torch.softmax(logits, dim)


P = _random_distributions(6, 9, zeros=0.3, seed=1)
Q = _random_distributions(6, 9, zeros=0.0, seed=2)
TINY = torch.tensor([[1.0, 1e-300, 1e-300, 0.0], [0.5, 0.5 - 1e-300, 1e-300, 1e-310]], dtype=torch.float64)


def _torch_kl(p, q, dim=-1):
    """F.kl_div(log q, p) summed; F.kl_div gives NaN for p = q = 0, where the KL term is 0."""
    return F.kl_div(q.log(), p, reduction="none").nan_to_num(nan=0.0, posinf=math.inf).sum(dim)


@pytest.mark.parametrize("p", [P, Q, TINY, torch.eye(5, dtype=torch.float64)], ids=["with zeros", "dense", "tiny", "one-hot"])
def test_entropy_matches_torch(p):
    torch.testing.assert_close(info.entropy(p), torch.special.entr(p).sum(-1), rtol=1e-12, atol=0)
    torch.testing.assert_close(info.entropy(p), torch.distributions.Categorical(probs=p).entropy(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(info.entropy(p, base=2), torch.special.entr(p).sum(-1) / math.log(2), rtol=1e-12, atol=0)


def test_entropy_along_another_dim_and_batch_shapes():
    p = _random_distributions(3, 7, 4, dim=1, zeros=0.2, seed=3)
    got = info.entropy(p, dim=1)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, torch.special.entr(p).sum(1), rtol=1e-12, atol=0)


def test_entropy_worked_values_and_range():
    assert info.entropy(torch.tensor([0.5, 0.5]), base=2).item() == pytest.approx(1.0)
    assert info.entropy(torch.full((8,), 1 / 8), base=2).item() == pytest.approx(3.0)
    assert info.entropy(torch.tensor([0.1, 0.7, 0.2])).item() == pytest.approx(0.8018, abs=1e-4)
    one_hot = info.entropy(torch.tensor([0.0, 1.0, 0.0]))
    assert one_hot.item() == 0.0 and not math.copysign(1.0, one_hot.item()) < 0
    h = info.entropy(P)
    assert bool((h >= 0).all()) and bool((h <= math.log(9) + 1e-12).all())


def test_tiny_probabilities_keep_their_relative_accuracy():
    # H = 2e-300 * 690.78 + ..., far below any absolute tolerance: compare relatively
    want = torch.special.entr(TINY).sum(-1)
    torch.testing.assert_close(info.entropy(TINY), want, rtol=1e-12, atol=0)
    assert info.entropy(TINY)[0].item() > 1e-297


@pytest.mark.parametrize("p, q", [(P, Q), (Q, P), (Q, Q), (TINY, TINY[[1, 0]].flip(-1).roll(1, -1))],
                         ids=["p with zeros", "q with zeros", "p = q", "tiny"])
def test_cross_entropy_and_kl_match_torch(p, q):
    torch.testing.assert_close(info.cross_entropy_of_distributions(p, q), -torch.special.xlogy(p, q).sum(-1),
                               rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(info.kl_divergence(p, q), _torch_kl(p, q), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(info.kl_divergence(p, q, base=2), _torch_kl(p, q) / math.log(2), rtol=1e-10, atol=1e-14)


def test_cross_entropy_is_entropy_plus_kl_and_kl_is_asymmetric():
    torch.testing.assert_close(info.cross_entropy_of_distributions(P, Q), info.entropy(P) + info.kl_divergence(P, Q))
    assert bool((info.kl_divergence(P, Q) >= 0).all())
    assert info.kl_divergence(Q, Q).abs().max().item() < 1e-15
    assert not torch.allclose(info.kl_divergence(Q, P[:, :]), info.kl_divergence(P, Q))


def test_support_mismatch_gives_inf_and_zero_terms_never_nan():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert info.cross_entropy_of_distributions(p, q).tolist() == [math.inf, math.inf]
    assert info.kl_divergence(p, q).tolist() == [math.inf, math.inf]
    both_zero = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert info.cross_entropy_of_distributions(both_zero, both_zero).item() == 0.0
    assert info.kl_divergence(both_zero, both_zero).item() == 0.0
    assert math.isnan(F.kl_div(both_zero.log(), both_zero, reduction="sum").item())  # torch: 0 * log(0/0) = nan


def test_kl_with_a_subnormal_q_does_not_overflow():
    p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    q = torch.tensor([1.0, 1e-310], dtype=torch.float64)  # p / q = 5e309 overflows; log p - log q does not
    want = 0.5 * (math.log(0.5) - 0.0) + 0.5 * (math.log(0.5) - math.log(1e-310))
    assert info.kl_divergence(p, q).item() == pytest.approx(want, rel=1e-12)
    assert math.isinf(torch.log(p / q)[1].item())


def test_broadcasting_and_dim():
    q = Q[0]
    torch.testing.assert_close(info.kl_divergence(P, q), _torch_kl(P, q.expand_as(P)), rtol=1e-10, atol=1e-14)
    pt, qt = P.T.contiguous(), Q.T.contiguous()
    torch.testing.assert_close(info.cross_entropy_of_distributions(pt, qt, dim=0), -torch.special.xlogy(P, Q).sum(-1))


def test_broadcasting_either_way_round_and_empty_batches_match_torch():
    p4, q3 = _random_distributions(4, 1, 9, zeros=0.3, seed=6), _random_distributions(1, 3, 9, seed=7)
    for p, q in [(Q[0], P), (p4, q3)]:  # a smaller p, and both broadcasting
        torch.testing.assert_close(info.cross_entropy_of_distributions(p, q), -torch.special.xlogy(p, q).sum(-1))
        torch.testing.assert_close(info.kl_divergence(p, q), _torch_kl(*torch.broadcast_tensors(p, q)))
    empty = torch.zeros(0, 9, dtype=torch.float64)
    assert info.entropy(empty).shape == torch.special.entr(empty).sum(-1).shape == (0,)
    assert info.cross_entropy_of_distributions(empty, Q[0]).shape == info.kl_divergence(empty, empty).shape == (0,)


def test_gradients_are_finite_where_p_has_zeros():
    p = P.clone().requires_grad_()
    q = Q.clone().requires_grad_()
    (info.entropy(p).sum() + info.kl_divergence(p, q).sum() + info.cross_entropy_of_distributions(p, q).sum()).backward()
    assert bool(torch.isfinite(p.grad).all()) and bool(torch.isfinite(q.grad).all())
    torch.testing.assert_close(q.grad, -2 * P / Q)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_are_computed_in_fp32(dtype):
    counts = torch.tensor([[1.0, 3.0, 0.0, 12.0], [4.0, 4.0, 4.0, 4.0]])
    p = (counts / 16).to(dtype)  # exact in every dtype
    q = (torch.tensor([[2.0, 2.0, 2.0, 10.0], [1.0, 1.0, 7.0, 7.0]]) / 16).to(dtype)
    for got, want in [(info.entropy(p), torch.special.entr(p.double()).sum(-1)),
                      (info.cross_entropy_of_distributions(p, q), -torch.special.xlogy(p.double(), q.double()).sum(-1)),
                      (info.kl_divergence(p, q), _torch_kl(p.double(), q.double()))]:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-7)


def test_perplexity_is_exp_of_the_masked_mean():
    g = torch.Generator().manual_seed(4)
    nll = 3 * torch.rand(4, 10, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 10, generator=g) < 0.7
    nll_padded = nll.masked_fill(~mask, math.inf)  # padding may hold anything
    torch.testing.assert_close(info.perplexity(nll_padded, mask), nll[mask].mean().exp())
    torch.testing.assert_close(info.perplexity(nll), nll.mean().exp())
    assert info.perplexity(torch.full((7,), math.log(50.0))).item() == pytest.approx(50.0)
    assert math.isnan(info.perplexity(nll, torch.zeros(4, 10, dtype=torch.bool)).item())


def test_perplexity_of_a_long_sequence_does_not_overflow_and_matches_f_cross_entropy():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(5000, 20, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 20, (5000,), generator=g)
    nll = F.cross_entropy(logits, targets, reduction="none")
    assert math.isinf(nll.sum().exp().item())  # exp of the sum overflows; exp of the mean does not
    torch.testing.assert_close(info.perplexity(nll), F.cross_entropy(logits, targets).exp())


def test_bits_per_character():
    nll = torch.full((10,), math.log(2.0))
    assert info.bits_per_character(nll, 10).item() == pytest.approx(1.0)
    assert info.bits_per_character(torch.tensor([2.0, 3.0]), 8).item() == pytest.approx(5 / (8 * math.log(2)))
    mask = torch.tensor([True, True, False])
    got = info.bits_per_character(torch.tensor([2.0, 3.0, math.nan]), torch.tensor(8), mask=mask)
    assert got.item() == pytest.approx(5 / (8 * math.log(2)))
    assert info.bits_per_character(torch.tensor([1.0], dtype=torch.bfloat16), 1).dtype == torch.float32


def test_a_real_token_of_probability_0_is_inf_and_no_token_is_nan_or_0_bits():
    logits = torch.tensor([[0.0, 1.0], [2.0, -math.inf], [0.5, 0.5]], dtype=torch.float64)
    targets = torch.tensor([0, 1, 1])       # the second token's target has probability 0
    nll = F.cross_entropy(logits, targets, reduction="none")
    assert info.perplexity(nll).item() == F.cross_entropy(logits, targets).exp().item() == math.inf
    assert info.bits_per_character(nll, 5).item() == math.inf
    nothing = torch.zeros(3, dtype=torch.bool)
    assert math.isnan(info.perplexity(torch.zeros(0, dtype=torch.float64)).item())
    assert math.isnan(F.cross_entropy(logits[:0], targets[:0]).exp().item())   # torch: a mean over nothing
    assert info.bits_per_character(nll, 5, mask=nothing).item() == info.bits_per_character(nll[:0], 5).item() == 0.0


def test_the_same_text_cut_two_ways_has_the_same_bits_per_character():
    char_nll = torch.tensor([0.5, 1.5, 0.25, 2.0, 1.0, 0.75], dtype=torch.float64)   # 6 characters
    word_nll = torch.stack([char_nll[:2].sum(), char_nll[2:].sum()])                 # the same text as 2 chunks
    assert info.bits_per_character(char_nll, 6).item() == pytest.approx(info.bits_per_character(word_nll, 6).item())
    assert info.perplexity(word_nll).item() > 5 * info.perplexity(char_nll).item()


@pytest.mark.parametrize("call, message", [
    (lambda: info.entropy(torch.tensor([0.5, 0.6])), r"sum to 1 along dim=-1.*float32"),
    (lambda: info.entropy(torch.tensor([1.5, -0.5])), "non-negative"),
    (lambda: info.entropy(torch.tensor([math.nan, 1.0])), "not NaN"),
    (lambda: info.entropy(torch.tensor([1, 0])), "floating tensor"),
    (lambda: info.entropy([0.5, 0.5]), "torch.Tensor"),
    (lambda: info.entropy(torch.tensor([0.5, 0.5]), dim=1), r"dim=1 is out of range"),
    (lambda: info.entropy(torch.tensor([0.5, 0.5]), base=1), "base must be positive and not 1"),
    (lambda: info.entropy(torch.tensor([[0.5, 0.5], [0.5, 0.5]]), dim=0, base=-2), "base"),
    (lambda: info.kl_divergence(torch.ones(3) / 3, torch.ones(4) / 4), r"p \(3,\) and q \(4,\).*broadcast"),
    (lambda: info.cross_entropy_of_distributions(torch.ones(3) / 3, torch.ones(3)), "q must sum to 1"),
    (lambda: info.perplexity(torch.tensor([1.0, -0.1])), ">= 0"),
    (lambda: info.perplexity(torch.ones(3), torch.ones(3)), "bool tensor shaped like token_nll"),
    (lambda: info.perplexity(torch.ones(3), torch.ones(4, dtype=torch.bool)), r"\(3,\)"),
    (lambda: info.bits_per_character(torch.ones(3), 0), r"num_characters must be > 0 \(characters of the scored text\), got 0"),
    (lambda: info.bits_per_character(torch.ones(3), "12"), r"num_characters must be a number \(characters of the scored text\), got .12."),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_half_precision_totals_are_judged_with_a_half_precision_tolerance():
    p = torch.tensor([0.3, 0.3, 0.4], dtype=torch.bfloat16)  # rounded: the total is 1.0 +- 4e-3
    assert abs(p.double().sum().item() - 1) > 1e-4
    assert info.entropy(p).dtype == torch.float32
    with pytest.raises(ValueError, match="float64"):
        info.entropy(p.double())
