"""Notebook 04's graded tests must reject plausible wrong answers and accept right ones."""
import math

import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests, upcast

ASSIGNMENT = "04_regularization"


# ------------------------------------------------------------------ l2_penalty_grad

def l2_lambda_w(w, weight_decay):
    return weight_decay * upcast(w)                      # forgets the 2 of d/dw w^2


def l2_minus_sign(w, weight_decay):
    return -2 * weight_decay * upcast(w)


def l2_l1_gradient(w, weight_decay):
    return 2 * weight_decay * torch.sign(upcast(w))


def l2_returns_the_penalty(w, weight_decay):
    return weight_decay * (upcast(w) ** 2).sum()


def l2_in_half_precision(w, weight_decay):
    return 2 * weight_decay * w                           # bf16 stays bf16


def l2_by_autograd(w, weight_decay):
    x = upcast(w).detach().clone().requires_grad_(True)
    return torch.autograd.grad(weight_decay * (x ** 2).sum(), x)[0]


def l2_w_plus_w(w, weight_decay):
    w = upcast(w)
    return weight_decay * (w + w)


def l2_float64(w, weight_decay):
    return 2.0 * weight_decay * w.double()


# ------------------------------------------------------------------ l1_proximal_step

def _u(w, grad, lr):
    return upcast(w) - lr * upcast(grad)


def l1_threshold_l1_not_lr_l1(w, grad, lr, l1):
    u = _u(w, grad, lr)
    return torch.sign(u) * torch.clamp(u.abs() - l1, min=0)


def l1_subgradient_step(w, grad, lr, l1):
    w = upcast(w)
    return w - lr * (upcast(grad) + l1 * torch.sign(w))  # never lands on 0


def l1_threshold_before_gradient_step(w, grad, lr, l1):
    w = upcast(w)
    shrunk = torch.sign(w) * torch.clamp(w.abs() - lr * l1, min=0)
    return shrunk - lr * upcast(grad)


def l1_relu_without_sign(w, grad, lr, l1):
    return torch.clamp(_u(w, grad, lr) - lr * l1, min=0)  # kills every negative weight


def l1_hard_threshold(w, grad, lr, l1):
    u = _u(w, grad, lr)
    return u * (u.abs() > lr * l1)


def l1_threshold_two_lr_l1(w, grad, lr, l1):
    u = _u(w, grad, lr)
    return torch.sign(u) * torch.clamp(u.abs() - 2 * lr * l1, min=0)


def l1_calls_softshrink(w, grad, lr, l1):
    return F.softshrink(_u(w, grad, lr), float(lr * l1))


def l1_in_half_precision(w, grad, lr, l1):
    u = w - lr * grad
    return torch.sign(u) * torch.clamp(u.abs() - lr * l1, min=0)


def l1_u_minus_clamp(w, grad, lr, l1):
    u = _u(w, grad, lr)
    t = lr * l1 * torch.ones_like(u)
    return u - torch.maximum(torch.minimum(u, t), -t)    # u minus its projection onto [-t, t]


def l1_where(w, grad, lr, l1):
    u = _u(w, grad, lr)
    t = lr * l1
    return torch.where(u > t, u - t, torch.where(u < -t, u + t, torch.zeros_like(u)))


def l1_sign_as_u_over_abs_u(w, grad, lr, l1):
    u = _u(w, grad, lr)
    return u / u.abs() * torch.clamp(u.abs() - lr * l1, min=0)    # u = 0: 0 / 0 = nan


def l1_shrinkage_factor(w, grad, lr, l1):
    u = _u(w, grad, lr)
    return u * torch.clamp(1 - lr * l1 / u.abs(), min=0)          # u = 0 with lr * l1 = 0: 0 / 0 = nan


def l1_lr_as_a_python_number(w, grad, lr, l1):
    lr = float(lr)                                                # raises for one lr per coordinate
    u = _u(w, grad, lr)
    return torch.sign(u) * torch.clamp(u.abs() - lr * l1, min=0)


def l1_copysign(w, grad, lr, l1):
    u = _u(w, grad, lr)
    return torch.copysign(torch.clamp(u.abs() - lr * l1, min=0), u)


