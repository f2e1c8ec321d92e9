"""score-SDE's DDPM network (`struc: PF`): the release's outputs, its full-size layout, and its checkpoint formats
(the release's plain state dict, safetensors, score-SDE's own `checkpoint_N.pth` with an EMA list)."""
import copy
import sys
import types

import pytest
import torch

from models import CheckpointError, ScoreSDEDDPM, build_model, load_model, prepare_for_inference
from models.checkpoint_files import Checkpoint, ema_state, identify_layout, read_checkpoint
from models.factory import CONFIG_DIR, known_model_configs
from runners.config import load_config

CASES = ["pf_ddpm_centered", "pf_ddpm_uncentered_noconv"]


@pytest.fixture(scope="module")
def golden(cases):
    return cases["pf_ddpm_centered"]


def _model(case):
    net = ScoreSDEDDPM.from_config(case["config"]).eval()
    net.load_state_dict(case["state_dict"], strict=True)
    return net


def _eps(net, case):
    with torch.no_grad():
        return net(case["x"], case["t"])


def _perturbed(state):
    generator = torch.Generator().manual_seed(1)
    return {k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in state.items()}


def _relative_error(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


# --- the release's outputs and layout ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_released_outputs(cases, name):
    case = cases[name]
    net = _model(case)
    assert list(net.state_dict()) == list(case["state_dict"])  # the same keys, in the same order
    assert sum(p.numel() for p in net.parameters()) == case["num_params"]
    assert torch.allclose(_eps(net, case), case["eps"], atol=1e-5)


def test_uncentered_network_maps_its_input_to_two_x_minus_one(cases):
    """`centered: false` is the same network fed 2x − 1: the mapping is inside the model, not the caller's."""
    case = cases["pf_ddpm_uncentered_noconv"]
    centered = ScoreSDEDDPM.from_config({**case["config"], "centered": True}).eval()
    centered.load_state_dict(case["state_dict"], strict=True)
    with torch.no_grad():
        eps = centered(2 * case["x"] - 1, case["t"])
    assert torch.allclose(eps, case["eps"], atol=1e-5)


def test_full_size_layout_key_for_key(shapes):
    released = shapes["cifar10_pf"]
    with torch.device("meta"):
        net = build_model({"Model": released["config"]})
    assert isinstance(net, ScoreSDEDDPM)
    assert [(k, list(v.shape)) for k, v in net.state_dict().items()] == list(released["state_dict_shapes"].items())
    assert sum(p.numel() for p in net.parameters()) == released["num_params"] == 35_218_947


def test_shipped_config_is_the_released_layout(shapes):
    released = shapes["cifar10_pf"]
    assert known_model_configs()["cifar10_pf"] == released["config"]
    exact, closest = identify_layout({k: tuple(v) for k, v in released["state_dict_shapes"].items()})
    assert exact == ["cifar10_pf"] and closest[1] == closest[2]
    cfg = load_config(CONFIG_DIR / "cifar10_pf.yml")  # passes the config schema as written
    assert cfg["Model"]["ckpt"].endswith("pf_cifar10.ckpt") and cfg["Schedule"]["diffusion_step"] == 1000


# --- numerics: dtypes, attention, the fast path -----------------------------------------------------------------

@pytest.mark.parametrize("t_dtype", [torch.float32, torch.float64, torch.int64])
def test_float64_network_agrees_with_float32(golden, t_dtype):
    net32 = _model(golden)
    net64 = copy.deepcopy(net32).double()
    t = golden["t"].round().to(t_dtype)
    with torch.no_grad():
        out64 = net64(golden["x"].double(), t)
        out32 = net32(golden["x"], t)
    assert out64.dtype == torch.float64 and out32.dtype == torch.float32
    assert _relative_error(out32, out64) < 1e-5


def test_fused_and_explicit_attention_agree(golden):
    fused = _model(golden)
    explicit = copy.deepcopy(fused)
    blocks = [m for m in explicit.modules() if hasattr(m, "use_sdpa")]
    assert blocks and all(m.use_sdpa for m in fused.modules() if hasattr(m, "use_sdpa"))  # fused by default
    for block in blocks:
        block.use_sdpa = False
    assert torch.allclose(_eps(fused, golden), _eps(explicit, golden), atol=1e-5)
    assert torch.allclose(_eps(explicit, golden), golden["eps"], atol=1e-5)


def test_prepared_for_inference(golden):
    net = _model(golden)
    eps = prepare_for_inference(net, "fp32", channels_last=True)(golden["x"], golden["t"])
    assert torch.allclose(eps, golden["eps"], atol=1e-4)
    bf16 = prepare_for_inference(net, "bf16")(golden["x"], golden["t"])
    assert bf16.dtype == torch.float32 and _relative_error(bf16, golden["eps"]) < 2e-2


# --- building ---------------------------------------------------------------------------------------------------

def test_config_errors(golden):
    config = golden["config"]
    with pytest.raises(ValueError, match="unknown .* keys \\['chanels'\\]"):
        ScoreSDEDDPM.from_config({**config, "chanels": 3})
    with pytest.raises(ValueError, match="lacks \\['centered'\\]"):
        ScoreSDEDDPM.from_config({k: v for k, v in config.items() if k != "centered"})
    with pytest.raises(ValueError, match="conditional: false"):
        ScoreSDEDDPM.from_config({**config, "conditional": False})
    with pytest.raises(ValueError, match="nonlinearity"):
        ScoreSDEDDPM.from_config({**config, "nonlinearity": "gelu"})
    with pytest.raises(ValueError, match="8×8"):
        _model(golden)(torch.zeros(1, 3, 16, 16), torch.zeros(1))


def test_pf_deep_is_built_by_ncsnpp(monkeypatch):
    """`struc: PF_deep` goes to models.ncsnpp.NCSNpp.from_config with the Model section (imported on demand)."""
    seen = []
    fake = types.ModuleType("models.ncsnpp")
    fake.NCSNpp = types.SimpleNamespace(from_config=lambda section: seen.append(section) or "ncsnpp")
    monkeypatch.setitem(sys.modules, "models.ncsnpp", fake)
    assert build_model({"Model": {"struc": "PF_deep", "nf": 16, "ckpt": "x.pt"}}) == "ncsnpp"
    assert seen == [{"struc": "PF_deep", "nf": 16}]


# --- checkpoint formats -----------------------------------------------------------------------------------------

def _score_sde_checkpoint(golden, path, shadow=None):
    """score-SDE's `checkpoint_N.pth`: raw weights under 'model' (DataParallel prefix, its `sigmas` buffer), the
    EMA as an unnamed list. The raw weights are perturbed, so only the EMA list reproduces the released ε."""
    raw = {"sigmas": torch.linspace(0.01, 50.0, 1000), **_perturbed(golden["state_dict"])}
    net = ScoreSDEDDPM.from_config(golden["config"])
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)
    for param in net.parameters():
        param.grad = torch.full_like(param, 1e-3)
    optimizer.step()
    # In the order of the release's own parameters (its state dict holds parameters only), not of ours.
    shadow = list(golden["state_dict"].values()) if shadow is None else shadow
    torch.save({"model": {f"module.{k}": v for k, v in raw.items()},
                "ema": {"decay": 0.9999, "num_updates": 1234, "shadow_params": shadow},
                "optimizer": optimizer.state_dict(), "step": 1234}, path)
    return path


