"""The known-entropy source: its stationary distribution, entropy rate and conditionals are exact."""
import itertools
import math

import pytest
import torch

from course_lib.markov import MarkovSource


@pytest.fixture(scope="module")
def source():
    return MarkovSource(vocab_size=3, order=2, concentration=0.7, seed=3)


def test_rows_are_distributions_and_the_stationary_distribution_is_stationary(source):
    assert torch.allclose(source.transitions.sum(-1), torch.ones(9, dtype=torch.float64))
    pi = source.stationary
    moved = torch.zeros_like(pi).index_add_(0, source._next_context().flatten(),
                                            (pi[:, None] * source.transitions).flatten())
    assert torch.allclose(moved, pi, atol=1e-13) and math.isclose(pi.sum().item(), 1.0)


def _sequence_probability(source, seq):
    V, k = source.vocab_size, source.order
    context = sum(x * V ** (k - 1 - i) for i, x in enumerate(seq[:k]))
    prob = source.stationary[context].item()
    for x in seq[k:]:
        prob *= source.transitions[context, x].item()
        context = (context * V) % V ** k + x
    return prob


def test_next_token_distribution_is_the_exact_conditional_of_the_process(source):
    """Brute force: enumerate every length-4 sequence, condition its probability on each prefix."""
    length, V = 4, source.vocab_size
    sequences = list(itertools.product(range(V), repeat=length))
    joint = {s: _sequence_probability(source, s) for s in sequences}
    assert math.isclose(sum(joint.values()), 1.0, rel_tol=1e-12)
    got = source.next_token_distribution(torch.tensor(sequences))
    for n, seq in enumerate(sequences):
        for t in range(length - 1):
            prefix = [p for s, p in joint.items() if s[: t + 1] == seq[: t + 1]]
            following = [sum(p for s, p in joint.items() if s[: t + 1] == seq[: t + 1] and s[t + 1] == y)
                         for y in range(V)]
            expected = torch.tensor(following, dtype=torch.float64) / sum(prefix)
            assert torch.allclose(got[n, t], expected, atol=1e-12), (seq, t)


def test_entropy_rate_matches_the_loss_of_the_true_model_on_samples(source):
    tokens = source.sample(400, 200, seed=0)
    p = source.next_token_distribution(tokens)[:, source.order - 1:-1]
    nll = -p.gather(-1, tokens[:, source.order:, None]).log()
    standard_error = nll.std().item() / math.sqrt(nll.numel())  # neighbours correlate a little: 5 SE is ample
    assert abs(nll.mean().item() - source.entropy_rate()) < 5 * standard_error
    assert 0 < source.entropy_rate() < math.log(3)
    assert math.isclose(source.entropy_rate(base=2), source.entropy_rate() / math.log(2))


def test_any_other_model_loses_exactly_the_kl_more_than_the_entropy(source):
    """E[-log q] - E[-log p] over positions = mean KL(p_t || q_t), for a model q that is not the truth."""
    tokens = source.sample(2000, 40, seed=1)
    p = source.next_token_distribution(tokens)[:, :-1]
    q = torch.softmax(torch.randn(p.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    target = tokens[:, 1:, None]
    gap = -(q.gather(-1, target).log() - p.gather(-1, target).log())
    kl = (p * (p.log() - q.log())).sum(-1)
    assert abs(gap.mean().item() - kl.mean().item()) < 5 * gap.std().item() / math.sqrt(gap.numel())
    assert kl.mean().item() > 0.05  # a random model is measurably worse than the truth


def test_flat_rows_give_the_maximum_entropy_and_peaked_rows_less():
    assert math.isclose(MarkovSource(5, 1, concentration=1e6).entropy_rate(), math.log(5), rel_tol=1e-4)
    assert MarkovSource(5, 1, concentration=0.05).entropy_rate() < 0.5 * math.log(5)


def test_sampling_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = MarkovSource(6, 2, seed=7), MarkovSource(6, 2, seed=7)
    assert torch.equal(a.transitions, b.transitions) and torch.equal(a.sample(3, 20, seed=5), b.sample(3, 20, seed=5))
    assert not torch.equal(a.sample(3, 20, seed=5), a.sample(3, 20, seed=6))
    assert not torch.equal(a.transitions, MarkovSource(6, 2, seed=8).transitions)
    assert torch.equal(torch.random.get_rng_state(), before)
    tokens = a.sample(3, 20)
    assert tokens.shape == (3, 20) and tokens.dtype == torch.int64 and 0 <= tokens.min() and tokens.max() < 6


def test_context_frequencies_in_long_samples_follow_the_stationary_distribution(source):
    tokens = source.sample(4000, 2, seed=2)  # the first k tokens are drawn from the stationary distribution
    counts = torch.bincount(tokens[:, 0] * 3 + tokens[:, 1], minlength=9).double() / 4000
    assert (counts - source.stationary).abs().max() < 4 * math.sqrt(0.25 / 4000)


@pytest.mark.parametrize("kwargs, message", [
    (dict(vocab_size=1, order=1), "vocab_size >= 2"),
    (dict(vocab_size=4, order=0), "order >= 1"),
    (dict(vocab_size=4, order=1, concentration=0.0), "concentration > 0"),
    (dict(vocab_size=64, order=4), "too many"),
])
def test_bad_parameters_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MarkovSource(**kwargs)


def test_bad_tokens_and_lengths_are_explained(source):
    with pytest.raises(ValueError, match=r"integer ids in \[0, 3\)"):
        source.next_token_distribution(torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="integer ids"):
        source.next_token_distribution(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="at least the order 2"):
        source.sample(2, 1)
