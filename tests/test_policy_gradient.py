"""course_lib.policy_gradient against independent computations in fp64, and course_lib.verifiable_task (notebook 08).

Independent means: Python loops over floats, exact expectations by enumerating a categorical's outcomes, hand-written
case analyses, torch.distributions, and 60-digit decimals; never the function under test rearranged.
"""
import itertools
import math
import statistics
from decimal import Decimal, localcontext

import pytest
import torch

from course_lib import policy_gradient as pg
from course_lib import verifiable_task as vt

F64 = torch.float64
INF = math.inf


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops on one thread: on a busy machine two threads wait on each other at every op (up to 100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randn(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def grad_of(fn, *leaves):
    """The gradients of fn(*leaves).sum() with respect to fresh copies of the leaves."""
    xs = [x.detach().clone().requires_grad_() for x in leaves]
    fn(*xs).sum().backward()
    return [x.grad for x in xs]


# ------------------------------------------------------------------------------------------------- REINFORCE

@pytest.mark.parametrize("baseline", [None, 0.5, "0-d", "(1,)", "(N,)"])
def test_reinforce_loss_is_minus_the_mean_of_constant_weights_times_logprobs(baseline):
    n = 6
    lp = randn(n, seed=1).requires_grad_()
    rewards = randn(n, seed=2).requires_grad_()
    b = {"0-d": torch.tensor(0.3, dtype=F64), "(1,)": torch.tensor([-0.7], dtype=F64),
         "(N,)": randn(n, seed=3)}.get(baseline, baseline)
    if b is None:
        b_list = [0.0] * n
    elif isinstance(b, torch.Tensor):
        b_list = b.tolist() if b.numel() == n else [b.item()] * n
        b.requires_grad_()
    else:
        b_list = [b] * n
    loss = pg.reinforce_loss(lp, rewards, b)
    want = -sum((r - bi) * x for r, bi, x in zip(rewards.tolist(), b_list, lp.tolist())) / n
    assert loss.dim() == 0 and loss.item() == pytest.approx(want, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([-(r - bi) / n for r, bi in zip(rewards.tolist(), b_list)],
                                                     dtype=F64))
    assert rewards.grad is None and (not isinstance(b, torch.Tensor) or b.grad is None)   # (R - b) is a constant


def bandit(seed=0, arms=5, offset=3.0):
    """A softmax policy over K arms with rewards far from 0 (where a baseline matters)."""
    return randn(arms, seed=seed), randn(arms, seed=seed + 100) + offset


@pytest.mark.parametrize("baseline", [None, 2.5, "E[R]"])
def test_reinforce_expected_gradient_is_minus_the_gradient_of_the_expected_reward(baseline):
    theta, rewards = bandit()
    (true,) = grad_of(lambda t: torch.softmax(t, 0) @ rewards, theta)    # grad of E[R] = sum_a pi(a) R(a)
    pi = torch.softmax(theta, 0)
    b = (pi @ rewards).item() if baseline == "E[R]" else baseline
    expected = torch.zeros_like(theta)
    for a in range(len(theta)):     # E_pi[grad of the one-sample surrogate], enumerating arms exactly
        (g,) = grad_of(lambda t: pg.reinforce_loss(torch.log_softmax(t, 0)[a:a + 1], rewards[a:a + 1], b), theta)
        expected += pi[a] * g
    torch.testing.assert_close(expected, -true)


def reinforce_gradient_samples(seeds=300, n=16):
    """Gradients of the REINFORCE surrogate over batches of n arms drawn from the bandit, one per seed, for three
    baselines: none, the exact E_pi[R], and each sample's leave-one-out mean (RLOO)."""
    theta, rewards = bandit()
    pi = torch.softmax(theta, 0)
    expected_reward = (pi @ rewards).item()
    out = {"none": [], "E[R]": [], "leave-one-out": []}
    for seed in range(seeds):
        arms = torch.multinomial(pi, n, replacement=True, generator=torch.Generator().manual_seed(seed))
        r = rewards[arms]
        loo = r - pg.rloo_advantages(r[None])[0]          # mean of the other n - 1 rewards
        for name, b in (("none", None), ("E[R]", expected_reward), ("leave-one-out", loo)):
            (g,) = grad_of(lambda t: pg.reinforce_loss(torch.log_softmax(t, 0)[arms], r, b), theta)
            out[name].append(g)
    return {name: torch.stack(gs) for name, gs in out.items()}, theta, rewards


def test_reinforce_baselines_keep_the_mean_and_cut_the_variance_of_the_gradient():
    samples, theta, rewards = reinforce_gradient_samples()
    pi = torch.softmax(theta, 0)
    (true,) = grad_of(lambda t: torch.softmax(t, 0) @ rewards, theta)
    variance = {name: g.var(0).sum().item() for name, g in samples.items()}      # total variance over seeds
    # the exact per-sample variance, enumerating arms: E_pi ||(R(a) - b) grad log pi(a) - grad E[R]||^2
    score = torch.eye(len(pi), dtype=F64) - pi                                  # row a: grad_theta log pi(a)
    exact = {}
    for name, b in (("none", 0.0), ("E[R]", (pi @ rewards).item())):
        per_arm = (rewards - b)[:, None] * score - true
        exact[name] = (pi @ (per_arm ** 2).sum(-1)).item()
    print("\nREINFORCE gradient variance (bandit, K = 5, rewards ~ 3 + N(0, 1))")
    print(f"{'baseline':>14} | {'sampled: 300 batches of 16':>26} | {'exact: batch of 16':>18} | {'vs none':>7}")
    for name in samples:
        exact_batch = f"{exact[name] / 16:18.5f}" if name in exact else f"{'-':>18}"
        print(f"{name:>14} | {variance[name]:26.5f} | {exact_batch} | {variance['none'] / variance[name]:6.1f}x")
    for name, g in samples.items():   # unbiased: the mean of 300 batch gradients is near the true one (5 std errors)
        err = (g.mean(0) + true).abs()
        assert bool((err < 5 * g.std(0) / math.sqrt(len(g)) + 1e-12).all()), name
    assert variance["E[R]"] < 0.25 * variance["none"] and variance["leave-one-out"] < 0.25 * variance["none"]
    assert exact["E[R]"] < 0.25 * exact["none"]
    assert variance["none"] == pytest.approx(exact["none"] / 16, rel=0.25)      # a mean of 16 samples: variance / 16


def test_reinforce_loss_of_an_empty_batch_is_nan():
    assert math.isnan(pg.reinforce_loss(torch.zeros(0, dtype=F64), torch.zeros(0, dtype=F64)).item())


# ----------------------------------------------------------------------------------------------------- RLOO

@pytest.mark.parametrize("k", [2, 3, 7])
def test_rloo_advantages_match_a_leave_one_out_loop(k):
    r = randn(4, k, seed=k)
    want = [[row[j] - sum(row[:j] + row[j + 1:]) / (k - 1) for j in range(k)] for row in r.tolist()]
    torch.testing.assert_close(pg.rloo_advantages(r), torch.tensor(want, dtype=F64))


def test_rloo_rows_sum_to_zero_shift_invariant_and_constant_rows_give_exact_zeros():
    r = randn(5, 4, seed=1)
    a = pg.rloo_advantages(r)
    torch.testing.assert_close(a.sum(-1), torch.zeros(5, dtype=F64))
    torch.testing.assert_close(pg.rloo_advantages(r + randn(5, 1, seed=2, scale=100.0)), a)
    same = torch.tensor([[0.1] * 3, [1e6 + 0.1] * 3, [-7.3] * 3], dtype=F64)
    assert torch.equal(pg.rloo_advantages(same), torch.zeros(3, 3, dtype=F64))
    assert pg.rloo_advantages(torch.zeros(0, 4, dtype=F64)).shape == (0, 4)
    assert not pg.rloo_advantages(r.clone().requires_grad_()).requires_grad       # detached
    torch.testing.assert_close(pg.rloo_advantages(r.T.contiguous().T), a)        # non-contiguous input


# ------------------------------------------------------------------------------------------- GRPO advantages

@pytest.mark.parametrize("eps", [1e-4, 0.0, 0.5])
@pytest.mark.parametrize("k", [2, 3, 8])
def test_grpo_advantages_match_a_loop_with_the_unbiased_std(k, eps):
    r = randn(3, k, seed=k)
    want = [[(x - statistics.fmean(row)) / (statistics.stdev(row) + eps) for x in row] for row in r.tolist()]
    torch.testing.assert_close(pg.grpo_advantages(r, eps=eps), torch.tensor(want, dtype=F64))


def test_grpo_advantages_of_a_binary_group_worked_example():
    # one success in four: mean 1/4, unbiased std sqrt((3/4)^2 + 3 (1/4)^2) / 3) = 1/2
    got = pg.grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(got, torch.tensor([[0.75, -0.25, -0.25, -0.25]], dtype=F64) / 0.5001)


@pytest.mark.parametrize("scale_by_std, eps", [(True, 1e-4), (True, 0.0), (False, 1e-4)])
def test_grpo_advantages_of_equal_rewards_are_exactly_zero(scale_by_std, eps):
    same = torch.tensor([[0.1] * 5, [1.0] * 5, [1e6 + 0.1] * 5, [0.0] * 5], dtype=F64)
    got = pg.grpo_advantages(same, scale_by_std=scale_by_std, eps=eps)
    assert torch.equal(got, torch.zeros_like(same))
    mixed = torch.cat([same[:1], randn(1, 5)])        # a constant row does not disturb the others
    torch.testing.assert_close(pg.grpo_advantages(mixed, scale_by_std, eps)[1],
                               pg.grpo_advantages(mixed[1:], scale_by_std, eps)[0])


def test_dr_grpo_advantages_are_the_centred_rewards():
    r = randn(4, 6, seed=3)
    want = [[x - statistics.fmean(row) for x in row] for row in r.tolist()]
    torch.testing.assert_close(pg.grpo_advantages(r, scale_by_std=False), torch.tensor(want, dtype=F64))
    assert torch.equal(pg.grpo_advantages(r[:, :1], scale_by_std=False), torch.zeros(4, 1, dtype=F64))   # k = 1
    assert not pg.grpo_advantages(r.clone().requires_grad_()).requires_grad
    assert pg.grpo_advantages(torch.zeros(0, 3, dtype=F64)).shape == (0, 3)


# ------------------------------------------------------------------------------------ PPO's clipped surrogate

def by_cases(rho, a, eps):
    """PPO's per-token loss -min(rho A, clip(rho) A) and its derivative in log rho, case by case."""
    if a > 0 and rho > 1 + eps:
        return -(1 + eps) * a, 0.0          # the clip binds: the ratio may not grow further
    if a < 0 and rho < 1 - eps:
        return -(1 - eps) * a, 0.0          # the clip binds: the ratio may not shrink further
    return -rho * a, -rho * a               # unclipped (also A > 0 below 1 - eps, A < 0 above 1 + eps); A = 0: 0


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.2, 0.3, 1.0])   # 1: no lower clip at all (1 - eps = 0)
def test_clipped_surrogate_matches_the_case_analysis_values_and_gradients(eps):
    rhos = [0.01, 0.5, 0.69, 0.71, 0.79, 0.81, 0.89, 0.91, 1.0, 1.05, 1.09, 1.11, 1.19, 1.21, 1.29, 1.31, 1.5, 40.0]
    advantages = [2.0, -2.0, 0.7, -0.3, 0.0]
    pairs = [(r, a) for r in rhos for a in advantages]
    old = randn(len(pairs), seed=4)
    lp = (old + torch.tensor([math.log(r) for r, _ in pairs], dtype=F64)).requires_grad_()
    adv = torch.tensor([a for _, a in pairs], dtype=F64)
    loss = pg.clipped_surrogate(lp, old, adv, clip_eps=eps)
    loss.sum().backward()
    want = [by_cases(r, a, eps) for r, a in pairs]
    torch.testing.assert_close(loss, torch.tensor([w[0] for w in want], dtype=F64))
    torch.testing.assert_close(lp.grad, torch.tensor([w[1] for w in want], dtype=F64))


