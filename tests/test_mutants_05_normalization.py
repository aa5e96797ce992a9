"""Notebook 05's graded tests must reject plausible wrong answers and accept right ones."""
import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests, upcast

ASSIGNMENT = "05_normalization"


# ------------------------------------------------------------------ batchnorm

def _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps, *, normalise_correction=0,
        running_unbiased=True, eps_outside=False, new_weight=None, update_in_eval=False, stat_axes=None,
        swap_affine=False, upcast=True):
    x = upcast(x) if upcast else x
    axes = stat_axes if stat_axes is not None else [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    if training or update_in_eval:
        keep = x.mean(dim=axes, keepdim=True)
        n = x.numel() // keep.numel()
        mean = keep.reshape(-1) if keep.numel() == x.shape[1] else keep
        var = x.var(dim=axes, correction=normalise_correction, keepdim=True)
        var = var.reshape(-1) if var.numel() == x.shape[1] else var
        batch_var = x.var(dim=axes, correction=1 if running_unbiased else 0, keepdim=True)
        batch_var = batch_var.reshape(-1) if batch_var.numel() == x.shape[1] else batch_var
        w = momentum if new_weight is None else new_weight
        new_mean = (1 - w) * running_mean + w * (keep.reshape(-1) if keep.numel() == x.shape[1] else keep.mean())
        new_var = (1 - w) * running_var + w * (batch_var if batch_var.dim() == 1 else batch_var.mean())
        if n < 2:
            raise ValueError("need more than one value per channel")
    if not training:
        mean, var = running_mean, running_var
        if not update_in_eval:
            new_mean, new_var = running_mean, running_var
    if mean.dim() == 1:
        mean, var = mean.reshape(shape), var.reshape(shape)
    denom = (torch.sqrt(var) + eps) if eps_outside else torch.sqrt(var + eps)
    scale, shift = (beta, gamma) if swap_affine else (gamma, beta)
    return (x - mean) / denom * scale.reshape(shape) + shift.reshape(shape), new_mean, new_var


def bn_unbiased_variance_to_normalise(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps, normalise_correction=1)


def bn_biased_variance_in_running_average(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
                                          eps=1e-5):
    return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps, running_unbiased=False)


def bn_eps_outside_sqrt(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps, eps_outside=True)


def bn_momentum_the_wrong_way_round(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps, new_weight=1 - momentum)


def bn_updates_running_stats_in_eval(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps, update_in_eval=True)


