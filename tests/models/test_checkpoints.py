"""Checkpoint formats, the diffusers round trip and the error messages.

Every format is written to disk in its real layout (DDIM's training list with a real Adam state, the project's
training dict, diffusers directories written by diffusers itself) and must load back to the released model's ε.
"""
import argparse
import json

import pytest
import torch

from models import CheckpointError, DDPMUNet, IDDPMUNet, build_model, export_diffusers, load_model
from models.checkpoint_files import (
    CheckpointNotFoundError,
    UntrustedCheckpointError,
    identify_layout,
    read_checkpoint,
)
from models.diffusers_format import ddpm_to_diffusers_state_dict, diffusers_config, diffusers_to_ddpm_state_dict
from models.factory import KNOWN_MODEL_CONFIGS

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def golden(reference_dir):
    return torch.load(reference_dir / "ddpm_unet_small.pt", weights_only=True)


@pytest.fixture(scope="module")
def golden_iddpm(reference_dir):
    return torch.load(reference_dir / "iddpm_unet_small.pt", weights_only=True)


@pytest.fixture(scope="module")
def shapes(reference_dir):
    return json.loads((reference_dir / "ddpm_unet_checkpoint_shapes.json").read_text())


def _eps(model, golden):
    with torch.no_grad():
        return model(golden["x"], golden["t"])


def _with_prefix(state, prefix="module."):
    return {prefix + k: v for k, v in state.items()}


def _perturbed(state):
    generator = torch.Generator().manual_seed(1)
    return {k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in state.items()}


def _adam_state(golden):
    """A real optimizer state, as DDIM's training loop saves it next to the weights."""
    net = DDPMUNet.from_config(golden["config"])
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8)
    for param in net.parameters():
        param.grad = torch.full_like(param, 1e-3)
    optimizer.step()
    return optimizer.state_dict()


# Each writer saves the golden weights in one format; where the format also holds other weights (raw weights
# next to EMA ones), those are perturbed, so loading the wrong entry fails the ε comparison.
def _plain_ckpt(golden, tmp_path):
    torch.save(golden["state_dict"], tmp_path / "model.ckpt")
    return tmp_path / "model.ckpt", "state dict"


def _data_parallel_pth(golden, tmp_path):
    torch.save(_with_prefix(golden["state_dict"]), tmp_path / "model.pth")
    return tmp_path / "model.pth", "state dict"


def _ddim_training_list_with_ema(golden, tmp_path):
    states = [_with_prefix(_perturbed(golden["state_dict"])), _adam_state(golden), 12, 34_000,
              _with_prefix(golden["state_dict"])]
    torch.save(states, tmp_path / "ckpt.pth")
    return tmp_path / "ckpt.pth", "EMA shadow"


def _ddim_training_list_without_ema(golden, tmp_path):
    torch.save([_with_prefix(golden["state_dict"]), _adam_state(golden), 12, 34_000], tmp_path / "ckpt.pth")
    return tmp_path / "ckpt.pth", "raw weights"


def _training_dict_with_ema(golden, tmp_path):
    checkpoint = {"model": _perturbed(golden["state_dict"]), "ema": golden["state_dict"],
                  "optimizer": _adam_state(golden), "step": 5000, "config": {"Model": golden["config"]}}
    torch.save(checkpoint, tmp_path / "train.pt")
    return tmp_path / "train.pt", "'ema'"


def _training_dict_without_ema(golden, tmp_path):
    torch.save({"model": golden["state_dict"], "step": 10}, tmp_path / "train.pt")
    return tmp_path / "train.pt", "'model'"


def _plain_safetensors(golden, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in golden["state_dict"].items()}, str(tmp_path / "model.safetensors"))
    return tmp_path / "model.safetensors", "state dict"


def _compiled_model_state(golden, tmp_path):
    torch.save(_with_prefix(_with_prefix(golden["state_dict"], "_orig_mod."), "module."), tmp_path / "c.pt")
    return tmp_path / "c.pt", "state dict"