def test_clipped_surrogate_worked_example_at_eps_0_2():
    lp = torch.tensor([0.5, 1.0, 1.1, 1.5], dtype=F64).log()
    old = torch.zeros(4, dtype=F64)
    torch.testing.assert_close(pg.clipped_surrogate(lp, old, torch.tensor(2.0, dtype=F64)),
                               torch.tensor([-1.0, -2.0, -2.2, -2.4], dtype=F64))    # 1.5 clipped to 1.2
    torch.testing.assert_close(pg.clipped_surrogate(lp, old, torch.tensor(-2.0, dtype=F64)),
                               torch.tensor([1.6, 2.0, 2.2, 3.0], dtype=F64))        # 0.5 clipped to 0.8


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_clipped_surrogate_far_outside_the_clip_range_is_finite_with_zero_gradient_where_clipped(dtype):
    big = 800.0 if dtype == torch.float64 else 100.0          # exp(big) overflows in this dtype
    lp = torch.tensor([big, -big, 50.0, -50.0], dtype=dtype, requires_grad=True)
    old = torch.zeros(4, dtype=dtype)
    adv = torch.tensor([1.5, -1.5, 1.5, -1.5], dtype=dtype)    # each one clipped: rho huge with A > 0, tiny with A < 0
    loss = pg.clipped_surrogate(lp, old, adv)
    loss.sum().backward()
    torch.testing.assert_close(loss, torch.tensor([-1.8, 1.2, -1.8, 1.2], dtype=dtype))
    assert torch.equal(lp.grad, torch.zeros(4, dtype=dtype))
    unclipped = torch.tensor([-big, -50.0], dtype=dtype, requires_grad=True)    # A > 0, rho -> 0: never clipped
    out = pg.clipped_surrogate(unclipped, torch.zeros(2, dtype=dtype), torch.tensor(1.5, dtype=dtype))
    out.sum().backward()
    torch.testing.assert_close(out, -1.5 * torch.tensor([0.0, math.exp(-50.0)], dtype=dtype))
    assert torch.isfinite(unclipped.grad).all()


