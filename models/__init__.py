"""Networks and weights: the analytic Gaussian-mixture model, the DDPM and iDDPM UNets, checkpoint formats.

Where things live: `factory` (config → network, the known layouts of configs/*.yml), `checkpoint_files`
(reading weights files, `load_model` and its diagnostics), `diffusers_format` (the diffusers UNet2DModel key map
and export), `inference` (the fast ε path).
"""
from .analytic import GaussianMixture, MixtureBank
from .checkpoint_files import load_model
from .ddpm_unet import DDPMUNet
from .diffusers_format import export_diffusers
from .errors import CheckpointError
from .factory import build_model
from .iddpm_unet import IDDPMUNet
from .inference import prepare_for_inference

__all__ = [
    "GaussianMixture",
    "MixtureBank",
    "DDPMUNet",
    "IDDPMUNet",
    "CheckpointError",
    "build_model",
    "load_model",
    "export_diffusers",
    "prepare_for_inference",
]