def test_score_sde_checkpoint_loads_its_ema_weights(golden, tmp_path):
    path = _score_sde_checkpoint(golden, tmp_path / "checkpoint_8.pth")
    checkpoint = read_checkpoint(path)
    assert "score-SDE training checkpoint" in checkpoint.format and len(checkpoint.ema_shadow) == 134
    assert "sigmas" not in checkpoint.state and not any(k.startswith("module.") for k in checkpoint.state)
    model = load_model({"Model": golden["config"]}, path)
    assert isinstance(model, ScoreSDEDDPM) and not model.training
    assert torch.allclose(_eps(model, golden), golden["eps"], atol=1e-5)
    raw = _model({**golden, "state_dict": checkpoint.state})  # the raw weights really differ
    assert not torch.allclose(_eps(raw, golden), golden["eps"], atol=1e-3)


def test_score_sde_checkpoint_with_model_ema_false_loads_the_raw_weights(golden, tmp_path):
    path = _score_sde_checkpoint(golden, tmp_path / "checkpoint_8.pth")
    model = load_model({"Model": {**golden["config"], "ema": False}}, path)
    raw = _model({**golden, "state_dict": read_checkpoint(path).state})
    assert torch.equal(_eps(model, golden), _eps(raw, golden))
    assert "raw 'model' weights" in read_checkpoint(path, ema=False).format


