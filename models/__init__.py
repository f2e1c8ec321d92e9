"""Networks and weights: the analytic Gaussian-mixture model, the DDPM and iDDPM UNets, score-SDE's DDPM network
(`struc: PF`) and NCSN++ (`struc: PF_deep`), checkpoint formats.

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
from .scoresde_ddpm import ScoreSDEDDPM

__all__ = [
    "GaussianMixture",
    "MixtureBank",
    "DDPMUNet",
    "IDDPMUNet",
    "ScoreSDEDDPM",
    "NCSNpp",
    "CheckpointError",
    "build_model",
    "load_model",
    "export_diffusers",
    "prepare_for_inference",
]


def __getattr__(name: str):
    """`NCSNpp` on first use: the NCSN++ modules are imported only by code that asks for them."""
    if name == "NCSNpp":
        from .ncsnpp import NCSNpp

        return NCSNpp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
