"""Policy-gradient losses of RLHF: REINFORCE, RLOO, GRPO, PPO's clipped surrogate and value loss, GAE, KL estimators.

A policy pi samples a response y to a prompt x and a reward R(x, y) scores it. The score-function identity
    grad E_{y ~ pi}[R] = E_{y ~ pi}[(R - b) grad log pi(y | x)]       (for any baseline b that does not depend on y)
turns the gradient of an expectation into an expectation over samples. The losses below are surrogates: their
autograd gradient is that estimate (negated, for descent); their value means little. Advantages (R less a
baseline) are constants: no gradient flows into rewards, baselines, advantages, old log-probs or targets.

    REINFORCE  loss = -mean_i (R_i - b_i) log pi(y_i | x_i)
    RLOO       A_ij = r_ij - mean_{l != j} r_il = k / (k - 1) (r_ij - mean_l r_il)     (row i: k samples of prompt i)
    GRPO       A_ij = (r_ij - mean_l r_il) / (std_l r_il + eps)                      (Dr. GRPO: r_ij - mean_l r_il)
    PPO, GRPO  per token -min(rho A, clip(rho, 1 - eps, 1 + eps) A),  rho = exp(log pi - log pi_old)
    value      0.5 max((V - R)^2, (V_clip - R)^2),  V_clip = V_old + clip(V - V_old, -eps, eps)
    GAE        delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1}
    KL         log r = log pi_ref - log pi at tokens sampled from pi:  k1 = -log r,  k2 = (log r)^2 / 2,
               k3 = (r - 1) - log r                   (Schulman, "Approximating KL divergence")

The conventions are those of TRL's GRPOTrainer and PPOTrainer: the unbiased std with eps = 1e-4 added to it, and
normalization "sequence", "token", "constant" for its loss_type "grpo", "bnpo" and "dr_grpo" (except for empty
responses: see grpo_loss). Masked positions are selected away with torch.where, never multiplied by 0, so a -inf or
nan there changes no value and no gradient. Half-precision inputs are computed in float32; float32 and float64 keep
their dtype (mixed inputs: the wider one).
"""
import functools
import math

import torch

from ._inputs import as_float, broadcasts_to, number, same_shape
from .softmax import log_softmax

NORMALIZATIONS = ("sequence", "token", "constant")


def _floats(fn, **tensors):
    """Each tensor as a floating tensor of fp32 or better, all of their common dtype (fp32 with fp64 gives fp64)."""
    xs = [as_float(name, x, fn) for name, x in tensors.items()]
    dtype = functools.reduce(torch.promote_types, (x.dtype for x in xs))
    return [x.to(dtype) for x in xs]


# ----------------------------------------------------------------------------------------------- REINFORCE

def reinforce_loss(logprobs, rewards, baseline=None):
    """REINFORCE surrogate -mean_i (R_i - b_i) logprobs_i: its gradient estimates -grad E[R] without bias.

    logprobs: (N,) summed log pi(y_i | x_i) of N sampled responses, differentiable; rewards: (N,); baseline: None
    (b = 0), a number, or a tensor broadcastable to (N,) (0-d, (1,) or (N,)). (R - b) is a constant: no gradient
    flows into rewards or baseline, and d loss / d logprobs_i = -(R_i - b_i) / N. Returns a 0-d tensor; nan for N = 0
    (a mean over no sample, as torch.mean).
    """
    fn = "reinforce_loss"
    named = {"logprobs": logprobs, "rewards": rewards}
    if isinstance(baseline, torch.Tensor):
        named["baseline"] = baseline
    lp, r, *b = _floats(fn, **named)
    if lp.dim() != 1:
        raise ValueError(f"{fn}: expected logprobs of shape (N,), one summed log pi(y_i | x_i) per sampled response, "
                         f"got {tuple(lp.shape)}")
    same_shape(fn, logprobs=lp, rewards=r)
    if b:
        b = b[0]
        broadcasts_to(fn, baseline=b, logprobs=lp)
    else:
        b = 0.0 if baseline is None else number(fn, "baseline", baseline, meaning=" (or None, or a tensor)")
    weights = (r - b).detach()   # the score-function estimator weights grad log pi by a constant
    return -(weights * lp).mean()


# ------------------------------------------------------------------------------------ group advantages: RLOO, GRPO

def _groups(rewards, fn, min_k):
    r = as_float("rewards", rewards, fn)
    if r.dim() != 2 or r.shape[1] < min_k:
        raise ValueError(f"{fn}: expected rewards of shape (P, k), one row of k >= {min_k} sampled responses per "
                         f"prompt, got {tuple(r.shape)}")
    return r.detach()