def test_clipped_surrogate_where_both_logprobs_are_minus_inf():
    lp, old = randn(3, 5, seed=5) - 2, randn(3, 5, seed=6, scale=0.3) - 2
    adv = randn(3, 1, seed=7)
    masked = torch.zeros(3, 5, dtype=torch.bool)
    masked[0, 3:], masked[2, 1] = True, True
    lp_m, old_m = lp.masked_fill(masked, -INF), old.masked_fill(masked, -INF)
    loss = pg.clipped_surrogate(lp_m.clone().requires_grad_(), old_m, adv)
    (g,) = grad_of(lambda x: pg.clipped_surrogate(x, old_m, adv), lp_m)
    (g_clean,) = grad_of(lambda x: pg.clipped_surrogate(x, old, adv), lp)
    clean = pg.clipped_surrogate(lp, old, adv)
    torch.testing.assert_close(loss[~masked], clean[~masked])
    torch.testing.assert_close(g[~masked], g_clean[~masked])
    torch.testing.assert_close(loss[masked], -adv.expand(3, 5)[masked])     # rho taken as 1 there
    assert torch.equal(g[masked], torch.zeros(int(masked.sum()), dtype=F64)) and torch.isfinite(g).all()


def test_clipped_surrogate_broadcasts_advantages_and_treats_old_and_advantages_as_constants():
    lp, old = randn(4, 6, seed=8), randn(4, 6, seed=9, scale=0.3)
    old = lp.detach() + old
    adv = randn(4, 1, seed=10)
    got = pg.clipped_surrogate(lp, old, adv)
    assert got.shape == (4, 6)
    torch.testing.assert_close(got, pg.clipped_surrogate(lp, old, adv.expand(4, 6).contiguous()))
    torch.testing.assert_close(pg.clipped_surrogate(lp, old, adv[0, 0]),
                               pg.clipped_surrogate(lp, old, adv[0, 0].expand(4, 6)))
    torch.testing.assert_close(pg.clipped_surrogate(lp.T.contiguous().T, old.T.contiguous().T, adv), got)
    x, o, a = (t.clone().requires_grad_() for t in (lp, old, adv))
    pg.clipped_surrogate(x, o, a).sum().backward()
    assert x.grad is not None and o.grad is None and a.grad is None


# ------------------------------------------------------------------------------------------------- grpo_loss

def responses(seed=0, B=5, T=7):
    """Log-probs of B responses of varied lengths (one empty), ratios spread across the clip range, and one A = 0."""
    g = torch.Generator().manual_seed(seed)
    lp = torch.rand(B, T, generator=g, dtype=F64).clamp_min(0.05).log()
    old = lp + 0.4 * torch.randn(B, T, generator=g, dtype=F64)
    adv = torch.randn(B, generator=g, dtype=F64)
    adv[1] = 0.0
    lengths = torch.tensor([7, 3, 0, 5, 1][:B])
    mask = torch.arange(T) < lengths[:, None]
    return lp, old, adv, mask


def grpo_by_loop(lp, old, adv, mask, eps, normalization, max_length=None):
    """TRL's formula token by token, on the kept tokens only (indexed, never masked), reduced response by response."""
    sums, counts = [], []
    for b in range(len(lp)):
        x, o = lp[b][mask[b]], old[b][mask[b]]
        rho = torch.exp(x - o)
        per_token = -torch.min(rho * adv[b], torch.clamp(rho, 1 - eps, 1 + eps) * adv[b])
        sums.append(per_token.sum())
        counts.append(len(x))
    if normalization == "sequence":
        kept = [s / n for s, n in zip(sums, counts) if n > 0]
        return sum(kept) / len(kept)
    if normalization == "token":
        return sum(sums) / sum(counts)
    return sum(sums) / (len(lp) * (max_length or lp.shape[1]))


@pytest.mark.parametrize("normalization, max_length", [("sequence", None), ("token", None), ("constant", None),
                                                       ("constant", 12)])
@pytest.mark.parametrize("eps", [0.2, 0.1])
def test_grpo_loss_matches_a_loop_over_responses(normalization, max_length, eps):
    lp, old, adv, mask = responses()
    got = pg.grpo_loss(lp, old, adv, mask, clip_eps=eps, normalization=normalization, max_length=max_length)
    want = grpo_by_loop(lp, old, adv, mask, eps, normalization, max_length)
    torch.testing.assert_close(got, want)
    (g,) = grad_of(lambda x: pg.grpo_loss(x, old, adv, mask, eps, normalization, max_length), lp)
    (g_want,) = grad_of(lambda x: grpo_by_loop(x, old, adv, mask, eps, normalization, max_length), lp)
    torch.testing.assert_close(g, g_want)


