"""Networks and weights: the analytic Gaussian-mixture model, the DDPM and iDDPM UNets, checkpoint formats."""
from .analytic import GaussianMixture

__all__ = ["GaussianMixture"]
