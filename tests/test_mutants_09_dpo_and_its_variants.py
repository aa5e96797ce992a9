"""Notebook 09's graded tests must reject plausible wrong answers and accept right ones."""
import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests, neg_log_sigmoid, neg_log_sigmoid_clamped, upcast

ASSIGNMENT = "09_dpo_and_its_variants"


# ------------------------------------------------------------------ sequence_logprobs

def _token_logps(logits, tokens):
    return upcast(logits)[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def sl_prompt_counted(logits, tokens, response_mask):
    T = tokens.shape[1]
    last = torch.where(response_mask, torch.arange(T), -1).amax(-1)       # the last response position
    keep = torch.arange(T) <= last[:, None]
    return (_token_logps(logits, tokens) * keep[:, 1:]).sum(-1)


def sl_padding_counted(logits, tokens, response_mask):
    T = tokens.shape[1]
    first = torch.where(response_mask, torch.arange(T), T).amin(-1)
    keep = torch.arange(T) >= first[:, None]
    return (_token_logps(logits, tokens) * keep[:, 1:]).sum(-1)


def sl_mask_off_by_one(logits, tokens, response_mask):
    return (_token_logps(logits, tokens) * response_mask[:, :-1]).sum(-1)


def sl_no_shift(logits, tokens, response_mask):
    log_p = upcast(logits).log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    return (log_p * response_mask).sum(-1)


def sl_averaged(logits, tokens, response_mask):
    m = response_mask[:, 1:]
    return (_token_logps(logits, tokens) * m).sum(-1) / m.sum(-1).clamp_min(1)


def sl_log_of_softmax(logits, tokens, response_mask):
    p = torch.softmax(upcast(logits)[:, :-1], -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return torch.where(response_mask[:, 1:], torch.log(p), torch.zeros_like(p)).sum(-1)


def sl_calls_cross_entropy(logits, tokens, response_mask):
    nll = F.cross_entropy(upcast(logits)[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    return -(nll * response_mask[:, 1:]).sum(-1)


def sl_detached(logits, tokens, response_mask):
    return (_token_logps(logits.detach(), tokens) * response_mask[:, 1:]).sum(-1)


def sl_multiplies_by_the_mask(logits, tokens, response_mask):
    return (_token_logps(logits, tokens) * response_mask[:, 1:]).sum(-1)      # 0 * -inf = nan


def sl_shift_by_roll(logits, tokens, response_mask):
    log_p = upcast(logits).log_softmax(-1).gather(-1, tokens.roll(-1, 1)[..., None]).squeeze(-1)
    counted = response_mask.roll(-1, 1)          # wraps m[:, 0] round: the last logit "predicts" token 0
    return torch.where(counted, log_p, torch.zeros_like(log_p)).sum(-1)


def sl_stacks_positions(logits, tokens, response_mask):
    z = upcast(logits)
    log_p = torch.stack([z[:, t].log_softmax(-1).gather(-1, tokens[:, t + 1, None]).squeeze(-1)
                         for t in range(z.shape[1] - 1)], 1)          # stack of nothing: an error for T = 1
    return torch.where(response_mask[:, 1:], log_p, torch.zeros_like(log_p)).sum(-1)


def sl_logsumexp_by_hand(logits, tokens, response_mask):
    z = upcast(logits)[:, :-1]
    picked = z.gather(-1, tokens[:, 1:, None]).squeeze(-1) - torch.logsumexp(z, -1)
    return picked.masked_fill(~response_mask[:, 1:], 0.0).sum(-1)


def sl_loop_over_positions(logits, tokens, response_mask):
    z = upcast(logits)
    total = torch.zeros(z.shape[0], dtype=z.dtype)
    for t in range(z.shape[1] - 1):
        lp = z[:, t].log_softmax(-1).gather(-1, tokens[:, t + 1, None]).squeeze(-1)
        total = total + torch.where(response_mask[:, t + 1], lp, torch.zeros_like(lp))
    return total


# ------------------------------------------------------------------ dpo_loss

def _dpo(pc, pr, rc, rr, beta, eps=0.0, reference_free=False, h_fn=None, detach=True, reward_beta=True):
    pc, pr, rc, rr = map(upcast, (pc, pr, rc, rr))
    if reference_free:
        rc, rr = torch.zeros_like(rc), torch.zeros_like(rr)
    h = (pc - pr) - (rc - rr) if h_fn is None else h_fn(pc, pr, rc, rr)
    losses = (1 - eps) * neg_log_sigmoid(beta * h) + eps * neg_log_sigmoid(-beta * h)
    b = beta if reward_beta else 1.0
    chosen, rejected = b * (pc - rc), b * (pr - rr)
    return losses, (chosen.detach() if detach else chosen), (rejected.detach() if detach else rejected)


def dpo_sign_flipped(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    return _dpo(pc, pr, rc, rr, beta, label_smoothing, reference_free, h_fn=lambda a, b, c, d: (b - a) - (d - c))


def dpo_reference_dropped(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    return _dpo(pc, pr, rc, rr, beta, label_smoothing, reference_free, h_fn=lambda a, b, c, d: a - b)


def dpo_reference_added(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    return _dpo(pc, pr, rc, rr, beta, label_smoothing, reference_free, h_fn=lambda a, b, c, d: (a - b) + (c - d))


def dpo_beta_twice(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    return _dpo(pc, pr, rc, rr, beta, label_smoothing, reference_free,
                h_fn=lambda a, b, c, d: beta * ((a - b) - (c - d)))


def dpo_rewards_not_detached(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    return _dpo(pc, pr, rc, rr, beta, label_smoothing, reference_free, detach=False)


def dpo_rewards_without_beta(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    return _dpo(pc, pr, rc, rr, beta, label_smoothing, reference_free, reward_beta=False)


def dpo_smoothing_on_the_wrong_term(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    return _dpo(pc, pr, rc, rr, beta, 1 - label_smoothing if label_smoothing else 0.0, reference_free)


def dpo_ignores_reference_free(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    return _dpo(pc, pr, rc, rr, beta, label_smoothing, False)


def dpo_log_of_sigmoid(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    pc, pr, rc, rr = map(upcast, (pc, pr, rc, rr))
    if reference_free:
        rc, rr = torch.zeros_like(rc), torch.zeros_like(rr)
    t = beta * ((pc - pr) - (rc - rr))
    losses = -(1 - label_smoothing) * torch.log(torch.sigmoid(t)) - label_smoothing * torch.log(torch.sigmoid(-t))
    return losses, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


def dpo_max_and_abs_through_autograd(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    pc, pr, rc, rr = map(upcast, (pc, pr, rc, rr))
    if reference_free:
        rc, rr = torch.zeros_like(rc), torch.zeros_like(rr)
    t = beta * ((pc - pr) - (rc - rr))
    losses = (1 - label_smoothing) * neg_log_sigmoid_clamped(t) + label_smoothing * neg_log_sigmoid_clamped(-t)
    return losses, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


def dpo_mean_loss(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    losses, c, r = _dpo(pc, pr, rc, rr, beta, label_smoothing, reference_free)
    return losses.mean(), c, r


def dpo_calls_logsigmoid(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    pc, pr, rc, rr = map(upcast, (pc, pr, rc, rr))
    if reference_free:
        rc, rr = torch.zeros_like(rc), torch.zeros_like(rr)
    t = beta * ((pc - pr) - (rc - rr))
    losses = -(1 - label_smoothing) * F.logsigmoid(t) - label_smoothing * F.logsigmoid(-t)
    return losses, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


def dpo_via_rewards(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    pc, pr, rc, rr = map(upcast, (pc, pr, rc, rr))
    zero = torch.zeros_like(rc)
    chosen = beta * (pc - (zero if reference_free else rc))
    rejected = beta * (pr - (zero if reference_free else rr))
    margin = chosen - rejected
    losses = (1 - label_smoothing) * neg_log_sigmoid(margin) + label_smoothing * neg_log_sigmoid(-margin)
    return losses, chosen.detach(), rejected.detach()


def dpo_in_float64(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    dtype = upcast(pc).dtype
    out = _dpo(pc.double(), pr.double(), rc.double(), rr.double(), beta, label_smoothing, reference_free)
    return tuple(x.to(dtype) for x in out)


# ------------------------------------------------------------------ ipo_loss

def _h(pc, pr, rc, rr):
    pc, pr, rc, rr = map(upcast, (pc, pr, rc, rr))
    return (pc - pr) - (rc - rr)


def ipo_target_one_over_beta(pc, pr, rc, rr, beta):
    return (_h(pc, pr, rc, rr) - 1 / beta) ** 2


def ipo_target_beta_over_two(pc, pr, rc, rr, beta):
    return (_h(pc, pr, rc, rr) - beta / 2) ** 2


def ipo_beta_times_h(pc, pr, rc, rr, beta):
    return (beta * _h(pc, pr, rc, rr) - 0.5) ** 2


def ipo_absolute_not_squared(pc, pr, rc, rr, beta):
    return (_h(pc, pr, rc, rr) - 1 / (2 * beta)).abs()


def ipo_target_added(pc, pr, rc, rr, beta):
    return (_h(pc, pr, rc, rr) + 1 / (2 * beta)) ** 2


def ipo_mean(pc, pr, rc, rr, beta):
    return ((_h(pc, pr, rc, rr) - 1 / (2 * beta)) ** 2).mean()


def ipo_reference_dropped(pc, pr, rc, rr, beta):
    return ((upcast(pc) - upcast(pr)) - 1 / (2 * beta)) ** 2


def ipo_expanded_square(pc, pr, rc, rr, beta):
    h, target = _h(pc, pr, rc, rr), 0.5 / beta
    return h * h - 2 * target * h + target * target


def ipo_via_log_ratios(pc, pr, rc, rr, beta):
    chosen, rejected = upcast(pc) - upcast(rc), upcast(pr) - upcast(rr)
    return torch.square(chosen - rejected - 1.0 / (2.0 * beta))


# ------------------------------------------------------------------ dpo_step

def _seq_logps(model, batch, key):
    tokens = batch[key]
    log_p = model(tokens)[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return (log_p * batch[key + "_mask"][:, 1:]).sum(-1)


def _pair(model, batch):
    """Summed response log-probs of the chosen and of the rejected sequences."""
    return _seq_logps(model, batch, "chosen"), _seq_logps(model, batch, "rejected")


def _h_loss(pc, pr, rc, rr, beta):
    return neg_log_sigmoid(beta * ((pc - pr) - (rc - rr)))


def _step(loss, optimizer, zero=True):
    if zero:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def step_no_zero_grad(policy, reference, batch, optimizer, beta):
    with torch.no_grad():
        rc, rr = _pair(reference, batch)
    loss = _h_loss(*_pair(policy, batch), rc, rr, beta).mean()
    _step(loss, optimizer, zero=False)
    return loss.item()


def step_reference_with_gradients(policy, reference, batch, optimizer, beta):
    rc, rr = _pair(reference, batch)
    loss = _h_loss(*_pair(policy, batch), rc, rr, beta).mean()
    _step(loss, optimizer)
    return loss.item()


def step_reference_dropped(policy, reference, batch, optimizer, beta):
    zero = torch.zeros(batch["chosen"].shape[0])
    loss = _h_loss(*_pair(policy, batch), zero, zero, beta).mean()
    _step(loss, optimizer)
    return loss.item()


def step_policy_as_reference(policy, reference, batch, optimizer, beta):
    pc, pr = _pair(policy, batch)
    loss = _h_loss(pc, pr, pc.detach(), pr.detach(), beta).mean()
    _step(loss, optimizer)
    return loss.item()


def step_sum_not_mean(policy, reference, batch, optimizer, beta):
    with torch.no_grad():
        rc, rr = _pair(reference, batch)
    loss = _h_loss(*_pair(policy, batch), rc, rr, beta).sum()
    _step(loss, optimizer)
    return loss.item() / batch["chosen"].shape[0]


def step_chosen_mask_for_both(policy, reference, batch, optimizer, beta):
    same = dict(batch, rejected_mask=batch["chosen_mask"])
    with torch.no_grad():
        rc, rr = _pair(reference, same)
    loss = _h_loss(*_pair(policy, same), rc, rr, beta).mean()
    _step(loss, optimizer)
    return loss.item()


def step_no_optimizer_step(policy, reference, batch, optimizer, beta):
    with torch.no_grad():
        rc, rr = _pair(reference, batch)
    loss = _h_loss(*_pair(policy, batch), rc, rr, beta).mean()
    optimizer.zero_grad()
    loss.backward()
    return loss.item()


def step_returns_loss_after_the_step(policy, reference, batch, optimizer, beta):
    with torch.no_grad():
        rc, rr = _pair(reference, batch)
    loss = _h_loss(*_pair(policy, batch), rc, rr, beta).mean()
    _step(loss, optimizer)
    with torch.no_grad():
        after = _h_loss(*_pair(policy, batch), rc, rr, beta).mean()
    return after.item()


def step_concatenated_forward(policy, reference, batch, optimizer, beta):
    tokens = torch.cat([batch["chosen"], batch["rejected"]])
    both = {"all": tokens, "all_mask": torch.cat([batch["chosen_mask"], batch["rejected_mask"]])}
    pc, pr = _seq_logps(policy, both, "all").chunk(2)
    with torch.no_grad():
        rc, rr = _seq_logps(reference, both, "all").chunk(2)
    loss = _h_loss(pc, pr, rc, rr, beta).mean()
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def step_detached_reference(policy, reference, batch, optimizer, beta):
    rc, rr = _seq_logps(reference, batch, "chosen").detach(), _seq_logps(reference, batch, "rejected").detach()
    loss = _h_loss(*_pair(policy, batch), rc, rr, beta).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


# ------------------------------------------------------------------ simpo_loss

def _averages(pc, pr, nc, nr):
    pc, pr = upcast(pc), upcast(pr)
    return pc / nc.to(pc.dtype), pr / nr.to(pr.dtype)


def _simpo(a_c, a_r, beta, gamma, eps, t=None, reward_c=None, reward_r=None, detach=True):
    t = beta * (a_c - a_r) - gamma if t is None else t
    losses = (1 - eps) * neg_log_sigmoid(t) + eps * neg_log_sigmoid(-t)
    chosen = beta * a_c if reward_c is None else reward_c
    rejected = beta * a_r if reward_r is None else reward_r
    return losses, (chosen.detach() if detach else chosen), (rejected.detach() if detach else rejected)


def simpo_summed_not_averaged(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    return _simpo(upcast(pc), upcast(pr), beta, gamma, label_smoothing)


def simpo_lengths_swapped(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    return _simpo(*_averages(pc, pr, nr, nc), beta, gamma, label_smoothing)


def simpo_batch_mean_length(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    n = torch.cat([nc.reshape(-1), nr.reshape(-1)]).double().mean()          # one length for every response
    return _simpo(upcast(pc) / n, upcast(pr) / n, beta, gamma, label_smoothing)


def simpo_gamma_times_beta(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    a_c, a_r = _averages(pc, pr, nc, nr)
    return _simpo(a_c, a_r, beta, gamma, label_smoothing, t=beta * (a_c - a_r - gamma))


def simpo_gamma_added(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    a_c, a_r = _averages(pc, pr, nc, nr)
    return _simpo(a_c, a_r, beta, gamma, label_smoothing, t=beta * (a_c - a_r) + gamma)


def simpo_gamma_ignored(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    return _simpo(*_averages(pc, pr, nc, nr), beta, 0.0, label_smoothing)


def simpo_rewards_not_detached(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    return _simpo(*_averages(pc, pr, nc, nr), beta, gamma, label_smoothing, detach=False)


def simpo_rewards_from_sums(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    return _simpo(*_averages(pc, pr, nc, nr), beta, gamma, label_smoothing, reward_c=beta * upcast(pc),
                  reward_r=beta * upcast(pr))


def simpo_smoothing_on_the_wrong_term(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    return _simpo(*_averages(pc, pr, nc, nr), beta, gamma, 1 - label_smoothing if label_smoothing else 0.0)


def simpo_log_of_sigmoid(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    a_c, a_r = _averages(pc, pr, nc, nr)
    t = beta * (a_c - a_r) - gamma
    losses = -(1 - label_smoothing) * torch.log(torch.sigmoid(t)) - label_smoothing * torch.log(torch.sigmoid(-t))
    return losses, (beta * a_c).detach(), (beta * a_r).detach()


def simpo_max_and_abs_through_autograd(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    a_c, a_r = _averages(pc, pr, nc, nr)
    t = beta * (a_c - a_r) - gamma
    losses = (1 - label_smoothing) * neg_log_sigmoid_clamped(t) + label_smoothing * neg_log_sigmoid_clamped(-t)
    return losses, (beta * a_c).detach(), (beta * a_r).detach()


def simpo_mean_loss(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    losses, c, r = _simpo(*_averages(pc, pr, nc, nr), beta, gamma, label_smoothing)
    return losses.mean(), c, r


def simpo_in_low_precision(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    a_c, a_r = pc / nc.to(pc.dtype), pr / nr.to(pr.dtype)                  # float16 stays float16
    return _simpo(a_c, a_r, beta, gamma, label_smoothing)


def simpo_trl_gamma_over_beta(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    a_c, a_r = _averages(pc, pr, nc, nr)
    return _simpo(a_c, a_r, beta, gamma, label_smoothing, t=beta * ((a_c - a_r) - gamma / beta))


def simpo_via_dpo_on_averages(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    a_c, a_r = _averages(pc, pr, nc, nr)
    zero = torch.zeros_like(a_c)
    losses, _, _ = _dpo(a_c - gamma / beta, a_r, zero, zero, beta, label_smoothing)
    return losses, (beta * a_c).detach(), (beta * a_r).detach()


def simpo_in_float64(pc, pr, nc, nr, beta, gamma, label_smoothing=0.0):
    dtype = upcast(pc).dtype
    a_c, a_r = pc.double() / nc.double(), pr.double() / nr.double()
    return tuple(x.to(dtype) for x in _simpo(a_c, a_r, beta, gamma, label_smoothing))


# ------------------------------------------------------------------ kto_loss

def _z0(z0, pk, rk, clamp=True, detach=True, matched=None):
    if z0 is None:
        diff = upcast(pk) - upcast(rk) if matched is None else matched
        z0 = diff.mean().clamp(min=0) if clamp else diff.mean()
    elif isinstance(z0, torch.Tensor):
        z0 = upcast(z0)
    else:
        return z0
    return z0.detach() if detach else z0


def _kto(pl, rl, desirable, beta, z0, w_d, w_u, gain=None, loss=None):
    r = upcast(pl) - upcast(rl)
    gain = w_d * (1 - torch.sigmoid(beta * (r - z0))) if gain is None else gain(r)
    loss = w_u * (1 - torch.sigmoid(beta * (z0 - r))) if loss is None else loss(r)
    return torch.where(desirable, gain, loss)


def kto_reference_point_ignored(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                                desirable_weight=1.0, undesirable_weight=1.0):
    return _kto(pl, rl, desirable, beta, 0.0, desirable_weight, undesirable_weight)


def kto_labels_ignored(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                       desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)
    return _kto(pl, rl, torch.ones_like(desirable), beta, z, desirable_weight, undesirable_weight)


def kto_labels_swapped(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                       desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)
    return _kto(pl, rl, ~desirable, beta, z, desirable_weight, undesirable_weight)


def kto_weights_swapped(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                        desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)
    return _kto(pl, rl, desirable, beta, z, undesirable_weight, desirable_weight)


def kto_reference_point_not_clamped(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                                    desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps, clamp=False)
    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight)


def kto_each_log_ratio_clamped(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                               desirable_weight=1.0, undesirable_weight=1.0):
    matched = None if z0 is not None else (upcast(policy_kl_logps) - upcast(ref_kl_logps)).clamp(min=0)
    z = _z0(z0, policy_kl_logps, ref_kl_logps, matched=matched)
    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight)


def kto_reference_point_not_detached(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                                     desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps, detach=False)
    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight)


def kto_reference_point_from_the_batch_itself(pl, rl, desirable, beta, z0=None, policy_kl_logps=None,
                                              ref_kl_logps=None, desirable_weight=1.0, undesirable_weight=1.0):
    matched = None if z0 is not None else upcast(pl) - upcast(rl)     # the examples' own log-ratios, not mismatched
    z = _z0(z0, policy_kl_logps, ref_kl_logps, matched=matched)
    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight)


def kto_beta_on_r_only(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                       desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)
    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight,
                gain=lambda r: desirable_weight * (1 - torch.sigmoid(beta * r - z)),
                loss=lambda r: undesirable_weight * (1 - torch.sigmoid(z - beta * r)))


def kto_log_loss(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                 desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)
    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight,
                gain=lambda r: desirable_weight * neg_log_sigmoid(beta * (r - z)),
                loss=lambda r: undesirable_weight * neg_log_sigmoid(beta * (z - r)))


def kto_mean_loss(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                  desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)
    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight).mean()


def kto_sigmoid_as_exp_ratio(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                             desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)

    def sigmoid(t):
        return torch.exp(t) / (1 + torch.exp(t))            # inf / inf = nan for t = 1e4

    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight,
                gain=lambda r: desirable_weight * (1 - sigmoid(beta * (r - z))),
                loss=lambda r: undesirable_weight * (1 - sigmoid(beta * (z - r))))


def kto_sigmoid_of_the_negation(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                                desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)
    return _kto(pl, rl, desirable, beta, z, desirable_weight, undesirable_weight,
                gain=lambda r: desirable_weight * torch.sigmoid(beta * (z - r)),
                loss=lambda r: undesirable_weight * torch.sigmoid(beta * (r - z)))


def kto_multiplies_by_the_labels(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                                 desirable_weight=1.0, undesirable_weight=1.0):
    z = _z0(z0, policy_kl_logps, ref_kl_logps)
    r, d = upcast(pl) - upcast(rl), desirable.to(upcast(pl).dtype)
    return (d * desirable_weight * (1 - torch.sigmoid(beta * (r - z)))
            + (1 - d) * undesirable_weight * (1 - torch.sigmoid(beta * (z - r))))


def kto_in_float64(pl, rl, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
                   desirable_weight=1.0, undesirable_weight=1.0):
    dtype = upcast(pl).dtype
    z = _z0(z0, None if policy_kl_logps is None else policy_kl_logps.double(),
            None if ref_kl_logps is None else ref_kl_logps.double())
    z = z.double() if isinstance(z, torch.Tensor) else z
    return _kto(pl.double(), rl.double(), desirable, beta, z, desirable_weight, undesirable_weight).to(dtype)


# ------------------------------------------------------------------ orpo_loss

def _log1m_exp(a):
    near = a > -0.6931471805599453
    return torch.where(near, torch.log(-torch.expm1(torch.where(near, a, -1.0))),
                       torch.log1p(-torch.exp(torch.where(near, -1.0, a))))


def _orpo(a_c, a_r, lam, log1m_exp=_log1m_exp, nls=neg_log_sigmoid, sft=None, detach=True):
    d = (a_c - log1m_exp(a_c)) - (a_r - log1m_exp(a_r))
    losses = (-a_c if sft is None else sft) + lam * nls(d)
    return losses, (d.detach() if detach else d)


def orpo_trl_log1p_of_exp(pc, pr, nc, nr, lam):
    return _orpo(*_averages(pc, pr, nc, nr), lam, log1m_exp=lambda a: torch.log1p(-torch.exp(a)))


def orpo_unguarded_branches(pc, pr, nc, nr, lam):
    def log1m_exp(a):                                   # both branches see every a: 0 * inf = nan in the gradient
        return torch.where(a > -0.6931471805599453, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))

    return _orpo(*_averages(pc, pr, nc, nr), lam, log1m_exp=log1m_exp)


def orpo_naive_odds(pc, pr, nc, nr, lam):
    a_c, a_r = _averages(pc, pr, nc, nr)
    p_c, p_r = torch.exp(a_c), torch.exp(a_r)
    d = torch.log(p_c / (1 - p_c)) - torch.log(p_r / (1 - p_r))
    return -a_c + lam * neg_log_sigmoid(d), d.detach()


def orpo_odds_of_the_sums(pc, pr, nc, nr, lam):
    a_c, a_r = _averages(pc, pr, nc, nr)
    pc, pr = upcast(pc), upcast(pr)
    d = (pc - _log1m_exp(pc)) - (pr - _log1m_exp(pr))
    return -a_c + lam * neg_log_sigmoid(d), d.detach()


def orpo_summed_sft(pc, pr, nc, nr, lam):
    return _orpo(*_averages(pc, pr, nc, nr), lam, sft=-upcast(pc))


def orpo_no_sft(pc, pr, nc, nr, lam):
    a_c, _ = _averages(pc, pr, nc, nr)
    return _orpo(*_averages(pc, pr, nc, nr), lam, sft=torch.zeros_like(a_c))


def orpo_lam_on_the_sft_term(pc, pr, nc, nr, lam):
    a_c, a_r = _averages(pc, pr, nc, nr)
    losses, d = _orpo(a_c, a_r, 1.0, sft=-lam * a_c)
    return losses, d


def orpo_probability_ratio(pc, pr, nc, nr, lam):
    a_c, a_r = _averages(pc, pr, nc, nr)
    return _orpo(a_c, a_r, lam, log1m_exp=torch.zeros_like)            # log p_c - log p_r, no odds


def orpo_sign_of_the_odds_term(pc, pr, nc, nr, lam):
    return _orpo(*_averages(pc, pr, nc, nr), lam, nls=lambda d: -neg_log_sigmoid(d))


def orpo_lengths_swapped(pc, pr, nc, nr, lam):
    return _orpo(*_averages(pc, pr, nr, nc), lam)


def orpo_max_and_abs_through_autograd(pc, pr, nc, nr, lam):
    return _orpo(*_averages(pc, pr, nc, nr), lam, nls=neg_log_sigmoid_clamped)


def orpo_log_odds_not_detached(pc, pr, nc, nr, lam):
    return _orpo(*_averages(pc, pr, nc, nr), lam, detach=False)


def orpo_mean_loss(pc, pr, nc, nr, lam):
    losses, d = _orpo(*_averages(pc, pr, nc, nr), lam)
    return losses.mean(), d


def orpo_expm1_everywhere(pc, pr, nc, nr, lam):
    return _orpo(*_averages(pc, pr, nc, nr), lam, log1m_exp=lambda a: torch.log(-torch.expm1(a)))


def orpo_log_odds_as_a_difference_of_logs(pc, pr, nc, nr, lam):
    a_c, a_r = _averages(pc, pr, nc, nr)
    # log odds_c - log odds_r = (a_c - a_r) - (log(1 - p_c) - log(1 - p_r))
    d = (a_c - a_r) - (_log1m_exp(a_c) - _log1m_exp(a_r))
    return -a_c + lam * neg_log_sigmoid(d), d.detach()


def orpo_in_float64(pc, pr, nc, nr, lam):
    dtype = upcast(pc).dtype
    out = _orpo(pc.double() / nc.double(), pr.double() / nr.double(), lam)
    return tuple(x.to(dtype) for x in out)


EXERCISES = {
    "test_sequence_logprobs": Exercise(
        "sequence_logprobs", differentiable=True,
        wrong={"prompt tokens counted": sl_prompt_counted, "padding counted": sl_padding_counted,
               "mask off by one": sl_mask_off_by_one, "no shift": sl_no_shift, "averaged not summed": sl_averaged,
               "log of softmax": sl_log_of_softmax, "calls F.cross_entropy": sl_calls_cross_entropy,
               "detached": sl_detached,
               "multiplied by the mask (0 * -inf = nan at an uncounted target)": sl_multiplies_by_the_mask,
               "shifted with roll (the wrapped m[:, 0] counts)": sl_shift_by_roll,
               "stacks per-position log-probs (fails for T = 1)": sl_stacks_positions},
        right={"logsumexp by hand": sl_logsumexp_by_hand, "loop over positions": sl_loop_over_positions}),
    "test_dpo_loss": Exercise(
        "dpo_loss", differentiable=True,
        wrong={"sign flipped": dpo_sign_flipped, "reference dropped": dpo_reference_dropped,
               "reference added": dpo_reference_added, "beta applied twice": dpo_beta_twice,
               "rewards not detached": dpo_rewards_not_detached, "rewards without beta": dpo_rewards_without_beta,
               "smoothing on the wrong term": dpo_smoothing_on_the_wrong_term,
               "reference_free ignored": dpo_ignores_reference_free, "log of sigmoid": dpo_log_of_sigmoid,
               "mean loss": dpo_mean_loss, "calls F.logsigmoid": dpo_calls_logsigmoid,
               "max(-t, 0) + log1p(exp(-|t|)) through autograd (gradient doubled at h = 0)":
                   dpo_max_and_abs_through_autograd},
        right={"through the implicit rewards": dpo_via_rewards, "in float64": dpo_in_float64}),
    "test_ipo_loss": Exercise(
        "ipo_loss", differentiable=True,
        wrong={"target 1 / beta": ipo_target_one_over_beta, "target beta / 2": ipo_target_beta_over_two,
               "beta times h": ipo_beta_times_h, "absolute value": ipo_absolute_not_squared,
               "target added": ipo_target_added, "mean over pairs": ipo_mean,
               "reference dropped": ipo_reference_dropped},
        right={"expanded square": ipo_expanded_square, "through log-ratios": ipo_via_log_ratios}),
    "test_dpo_step": Exercise(
        "dpo_step",
        wrong={"zero_grad missing": step_no_zero_grad, "reference with gradients": step_reference_with_gradients,
               "reference dropped": step_reference_dropped, "policy as its own reference": step_policy_as_reference,
               "sum not mean": step_sum_not_mean, "chosen mask for both": step_chosen_mask_for_both,
               "no optimizer step": step_no_optimizer_step, "loss after the step": step_returns_loss_after_the_step},
        right={"one concatenated forward": step_concatenated_forward, "detached reference": step_detached_reference}),
    "test_simpo_loss": Exercise(
        "simpo_loss", differentiable=True,
        wrong={"summed, not averaged over tokens": simpo_summed_not_averaged,
               "lengths swapped": simpo_lengths_swapped,
               "one mean length for the whole batch": simpo_batch_mean_length,
               "gamma inside beta's bracket (beta (a_c - a_r - gamma))": simpo_gamma_times_beta,
               "gamma added": simpo_gamma_added, "gamma ignored": simpo_gamma_ignored,
               "rewards not detached": simpo_rewards_not_detached,
               "rewards from the summed log-probs": simpo_rewards_from_sums,
               "smoothing on the wrong term": simpo_smoothing_on_the_wrong_term,
               "log of sigmoid": simpo_log_of_sigmoid,
               "max(-t, 0) + log1p(exp(-|t|)) through autograd (gradient doubled at t = 0)":
                   simpo_max_and_abs_through_autograd,
               "mean loss": simpo_mean_loss, "float16 kept": simpo_in_low_precision},
        right={"TRL's gamma / beta inside": simpo_trl_gamma_over_beta,
               "DPO's loss on the averages, reference 0": simpo_via_dpo_on_averages, "in float64": simpo_in_float64}),
    "test_kto_loss": Exercise(
        "kto_loss", differentiable=True,
        wrong={"reference point ignored (z0 = 0)": kto_reference_point_ignored,
               "labels ignored (every example desirable)": kto_labels_ignored,
               "labels swapped": kto_labels_swapped, "weights swapped": kto_weights_swapped,
               "estimated z0 not clamped at 0": kto_reference_point_not_clamped,
               "each mismatched log-ratio clamped, then averaged": kto_each_log_ratio_clamped,
               "z0 not detached": kto_reference_point_not_detached,
               "z0 from the batch's own log-ratios": kto_reference_point_from_the_batch_itself,
               "beta on r only (sigmoid(beta r - z0))": kto_beta_on_r_only,
               "-log sigmoid, DPO's log loss": kto_log_loss, "mean loss": kto_mean_loss,
               "sigmoid as exp(t) / (1 + exp(t)) (nan at 1e4)": kto_sigmoid_as_exp_ratio},
        right={"sigmoid of the negated argument": kto_sigmoid_of_the_negation,
               "multiplied by the labels": kto_multiplies_by_the_labels, "in float64": kto_in_float64}),
    "test_orpo_loss": Exercise(
        "orpo_loss", differentiable=True,
        wrong={"TRL's log1p(-exp(a)) (cancels near a = 0)": orpo_trl_log1p_of_exp,
               "where without guarded inputs (nan gradient near 0)": orpo_unguarded_branches,
               "naive log(p / (1 - p))": orpo_naive_odds,
               "odds of the summed log-probs": orpo_odds_of_the_sums,
               "summed SFT term": orpo_summed_sft, "no SFT term": orpo_no_sft,
               "lam on the SFT term": orpo_lam_on_the_sft_term,
               "probability ratio, not odds": orpo_probability_ratio,
               "odds term with the wrong sign": orpo_sign_of_the_odds_term,
               "lengths swapped": orpo_lengths_swapped,
               "max(-d, 0) + log1p(exp(-|d|)) through autograd (gradient doubled at d = 0)":
                   orpo_max_and_abs_through_autograd,
               "log odds ratio not detached": orpo_log_odds_not_detached, "mean loss": orpo_mean_loss},
        right={"log(-expm1(a)) everywhere": orpo_expm1_everywhere,
               "the ratio as a difference of logs": orpo_log_odds_as_a_difference_of_logs,
               "in float64": orpo_in_float64}),
}

mutant_tests(globals())