# ------------------------------------------------------------------ adamw_step

def _adamw(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, *, decoupled=True, bias1=True,
           bias2=True, step_offset=0, eps_inside=False, decay_after=False, decay_without_lr=False,
           eps_before_correction=False, swap_betas=False):
    beta1, beta2 = betas[::-1] if swap_betas else betas
    t = step + step_offset
    if not decoupled:
        grad = grad + weight_decay * param
    m = beta1 * exp_avg + (1 - beta1) * grad
    v = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1 ** t) if bias1 else m
    v_hat = v / (1 - beta2 ** t) if bias2 else v
    if eps_inside:
        denom = torch.sqrt(v_hat + eps)
    elif eps_before_correction:
        denom = (v.sqrt() + eps) / math.sqrt(1 - beta2 ** t)
    else:
        denom = v_hat.sqrt() + eps
    decay = 1 - (weight_decay if decay_without_lr else lr * weight_decay)
    if not decoupled:
        decay = 1.0
    if decay_after:
        return (param - lr * m_hat / denom) * decay, m, v
    return param * decay - lr * m_hat / denom, m, v


def _variant(**options):
    def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        return _adamw(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, **options)
    return adamw_step


def adamw_in_place(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    beta1, beta2 = betas
    param.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq / (1 - beta2 ** step)).sqrt() + eps
    param.sub_(lr * exp_avg / (1 - beta1 ** step) / denom)
    return param, exp_avg, exp_avg_sq


def adamw_calls_torch_optim(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=1e-2):
    p = param.detach().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    optimizer.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": exp_avg.clone(),
                          "exp_avg_sq": exp_avg_sq.clone()}
    p.grad = grad.clone()
    optimizer.step()
    return p.detach(), optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_sq"]


def adamw_torch_op_order(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                         weight_decay=1e-2):
    beta1, beta2 = betas
    p = param * (1 - lr * weight_decay)
    m = torch.lerp(exp_avg, grad, 1 - beta1)
    v = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
    denom = v.sqrt() / math.sqrt(1 - beta2 ** step) + eps
    return torch.addcdiv(p, m, denom, value=-lr / (1 - beta1 ** step)), m, v


def adamw_float64_inside(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                         weight_decay=1e-2):
    out = _adamw(param.double(), grad.double(), exp_avg.double(), exp_avg_sq.double(), step, lr, betas, eps,
                 weight_decay)
    return tuple(t.to(param.dtype) for t in out)


# ------------------------------------------------------------------ dropout_forward

def _draw(x, generator):
    return torch.rand(x.shape, generator=generator)


def _dropout(keep_mask, scale_fn):
    def dropout_forward(x, p, training=True, generator=None):
        if not training or p == 0:
            return x.clone(), torch.ones_like(x, dtype=torch.bool)
        mask = keep_mask(x, p, generator)
        if p == 1:
            return torch.zeros_like(x), mask
        return scale_fn(x, mask, p), mask
    return dropout_forward


def _keep(x, p, generator):
    return _draw(x, generator) >= p


dropout_no_rescaling = _dropout(_keep, lambda x, mask, p: x * mask)
dropout_times_one_minus_p = _dropout(_keep, lambda x, mask, p: x * mask * (1 - p))
dropout_keep_where_rand_below_p = _dropout(lambda x, p, generator: _draw(x, generator) < p,
                                           lambda x, mask, p: x * mask / (1 - p))
dropout_divides_by_p = _dropout(_keep, lambda x, mask, p: x * mask / p)
dropout_ignores_generator = _dropout(lambda x, p, generator: torch.rand(x.shape) >= p,
                                     lambda x, mask, p: x * mask / (1 - p))
dropout_one_mask_for_all_rows = _dropout(lambda x, p, generator: (torch.rand(x.shape[-1], generator=generator) >= p)
                                         .expand(x.shape), lambda x, mask, p: x * mask / (1 - p))