@pytest.mark.parametrize("normalization", pg.NORMALIZATIONS)
def test_grpo_loss_ignores_whatever_masked_positions_hold(normalization):
    lp, old, adv, mask = responses(seed=1)
    poisoned_lp, poisoned_old = lp.clone(), old.clone()
    b, t = (~mask).nonzero(as_tuple=True)
    fill = torch.tensor([-INF, math.nan, INF, -INF, 1e30], dtype=F64).repeat(len(b))[:len(b)]
    poisoned_lp[b, t] = fill
    poisoned_old[b, t] = fill.roll(1)        # -inf against nan, nan against inf, ...
    poisoned_adv = adv.clone()
    poisoned_adv[2] = math.nan               # response 2 is empty: its advantage is never read
    clean = pg.grpo_loss(lp, old, adv, mask, normalization=normalization)
    dirty = pg.grpo_loss(poisoned_lp, poisoned_old, poisoned_adv, mask, normalization=normalization)
    torch.testing.assert_close(dirty, clean)
    (g_clean,) = grad_of(lambda x: pg.grpo_loss(x, old, adv, mask, normalization=normalization), lp)
    (g_dirty,) = grad_of(lambda x: pg.grpo_loss(x, poisoned_old, poisoned_adv, mask, normalization=normalization),
                         poisoned_lp)
    torch.testing.assert_close(g_dirty, g_clean)
    assert torch.equal(g_dirty[~mask], torch.zeros(int((~mask).sum()), dtype=F64))


@pytest.mark.parametrize("normalization", pg.NORMALIZATIONS)
def test_grpo_loss_on_policy_is_a_weighted_reinforce(normalization):
    # rho = 1 everywhere: the loss is -sum_bt w_bt A_b and its gradient -w_bt A_b, which is REINFORCE's surrogate
    # -sum_b A_b sum_t w_bt log pi(y_bt): "sequence" weighs each response's mean log-prob, "token" and "constant" its
    # summed log-prob (REINFORCE on sequence log-probs, scaled by B / N or 1 / max_length).
    lp, _, adv, mask = responses(seed=2)
    lengths = mask.sum(-1).to(F64)
    B, T = lp.shape
    weights = {"sequence": 1 / (lengths.clamp(min=1) * (lengths > 0).sum()),
               "token": torch.full((B,), 1 / lengths.sum()), "constant": torch.full((B,), 1.0 / (B * T))}[normalization]
    w = torch.where(mask, weights[:, None].to(F64), 0.0)
    (g,) = grad_of(lambda x: pg.grpo_loss(x, x.detach(), adv, mask, normalization=normalization), lp)
    torch.testing.assert_close(g, -w * adv[:, None])
    torch.testing.assert_close(pg.grpo_loss(lp, lp, adv, mask, normalization=normalization), -(w * adv[:, None]).sum())
    kept = lengths > 0
    summed = lambda x: torch.where(mask, x, 0.0).sum(-1)        # noqa: E731 (summed log-probs of each response)
    reinforce = {"sequence": lambda x: pg.reinforce_loss((summed(x) / lengths.clamp(min=1))[kept], adv[kept], None),
                 "token": lambda x: pg.reinforce_loss(summed(x), adv) * B / lengths.sum(),
                 "constant": lambda x: pg.reinforce_loss(summed(x), adv) / T}[normalization]
    (g_reinforce,) = grad_of(reinforce, lp)
    torch.testing.assert_close(g, g_reinforce)


def test_grpo_loss_empty_responses_and_empty_batches():
    lp, old, adv, mask = responses(seed=3)
    # the empty response 2 is left out of "sequence"'s mean, and its tokens count for nothing elsewhere
    got = pg.grpo_loss(lp, old, adv, mask, normalization="sequence")
    keep = mask.any(-1)
    torch.testing.assert_close(got, pg.grpo_loss(lp[keep], old[keep], adv[keep], mask[keep]))
    none = torch.zeros_like(mask)
    for normalization, want in (("sequence", math.nan), ("token", math.nan), ("constant", 0.0)):
        out = pg.grpo_loss(lp, old, adv, none, normalization=normalization)
        assert (math.isnan(want) and math.isnan(out.item())) or out.item() == want
        empty = pg.grpo_loss(lp[:0], old[:0], adv[:0], mask[:0], normalization=normalization)
        assert empty.dim() == 0 and math.isnan(empty.item())                     # B = 0: nothing to average
    no_tokens = torch.zeros(3, 0, dtype=F64)
    assert pg.grpo_loss(no_tokens, no_tokens, adv[:3], mask[:3, :0], normalization="constant",
                        max_length=4).item() == 0.0
    torch.testing.assert_close(pg.grpo_loss(lp, old, adv, mask, normalization="constant", max_length=2 * lp.shape[1]),
                               pg.grpo_loss(lp, old, adv, mask, normalization="constant") / 2)


def test_grpo_loss_old_logprobs_and_advantages_are_constants():
    lp, old, adv, mask = responses(seed=4)
    x, o, a = (t.clone().requires_grad_() for t in (lp, old, adv))
    pg.grpo_loss(x, o, a, mask).backward()
    assert x.grad is not None and o.grad is None and a.grad is None


# -------------------------------------------------------------------------------------------------- value loss

def value_loss_by_hand(v, old, ret, eps):
    """0.5 mean of max((V - R)^2, (V_clip - R)^2), and its gradient in V, element by element."""
    losses, grads = [], []
    n = len(v)
    for vi, oi, ri in zip(v, old, ret):
        vc = oi + min(max(vi - oi, -eps), eps)
        unclipped, clipped = (vi - ri) ** 2, (vc - ri) ** 2
        losses.append(max(unclipped, clipped))
        inside = abs(vi - oi) <= eps           # V_clip = V: both errors equal, both move with V
        grads.append((vi - ri) / n if inside or unclipped > clipped else 0.0)
    return 0.5 * sum(losses) / n, grads


