"""The language-modelling loss references against PyTorch in float64, on ordinary and extreme logits."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import language_model as lm


def _batch(seed=0, B=3, T=7, V=5, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    tokens = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 5:] = False  # a padded sequence
    mask[2, 3:] = False
    return logits, tokens, mask


@pytest.mark.parametrize("scale", [1.0, 50.0, 1e4])
def test_lm_loss_is_cross_entropy_on_shifted_targets_with_padding_ignored(scale):
    logits, tokens, mask = _batch(scale=scale)
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert torch.allclose(lm.lm_loss(logits, tokens, mask), expected, rtol=1e-12)
    assert torch.allclose(lm.lm_loss(logits, tokens), F.cross_entropy(logits[:, :-1].flatten(0, 1),
                                                                      tokens[:, 1:].flatten()), rtol=1e-12)


def test_lm_loss_weighs_tokens_not_sequences_and_low_precision_is_computed_in_fp32():
    logits, tokens, mask = _batch()
    per_sequence = -lm.sequence_log_likelihood(logits, tokens, mask) / mask[:, 1:].sum(-1)
    token_mean = lm.lm_loss(logits, tokens, mask)
    assert not torch.isclose(per_sequence.mean(), token_mean)  # the two means differ with ragged lengths
    half = lm.lm_loss(logits.bfloat16(), tokens, mask)
    assert half.dtype == torch.float32
    assert torch.isclose(half.double(), lm.lm_loss(logits.bfloat16().double(), tokens, mask), rtol=1e-5)


def test_sequence_log_likelihood_is_the_chain_rule_sum_over_counted_targets():
    logits, tokens, mask = _batch(scale=30.0)
    log_p = logits.log_softmax(-1)
    for b in range(3):
        expected = sum(log_p[b, t, tokens[b, t + 1]] for t in range(6) if mask[b, t + 1])
        assert torch.isclose(lm.sequence_log_likelihood(logits, tokens, mask)[b], expected, rtol=1e-12)


def test_minus_inf_logits_of_tokens_that_never_occur_give_finite_losses():
    logits, tokens, mask = _batch()
    banned = (tokens.max() + 1) % 5
    logits[..., banned] = -math.inf
    tokens = tokens.masked_fill(tokens == banned, (banned + 1) % 5)
    assert torch.isfinite(lm.lm_loss(logits, tokens, mask))
    assert torch.isfinite(lm.sequence_log_likelihood(logits, tokens)).all()


def test_a_padding_target_whose_log_probability_is_minus_inf_is_selected_out_not_multiplied():
    """The rule the course teaches: select the counted targets, never multiply by the mask (0 * -inf = nan)."""
    logits, tokens, mask = _batch()
    logits[0, 5, tokens[0, 6]] = -math.inf  # the padded target at position 6 of sequence 0 is impossible
    assert not mask[0, 6]
    clean = logits.clone()
    clean[0, 5, tokens[0, 6]] = 0.0  # what a padded position holds does not matter
    x = logits.clone().requires_grad_()
    loss = lm.lm_loss(x, tokens, mask)
    torch.testing.assert_close(loss, lm.lm_loss(clean, tokens, mask), rtol=1e-12, atol=0)
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten()), rtol=1e-12,
                               atol=0)
    loss.backward()
    assert torch.isfinite(x.grad).all() and (x.grad[0, 5] == 0).all()
    y = logits.clone().requires_grad_()
    total = lm.sequence_log_likelihood(y, tokens, mask)
    torch.testing.assert_close(total, lm.sequence_log_likelihood(clean, tokens, mask), rtol=1e-12, atol=0)
    total.sum().backward()
    assert torch.isfinite(y.grad).all()


def test_perplexity_weighs_batch_means_by_their_token_counts():
    losses, counts = torch.tensor([2.0, 1.0]), torch.tensor([300, 100])
    assert math.isclose(lm.perplexity_from_batch_losses(losses, counts), math.exp(1.75))
    assert math.isclose(lm.perplexity_from_batch_losses(losses, torch.tensor([1, 1])), math.exp(1.5))


def test_lm_loss_with_no_counted_target_is_nan_as_cross_entropy_with_every_target_ignored():
    logits, tokens, _ = _batch()
    only_first = torch.zeros_like(tokens, dtype=torch.bool)
    only_first[:, 0] = True                              # every sequence one token long: nothing to predict
    ignored = torch.full_like(tokens[:, 1:], -100).flatten()
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), ignored, ignore_index=-100)
    assert expected.isnan() and lm.lm_loss(logits, tokens, only_first).isnan()
    assert lm.lm_loss(logits[:, :1], tokens[:, :1]).isnan()   # T = 1: no target at all
    assert torch.equal(lm.sequence_log_likelihood(logits, tokens, only_first), torch.zeros(3, dtype=torch.float64))


def test_perplexity_leaves_out_a_batch_of_no_tokens_whose_mean_loss_is_nan():
    """Batches of a held-out set, one of them all padding: its lm_loss is nan and its count 0. The perplexity is
    still that of every token together, exp of F.cross_entropy over the whole set."""
    logits, tokens, mask = _batch(seed=4, B=6, T=8, V=7)
    mask[2:4, 1:] = False                                 # the second batch of two sequences has no target
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    means, counts = [], []
    for rows in (slice(0, 2), slice(2, 4), slice(4, 6)):
        means.append(F.cross_entropy(logits[rows, :-1].flatten(0, 1), targets[rows].flatten(), ignore_index=-100))
        counts.append(int(mask[rows, 1:].sum()))
    assert means[1].isnan() and counts[1] == 0
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100).exp().item()
    got = lm.perplexity_from_batch_losses(torch.stack(means), torch.tensor(counts))
    assert math.isclose(got, expected, rel_tol=1e-12)


def test_sampling_follows_softmax_over_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    for temperature, top_k in [(1.0, None), (0.5, None), (2.0, 2)]:
        counts = torch.bincount(lm.sample_next_token(logits, temperature, top_k, generator=g), minlength=4)
        masked = logits[0] if top_k is None else logits[0].masked_fill(torch.arange(4) >= top_k, -math.inf)
        expected = torch.softmax(masked / temperature, -1) * 20000
        # 5 standard deviations of a binomial count: fails for a wrong temperature, passes by chance < 1e-5
        assert ((counts - expected).abs() <= 5 * (expected * (1 - expected / 20000)).sqrt() + 1e-9).all(), counts
    assert torch.equal(lm.sample_next_token(logits[:3], temperature=0), torch.zeros(3, dtype=torch.long))


def test_causal_mask_is_lower_triangular_bool():
    assert torch.equal(lm.causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))


@pytest.mark.parametrize("call, message", [
    (lambda: lm.lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long)),
     r"logits \(B, T, V\) and tokens \(B, T\)"),
    (lambda: lm.lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3)), "integer tensor"),
    (lambda: lm.lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3)), "bool tensor"),
    (lambda: lm.perplexity_from_batch_losses(torch.ones(2), torch.zeros(2)), "positive total"),
    (lambda: lm.sample_next_token(torch.zeros(1, 3), temperature=-1.0), r"temperature must be >= 0 \(0 = greedy\)"),
    (lambda: lm.sample_next_token(torch.zeros(1, 3), top_k=0), "top_k must be an int >= 1 or None, got 0"),
    (lambda: lm.sample_next_token(torch.zeros(1, 3), top_k=2.5), "top_k must be an int >= 1 or None"),
])
def test_bad_inputs_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()