# generator=None: a fresh torch.Generator() always starts from the same default seed, so every call drops the same
# entries
dropout_fresh_generator_when_none = _dropout(
    lambda x, p, generator: _draw(x, torch.Generator() if generator is None else generator) >= p,
    lambda x, mask, p: x * mask / (1 - p))


def dropout_also_in_eval_mode(x, p, training=True, generator=None):
    mask = _draw(x, generator) >= p
    return (torch.zeros_like(x) if p == 1 else x * mask / (1 - p)), mask


def dropout_nan_at_p_equal_one(x, p, training=True, generator=None):
    if not training:
        return x.clone(), torch.ones_like(x, dtype=torch.bool)
    mask = _draw(x, generator) >= p
    return x * mask / (1 - p), mask                       # p = 1: 0 / 0


def dropout_calls_f_dropout(x, p, training=True, generator=None):
    out = F.dropout(x, p, training=training)
    return out, (out != 0) | (not training)


def dropout_keep_where_rand_below_keep_prob(x, p, training=True, generator=None):
    if not training:
        return x.clone(), torch.ones_like(x)
    keep = (_draw(x, generator) < 1 - p).to(x.dtype)
    return torch.where(keep.bool(), x / (1 - p), torch.zeros_like(x)), keep   # x / 0 never selected at p = 1


def dropout_bernoulli(x, p, training=True, generator=None):
    if not training or p == 0:
        return x.clone(), torch.ones_like(x)
    mask = torch.bernoulli(torch.full_like(x, 1 - p), generator=generator)
    return (torch.zeros_like(x) if p == 1 else x * mask / (1 - p)), mask


# ------------------------------------------------------------------ dropout_backward

def _backward(fn):
    def dropout_backward(grad_out, mask, p):
        if p == 1:
            return torch.zeros_like(grad_out)
        return fn(grad_out, mask.to(grad_out.dtype), p)
    return dropout_backward


backward_no_rescaling = _backward(lambda g, m, p: g * m)
backward_times_one_minus_p = _backward(lambda g, m, p: g * m * (1 - p))
backward_ignores_mask = _backward(lambda g, m, p: g / (1 - p))
backward_inverted_mask = _backward(lambda g, m, p: g * (1 - m) / (1 - p))
backward_divides_by_p = _backward(lambda g, m, p: g * m / p if p > 0 else g * m)


def backward_nan_at_p_equal_one(grad_out, mask, p):
    return grad_out * mask.to(grad_out.dtype) / (1 - p)


def backward_by_autograd(grad_out, mask, p):
    x = torch.zeros_like(grad_out, requires_grad=True)
    out = x * mask.to(grad_out.dtype) * (0.0 if p == 1 else 1 / (1 - p))
    return torch.autograd.grad((out * grad_out).sum(), x)[0]


def backward_where(grad_out, mask, p):
    return torch.where(mask.bool(), grad_out / (1 - p), torch.zeros_like(grad_out))  # never selects x / 0


def backward_float64(grad_out, mask, p):
    return grad_out.double() * mask.double() * (0.0 if p == 1 else 1.0 / (1 - p))


# ------------------------------------------------------------------ label_smoothed_cross_entropy

def _log_p(logits):
    return torch.log_softmax(upcast(logits), dim=1)


def _nll(log_p, targets):
    return -log_p.gather(1, targets.long()[:, None]).squeeze(1)


def ls_over_other_classes(logits, targets, epsilon):
    log_p = _log_p(logits)
    nll = _nll(log_p, targets)
    others = (-log_p).sum(1) - nll
    return ((1 - epsilon) * nll + epsilon * others / (logits.shape[1] - 1)).mean()


def ls_forgets_one_minus_epsilon(logits, targets, epsilon):
    log_p = _log_p(logits)
    return (_nll(log_p, targets) + epsilon * (-log_p).mean(1)).mean()


def ls_kl_without_log_c(logits, targets, epsilon):
    log_p = _log_p(logits)
    C = logits.shape[1]
    kl = (1 / C * (math.log(1 / C) - log_p)).sum(1)       # KL(u || p) alone: misses + log C
    nll = _nll(log_p, targets)
    return (nll if epsilon == 0 else (1 - epsilon) * nll + epsilon * kl).mean()