@pytest.mark.parametrize("eps", [0.2, 0.05, 1.0])
def test_ppo_value_loss_matches_the_hand_written_max(eps):
    old, ret = randn(40, seed=11), randn(40, seed=12)
    values = (old + randn(40, seed=13, scale=0.5)).requires_grad_()
    loss = pg.ppo_value_loss(values, old, ret, clip_eps=eps)
    want, grads = value_loss_by_hand(values.tolist(), old.tolist(), ret.tolist(), eps)
    assert loss.dim() == 0 and loss.item() == pytest.approx(want, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor(grads, dtype=F64))
    assert (values.grad != 0).any() and (eps == 1.0 or (values.grad == 0).any())     # both cases occur


def test_ppo_value_loss_shapes_and_constants():
    v, old, ret = (randn(2, 3, 4, seed=s) for s in (14, 15, 16))
    flat = pg.ppo_value_loss(v.flatten(), old.flatten(), ret.flatten())
    torch.testing.assert_close(pg.ppo_value_loss(v, old, ret), flat)
    torch.testing.assert_close(pg.ppo_value_loss(v.transpose(0, 2), old.transpose(0, 2), ret.transpose(0, 2)), flat)
    scalar = pg.ppo_value_loss(torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64), torch.tensor(3.0, dtype=F64))
    assert scalar.item() == pytest.approx(0.5 * max(4.0, (0.2 - 3.0) ** 2))
    assert math.isnan(pg.ppo_value_loss(*(torch.zeros(0, dtype=F64),) * 3).item())
    x, o, r = (t.clone().requires_grad_() for t in (v, old, ret))
    pg.ppo_value_loss(x, o, r).backward()
    assert x.grad is not None and o.grad is None and r.grad is None


# --------------------------------------------------------------------------------------------------------- GAE

def gae_by_direct_sum(rewards, values, gamma, lam):
    """A_t = sum_{l >= 0} (gamma lam)^l delta_{t+l}, summed term by term (O(T^2)), for each episode."""
    out = []
    for r, v in zip(rewards, values):
        deltas = [r[t] + gamma * v[t + 1] - v[t] for t in range(len(r))]
        out.append([sum((gamma * lam) ** l * deltas[t + l] for l in range(len(r) - t)) for t in range(len(r))])
    return out


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0), (0.7, 1.0), (0.0, 0.5), (1.0, 1.0)])
def test_gae_matches_the_direct_sum_of_discounted_deltas(gamma, lam):
    rewards, values = randn(3, 9, seed=17), randn(3, 10, seed=18)
    values[0, -1] = 0.0     # a terminal episode
    adv, returns = pg.gae(rewards, values, gamma=gamma, lam=lam)
    want = torch.tensor(gae_by_direct_sum(rewards.tolist(), values.tolist(), gamma, lam), dtype=F64)
    torch.testing.assert_close(adv, want)
    torch.testing.assert_close(returns, want + values[:, :-1])


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value(gamma):
    rewards, values = randn(2, 6, seed=19), randn(2, 7, seed=20)
    adv, returns = pg.gae(rewards, values, gamma=gamma, lam=1.0)
    T = 6
    ret = [[sum(gamma ** l * r[t + l] for l in range(T - t)) + gamma ** (T - t) * v[T] for t in range(T)]
           for r, v in zip(rewards.tolist(), values.tolist())]
    torch.testing.assert_close(returns, torch.tensor(ret, dtype=F64))              # Monte-Carlo (bootstrapped) return
    torch.testing.assert_close(adv, torch.tensor(ret, dtype=F64) - values[:, :-1])


def test_gae_with_lambda_zero_is_exactly_the_one_step_td_error():
    rewards, values = randn(4, 5, seed=21), randn(4, 6, seed=22)
    adv, returns = pg.gae(rewards, values, gamma=0.9, lam=0.0)
    assert torch.equal(adv, rewards + 0.9 * values[:, 1:] - values[:, :-1])
    torch.testing.assert_close(returns, rewards + 0.9 * values[:, 1:])


def test_gae_is_detached_handles_empty_episodes_and_non_contiguous_inputs():
    rewards, values = randn(3, 4, seed=23).requires_grad_(), randn(3, 5, seed=24).requires_grad_()
    adv, returns = pg.gae(rewards, values)
    assert not adv.requires_grad and not returns.requires_grad
    adv_t, _ = pg.gae(rewards.detach().T.contiguous().T, values.detach().T.contiguous().T)
    torch.testing.assert_close(adv_t, adv)
    a0, r0 = pg.gae(torch.zeros(3, 0, dtype=F64), torch.zeros(3, 1, dtype=F64))
    assert a0.shape == r0.shape == (3, 0)


# -------------------------------------------------------------------------------------------- KL estimators

def categorical_pair(scale, seed=0, classes=6):
    """log pi and log pi_ref of two categoricals whose logits differ by noise of the given scale."""
    base = randn(classes, seed=seed)
    return torch.log_softmax(base, 0), torch.log_softmax(base + randn(classes, seed=seed + 1, scale=scale), 0)


def kl_moments(scale, samples=4096):
    """Exact E_pi and Var_pi of k1, k2, k3 by enumeration, sampled variances, and the exact KL(pi || pi_ref)."""
    log_pi, log_ref = categorical_pair(scale)
    pi = log_pi.exp()
    exact_kl = sum(p * (a - b) for p, a, b in zip(pi.tolist(), log_pi.tolist(), log_ref.tolist()))
    ks = pg.kl_estimators(log_pi, log_ref)                # each class as a sampled token
    means = [(pi @ k).item() for k in ks]
    variances = [(pi @ (k - m) ** 2).item() for k, m in zip(ks, means)]
    tokens = torch.multinomial(pi, samples, replacement=True, generator=torch.Generator().manual_seed(1))
    sampled = [k.var().item() for k in pg.kl_estimators(log_pi[tokens], log_ref[tokens])]
    return exact_kl, means, variances, sampled