def _centred(r):
    """r - its row mean, exactly 0 for a row of equal rewards.

    The row is first shifted by its own first reward (which changes nothing mathematically): a constant row is then
    exactly 0 before the mean is taken (0.1 three times has a mean that is not exactly 0.1), and a large common
    offset costs no digits.
    """
    d = r - r[:, :1]
    return d - d.mean(-1, keepdim=True)


def rloo_advantages(rewards):
    """RLOO advantages A_ij = r_ij - (sum_l r_il - r_ij) / (k - 1) = k / (k - 1) (r_ij - mean_l r_il).

    rewards: (P, k), row i the rewards of k >= 2 responses sampled for prompt i (the baseline of each sample is the
    mean of the other k - 1, so it does not depend on the sample: unbiased). Returns (P, k), detached; each row sums
    to 0; a row of equal rewards gives exactly 0; P = 0 gives (0, k).
    """
    r = _groups(rewards, "rloo_advantages", 2)
    k = r.shape[1]
    return _centred(r) * (k / (k - 1))


def grpo_advantages(rewards, scale_by_std=True, eps=1e-4):
    """GRPO advantages (r_ij - mean_l r_il) / (std_l r_il + eps); Dr. GRPO's r_ij - mean_l r_il if not scale_by_std.

    rewards: (P, k), a row per prompt. std is the unbiased one (torch.std's default, as TRL's GRPOTrainer):
    sqrt(sum_l (r_il - mean)^2 / (k - 1)), so scale_by_std needs k >= 2 (ValueError otherwise); without it k >= 1
    (k = 1 gives 0). eps >= 0. A row of equal rewards (std 0) gives advantages exactly 0, even for eps = 0.
    Returns (P, k), detached.
    """
    fn = "grpo_advantages"
    if not isinstance(scale_by_std, bool):
        raise ValueError(f"{fn}: scale_by_std must be True or False, got {scale_by_std!r}")
    r = _groups(rewards, fn, 2 if scale_by_std else 1)
    eps = number(fn, "eps", eps, low=0)
    centred = _centred(r)
    if not scale_by_std or centred.numel() == 0:
        return centred
    std = centred.std(-1, keepdim=True)          # unbiased (k - 1); the std of r, computed from its centred values
    return torch.where(std == 0, 0.0, centred / (std + eps))    # std == 0: centred is 0 too, and 0 / 0 is nan


# ------------------------------------------------------------------------------- PPO's clipped surrogate, GRPO

def _log_ratio(a, b):
    """a - b, but 0 where both are -inf (a masked position: ratio 1, not -inf - -inf = nan), with no gradient there."""
    return torch.where(torch.isneginf(a) & torch.isneginf(b), 0.0, a - b)


def _surrogate(lp, old, adv, eps):
    log_ratio = _log_ratio(lp, old)
    # -min(rho A, clip(rho) A) is -A min(rho, 1 + eps) where A >= 0 and -A max(rho, 1 - eps) where A < 0. Bounding the
    # log-ratio before exp keeps a clipped token finite with gradient exactly 0 even where rho itself overflows
    # (clip(exp(800)) * A is fine, but its backward is 0 * inf = nan).
    floor = -math.inf if eps == 1 else math.log1p(-eps)     # clip_eps = 1: no lower clip (log 0)
    bounded = torch.where(adv >= 0, log_ratio.clamp(max=math.log1p(eps)), log_ratio.clamp(min=floor))
    return -adv * bounded.exp()