def bn_batch_stats_in_eval(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    out, rm, rv = _bn(x, gamma, beta, running_mean, running_var, True, momentum, eps)
    return (out, rm, rv) if training else (out, running_mean, running_var)


def bn_stats_over_channels(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    x = upcast(x)
    shape = [1, -1] + [1] * (x.dim() - 2)
    if not training:
        return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    mean = x.mean(dim=1, keepdim=True)                  # per example, over the channels (that is LayerNorm's axis)
    var = x.var(dim=1, correction=0, keepdim=True)
    n = x.shape[1]
    out = (x - mean) / torch.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)
    return (out, (1 - momentum) * running_mean + momentum * x.mean(dim=[0] + list(range(2, x.dim()))),
            (1 - momentum) * running_var + momentum * var.mean() * n / (n - 1))


def bn_ignores_the_length_axis(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    x = upcast(x)
    if x.dim() == 2 or not training:
        return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    mean, var = x.mean(dim=0), x.var(dim=0, correction=0)         # (C, L): separate statistics per position
    n = x.shape[0]
    out = (x - mean) / torch.sqrt(var + eps) * gamma[:, None] + beta[:, None]
    return (out, (1 - momentum) * running_mean + momentum * mean.mean(1),
            (1 - momentum) * running_var + momentum * (var * n / max(n - 1, 1)).mean(1))


def bn_gamma_and_beta_swapped(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps, swap_affine=True)


def bn_running_stats_updated_in_place(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    out, rm, rv = _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    if training:
        running_mean.copy_(rm)
        running_var.copy_(rv)
    return out, running_mean, running_var


def bn_input_centred_in_place(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    out, rm, rv = _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    if x.dtype in (torch.float32, torch.float64):
        x.sub_(x.mean(dim=[0] + list(range(2, x.dim())), keepdim=True))
    return out, rm, rv


def bn_in_half_precision(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    return _bn(x, gamma.to(x.dtype), beta.to(x.dtype), running_mean.to(x.dtype), running_var.to(x.dtype),
               training, momentum, eps, upcast=False)


def bn_calls_f_batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    rm, rv = running_mean.clone(), running_var.clone()
    out = F.batch_norm(upcast(x), rm, rv, gamma, beta, training=training, momentum=momentum, eps=eps)
    return out, rm, rv


def bn_layer_norm_on_the_transpose(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    if not training or x.dim() == 3:
        return _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    x = upcast(x)
    n = x.shape[0]
    out = F.layer_norm(x.T, (n,), eps=eps).T * gamma + beta
    return (out, (1 - momentum) * running_mean + momentum * x.mean(0),
            (1 - momentum) * running_var + momentum * x.var(0))


def bn_float64_with_explicit_sums(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    xd = x.double()
    shape = [1, -1] + [1] * (x.dim() - 2)
    axes = [0] + list(range(2, x.dim()))
    if training:
        n = xd.numel() // xd.shape[1]
        mean = xd.sum(dim=axes) / n
        ss = ((xd - mean.reshape(shape)) ** 2).sum(dim=axes)
        var = ss / n
        new_mean = (1 - momentum) * running_mean.double() + momentum * mean
        new_var = (1 - momentum) * running_var.double() + momentum * ss / (n - 1)
    else:
        mean, var, new_mean, new_var = running_mean.double(), running_var.double(), running_mean, running_var
    out = (xd - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * gamma.double().reshape(shape) \
        + beta.double().reshape(shape)
    return out, new_mean, new_var


def bn_channels_last_with_var_mean(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    x = upcast(x)
    c = x.shape[1]
    flat = x.movedim(1, -1).reshape(-1, c)                        # (N * L, C): one row per value of each channel
    if training:
        var, mean = torch.var_mean(flat, dim=0, correction=0)
        new_mean = running_mean * (1 - momentum) + mean * momentum
        new_var = running_var * (1 - momentum) + torch.var(flat, dim=0) * momentum   # default: unbiased
    else:
        mean, var, new_mean, new_var = running_mean, running_var, running_mean, running_var
    out = (flat - mean) * torch.rsqrt(var + eps) * gamma + beta
    return out.reshape(x.movedim(1, -1).shape).movedim(-1, 1), new_mean, new_var


def bn_unbiased_factor_before_the_branch(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
                                         eps=1e-5):
    x = upcast(x)
    axes = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    n = x.numel() // x.shape[1]
    unbias = n / (n - 1)                           # worked out up front: a single example at inference divides by 0
    if training:
        mean, var = x.mean(dim=axes), x.var(dim=axes, correction=0)
        new_mean = (1 - momentum) * running_mean + momentum * mean
        new_var = (1 - momentum) * running_var + momentum * var * unbias
    else:
        mean, var, new_mean, new_var = running_mean, running_var, running_mean, running_var
    out = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)
    return out, new_mean, new_var


# ------------------------------------------------------------------ layernorm

def _ln(x, gamma, beta, eps, *, correction=0, eps_outside=False, dim=-1, centre=True, upcast=True, swap=False):
    x = upcast(x) if upcast else x
    mean = x.mean(dim=dim, keepdim=True) if centre else torch.zeros_like(x)
    var = x.var(dim=dim, correction=correction, keepdim=True) if centre else (x * x).mean(dim=dim, keepdim=True)
    denom = torch.sqrt(var) + eps if eps_outside else torch.sqrt(var + eps)
    scale, shift = (beta, gamma) if swap else (gamma, beta)
    return (x - mean) / denom * scale + shift


def ln_unbiased_variance(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, eps, correction=1)


def ln_eps_outside_sqrt(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, eps, eps_outside=True)


def ln_over_the_batch_axis(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, eps, dim=0)


def ln_gamma_and_beta_swapped(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, eps, swap=True)


def ln_no_mean_subtraction(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, eps, centre=False)


def ln_in_half_precision(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma.to(x.dtype), beta.to(x.dtype), eps, upcast=False)


def ln_calls_f_layer_norm(x, gamma, beta, eps=1e-5):
    x = upcast(x)
    return F.layer_norm(x, (x.shape[-1],), gamma.to(x.dtype), beta.to(x.dtype), eps)


def ln_group_norm_with_one_group(x, gamma, beta, eps=1e-5):
    x = upcast(x)
    flat = x.reshape(-1, x.shape[-1])
    return F.group_norm(flat, 1, gamma.to(x.dtype), beta.to(x.dtype), eps).reshape(x.shape)


def ln_var_mean_and_rsqrt(x, gamma, beta, eps=1e-5):
    x = upcast(x)
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(var + eps) * gamma + beta


def ln_float64_centred_second_moment(x, gamma, beta, eps=1e-5):
    xd = x.double()
    centred = xd - xd.sum(-1, keepdim=True) / xd.shape[-1]
    var = (centred * centred).sum(-1, keepdim=True) / xd.shape[-1]
    return centred / (var + eps) ** 0.5 * gamma.double() + beta.double()


def ln_token_by_token(x, gamma, beta, eps=1e-5):
    x = upcast(x)
    rows = [(r - r.mean()) / torch.sqrt(((r - r.mean()) ** 2).mean() + eps) * gamma + beta
            for r in x.reshape(-1, x.shape[-1])]
    return torch.stack(rows).reshape(x.shape)     # an empty batch: torch.stack of no rows raises


# ------------------------------------------------------------------ rmsnorm

def rms_subtracts_the_mean(x, gamma, eps=1e-6):
    x = upcast(x)
    c = x - x.mean(-1, keepdim=True)
    return c / torch.sqrt((c * c).mean(-1, keepdim=True) + eps) * gamma


def rms_eps_outside_sqrt(x, gamma, eps=1e-6):
    x = upcast(x)
    return x / (torch.sqrt((x * x).mean(-1, keepdim=True)) + eps) * gamma


def rms_sum_instead_of_mean(x, gamma, eps=1e-6):
    x = upcast(x)
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + eps) * gamma


def rms_over_the_batch_axis(x, gamma, eps=1e-6):
    x = upcast(x)
    return x / torch.sqrt((x * x).mean(0, keepdim=True) + eps) * gamma


def rms_forgets_gamma(x, gamma, eps=1e-6):
    x = upcast(x)
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def rms_in_half_precision(x, gamma, eps=1e-6):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * gamma.to(x.dtype)


def rms_f_normalize_times_sqrt_d(x, gamma, eps=1e-6):
    x = upcast(x)
    return F.normalize(x, dim=-1) * x.shape[-1] ** 0.5 * gamma


def rms_calls_f_rms_norm(x, gamma, eps=1e-6):
    x = upcast(x)
    return F.rms_norm(x, (x.shape[-1],), gamma.to(x.dtype), eps)


def rms_float64_rsqrt(x, gamma, eps=1e-6):
    xd = x.double()
    return xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * gamma.double()


def rms_via_vector_norm(x, gamma, eps=1e-6):
    x = upcast(x)
    ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) ** 2 / x.shape[-1]
    return x / torch.sqrt(ms + eps) * gamma


def rms_token_by_token(x, gamma, eps=1e-6):
    x = upcast(x)
    rows = [r / torch.sqrt((r * r).mean() + eps) * gamma for r in x.reshape(-1, x.shape[-1])]
    return torch.stack(rows).reshape(x.shape)     # an empty batch: torch.stack of no rows raises


# ------------------------------------------------------------------ layernorm_backward

def _lnb(grad_out, x, gamma, eps, *, mean_g=True, projection=True, use_gamma=True, eps_in_s=True,
         correction=0, sum_axes="all", swap=False):
    x, dy = upcast(x), upcast(grad_out)
    mean = x.mean(-1, keepdim=True)
    var = x.var(dim=-1, correction=correction, keepdim=True)
    s = torch.sqrt(var + eps) if eps_in_s else torch.sqrt(var)
    x_hat = (x - mean) / s
    g = dy * gamma if use_gamma else dy
    dx = g
    if mean_g:
        dx = dx - g.mean(-1, keepdim=True)
    if projection:
        dx = dx - x_hat * (g * x_hat).mean(-1, keepdim=True)
    dx = dx / s
    d = x.shape[-1]
    if sum_axes == "all":
        dgamma, dbeta = (dy * x_hat).reshape(-1, d).sum(0), dy.reshape(-1, d).sum(0)
    elif sum_axes == "first":
        dgamma, dbeta = (dy * x_hat).sum(0), dy.sum(0)
    else:
        dgamma, dbeta = dy * x_hat, dy
    return (dx, dbeta, dgamma) if swap else (dx, dgamma, dbeta)


def lnb_missing_the_x_hat_term(grad_out, x, gamma, eps=1e-5):
    return _lnb(grad_out, x, gamma, eps, projection=False)


def lnb_missing_the_mean_g_term(grad_out, x, gamma, eps=1e-5):
    return _lnb(grad_out, x, gamma, eps, mean_g=False)


def lnb_gamma_grad_not_summed_over_the_batch(grad_out, x, gamma, eps=1e-5):
    return _lnb(grad_out, x, gamma, eps, sum_axes="none")


def lnb_gamma_grad_summed_over_axis_0_only(grad_out, x, gamma, eps=1e-5):
    return _lnb(grad_out, x, gamma, eps, sum_axes="first")


def lnb_forgets_gamma_in_g(grad_out, x, gamma, eps=1e-5):
    return _lnb(grad_out, x, gamma, eps, use_gamma=False)


def lnb_no_eps_in_sigma(grad_out, x, gamma, eps=1e-5):
    return _lnb(grad_out, x, gamma, eps, eps_in_s=False)


def lnb_unbiased_variance(grad_out, x, gamma, eps=1e-5):
    return _lnb(grad_out, x, gamma, eps, correction=1)


def lnb_gamma_and_beta_grads_swapped(grad_out, x, gamma, eps=1e-5):
    return _lnb(grad_out, x, gamma, eps, swap=True)


def lnb_autograd_grad(grad_out, x, gamma, eps=1e-5):
    x, gamma = upcast(x).detach().requires_grad_(), upcast(gamma).detach().requires_grad_()
    beta = torch.zeros_like(gamma, requires_grad=True)
    y = F.layer_norm(x, (x.shape[-1],), gamma, beta, eps)
    return torch.autograd.grad(y, (x, gamma, beta), upcast(grad_out))


def lnb_explicit_jacobian_float64(grad_out, x, gamma, eps=1e-5):
    xd, dy, gd = x.double(), grad_out.double(), gamma.double()
    d = xd.shape[-1]
    mean = xd.mean(-1, keepdim=True)
    s = torch.sqrt(((xd - mean) ** 2).mean(-1, keepdim=True) + eps)
    x_hat = (xd - mean) / s
    eye = torch.eye(d, dtype=torch.float64)
    jac = (eye - 1.0 / d - x_hat[..., :, None] * x_hat[..., None, :] / d) / s[..., None]   # d x_hat_i / d x_j
    dx = torch.einsum("...i,...ij->...j", dy * gd, jac)
    return dx, (dy * x_hat).reshape(-1, d).sum(0), dy.reshape(-1, d).sum(0)


def lnb_sums_instead_of_means(grad_out, x, gamma, eps=1e-5):
    x, dy = upcast(x), upcast(grad_out)
    d = x.shape[-1]
    mean = x.sum(-1, keepdim=True) / d
    s = torch.sqrt(((x - mean) ** 2).sum(-1, keepdim=True) / d + eps)
    x_hat = (x - mean) / s
    g = dy * gamma
    dx = (d * g - g.sum(-1, keepdim=True) - x_hat * (g * x_hat).sum(-1, keepdim=True)) / (d * s)
    return dx, (dy * x_hat).flatten(0, -2).sum(0) if x.dim() > 1 else dy * x_hat, \
        dy.flatten(0, -2).sum(0) if x.dim() > 1 else dy


# ------------------------------------------------------------------ residual_block

def rb_always_pre(x, sublayer, norm, placement):
    if placement not in ("pre", "post"):
        raise ValueError(placement)
    return x + sublayer(norm(x))


def rb_always_post(x, sublayer, norm, placement):
    if placement not in ("pre", "post"):
        raise ValueError(placement)
    return norm(x + sublayer(x))


def rb_placements_swapped(x, sublayer, norm, placement):
    if placement == "post":
        return x + sublayer(norm(x))
    if placement == "pre":
        return norm(x + sublayer(x))
    raise ValueError(placement)


def rb_pre_normalises_the_branch_output(x, sublayer, norm, placement):
    if placement == "pre":
        return x + norm(sublayer(x))
    if placement == "post":
        return norm(x + sublayer(x))
    raise ValueError(placement)


def rb_post_without_the_residual(x, sublayer, norm, placement):
    if placement == "pre":
        return x + sublayer(norm(x))
    if placement == "post":
        return norm(sublayer(x))
    raise ValueError(placement)


def rb_post_adds_the_unnormalised_input(x, sublayer, norm, placement):
    if placement == "pre":
        return x + sublayer(norm(x))
    if placement == "post":
        return x + norm(sublayer(x))
    raise ValueError(placement)


def rb_unknown_placement_treated_as_post(x, sublayer, norm, placement):
    if placement == "pre":
        return x + sublayer(norm(x))
    return norm(x + sublayer(x))


def rb_dict_lookup_raises_key_error(x, sublayer, norm, placement):
    blocks = {"pre": lambda: x + sublayer(norm(x)), "post": lambda: norm(x + sublayer(x))}
    return blocks[placement]()                     # another placement: KeyError, not the ValueError asked for


def rb_dispatch_table(x, sublayer, norm, placement):
    blocks = {"pre": lambda: x + sublayer(norm(x)), "post": lambda: norm(x + sublayer(x))}
    if placement not in blocks:
        raise ValueError(f"unknown placement {placement!r}")
    return blocks[placement]()


def rb_named_steps(x, sublayer, norm, placement):
    if placement not in ("pre", "post"):
        raise ValueError("placement must be 'pre' or 'post'")
    branch_input = norm(x) if placement == "pre" else x
    h = x + sublayer(branch_input)
    return h if placement == "pre" else norm(h)


EXERCISES = {
    "test_batchnorm": Exercise("batchnorm", differentiable=True, wrong={
        "unbiased variance used to normalise": bn_unbiased_variance_to_normalise,
        "biased variance in the running average": bn_biased_variance_in_running_average,
        "eps outside the sqrt": bn_eps_outside_sqrt,
        "momentum the wrong way round (0.9 new + 0.1 old)": bn_momentum_the_wrong_way_round,
        "running stats updated in eval mode": bn_updates_running_stats_in_eval,
        "batch statistics in eval mode": bn_batch_stats_in_eval,
        "statistics over the channels instead of the batch": bn_stats_over_channels,
        "(N, C, L): statistics per position, length axis ignored": bn_ignores_the_length_axis,
        "gamma and beta swapped": bn_gamma_and_beta_swapped,
        "running stats updated in place": bn_running_stats_updated_in_place,
        "input centred in place": bn_input_centred_in_place,
        "computed in the input's half precision": bn_in_half_precision,
        "calls F.batch_norm": bn_calls_f_batch_norm,
        "F.layer_norm on the transposed input": bn_layer_norm_on_the_transpose,
        "n / (n - 1) worked out in eval too (a single example divides by 0)": bn_unbiased_factor_before_the_branch,
    }, right={
        "float64 with explicit sums": bn_float64_with_explicit_sums,
        "channels-last flatten with var_mean": bn_channels_last_with_var_mean,
    }),
    "test_layernorm": Exercise("layernorm", differentiable=True, wrong={
        "unbiased variance": ln_unbiased_variance,
        "eps outside the sqrt": ln_eps_outside_sqrt,
        "statistics over the batch axis": ln_over_the_batch_axis,
        "gamma and beta swapped": ln_gamma_and_beta_swapped,
        "no mean subtraction (RMSNorm)": ln_no_mean_subtraction,
        "computed in the input's half precision": ln_in_half_precision,
        "calls F.layer_norm": ln_calls_f_layer_norm,
        "F.group_norm with one group": ln_group_norm_with_one_group,
        "token by token, torch.stack (an empty batch raises)": ln_token_by_token,
    }, right={
        "var_mean and rsqrt": ln_var_mean_and_rsqrt,
        "float64 centred second moment": ln_float64_centred_second_moment,
    }),
    "test_rmsnorm": Exercise("rmsnorm", differentiable=True, wrong={
        "subtracts the mean": rms_subtracts_the_mean,
        "eps outside the sqrt": rms_eps_outside_sqrt,
        "sum of squares instead of the mean": rms_sum_instead_of_mean,
        "statistics over the batch axis": rms_over_the_batch_axis,
        "forgets gamma": rms_forgets_gamma,
        "computed in the input's half precision": rms_in_half_precision,
        "F.normalize times sqrt(D) (no eps)": rms_f_normalize_times_sqrt_d,
        "calls F.rms_norm": rms_calls_f_rms_norm,
        "token by token, torch.stack (an empty batch raises)": rms_token_by_token,
    }, right={
        "float64 rsqrt": rms_float64_rsqrt,
        "mean square from vector_norm": rms_via_vector_norm,
    }),
    "test_layernorm_backward": Exercise("layernorm_backward", wrong={
        "missing the x_hat * mean(g * x_hat) term": lnb_missing_the_x_hat_term,
        "missing the mean(g) term": lnb_missing_the_mean_g_term,
        "grad_gamma not summed over the batch": lnb_gamma_grad_not_summed_over_the_batch,
        "grad_gamma summed over axis 0 only": lnb_gamma_grad_summed_over_axis_0_only,
        "g = grad_out (gamma forgotten)": lnb_forgets_gamma_in_g,
        "sigma without eps": lnb_no_eps_in_sigma,
        "unbiased variance": lnb_unbiased_variance,
        "grad_gamma and grad_beta swapped": lnb_gamma_and_beta_grads_swapped,
        "torch.autograd.grad of F.layer_norm": lnb_autograd_grad,
    }, right={
        "explicit float64 Jacobian": lnb_explicit_jacobian_float64,
        "sums instead of means": lnb_sums_instead_of_means,
    }),
    "test_residual_block": Exercise("residual_block", differentiable=True, wrong={
        "always pre-norm (post written as pre)": rb_always_pre,
        "always post-norm": rb_always_post,
        "placements swapped": rb_placements_swapped,
        "pre-norm normalises the branch output": rb_pre_normalises_the_branch_output,
        "post-norm without the residual": rb_post_without_the_residual,
        "post-norm adds the unnormalised input": rb_post_adds_the_unnormalised_input,
        "unknown placement treated as post": rb_unknown_placement_treated_as_post,
        "dict lookup: KeyError for an unknown placement": rb_dict_lookup_raises_key_error,
    }, right={
        "dispatch table": rb_dispatch_table,
        "named steps": rb_named_steps,
    }),
}

mutant_tests(globals())
