"""course_lib.preference_data: Bradley–Terry labels, the Bayes accuracy, a linear reward fitted to the labels."""
import math

import pytest
import torch

from course_lib import preference_data as data


def test_sample_preferences_follows_bradley_terry():
    r = torch.tensor([0.0, 1.0, -1.0, 2.0])
    chosen, rejected = data.sample_preferences(r, 40000, torch.Generator().manual_seed(0))
    assert (chosen != rejected).all() and chosen.dtype == torch.long
    pair = ((chosen == 3) & (rejected == 0)) | ((chosen == 0) & (rejected == 3))
    wins = ((chosen == 3) & pair).sum().item() / pair.sum().item()
    n = pair.sum().item()
    p = 1 / (1 + math.exp(-2.0))
    assert abs(wins - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(n / 40000 - 2 / 12) < 0.01          # each unordered pair equally likely


def test_bayes_accuracy_is_the_mean_of_sigmoid_abs_margin():
    a, b = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    torch.testing.assert_close(data.bayes_accuracy(a, b), torch.sigmoid(torch.tensor([2.0, 2.0, 0.0])).mean())


def test_fit_linear_reward_recovers_the_true_weights():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(50, 3, generator=g, dtype=torch.float64)
    w_true = torch.tensor([1.5, -1.0, 0.5], dtype=torch.float64)
    chosen, rejected = data.sample_preferences(features @ w_true, 5000, g)
    w = data.fit_linear_reward(features, chosen, rejected, steps=300, lr=0.1)
    torch.testing.assert_close(w, w_true, atol=0.2, rtol=0.0)


@pytest.mark.parametrize("call, message", [
    (lambda: data.sample_preferences(torch.zeros(1), 5), r"\(N,\)"),
    (lambda: data.fit_linear_reward(torch.zeros(5), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)),
     r"\(N, D\)"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