def _diffusers_directory(golden, tmp_path):
    return export_diffusers(_golden_model(golden), golden["config"], tmp_path / "unet"), "diffusers"


def _diffusers_pipeline_bin(golden, tmp_path):
    """A pipeline folder whose unet/ was written by diffusers itself in the legacy .bin format."""
    unet = _diffusers_twin(golden)
    unet.save_pretrained(tmp_path / "pipe" / "unet", safe_serialization=False)
    assert (tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.bin").is_file()
    return tmp_path / "pipe", "diffusion_pytorch_model.bin"


def _golden_model(golden):
    net = build_model(golden["config"])
    net.load_state_dict(golden["state_dict"], strict=True)
    return net.eval()


def _diffusers_twin(golden):
    """diffusers' own UNet2DModel for the golden config, holding the golden weights."""
    config = {k: v for k, v in diffusers_config(golden["config"]).items() if not k.startswith("_")}
    unet = diffusers.UNet2DModel(**config)
    unet.load_state_dict(ddpm_to_diffusers_state_dict(golden["state_dict"], len(golden["config"]["ch_mult"])))
    return unet.eval()


WRITERS = [_plain_ckpt, _data_parallel_pth, _ddim_training_list_with_ema, _ddim_training_list_without_ema,
           _training_dict_with_ema, _training_dict_without_ema, _plain_safetensors, _compiled_model_state,
           _diffusers_directory, _diffusers_pipeline_bin]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__.strip("_"))
def test_every_format_loads_to_the_released_eps(golden, tmp_path, writer):
    path, format_words = writer(golden, tmp_path)
    model = load_model({"Model": golden["config"]}, path)
    assert not model.training
    assert not hasattr(model, "source_format")
    assert format_words in read_checkpoint(path)[1]
    assert torch.allclose(_eps(model, golden), golden["eps"], atol=1e-5)


@pytest.mark.parametrize("trained, config, refused", [
    ({"type": "linear", "beta_start": 0.0001, "beta_end": 0.02, "diffusion_step": 1000},
     {"type": "linear", "beta_end": "2e-2"}, None),  # the same schedule, spelt otherwise and with defaults
    ({"type": "linear", "beta_end": 0.02}, {"type": "linear", "beta_end": 0.01}, "beta_end 0.02 vs 0.01"),
    ({"type": "cosine"}, {"type": "linear"}, "type cosine vs linear"),
    ({"type": "cosine", "beta_end": 0.5}, {"type": "cosine"}, None),  # a cosine schedule has no betas
    ({"type": "linear", "diffusion_step": 2000}, {}, "diffusion_step 2000 vs 1000"),
    (None, {"type": "cosine"}, None),  # a checkpoint that records no schedule cannot be checked
])
def test_a_checkpoint_trained_under_another_schedule_is_refused(golden, tmp_path, trained, config, refused):
    recorded = {"Model": golden["config"]} if trained is None else {"Model": golden["config"], "Schedule": trained}
    torch.save({"model": golden["state_dict"], "ema": golden["state_dict"], "config": recorded}, tmp_path / "t.pt")
    cfg = {"Model": golden["config"], "Schedule": config}
    if refused is None:
        assert torch.allclose(_eps(load_model(cfg, tmp_path / "t.pt"), golden), golden["eps"], atol=1e-5)
    else:
        with pytest.raises(CheckpointError, match=f"trained under another noise schedule .*{refused}"):
            load_model(cfg, tmp_path / "t.pt")


def test_perturbed_weights_really_change_eps(golden):
    """Guards the EMA-preference tests above: loading the wrong entry would be detected."""
    net = build_model(golden["config"]).eval()
    net.load_state_dict(_perturbed(golden["state_dict"]))
    assert not torch.allclose(_eps(net, golden), golden["eps"], atol=1e-3)


