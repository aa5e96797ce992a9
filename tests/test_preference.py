"""course_lib.preference against torch.softmax / torch.logsumexp in fp64, and the Gibbs identities (notebook 08)."""
import pytest
import torch

from course_lib import preference as pref


def rows(seed, P=3, N=12, scale=2.0, zeros=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.softmax(scale * torch.randn(P, N, generator=g, dtype=torch.float64), -1)
    if zeros:
        ref[:, :zeros] = 0.0
        ref = ref / ref.sum(-1, keepdim=True)
    return ref, 3 * torch.randn(P, N, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("beta", [0.01, 0.3, 1.0, 10.0])
def test_optimal_policy_is_the_tilted_softmax(beta):
    ref, r = rows(0)
    torch.testing.assert_close(pref.optimal_policy(ref, r, beta), torch.softmax(ref.log() + r / beta, -1))
    torch.testing.assert_close(pref.log_partition(ref, r, beta), beta * torch.logsumexp(ref.log() + r / beta, -1))


def test_optimal_policy_is_stable_for_huge_r_over_beta_and_zero_reference_mass():
    ref, r = rows(1, zeros=2)
    for beta in (1e-4, 1e-8):
        pi = pref.optimal_policy(ref, r, beta)
        assert torch.isfinite(pi).all()
        torch.testing.assert_close(pi, torch.nn.functional.one_hot((ref.log() + r / beta).argmax(-1), 12).double())
    r_big = r.clone()
    r_big[:, 0] = 1e4            # the reference never produces response 0: no reward can make pi* produce it
    pi = pref.optimal_policy(ref.float(), r_big.float(), 1.0)
    assert torch.isfinite(pi).all() and (pi[:, :2] == 0).all()
    torch.testing.assert_close(pi.sum(-1), torch.ones(3))
    assert torch.isfinite(pref.log_partition(ref, 1e4 * torch.ones_like(r), 1.0)).all()


def test_gibbs_variational_identity_and_optimality():
    ref, r = rows(2)
    beta = 0.7
    star = pref.optimal_policy(ref, r, beta)
    best = pref.log_partition(ref, r, beta)
    torch.testing.assert_close(pref.rlhf_objective(star, ref, r, beta), best)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        other = torch.softmax(star.log() + 0.5 * torch.randn(star.shape, generator=g, dtype=torch.float64), -1)
        kl = (other * (other.log() - star.log())).sum(-1)
        torch.testing.assert_close(pref.rlhf_objective(other, ref, r, beta), best - beta * kl)
        assert (pref.rlhf_objective(other, ref, r, beta) < best).all()


def test_low_precision_inputs_give_float32():
    ref = torch.tensor([[0.5, 0.25, 0.125, 0.125]], dtype=torch.bfloat16)     # exact in bfloat16
    r = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float16)
    pi = pref.optimal_policy(ref, r, 0.5)
    assert pi.dtype == torch.float32
    torch.testing.assert_close(pi, torch.softmax(ref.float().log() + r.float() / 0.5, -1))


@pytest.mark.parametrize("call, message", [
    (lambda: pref.optimal_policy(torch.full((2, 3), 1 / 3), torch.zeros(2, 4), 1.0), "same shape"),
    (lambda: pref.optimal_policy(torch.full((3,), 0.5), torch.zeros(3), 1.0), "distribution"),
    (lambda: pref.optimal_policy(torch.full((3,), 1 / 3), torch.zeros(3), 0.0), "beta"),
    (lambda: pref.optimal_policy(torch.tensor(1.0), torch.tensor(0.0), 1.0), r"\(\.\.\., N\)"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
