"""Networks and weights: the analytic Gaussian-mixture model, the DDPM and iDDPM UNets, checkpoint formats."""
from .analytic import GaussianMixture, MixtureBank
from .checkpoints import CheckpointError, build_model, export_diffusers, load_model
from .ddpm_unet import DDPMUNet
from .iddpm_unet import IDDPMUNet

__all__ = [
    "GaussianMixture",
    "MixtureBank",
    "DDPMUNet",
    "IDDPMUNet",
    "CheckpointError",
    "build_model",
    "load_model",
    "export_diffusers",
]
