"""Input checks shared by the reference losses: clear errors, fp32-or-better arithmetic."""
import math

import torch

REDUCTIONS = ("none", "mean", "sum")


def as_float(name: str, x, fn: str) -> torch.Tensor:
    """Return ``x`` as a floating tensor of at least fp32 (half and bfloat16 are upcast)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating tensor, got dtype {x.dtype}")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def number(fn: str, name: str, value, low=None, high=None, *, above=None, meaning: str = "") -> float:
    """``value`` as a float, if it is a number (or a one-element tensor) in [low, high] and > ``above``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{fn}: {name} must be a number{meaning}, got {value!r}")
    if above is not None and not value > above:
        raise ValueError(f"{fn}: {name} must be > {above:g}{meaning}, got {value}")
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"{fn}: {name} must lie in [{low:g}, {high:g}]{meaning}, got {value}")
    if low is not None and value < low:
        raise ValueError(f"{fn}: {name} must be >= {low:g}{meaning}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{fn}: {name} must be <= {high:g}{meaning}, got {value}")
    return float(value)


def broadcasts_to(fn: str, **tensors: torch.Tensor) -> None:
    """The first tensor must broadcast to the second's shape (same shape, or fewer/size-1 dims)."""
    (name, x), (target_name, target) = tensors.items()
    try:
        ok = torch.broadcast_shapes(x.shape, target.shape) == target.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: {name} of shape {tuple(x.shape)} must broadcast to the shape of "
                         f"{target_name} {tuple(target.shape)} (same shape, or a scalar)")


def check_dim(name: str, x: torch.Tensor, dim: int, fn: str) -> None:
    ndim = max(x.dim(), 1)
    if not -ndim <= dim < ndim:
        raise ValueError(f"{fn}: dim={dim} is out of range for {name} of shape {tuple(x.shape)}; "
                         f"expected {-ndim} <= dim < {ndim}")


def as_index(name: str, x, fn: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.is_floating_point() or x.dtype == torch.bool:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: {name} must be an integer tensor of class indices, got {got}")
    return x.long()


def same_shape(fn: str, **tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{fn}: expected {' and '.join(shapes)} to have the same shape, got {listed}")


def reduce(loss: torch.Tensor, reduction: str, fn: str) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss
