"""The transfer part φ of the pseudo numerical methods (PNDM paper, eq. 11).

φ(x, ε, ā, ā') moves x from noise level ā to ā' along a fixed noise estimate ε:

    φ = sqrt(ā'/ā)·x − (ā' − ā) / (sqrt(ā)·(sqrt((1−ā')·ā) + sqrt((1−ā)·ā')))·ε
      = sqrt(ā')·(x − sqrt(1−ā)·ε)/sqrt(ā) + sqrt(1−ā')·ε

It is exactly the deterministic DDIM step. The first form is used because it stays accurate when ā' ≈ ā
(the second subtracts nearly equal terms). Coefficients are computed in float64 from the schedule's values and
applied as scalars, so the update costs one fused multiply-add on the device and no host synchronisation.
ā may also be a 0-dim tensor that requires grad (``samplers.scalars``): then the coefficients are differentiable.
"""
from __future__ import annotations

from torch import Tensor

from . import scalars as S


def transfer_coefficients(ab: float, ab_next: float) -> tuple[float, float]:
    """(a, b) with φ(x, ε) = a·x + b·ε."""
    a = S.sqrt(ab_next / ab)
    b = -(ab_next - ab) / (S.sqrt(ab) * (S.sqrt_prod(1 - ab_next, ab) + S.sqrt_prod(1 - ab, ab_next)))
    return a, b


def transfer(x: Tensor, eps: Tensor, ab: float, ab_next: float) -> Tensor:
    """φ(x, ε) from noise level ``ab`` to ``ab_next`` (both alpha_bar values)."""
    a, b = transfer_coefficients(ab, ab_next)
    return S.add_(x.mul(a), eps, b)


def transfer_delta(x: Tensor, eps: Tensor, ab: float, ab_next: float) -> Tensor:
    """φ(x, ε) − x, computed without the cancellation of subtracting x afterwards."""
    _, b = transfer_coefficients(ab, ab_next)
    # a − 1 = (ā' − ā) / (sqrt(ā)·(sqrt(ā') + sqrt(ā))), again free of cancellation
    a_minus_1 = (ab_next - ab) / (S.sqrt(ab) * (S.sqrt(ab_next) + S.sqrt(ab)))
    return S.add_(x.mul(a_minus_1), eps, b)