def ls_confidence_penalty(logits, targets, epsilon):
    log_p = _log_p(logits)
    entropy = -(log_p.exp() * log_p).sum(1)
    return ((1 - epsilon) * _nll(log_p, targets) - epsilon * entropy).mean()


def ls_sum_over_batch(logits, targets, epsilon):
    log_p = _log_p(logits)
    nll = _nll(log_p, targets)
    return (nll if epsilon == 0 else (1 - epsilon) * nll + epsilon * (-log_p).mean(1)).sum()


def ls_log_of_softmax(logits, targets, epsilon):
    log_p = torch.log(torch.softmax(upcast(logits), dim=1))
    nll = _nll(log_p, targets)
    return (nll if epsilon == 0 else (1 - epsilon) * nll + epsilon * (-log_p).mean(1)).mean()


def ls_in_half_precision(logits, targets, epsilon):
    log_p = torch.log_softmax(logits, dim=1)
    nll = _nll(log_p, targets)
    return (nll if epsilon == 0 else (1 - epsilon) * nll + epsilon * (-log_p).mean(1)).mean()


def ls_calls_torch(logits, targets, epsilon):
    return F.cross_entropy(upcast(logits), targets, label_smoothing=epsilon)


def ls_nll_loss_on_own_log_probs(logits, targets, epsilon):
    log_p = _log_p(logits)
    nll = F.nll_loss(log_p, targets, reduction="none")
    return (nll if epsilon == 0 else (1 - epsilon) * nll + epsilon * (-log_p).mean(1)).mean()


def _mixture(logits, targets, epsilon):
    log_p = _log_p(logits)
    C = logits.shape[1]
    return (1 - epsilon) * (torch.arange(C) == targets[:, None]).to(log_p.dtype) + epsilon / C, log_p


def ls_dense_mixture_times_log_p(logits, targets, epsilon):
    q, log_p = _mixture(logits, targets, epsilon)
    return -(q * log_p).sum(1).mean()                     # a masked class at eps = 0: 0 * -inf = nan


def ls_dense_mixture_where_q_positive(logits, targets, epsilon):
    q, log_p = _mixture(logits, targets, epsilon)
    return -torch.where(q > 0, q * log_p, torch.zeros_like(log_p)).sum(1).mean()


def ls_no_special_case_at_epsilon_0(logits, targets, epsilon):
    log_p = _log_p(logits)
    return ((1 - epsilon) * _nll(log_p, targets) + epsilon * (-log_p).mean(1)).mean()   # 0 * inf = nan


def ls_gathers_with_targets_as_given(logits, targets, epsilon):
    log_p = _log_p(logits)
    nll = -log_p.gather(1, targets[:, None]).squeeze(1)  # gather takes int32 or int64 only
    return (nll if epsilon == 0 else (1 - epsilon) * nll + epsilon * (-log_p).mean(1)).mean()


def ls_empty_batch_gives_0(logits, targets, epsilon):
    log_p = _log_p(logits)
    nll = _nll(log_p, targets)
    per_row = nll if epsilon == 0 else (1 - epsilon) * nll + epsilon * (-log_p).mean(1)
    return per_row.sum() / max(len(per_row), 1)           # F.cross_entropy gives nan for no rows


def ls_logsumexp_form(logits, targets, epsilon):
    z = upcast(logits)
    m = z.amax(1, keepdim=True)
    lse = (m + torch.log(torch.exp(z - m).sum(1, keepdim=True))).squeeze(1)
    z_y = z.gather(1, targets.long()[:, None]).squeeze(1)
    if epsilon == 0:
        return (lse - z_y).mean()
    return ((1 - epsilon) * (lse - z_y) + epsilon * (lse - z.mean(1))).mean()


# ------------------------------------------------------------------ expected_calibration_error