def test_k1_and_k3_are_unbiased_k2_is_biased_and_k3_has_the_lowest_variance_near_the_reference():
    rows = {scale: kl_moments(scale) for scale in (0.1, 0.5, 1.5)}
    print("\nKL(pi || pi_ref) estimators on a 6-way categorical (exact moments by enumeration; 4096 samples)")
    print(f"{'logit noise':>11} | {'KL':>9} | {'bias k1':>9} {'bias k2':>9} {'bias k3':>9} | "
          f"{'var k1':>9} {'var k2':>9} {'var k3':>9} | {'sampled var k1, k2, k3':>32}")
    for scale, (kl, means, var, sampled) in rows.items():
        bias = [m - kl for m in means]
        print(f"{scale:11.1f} | {kl:9.5f} | " + " ".join(f"{b:9.2e}" for b in bias) + " | "
              + " ".join(f"{v:9.2e}" for v in var) + " | " + " ".join(f"{v:10.3e}" for v in sampled))
        assert means[0] == pytest.approx(kl, rel=1e-10) and means[2] == pytest.approx(kl, rel=1e-10)
        assert all(s == pytest.approx(v, rel=0.15) for s, v in zip(sampled, var))
    kl, means, var, sampled = rows[1.5]
    assert abs(means[1] - kl) > 0.05 * kl                        # far apart: k2 is visibly biased
    kl, means, var, sampled = rows[0.1]
    assert abs(means[1] - kl) < 0.05 * kl                        # nearby: its bias is third order
    assert var[2] < 0.05 * var[0] and sampled[2] < 0.05 * sampled[0]    # k3's variance far below k1's


def test_k2_and_k3_are_nonnegative_and_k1_is_not():
    for dtype in (torch.float64, torch.float32):
        x = torch.cat([torch.linspace(-5, 5, 2001, dtype=dtype), torch.logspace(-30, 2.8, 200, dtype=dtype),
                       -torch.logspace(-30, 2.8, 200, dtype=dtype), torch.tensor([0.0, -800.0, 800.0], dtype=dtype)])
        k1, k2, k3 = pg.kl_estimators(torch.zeros_like(x), x)        # log r = x
        assert bool((k2 >= 0).all()) and bool((k3 >= 0).all()) and bool((k1 < 0).any())
        assert not k3.isnan().any()


def exact_k3(x):
    """e^x - 1 - x in 60-digit decimals: its series sum_{n >= 2} x^n / n! below |x| = 1 (where 1 + x would round)."""
    with localcontext() as ctx:
        ctx.prec = 60
        d = Decimal(x)
        if abs(d) >= 1:
            return float(d.exp() - 1 - d)
        term, total = d * d / 2, Decimal(0)
        for n in range(3, 60):
            total, term = total + term, term * d / n
        return float(total)


def test_k3_is_accurate_for_tiny_and_large_log_ratios():
    xs = [s * m for m in (1e-300, 1e-12, 1e-8, 1e-4, 0.01, 0.0999, 0.1, 0.1001, 0.5, 5.0, 30.0, 300.0, 700.0)
          for s in (1.0, -1.0)]
    _, _, k3 = pg.kl_estimators(torch.zeros(len(xs), dtype=F64), torch.tensor(xs, dtype=F64))
    for x, got in zip(xs, k3.tolist()):
        assert got == pytest.approx(exact_k3(x), rel=1e-13, abs=1e-320), x
    small = torch.tensor([1e-4, -3e-3, 0.05, -0.2], dtype=torch.float32)
    _, _, k3_32 = pg.kl_estimators(torch.zeros_like(small), small)
    torch.testing.assert_close(k3_32.double(), torch.tensor([exact_k3(x) for x in small.double().tolist()], dtype=F64),
                               rtol=1e-5, atol=0.0)


def test_kl_estimator_gradients_and_constants():
    lp, ref = randn(3, 4, seed=25, scale=0.5), randn(3, 4, seed=26, scale=0.5)
    for i, want in enumerate((torch.ones_like(lp), lp - ref, 1 - torch.exp(ref - lp))):
        (g,) = grad_of(lambda x: pg.kl_estimators(x, ref)[i], lp)
        torch.testing.assert_close(g, want)
    x, r = lp.clone().requires_grad_(), ref.clone().requires_grad_()
    sum(k.sum() for k in pg.kl_estimators(x, r)).backward()
    assert r.grad is None
    assert all(k.shape == (3, 4) for k in pg.kl_estimators(lp, ref[0]))     # ref broadcasts to logprobs' shape


def test_kl_estimators_are_zero_with_no_gradient_where_both_logprobs_are_minus_inf():
    lp, ref = randn(5, seed=27), randn(5, seed=28)
    lp[2], ref[2] = -INF, -INF
    ks = pg.kl_estimators(lp, ref)
    assert all(k[2].item() == 0.0 and torch.isfinite(k).all() for k in ks)
    for i in range(3):
        (g,) = grad_of(lambda x: pg.kl_estimators(x, ref)[i], lp)
        assert g[2].item() == 0.0 and torch.isfinite(g).all()


# ------------------------------------------------------------------------------------------------- entropy

def entropy_logits(seed=0):
    z = randn(4, 3, 7, seed=seed, scale=3.0)
    z[0, 0, :3] = -INF
    z[1, 1, 2] = 1e4
    z[1, 1, 3] = -1e4
    z[2, 2] = torch.tensor([1e4, 1e4, -1e4, 0.0, -INF, 1e4, -1e4], dtype=F64)
    return z


def test_token_entropy_matches_torch_distributions_categorical():
    z = entropy_logits()
    want = torch.distributions.Categorical(logits=z).entropy()
    torch.testing.assert_close(pg.token_entropy(z), want)
    torch.testing.assert_close(pg.token_entropy(z.transpose(0, 1)), want.transpose(0, 1))
    torch.testing.assert_close(pg.token_entropy(z[2, 2]), torch.tensor(math.log(3), dtype=F64))


def test_token_entropy_gradient_is_minus_p_times_log_p_plus_h():
    z = entropy_logits(seed=1)
    (g,) = grad_of(pg.token_entropy, z)
    log_p = torch.log_softmax(z, -1)
    h = torch.distributions.Categorical(logits=z).entropy()
    want = torch.where(z > -INF, -log_p.exp() * (log_p + h[..., None]), 0.0)      # dH / dz_k
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, want)