def test_iddpm_checkpoint_loads_to_eps_half(golden_iddpm, tmp_path):
    torch.save(_with_prefix(golden_iddpm["state_dict"]), tmp_path / "iddpm.pt")
    cfg = {"Model": {**golden_iddpm["config"], "image_size": golden_iddpm["image_size"]},
           "Schedule": {"diffusion_step": 1000, "rescale_timesteps": True}}
    model = load_model(cfg, tmp_path / "iddpm.pt")
    assert isinstance(model, IDDPMUNet) and not model.training
    eps = _eps(model, golden_iddpm)
    assert eps.shape == golden_iddpm["x"].shape
    assert torch.allclose(eps, golden_iddpm["eps"], atol=1e-5)


# --- building --------------------------------------------------------------------------------------------------

def test_build_model_reads_full_config_or_model_section(golden, golden_iddpm):
    assert isinstance(build_model({"Model": golden["config"]}), DDPMUNet)
    assert isinstance(build_model(golden["config"]), DDPMUNet)
    assert isinstance(build_model({**golden["config"], "struc": "DDIM"}), DDPMUNet)
    iddpm = build_model({"Model": golden_iddpm["config"]})
    assert isinstance(iddpm, IDDPMUNet) and iddpm.eps_only
    assert not build_model(golden_iddpm["config"], eps_only=False).eps_only
    with pytest.raises(ValueError, match="struc"):
        build_model({"Model": {"struc": "NCSNpp"}})


def test_rescaled_timesteps_come_from_the_schedule(golden_iddpm):
    cfg = {"Model": golden_iddpm["config"], "Schedule": {"diffusion_step": 4000, "rescale_timesteps": True}}
    assert build_model(cfg).timestep_scale == pytest.approx(0.25)
    cfg["Schedule"]["rescale_timesteps"] = False
    assert build_model(cfg).timestep_scale == 1.0


# --- diffusers -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "celeba", "lsun_church", "lsun_bedroom"])
def test_key_map_is_a_bijection_onto_diffusers_layout(shapes, name):
    """Our renaming of a released layout gives exactly diffusers' own UNet2DModel keys and shapes, and back."""
    config = shapes[name]["config"]
    with torch.device("meta"):
        ours = DDPMUNet.from_config(config).state_dict()
        unet = diffusers.UNet2DModel(**{k: v for k, v in diffusers_config(config).items() if not k.startswith("_")})
    theirs = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    mapped = {k: tuple(v.shape) for k, v in ddpm_to_diffusers_state_dict(ours, len(config["ch_mult"])).items()}
    assert mapped == theirs
    back = {k: list(v.shape) for k, v in diffusers_to_ddpm_state_dict(unet.state_dict()).items()}
    assert back == shapes[name]["state_dict_shapes"]


def test_exported_directory_runs_in_diffusers(golden, tmp_path):
    out = export_diffusers(_golden_model(golden), golden["config"], tmp_path / "export")
    unet = diffusers.UNet2DModel.from_pretrained(out).eval()
    with torch.no_grad():
        eps = unet(golden["x"], golden["t"]).sample
    assert torch.allclose(eps, golden["eps"], atol=1e-4)
    with torch.no_grad():  # float timesteps reach diffusers' embedding unrounded, as they do ours
        half = unet(golden["x"], golden["t"] + 0.5).sample
        ours = _golden_model(golden)(golden["x"], golden["t"] + 0.5)
    assert torch.allclose(half, ours, atol=1e-4)


def test_diffusers_initialised_model_loads_here(golden, tmp_path):
    torch.manual_seed(0)
    config = {k: v for k, v in diffusers_config(golden["config"]).items() if not k.startswith("_")}
    unet = diffusers.UNet2DModel(**config).eval()  # diffusers' own random initialisation
    unet.save_pretrained(tmp_path / "hub")
    with torch.no_grad():
        expected = unet(golden["x"], golden["t"]).sample
    for cfg in (golden["config"], None):  # None: the architecture comes from config.json
        model = load_model(cfg, tmp_path / "hub")
        assert torch.allclose(_eps(model, golden), expected, atol=1e-4)