def _bins(probs, targets, n_bins, conf_fn=None, left_closed=False):
    probs = upcast(probs)
    conf, pred = probs.max(1)
    if conf_fn is not None:
        conf = conf_fn(probs, targets)
    correct = (pred == targets).to(probs.dtype)
    if left_closed:
        index = torch.floor(conf * n_bins).long().clamp(0, n_bins - 1)
    else:
        index = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=probs.dtype).index_add_(0, index, torch.ones_like(conf))
    acc = torch.zeros_like(count).index_add_(0, index, correct) / count
    mean_conf = torch.zeros_like(count).index_add_(0, index, conf) / count
    return count, acc, mean_conf


def _weighted(count, gap):
    return (count / count.sum() * torch.where(count > 0, gap, torch.zeros_like(gap))).sum()


def ece_unweighted(probs, targets, n_bins=15):
    count, acc, conf = _bins(probs, targets, n_bins)
    return (acc - conf).abs()[count > 0].mean()


def ece_true_class_probability(probs, targets, n_bins=15):
    count, acc, conf = _bins(probs, targets, n_bins, conf_fn=lambda p, y: p.gather(1, y[:, None]).squeeze(1))
    return _weighted(count, (acc - conf).abs())


def ece_left_closed_bins(probs, targets, n_bins=15):
    count, acc, conf = _bins(probs, targets, n_bins, left_closed=True)
    return _weighted(count, (acc - conf).abs())


def ece_signed_gap(probs, targets, n_bins=15):
    count, acc, conf = _bins(probs, targets, n_bins)
    return _weighted(count, conf - acc)


def ece_max_gap(probs, targets, n_bins=15):
    count, acc, conf = _bins(probs, targets, n_bins)
    return (acc - conf).abs()[count > 0].max()


def ece_nan_for_empty_bins(probs, targets, n_bins=15):
    count, acc, conf = _bins(probs, targets, n_bins)
    return (count / count.sum() * (acc - conf).abs()).sum()


def ece_in_half_precision(probs, targets, n_bins=15):
    conf, pred = probs.max(1)                              # bf16 stays bf16
    correct = (pred == targets).to(probs.dtype)
    total = torch.zeros((), dtype=probs.dtype)
    for b in range(n_bins):
        inside = (conf > b / n_bins) & (conf <= (b + 1) / n_bins)
        if inside.any():
            total = total + inside.to(probs.dtype).mean() * (correct[inside].mean() - conf[inside].mean()).abs()
    return total


def ece_correct_where_the_target_has_the_top_probability(probs, targets, n_bins=15):
    count, acc, conf = _bins(probs, targets, n_bins)
    top = upcast(probs).max(1).values
    correct = (upcast(probs).gather(1, targets[:, None]).squeeze(1) == top).to(top.dtype)  # no int16 index
    index = (torch.ceil(top * n_bins).long() - 1).clamp(0, n_bins - 1)
    acc = torch.zeros_like(count).index_add_(0, index, correct) / count
    return _weighted(count, (acc - conf).abs())


def ece_bucketize(probs, targets, n_bins=15):
    probs = upcast(probs)
    conf, pred = probs.max(1)
    inner_edges = torch.arange(1, n_bins, dtype=probs.dtype) / n_bins
    index = torch.bucketize(conf, inner_edges, right=False)  # edges[i-1] < c <= edges[i]
    correct = (pred == targets).to(probs.dtype)
    total = torch.zeros((), dtype=probs.dtype)
    for b in index.unique():
        inside = index == b
        total = total + inside.sum() / len(conf) * (correct[inside].mean() - conf[inside].mean()).abs()
    return total


def ece_float64_loop(probs, targets, n_bins=15):
    conf, pred = probs.double().max(1)
    correct = (pred == targets).double()
    total = 0.0
    for b in range(n_bins):
        inside = (conf > b / n_bins) & (conf <= (b + 1) / n_bins)
        if inside.any():
            total += inside.double().mean().item() * abs(correct[inside].mean().item() - conf[inside].mean().item())
    return torch.tensor(total, dtype=torch.float64)