def test_token_entropy_edges():
    assert pg.token_entropy(torch.tensor([[3.0]], dtype=F64)).tolist() == [0.0]          # one class
    torch.testing.assert_close(pg.token_entropy(torch.zeros(2, 5, dtype=F64)), torch.full((2,), math.log(5), dtype=F64))
    assert pg.token_entropy(torch.tensor([1e4, 0.0, -INF], dtype=F64)).item() == 0.0    # one-hot: exactly 0, not -0
    z = torch.tensor([[-INF, -INF], [0.0, 1.0]], dtype=F64, requires_grad=True)
    h = pg.token_entropy(z)
    assert math.isnan(h[0].item()) and not math.isnan(h[1].item())
    torch.where(torch.tensor([False, True]), h, 0.0).sum().backward()    # the dead row selected away
    assert torch.isfinite(z.grad).all() and torch.equal(z.grad[0], torch.zeros(2, dtype=F64))
    assert pg.token_entropy(torch.zeros(0, 4, dtype=F64)).shape == (0,)


# ------------------------------------------------------------------------------------------ errors, dtypes

@pytest.mark.parametrize("call, message", [
    (lambda: pg.reinforce_loss(torch.zeros(2, 3), torch.zeros(2, 3)), r"shape \(N,\)"),
    (lambda: pg.reinforce_loss(torch.zeros(3), torch.zeros(4)), "same shape"),
    (lambda: pg.reinforce_loss(torch.zeros(4), torch.zeros(4), torch.zeros(3)), "broadcast"),
    (lambda: pg.reinforce_loss(torch.zeros(4), torch.zeros(4), "mean"), "baseline must be a number"),
    (lambda: pg.reinforce_loss(torch.zeros(4), torch.zeros(4, dtype=torch.long)), "floating"),
    (lambda: pg.reinforce_loss([0.0], torch.zeros(1)), "torch.Tensor"),
    (lambda: pg.rloo_advantages(torch.zeros(3, 1)), r"k >= 2"),
    (lambda: pg.rloo_advantages(torch.zeros(6)), r"\(P, k\)"),
    (lambda: pg.grpo_advantages(torch.zeros(3, 1)), r"k >= 2"),
    (lambda: pg.grpo_advantages(torch.zeros(3, 0), scale_by_std=False), r"k >= 1"),
    (lambda: pg.grpo_advantages(torch.zeros(3, 4), eps=-1e-4), "eps"),
    (lambda: pg.grpo_advantages(torch.zeros(3, 4), scale_by_std="yes"), "scale_by_std"),
    (lambda: pg.clipped_surrogate(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3)), "broadcast"),
    (lambda: pg.clipped_surrogate(torch.zeros(4), torch.zeros(2, 4), torch.zeros(1)), "broadcast"),
    (lambda: pg.clipped_surrogate(torch.zeros(4), torch.zeros(4), torch.zeros(4), clip_eps=1.5), "clip_eps"),
    (lambda: pg.grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3, dtype=torch.bool),
                          normalization="mean"), "normalization must be one of"),
    (lambda: pg.grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3)), "bool"),
    (lambda: pg.grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 1), torch.ones(2, 3, dtype=torch.bool)),
     r"\(B,\)"),
    (lambda: pg.grpo_loss(torch.zeros(6), torch.zeros(6), torch.zeros(6), torch.ones(6, dtype=torch.bool)),
     r"\(B, T\)"),
    (lambda: pg.grpo_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3, dtype=torch.bool)),
     "same shape"),
    (lambda: pg.grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3, dtype=torch.bool),
                          normalization="constant", max_length=2), "max_length"),
    (lambda: pg.grpo_loss(torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2), torch.ones(2, 0, dtype=torch.bool),
                          normalization="constant"), "max_length"),
    (lambda: pg.ppo_value_loss(torch.zeros(3), torch.zeros(3), torch.zeros(4)), "same shape"),
    (lambda: pg.ppo_value_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), clip_eps=-0.1), "clip_eps"),
    (lambda: pg.gae(torch.zeros(2, 3), torch.zeros(2, 3)), r"T \+ 1"),
    (lambda: pg.gae(torch.zeros(3), torch.zeros(4)), r"T \+ 1"),
    (lambda: pg.gae(torch.zeros(2, 3), torch.zeros(2, 4), lam=1.5), "lam"),
    (lambda: pg.gae(torch.zeros(2, 3), torch.zeros(2, 4), gamma=-0.1), "gamma"),
    (lambda: pg.kl_estimators(torch.zeros(3), torch.zeros(2)), "broadcast"),
    (lambda: pg.token_entropy(torch.tensor(1.0)), "V >= 1"),
    (lambda: pg.token_entropy(torch.zeros(3, 0)), "V >= 1"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def every_function(dtype):
    """One call of each function on inputs of ``dtype``; each result's dtype."""
    x = lambda *shape: torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)  # noqa: E731
    mask = torch.ones(2, 3, dtype=torch.bool)
    return {
        "reinforce_loss": [pg.reinforce_loss(x(4), x(4), x(4))],
        "rloo_advantages": [pg.rloo_advantages(x(2, 3))],
        "grpo_advantages": [pg.grpo_advantages(x(2, 3)), pg.grpo_advantages(x(2, 3), scale_by_std=False)],
        "clipped_surrogate": [pg.clipped_surrogate(x(2, 3), x(2, 3), x(2, 1))],
        "grpo_loss": [pg.grpo_loss(x(2, 3), x(2, 3), x(2), mask, normalization=n) for n in pg.NORMALIZATIONS],
        "ppo_value_loss": [pg.ppo_value_loss(x(5), x(5), x(5))],
        "gae": list(pg.gae(x(2, 3), x(2, 4))),
        "kl_estimators": list(pg.kl_estimators(x(2, 3), x(2, 3))),
        "token_entropy": [pg.token_entropy(x(2, 3))],
    }