def clipped_surrogate(logprobs, old_logprobs, advantages, clip_eps=0.2):
    """PPO's per-token loss -min(rho A, clip(rho, 1 - eps, 1 + eps) A), rho = exp(logprobs - old_logprobs).

    logprobs: any shape (e.g. (B, T) log-probs of the sampled tokens), differentiable; old_logprobs (log-probs under
    the policy that sampled them) and advantages: constants (detached), each broadcastable to logprobs' shape (e.g.
    advantages (B, 1) against (B, T), or 0-d). clip_eps in [0, 1]. Returns logprobs' shape.
    Gradient -A rho where the unclipped term is the min, exactly 0 where the clip binds (A > 0 and rho > 1 + eps, or
    A < 0 and rho < 1 - eps), also where rho overflows; A = 0 gives loss and gradient 0. Where logprobs and
    old_logprobs are both -inf (masked positions) rho is taken as 1: the loss there is -A, with no gradient.
    """
    fn = "clipped_surrogate"
    lp, old, adv = _floats(fn, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    broadcasts_to(fn, old_logprobs=old, logprobs=lp)
    broadcasts_to(fn, advantages=adv, logprobs=lp)
    eps = number(fn, "clip_eps", clip_eps, 0.0, 1.0)
    return _surrogate(lp, old.detach(), adv.detach(), eps)


def grpo_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2, normalization="sequence", max_length=None):
    """GRPO's loss: the clipped surrogate of each kept token (mask True), reduced by ``normalization``.

    logprobs, old_logprobs: (B, T) per-token log-probs of the sampled response tokens (old: constants); advantages:
    (B,) one per response, a constant broadcast over its tokens; mask: (B, T) bool, True on response tokens. Masked
    positions may hold anything, -inf and nan included: they are selected away, so they change no value and get
    gradient exactly 0. With l_bt the per-token loss (``clipped_surrogate``) and n_b = sum_t mask_bt:
        "sequence"  mean over responses of sum_t l_bt / n_b        (the original GRPO: a long response's tokens
                                                                    weigh less; TRL loss_type "grpo")
        "token"     sum_bt l_bt / sum_b n_b                        (DAPO; TRL "bnpo")
        "constant"  sum_bt l_bt / (B * max_length)                 (Dr. GRPO; TRL "dr_grpo")
    max_length: an int >= T and >= 1, the generation budget (default T; T = 0 with "constant" needs it).
    A response with no kept token contributes 0 and "sequence" leaves it out of its mean (TRL divides by B instead).
    No kept token at all: nan for "sequence" and "token" (a mean over nothing), 0 for "constant"; B = 0 gives nan for
    each. Returns a 0-d tensor.
    """
    fn = "grpo_loss"
    lp, old, adv = _floats(fn, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    if lp.dim() != 2:
        raise ValueError(f"{fn}: expected logprobs of shape (B, T), per-token log-probs of B responses, got "
                         f"{tuple(lp.shape)}")
    same_shape(fn, logprobs=lp, old_logprobs=old)
    B, T = lp.shape
    if adv.shape != (B,):
        raise ValueError(f"{fn}: expected advantages of shape (B,) = ({B},), one per response, got {tuple(adv.shape)}")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != lp.shape:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{fn}: mask must be a bool tensor shaped like logprobs {(B, T)} (True on response "
                         f"tokens), got {got}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{fn}: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    eps = number(fn, "clip_eps", clip_eps, 0.0, 1.0)
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < max(T, 1)):
        raise ValueError(f"{fn}: max_length must be an int >= T = {T} and >= 1 (the generation budget every response "
                         f"fits in), got {max_length!r}")
    length = T if max_length is None else max_length
    # Select before any arithmetic: a masked nan would otherwise reach exp and give a nan gradient there.
    lp, old = torch.where(mask, lp, 0.0), torch.where(mask, old.detach(), 0.0)
    losses = torch.where(mask, _surrogate(lp, old, adv.detach()[:, None], eps), 0.0)
    if normalization == "token":
        return losses.sum() / mask.sum()
    if normalization == "constant":
        if length < 1:
            raise ValueError(f"{fn}: normalization='constant' with T = 0 needs max_length >= 1")
        return losses.sum() / (B * length)
    counts = mask.sum(-1)
    per_response = losses.sum(-1) / counts.clamp(min=1)       # an empty response: 0 / 1, and it is not counted below
    return per_response.sum() / (counts > 0).sum()


def ppo_value_loss(values, old_values, returns, clip_eps=0.2):
    """PPO's clipped value loss 0.5 mean(max((V - R)^2, (V_clip - R)^2)), V_clip = V_old + clamp(V - V_old, -eps, eps).

    values V (differentiable), old_values V_old and returns R (constants): the same shape, any (0-d included);
    clip_eps >= 0, in the values' units. Returns a 0-d tensor; nan for empty inputs (a mean over nothing).
    The gradient is (V - R) / n where V is within eps of V_old or the unclipped error is the larger, else 0.
    """
    fn = "ppo_value_loss"
    v, old, ret = _floats(fn, values=values, old_values=old_values, returns=returns)
    same_shape(fn, values=v, old_values=old, returns=ret)
    eps = number(fn, "clip_eps", clip_eps, low=0)
    old, ret = old.detach(), ret.detach()
    clipped = old + (v - old).clamp(-eps, eps)
    return 0.5 * torch.maximum((v - ret) ** 2, (clipped - ret) ** 2).mean()


# ------------------------------------------------------------------------------------------------------- GAE

def gae(rewards, values, gamma=1.0, lam=0.95):
    """Generalised advantage estimation over B episodes of T steps, by the O(T) backward recursion.

    rewards: (B, T); values: (B, T + 1), values[:, T] the bootstrap value of the state after the last step (0 if it
    is terminal). delta_t = r_t + gamma V_{t+1} - V_t, A_t = sum_{l >= 0} (gamma lam)^l delta_{t+l}
    = delta_t + gamma lam A_{t+1}, returns_t = A_t + V_t. gamma, lam in [0, 1]: lam = 0 gives the one-step TD error
    delta_t exactly, lam = 1 the discounted return sum_l gamma^l r_{t+l} + gamma^(T-t) V_T minus V_t.
    Returns (advantages, returns), each (B, T), detached (targets are constants).
    """
    fn = "gae"
    r, v = _floats(fn, rewards=rewards, values=values)
    if r.dim() != 2 or v.shape != (r.shape[0], r.shape[1] + 1):
        raise ValueError(f"{fn}: expected rewards (B, T) and values (B, T + 1) (the last value bootstraps the state "
                         f"after step T), got rewards {tuple(r.shape)} and values {tuple(v.shape)}")
    gamma, lam = number(fn, "gamma", gamma, 0.0, 1.0), number(fn, "lam", lam, 0.0, 1.0)
    r, v = r.detach(), v.detach()
    deltas = r + gamma * v[:, 1:] - v[:, :-1]
    advantages = torch.empty_like(deltas)
    running = deltas.new_zeros(deltas.shape[0])
    for t in reversed(range(r.shape[1])):
        running = deltas[:, t] + (gamma * lam) * running
        advantages[:, t] = running
    return advantages, advantages + v[:, :-1]


# ---------------------------------------------------------------------------------------- KL and entropy

_TAYLOR = tuple(1 / math.factorial(n) for n in range(2, 10))   # e^x - 1 - x = sum_{n >= 2} x^n / n!


def _exp_minus_one_minus(x):
    """e^x - 1 - x >= 0, accurate to ~1e-14 relative in float64 for every x.

    expm1(x) - x cancels for small |x|: the result, about x^2 / 2, is far below the two terms (relative error about
    2 eps / |x|). Below |x| = 0.1 the Taylor series to x^9 is used instead (truncated at 2 x^8 / 10! < 6e-15 relative).
    """
    small = x.abs() < 0.1
    xs = torch.where(small, x, 0.0)          # the series of a large x would overflow (and its gradient be 0 * inf)
    series = torch.zeros_like(xs)
    for c in reversed(_TAYLOR):
        series = c + xs * series
    return torch.where(small, xs * xs * series, torch.expm1(x) - x)


def kl_estimators(logprobs, ref_logprobs):
    """Per-token estimators of KL(pi || pi_ref) from tokens sampled from pi (Schulman's k1, k2, k3).

    logprobs: log pi of the sampled tokens, any shape, differentiable; ref_logprobs: log pi_ref of the same tokens, a
    constant broadcastable to logprobs' shape. With log r = ref_logprobs - logprobs:
        k1 = -log r               unbiased, high variance, negative for some tokens; gradient 1
        k2 = (log r)^2 / 2        biased (exact to second order in log r), >= 0; gradient -log r
        k3 = (r - 1) - log r      unbiased (E_pi[r] = 1), >= 0, low variance near pi_ref; gradient 1 - r
    k3 is accurate for tiny |log r| (no cancellation) and finite for large ones (inf only where r overflows).
    Where both inputs are -inf (masked positions) log r is taken as 0: every estimator is 0 there, with no gradient.
    Returns (k1, k2, k3), each of logprobs' shape.
    """
    fn = "kl_estimators"
    lp, ref = _floats(fn, logprobs=logprobs, ref_logprobs=ref_logprobs)
    broadcasts_to(fn, ref_logprobs=ref, logprobs=lp)
    log_r = _log_ratio(ref.detach(), lp)
    return -log_r, log_r ** 2 / 2, _exp_minus_one_minus(log_r)


def token_entropy(logits):
    """Entropy H = -sum_v p_v log p_v of p = softmax(logits) over the last axis: the per-token entropy bonus.

    logits: (..., V), V >= 1, finite or -inf (a -inf logit is a masked class: 0 log 0 = 0, with no nan in value or
    gradient); stable for logits of +-1e4. A row whose logits are all -inf has no softmax: its entropy is nan, and its
    logits get gradient 0 (so a dead row selected away leaves every gradient finite). Returns logits.shape[:-1], in
    nats.
    """
    fn = "token_entropy"
    z = as_float("logits", logits, fn)
    if z.dim() == 0 or z.shape[-1] == 0:
        raise ValueError(f"{fn}: expected logits of shape (..., V) with V >= 1 classes, got {tuple(z.shape)}")
    live = z > -math.inf
    dead = ~live.any(-1)
    log_p = log_softmax(torch.where(dead[..., None], 0.0, z))     # a dead row computed from 0s: no nan to backprop
    # p log p is 0 * -inf = nan at a -inf logit: select 0 there (a multiplied mask would give nan gradients too).
    h = -(log_p.exp() * torch.where(live, log_p, 0.0)).sum(-1) + 0.0     # + 0.0: a one-hot row gives 0, not -0
    return torch.where(dead, math.nan, h)