EXERCISES = {
    "test_l2_penalty_grad": Exercise("l2_penalty_grad", wrong={
        "lambda w (forgets the 2)": l2_lambda_w,
        "-2 lambda w (sign flipped)": l2_minus_sign,
        "2 lambda sign(w) (the L1 gradient)": l2_l1_gradient,
        "returns the penalty, not its gradient": l2_returns_the_penalty,
        "computed in the input's half precision": l2_in_half_precision,
        "torch.autograd.grad of the penalty": l2_by_autograd,
    }, right={
        "lambda (w + w)": l2_w_plus_w,
        "float64 arithmetic": l2_float64,
    }),
    "test_l1_proximal_step": Exercise("l1_proximal_step", wrong={
        "threshold l1 instead of lr * l1": l1_threshold_l1_not_lr_l1,
        "subgradient step (no exact zeros)": l1_subgradient_step,
        "soft-threshold w before the gradient step": l1_threshold_before_gradient_step,
        "max(u - t, 0) without the sign": l1_relu_without_sign,
        "hard thresholding (no shrink)": l1_hard_threshold,
        "threshold 2 lr l1": l1_threshold_two_lr_l1,
        "calls F.softshrink": l1_calls_softshrink,
        "computed in the input's half precision": l1_in_half_precision,
        "sign(u) as u / |u| (nan where u = 0)": l1_sign_as_u_over_abs_u,
        "u * max(1 - t / |u|, 0) (nan where u = 0 and t = 0)": l1_shrinkage_factor,
        "float(lr) (no lr per coordinate)": l1_lr_as_a_python_number,
    }, right={
        "u minus its clamp to [-t, t]": l1_u_minus_clamp,
        "copysign of the shrunk |u|": l1_copysign,
        "torch.where by cases": l1_where,
    }),
    "test_adamw_step": Exercise("adamw_step", wrong={
        "L2 in the gradient (Adam + L2, not AdamW)": _variant(decoupled=False),
        "no bias correction": _variant(bias1=False, bias2=False),
        "bias correction on m only": _variant(bias2=False),
        "step counted from 0 (1 - beta^(step - 1))": _variant(step_offset=-1),
        "bias correction with step + 1": _variant(step_offset=1),
        "eps inside the square root": _variant(eps_inside=True),
        "eps added before v's bias correction": _variant(eps_before_correction=True),
        "decay applied after the update": _variant(decay_after=True),
        "decay by (1 - wd), forgetting lr": _variant(decay_without_lr=True),
        "betas swapped": _variant(swap_betas=True),
        "modifies its inputs in place": adamw_in_place,
        "calls torch.optim.AdamW": adamw_calls_torch_optim,
    }, right={
        "torch's op order (lerp, addcmul, addcdiv)": adamw_torch_op_order,
        "float64 arithmetic inside": adamw_float64_inside,
    }),
    "test_dropout_forward": Exercise("dropout_forward", wrong={
        "no 1 / (1 - p) rescaling": dropout_no_rescaling,
        "scales by (1 - p) instead of dividing": dropout_times_one_minus_p,
        "keeps where rand < p (keep and drop swapped)": dropout_keep_where_rand_below_p,
        "divides by p (keep-probability convention)": dropout_divides_by_p,
        "ignores the generator": dropout_ignores_generator,
        "drops in eval mode too": dropout_also_in_eval_mode,
        "p = 1 gives 0 / 0 = nan": dropout_nan_at_p_equal_one,
        "one mask shared by every row": dropout_one_mask_for_all_rows,
        "calls F.dropout": dropout_calls_f_dropout,
        "generator=None: a fresh torch.Generator() (the same mask every call)": dropout_fresh_generator_when_none,
    }, right={
        "keep where rand < 1 - p, float mask": dropout_keep_where_rand_below_keep_prob,
        "torch.bernoulli with the generator": dropout_bernoulli,
    }),
    "test_dropout_backward": Exercise("dropout_backward", wrong={
        "no 1 / (1 - p) rescaling": backward_no_rescaling,
        "scales by (1 - p) instead of dividing": backward_times_one_minus_p,
        "ignores the mask": backward_ignores_mask,
        "inverted mask": backward_inverted_mask,
        "divides by p": backward_divides_by_p,
        "p = 1 gives 0 / 0 = nan": backward_nan_at_p_equal_one,
        "torch.autograd.grad of the forward": backward_by_autograd,
    }, right={
        "torch.where on the mask": backward_where,
        "float64 arithmetic": backward_float64,
    }),
    "test_label_smoothed_cross_entropy": Exercise("label_smoothed_cross_entropy", differentiable=True, wrong={
        "epsilon spread over the C - 1 other classes": ls_over_other_classes,
        "forgets the (1 - eps) on the cross-entropy": ls_forgets_one_minus_epsilon,
        "KL(u || p) without the log C": ls_kl_without_log_c,
        "confidence penalty -H(p) instead of H(u, p)": ls_confidence_penalty,
        "sum over the batch instead of the mean": ls_sum_over_batch,
        "log of softmax (underflow)": ls_log_of_softmax,
        "computed in the input's half precision": ls_in_half_precision,
        "calls F.cross_entropy": ls_calls_torch,
        "calls F.nll_loss on its own log-probs": ls_nll_loss_on_own_log_probs,
        "dense mixture q * log p (0 * -inf = nan at epsilon = 0)": ls_dense_mixture_times_log_p,
        "no special case at epsilon = 0 (0 * inf = nan for a masked class)": ls_no_special_case_at_epsilon_0,
        "gather with the targets as given (int16 and uint8 raise)": ls_gathers_with_targets_as_given,
        "an empty batch gives 0 (sum / max(N, 1))": ls_empty_batch_gives_0,
    }, right={
        "dense mixture target q, q * log p only where q > 0": ls_dense_mixture_where_q_positive,
        "logsumexp minus logits": ls_logsumexp_form,
    }),
    "test_expected_calibration_error": Exercise("expected_calibration_error", wrong={
        "unweighted mean over bins": ece_unweighted,
        "probability of the true class as confidence": ece_true_class_probability,
        "left-closed bins [lo, hi)": ece_left_closed_bins,
        "signed gap (no absolute value)": ece_signed_gap,
        "maximum gap (MCE)": ece_max_gap,
        "empty bins give nan": ece_nan_for_empty_bins,
        "computed in the input's half precision": ece_in_half_precision,
        "correct where the target's probability is the top one (gather: int16 raises)":
            ece_correct_where_the_target_has_the_top_probability,
    }, right={
        "torch.bucketize": ece_bucketize,
        "float64 loop over bins": ece_float64_loop,
    }),
}