@pytest.mark.parametrize("dtype, computed", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                             (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_half_precision_is_computed_in_float32_and_float32_and_float64_keep_their_dtype(dtype, computed):
    for name, outs in every_function(dtype).items():
        assert all(out.dtype == computed for out in outs), name


def test_mixed_precision_inputs_give_the_wider_dtype():
    lp32, r64 = torch.zeros(3), torch.ones(3, dtype=F64)
    assert pg.reinforce_loss(lp32, r64).dtype == F64
    assert pg.clipped_surrogate(lp32, lp32, r64).dtype == F64
    assert pg.reinforce_loss(lp32.half(), r64.float()).dtype == torch.float32


# ------------------------------------------------------------------------------------------ the verifiable task

def test_task_reward_checks_the_digit_sum():
    prompts = torch.tensor([12, 13, 0, 24, 5, 7])
    tokens = torch.tensor([[2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 3], [0, 0, 0, 0, 0, 0], [4, 4, 4, 4, 4, 4],
                           [1, 1, 1, 1, 1, 1], [4, 3, 0, 0, 0, 1]])
    assert vt.reward(prompts, tokens).tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert vt.reward(prompts, tokens).dtype == torch.float32
    assert vt.digit_counts(tokens[5:]).tolist() == [[3.0, 1.0, 0.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        vt.reward(prompts, tokens[:, :5])


def test_prompts_are_reproducible_and_in_range():
    a = vt.sample_prompts(200, torch.Generator().manual_seed(3))
    assert torch.equal(a, vt.sample_prompts(200, torch.Generator().manual_seed(3)))
    assert a.min() >= 8 and a.max() <= 16 and a.dtype == torch.long
    with pytest.raises(ValueError, match="low"):
        vt.sample_prompts(3, low=5, high=30)


def test_sampling_is_reproducible_grouped_and_scored_by_the_policys_log_softmax():
    policy = vt.TinyPolicy(seed=1)
    with torch.no_grad():
        policy.out.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))    # a non-uniform policy
    prompts = torch.tensor([8, 12, 16])
    tokens, logprobs, mask = vt.sample(policy, prompts, 4, torch.Generator().manual_seed(5))
    again, _, _ = vt.sample(policy, prompts, 4, torch.Generator().manual_seed(5))
    other, _, _ = vt.sample(policy, prompts, 4, torch.Generator().manual_seed(6))
    assert torch.equal(tokens, again) and not torch.equal(tokens, other)
    assert tokens.shape == logprobs.shape == mask.shape == (12, vt.LENGTH) and bool(mask.all())
    assert tokens.min() >= 0 and tokens.max() < vt.VOCAB
    logits = policy(prompts.repeat_interleave(4), tokens)
    want = torch.stack([torch.log_softmax(logits[i, t], -1)[tokens[i, t]] for i in range(12) for t in range(vt.LENGTH)])
    torch.testing.assert_close(logprobs, want.view(12, vt.LENGTH))
    previous = torch.cat([torch.full((12, 1), vt.BOS), tokens[:, :-1]], dim=1)
    for t in range(vt.LENGTH):          # the sampling step's logits are the teacher-forced ones
        torch.testing.assert_close(policy.next_logits(prompts.repeat_interleave(4), previous[:, t], t), logits[:, t])
    logprobs.sum().backward()
    assert all(p.grad is not None for p in policy.parameters())
    changed = tokens.clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % vt.VOCAB        # position t reads only the digits before it
    torch.testing.assert_close(policy(prompts.repeat_interleave(4), changed)[:, :4], logits[:, :4])


def test_the_initial_policy_is_uniform_and_small():
    policy = vt.TinyPolicy()
    _, logprobs, _ = vt.sample(policy, vt.sample_prompts(5, torch.Generator().manual_seed(0)), 3)
    torch.testing.assert_close(logprobs, torch.full((15, vt.LENGTH), -math.log(vt.VOCAB)))
    assert 1000 < sum(p.numel() for p in policy.parameters()) < 10_000


@pytest.mark.parametrize("seed", range(3))
def test_the_learned_reward_rewards_fours_and_ranks_a_wrong_answer_first(seed):
    model = vt.fit_learned_reward(generator=torch.Generator().manual_seed(seed))
    assert model.weights.argmax().item() == 4 and model.weights.shape == (vt.VOCAB,)
    prompts = torch.tensor([12, 12])
    tokens = torch.tensor([[2, 2, 2, 2, 2, 2], [4, 4, 4, 4, 4, 4]])
    assert vt.reward(prompts, tokens).tolist() == [1.0, 0.0]
    learned = model(prompts, tokens)
    assert learned[1] > learned[0]             # the flaw: it prefers the wrong answer


def train(reward_fn, steps, loss="grpo", P=16, k=8, seed=0):
    """The notebook's loop in brief: GRPO (or REINFORCE with a mean baseline) on reward_fn; (learned, true) per step."""
    g = torch.Generator().manual_seed(seed)
    policy = vt.TinyPolicy(seed=seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.03)
    history = []
    for _ in range(steps):
        prompts = vt.sample_prompts(P, g)
        tokens, logprobs, mask = vt.sample(policy, prompts, k, g)
        rows = prompts.repeat_interleave(k)
        r = reward_fn(rows, tokens)
        if loss == "grpo":
            value = pg.grpo_loss(logprobs, logprobs.detach(), pg.grpo_advantages(r.view(P, k)).flatten(), mask)
        else:
            value = pg.reinforce_loss(logprobs.sum(-1), r, r.mean())
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        history.append((r.mean().item(), vt.reward(rows, tokens).mean().item()))
    return history


@pytest.mark.parametrize("loss", ["grpo", "reinforce"])
def test_policy_gradient_learns_the_verifiable_task(loss):
    history = train(vt.reward, 60, loss)
    first, last = statistics.fmean(h[1] for h in history[:5]), statistics.fmean(h[1] for h in history[-10:])
    assert first < 0.2 and last > 0.6, (first, last)


def test_optimising_the_learned_reward_raises_it_while_the_true_reward_falls():
    model = vt.fit_learned_reward(generator=torch.Generator().manual_seed(0))
    history = train(model, 60)
    learned_first, learned_last = (statistics.fmean(h[0] for h in part) for part in (history[:3], history[-10:]))
    sums = [sum(y) for y in itertools.product(range(vt.VOCAB), repeat=vt.LENGTH)]
    true_first = statistics.fmean(sums.count(s) for s in range(8, 17)) / len(sums)   # the uniform policy's: 0.079
    true_last = statistics.fmean(h[1] for h in history[-10:])
    assert learned_last > learned_first + 0.02 and true_last < 0.25 * true_first, (learned_first, learned_last,
                                                                                    true_last)