def test_score_sde_ema_list_of_the_wrong_length_is_one_line(golden, tmp_path):
    path = _score_sde_checkpoint(golden, tmp_path / "checkpoint_1.pth",
                                 shadow=list(golden["state_dict"].values())[:-1])
    with pytest.raises(CheckpointError, match="EMA holds 133 tensors but the ScoreSDEDDPM has 134") as info:
        load_model(golden["config"], path)
    assert "\n" not in str(info.value)


def test_ema_list_skips_parameters_that_are_not_trained(golden):
    """score-SDE's list covers `requires_grad` parameters only (NCSN++'s Fourier projection is not trained):
    the others keep the values stored under 'model'."""
    net = ScoreSDEDDPM.from_config(golden["config"])
    net.all_modules[0].bias.requires_grad_(False)
    raw = _perturbed(golden["state_dict"])
    shadow = [v for k, v in golden["state_dict"].items() if k != "all_modules.0.bias"]
    state = ema_state(None, Checkpoint(raw, "score-SDE training checkpoint", shadow), net)
    assert torch.equal(state["all_modules.0.bias"], raw["all_modules.0.bias"])
    assert all(torch.equal(state[k], v) for k, v in golden["state_dict"].items() if k != "all_modules.0.bias")


def test_plain_and_safetensors_files_load_to_the_same_eps(golden, tmp_path):
    from safetensors.torch import save_file

    expected = _eps(_model(golden), golden)
    torch.save(golden["state_dict"], tmp_path / "pf.ckpt")
    save_file({k: v.contiguous() for k, v in golden["state_dict"].items()}, str(tmp_path / "pf.safetensors"))
    for name in ("pf.ckpt", "pf.safetensors"):
        assert read_checkpoint(tmp_path / name).format == "state dict"
        assert torch.equal(_eps(load_model(golden["config"], tmp_path / name), golden), expected)


def _released_layout_checkpoint(shapes, path, score_sde=False):
    """A checkpoint with the released cifar10_pf keys and shapes; expanded zeros keep the file tiny."""
    state = {k: torch.zeros(1).expand(*shape) for k, shape in shapes["cifar10_pf"]["state_dict_shapes"].items()}
    if score_sde:
        state = {"model": {"module.sigmas": torch.ones(1000), **{f"module.{k}": v for k, v in state.items()}},
                 "ema": {"decay": 0.9999, "num_updates": 1, "shadow_params": list(state.values())}, "step": 1}
    torch.save(state, path)
    return path


def test_released_layout_loads_without_a_config(shapes, tmp_path):
    path = _released_layout_checkpoint(shapes, tmp_path / "checkpoint_26.pth", score_sde=True)
    model = load_model(None, path)
    assert isinstance(model, ScoreSDEDDPM)
    assert {"struc": "PF", **model.config} == shapes["cifar10_pf"]["config"]
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters())


def test_pf_checkpoint_with_a_ddpm_config_names_the_pf_layout(shapes, golden, tmp_path):
    path = _released_layout_checkpoint(shapes, tmp_path / "pf_cifar10.ckpt")
    with pytest.raises(CheckpointError, match="layout of the released cifar10_pf model \\(Model: struc=PF, ") as info:
        load_model(load_config(CONFIG_DIR / "cifar10.yml"), path)
    assert "\n" not in str(info.value) and "DDPMUNet" in str(info.value)
    torch.save(golden["state_dict"], tmp_path / "small.ckpt")  # a PF network of no released size
    with pytest.raises(CheckpointError, match="keys are those of score-SDE's networks \\(struc PF or PF_deep\\)"):
        load_model(load_config(CONFIG_DIR / "cifar10.yml"), tmp_path / "small.ckpt")