mutant_tests(globals())


def _binned_differently_in_float32_and_float64(probs, n_bins):
    """Right-closed bins of the confidences, computed from the same values in float32 and in float64: where these
    differ, a correct solution's grade would depend on the precision it chose. (float64 inputs are binned in
    float64 by every correct solution.)"""
    if probs.dtype == torch.float64:
        return torch.zeros(len(probs), dtype=torch.bool)
    confidence = probs.float().max(1).values
    in_float32 = torch.ceil(confidence * n_bins).long()
    return in_float32 != torch.ceil(confidence.double() * n_bins).long()


def test_no_confidence_the_calibration_test_gives_sits_where_float32_and_float64_bin_it_differently():
    # the predicate finds what it must: [[0.6, 0.4], [0.65, 0.35]] in 5 bins (float32(0.6) * 5 rounds to 3.0 in float32)
    assert _binned_differently_in_float32_and_float64(torch.tensor([[0.6, 0.4], [0.65, 0.35]]), 5).tolist() == [
        True, False]
    given = []

    def recording(probs, targets, n_bins=15):
        given.append((probs.clone(), n_bins))
        return ece_float64_loop(probs, targets, n_bins)  # a right answer, so the cell runs every check

    from conftest import load_exercises
    load_exercises(ASSIGNMENT).run_test("test_expected_calibration_error", expected_calibration_error=recording)
    assert len(given) >= 5, given
    ambiguous = [(probs[_binned_differently_in_float32_and_float64(probs, n)], n) for probs, n in given
                 if _binned_differently_in_float32_and_float64(probs, n).any()]
    assert not ambiguous, f"test_expected_calibration_error gives rows whose bin depends on the precision: {ambiguous}"
