"""Scalar arithmetic for the engines' coefficients, generic over Python floats and 0-dim torch tensors.

The engines compute their step coefficients (transfer weights, exponential-integrator moments, Lagrange weights)
from the grid's timesteps and noise levels. On an ordinary ``Grid`` those are Python floats and every function
here runs exactly the operation the engines always ran (``math.sqrt``, ``np.linalg.solve``,
``Tensor.add_(y, alpha=c)``), so sampling stays bit-identical to the golden files. When a grid carries 0-dim
float64 tensors that require grad (``samplers.tuning``), the same engine code builds an autograd graph from
the timesteps to the sample: the tensor branch of each function is its differentiable counterpart.

``math.*`` must never see a tensor in the engines: it would silently convert it to a float and cut the graph.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def _is_tensor(*values) -> bool:
    return any(isinstance(v, Tensor) for v in values)


def sqrt(x):
    return torch.sqrt(x) if isinstance(x, Tensor) else math.sqrt(x)


def sqrt_prod(u, v):
    """sqrt(u·v); for tensors sqrt(u)·sqrt(v), so that a factor that is exactly 0 (1 − ā' at ā' = 1, the last
    step) adds no infinite derivative: d sqrt(0·v)/dv is ∞·0 = NaN in autograd, d(0·sqrt(v))/dv is 0."""
    if _is_tensor(u, v):
        return sqrt(u) * sqrt(v)
    return math.sqrt(u * v)


def log(x):
    return torch.log(x) if isinstance(x, Tensor) else math.log(x)


def log1p(x):
    return torch.log1p(x) if isinstance(x, Tensor) else math.log1p(x)


def exp(x):
    return torch.exp(x) if isinstance(x, Tensor) else math.exp(x)


def expm1(x):
    return torch.expm1(x) if isinstance(x, Tensor) else math.expm1(x)


def add_(out: Tensor, y: Tensor, c) -> Tensor:
    """out + c·y; in place (the engines' fused ``add_(y, alpha=c)``) for a float c, out of place for a tensor c,
    which ``alpha`` cannot take. Use the return value."""
    if isinstance(c, Tensor):
        return out + y * c
    return out.add_(y, alpha=c)


def add(x: Tensor, y: Tensor, c) -> Tensor:
    """x + c·y as a new tensor (``x.add(y, alpha=c)`` for a float c)."""
    if isinstance(c, Tensor):
        return x + y * c
    return x.add(y, alpha=c)


def _stack(values: Sequence) -> Tensor:
    """A float64 vector from floats and 0-dim tensors, keeping the tensors' graphs."""
    return torch.stack([v.to(torch.float64) if isinstance(v, Tensor) else torch.tensor(float(v), dtype=torch.float64)
                        for v in values])


def solve(rows: Sequence[Sequence], rhs: Sequence, transpose: bool = False) -> list:
    """x with A x = rhs (Aᵀ x = rhs when ``transpose``), A given by its rows; a list of floats, or of 0-dim float64
    tensors when any entry is a tensor (``torch.linalg.solve``, differentiable)."""
    if not _is_tensor(*rhs, *(v for row in rows for v in row)):
        a = np.array(rows, dtype=np.float64)
        return [float(w) for w in np.linalg.solve(a.T if transpose else a, np.asarray(rhs, dtype=np.float64))]
    a = torch.stack([_stack(row) for row in rows])
    if transpose:
        a = a.T
    return list(torch.linalg.solve(a, _stack(rhs)).unbind(0))