def test_legacy_diffusers_attention_names_are_accepted(golden, tmp_path):
    state = ddpm_to_diffusers_state_dict(golden["state_dict"], len(golden["config"]["ch_mult"]))
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, value in state.items():
        for new, old in legacy.items():
            key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = value
    torch.save(renamed, tmp_path / "legacy.bin")
    model = load_model(golden["config"], tmp_path / "legacy.bin")
    assert "diffusers key names" in read_checkpoint(tmp_path / "legacy.bin")[1]
    assert torch.allclose(_eps(model, golden), golden["eps"], atol=1e-5)


def test_diffusers_config_the_ddpm_unet_cannot_reproduce_is_refused(golden, tmp_path):
    out = export_diffusers(_golden_model(golden), golden["config"], tmp_path / "d")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "flip_sin_to_cos": True}))
    with pytest.raises(CheckpointError, match="flip_sin_to_cos"):
        load_model(golden["config"], out)


@pytest.mark.parametrize("change, message", [
    # diffusers sizes conv_in and the time embedding by block_out_channels[0]: the export ran, nothing loaded it
    (dict(ch_mult=[2, 2]), "ch_mult \\[2, 2\\] \\(first entry not 1\\) has no equivalent"),
    (dict(resamp_with_conv=False), "resamp_with_conv: false has no equivalent"),
])
def test_networks_diffusers_cannot_hold_are_refused_before_export(golden, tmp_path, change, message):
    config = {**golden["config"], **change}
    with pytest.raises(ValueError, match=message):
        export_diffusers(build_model({"Model": config}), config, tmp_path / "d")
    assert not (tmp_path / "d").exists()


# --- errors ----------------------------------------------------------------------------------------------------

def test_missing_file(tmp_path, golden):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointNotFoundError, match="nope.ckpt") as info:
        load_model(golden["config"], path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_pickled_objects_need_explicit_trust(golden, tmp_path):
    path = tmp_path / "with_args.pth"
    torch.save({"model": golden["state_dict"], "args": argparse.Namespace(lr=2e-4)}, path)
    with pytest.raises(UntrustedCheckpointError) as info:
        load_model(golden["config"], path)
    message = str(info.value)
    assert "trust_pickle=True" in message and "\n" not in message
    model = load_model(golden["config"], path, trust_pickle=True)
    assert torch.allclose(_eps(model, golden), golden["eps"], atol=1e-5)


def test_unreadable_and_unrecognised_files(golden, tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(golden["config"], tmp_path / "junk.ckpt")
    torch.save({"epoch": 3, "notes": "no weights"}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"\[epoch, notes\]"):
        load_model(golden["config"], tmp_path / "meta.pt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="not a diffusers"):
        load_model(golden["config"], tmp_path / "empty_dir")


def test_near_miss_names_the_differing_keys(golden, tmp_path):
    state = dict(golden["state_dict"])
    del state["mid.attn_1.q.bias"]
    state["conv_out.weight"] = torch.zeros(3, 32, 1, 1)
    state["logvar"] = torch.zeros(1000)
    torch.save(_with_prefix(state), tmp_path / "bad.ckpt")
    with pytest.raises(ValueError) as info:
        load_model(golden["config"], tmp_path / "bad.ckpt")
    message = str(info.value)
    assert isinstance(info.value, CheckpointError)
    assert "bad.ckpt" in message and "(state dict)" in message
    assert "1 missing (mid.attn_1.q.bias)" in message
    assert "1 unexpected (logvar)" in message
    assert "conv_out.weight: checkpoint [3, 32, 1, 1] vs model [3, 32, 3, 3]" in message


def _released_layout_checkpoint(shapes, name, path):
    """A checkpoint with a released file's exact keys and shapes; expanded zeros keep the file tiny."""
    state = {k: torch.zeros(1).expand(*shape) for k, shape in shapes[name]["state_dict_shapes"].items()}
    torch.save(_with_prefix(state), path)
    return path


RELEASED = ["cifar10", "celeba", "lsun_church", "lsun_bedroom", "cifar10_iddpm"]


@pytest.mark.parametrize("name", RELEASED)
def test_released_layouts_are_recognised(shapes, name):
    """The layouts read from configs/*.yml are exactly those of the released checkpoint files."""
    exact, closest = identify_layout({k: tuple(v) for k, v in shapes[name]["state_dict_shapes"].items()})
    assert name in exact and closest[1] == closest[2]
    assert KNOWN_MODEL_CONFIGS[name] == {**shapes[name]["config"], **({"image_size": 32} if "struc" in
                                                                      shapes[name]["config"] else {})}


def test_wrong_config_error_names_the_released_layout(shapes, golden, tmp_path):
    path = _released_layout_checkpoint(shapes, "cifar10", tmp_path / "cifar10.ckpt")
    with pytest.raises(CheckpointError, match="layout of the released cifar10 model") as info:
        load_model({"Model": shapes["celeba"]["config"]}, path)
    assert "other shapes" in str(info.value) or "missing" in str(info.value)
    lsun = _released_layout_checkpoint(shapes, "lsun_church", tmp_path / "church.ckpt")
    with pytest.raises(CheckpointError, match="released lsun_bedroom / lsun_church model"):
        load_model(golden["config"], lsun)


def test_released_layout_loads_without_a_config(shapes, tmp_path):
    path = _released_layout_checkpoint(shapes, "cifar10", tmp_path / "cifar10.ckpt")
    model = load_model(None, path)
    assert isinstance(model, DDPMUNet) and model.config["ch_mult"] == [1, 2, 2, 2]
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters())


# --- found by an outside review (2026-12-02, session 16) ---------------------------------------------------------

def test_the_weights_file_of_a_diffusers_folder_is_checked_against_its_config(golden, tmp_path):
    # A diffusers UNet with its own defaults (flip_sin_to_cos=True, freq_shift=0, ...) has DDPM's key layout, so
    # its weights file given alone loaded and computed another ε (relative error ~1) with exit 0.
    config = {k: v for k, v in diffusers_config(golden["config"]).items() if not k.startswith("_")}
    for key in ("flip_sin_to_cos", "freq_shift", "downsample_padding", "norm_eps"):
        config.pop(key)
    diffusers.UNet2DModel(**config).save_pretrained(tmp_path / "other")
    weights = tmp_path / "other" / "diffusion_pytorch_model.safetensors"
    for path in (tmp_path / "other", weights):
        with pytest.raises(CheckpointError, match="flip_sin_to_cos"):
            load_model(golden["config"], path)
    # a folder this UNet can reproduce: its weights file alone loads, also without a config
    good = export_diffusers(_golden_model(golden), golden["config"], tmp_path / "good")
    for cfg in (golden["config"], None):
        model = load_model(cfg, good / "diffusion_pytorch_model.safetensors")
        assert torch.allclose(_eps(model, golden), golden["eps"], atol=1e-5)


@pytest.mark.parametrize("edit, match", [
    (lambda c: {}, "block_out_channels"),
    (lambda c: {k: v for k, v in c.items() if k != "down_block_types"}, "down_block_types"),
    (lambda c: {**c, "block_out_channels": None}, "block_out_channels"),
    (lambda c: {**c, "block_out_channels": [0, 64]}, "block_out_channels"),
    (lambda c: {**c, "layers_per_block": "two"}, "layers_per_block"),
    (lambda c: {**c, "down_block_types": ["DownBlock2D"]}, "block types"),
])
def test_malformed_diffusers_config_is_one_error(golden, tmp_path, edit, match):
    out = export_diffusers(_golden_model(golden), golden["config"], tmp_path / "d")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(edit(config)))
    with pytest.raises(CheckpointError, match=match):
        load_model(golden["config"], out)


def test_diffusers_sample_size_may_be_a_square_pair(golden, tmp_path):
    out = export_diffusers(_golden_model(golden), golden["config"], tmp_path / "d")
    config = json.loads((out / "config.json").read_text())
    size = config["sample_size"]
    (out / "config.json").write_text(json.dumps({**config, "sample_size": [size, size]}))
    assert torch.allclose(_eps(load_model(None, out), golden), golden["eps"], atol=1e-5)
    (out / "config.json").write_text(json.dumps({**config, "sample_size": [size, size // 2]}))
    with pytest.raises(CheckpointError, match="not a square"):
        load_model(None, out)


@pytest.mark.parametrize("writer, raw_words", [
    (_ddim_training_list_with_ema, "raw weights (item 0"),
    (_training_dict_with_ema, "raw 'model'"),
])
def test_model_ema_false_selects_the_raw_weights(golden, tmp_path, writer, raw_words):
    # DDIM's switch: Model.ema: false samples states[0]. It was accepted and ignored (the EMA was always used).
    path, _ = writer(golden, tmp_path)
    raw = _perturbed(golden["state_dict"])
    config = {**golden["config"], "ema": False}
    assert raw_words in read_checkpoint(path, ema=False).format
    model = load_model({"Model": config}, path)
    want = _golden_model(golden)
    want.load_state_dict(raw)
    assert torch.allclose(_eps(model, golden), _eps(want, golden), atol=1e-5)
    assert not torch.allclose(_eps(model, golden), golden["eps"], atol=1e-3)
    assert torch.allclose(_eps(load_model(golden["config"], path), golden), golden["eps"], atol=1e-5)


def test_model_ema_false_with_only_ema_weights_is_refused(golden, tmp_path):
    torch.save({"ema": golden["state_dict"], "step": 3}, tmp_path / "e.pt")
    with pytest.raises(CheckpointError, match="only EMA weights"):
        load_model({"Model": {**golden["config"], "ema": False}}, tmp_path / "e.pt")


def test_safetensors_and_torch_files_are_told_apart_by_content(golden, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in golden["state_dict"].items()}, str(tmp_path / "st.ckpt"))
    torch.save(golden["state_dict"], tmp_path / "torch.safetensors")
    for name in ("st.ckpt", "torch.safetensors"):
        model = load_model(golden["config"], tmp_path / name)
        assert torch.allclose(_eps(model, golden), golden["eps"], atol=1e-5)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(golden["config"], tmp_path / "junk.safetensors")


def test_layout_hint_names_the_configured_model_when_it_is_closest(golden, tmp_path):
    state = dict(golden["state_dict"])
    del state["conv_out.bias"]
    torch.save(state, tmp_path / "short.ckpt")
    with pytest.raises(CheckpointError, match="closest is the configured model itself"):
        load_model(golden["config"], tmp_path / "short.ckpt")


def test_an_unrelated_config_json_next_to_a_weights_file_is_not_read_as_diffusers(golden, tmp_path):
    # only a config.json diffusers wrote decides ε: another tool's file of that name blocked a loadable file
    out = export_diffusers(_golden_model(golden), golden["config"], tmp_path / "d")
    folder = tmp_path / "mine"
    folder.mkdir()
    (out / "diffusion_pytorch_model.safetensors").rename(folder / "unet.safetensors")
    (folder / "config.json").write_text(json.dumps({"learning_rate": 2e-4, "seed": 0}))
    model = load_model(golden["config"], folder / "unet.safetensors")
    assert torch.allclose(_eps(model, golden), golden["eps"], atol=1e-5)
    # a diffusers one is read, and its errors name it
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "block_out_channels": None}))
    with pytest.raises(CheckpointError, match=r"mine/config.json: diffusers config has block_out_channels=None"):
        load_model(golden["config"], folder / "unet.safetensors")
