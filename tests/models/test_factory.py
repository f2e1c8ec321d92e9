"""The known layouts come from configs/*.yml: every shipped config is one, named by its file, and a config that does
not describe a whole network (an unknown structure, a partial score-SDE section, no Model section) is skipped
rather than breaking the diagnostics."""
import pytest
import torch
import yaml

import models.factory as factory
from models.factory import CONFIG_DIR, architecture, build_model, known_model_configs, read_layouts


def test_every_shipped_config_is_a_known_layout():
    names = {path.stem for path in CONFIG_DIR.glob("*.yml")}
    assert {"cifar10", "celeba", "lsun_church", "lsun_bedroom", "cifar10_iddpm", "digits"} <= names
    assert set(known_model_configs()) == names


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yml")), ids=lambda p: p.stem)
def test_layout_builds_the_same_network_as_the_config(path):
    """Dropping ckpt, var_type and friends loses nothing that decides the network."""
    cfg = yaml.safe_load(path.read_text())
    with torch.device("meta"):
        full = build_model(cfg).state_dict()
        layout = build_model(known_model_configs()[path.stem]).state_dict()
    assert {k: v.shape for k, v in full.items()} == {k: v.shape for k, v in layout.items()}


def test_layouts_hold_architecture_keys_only():
    layouts = known_model_configs()
    assert "ckpt" not in layouts["digits"] and "var_type" not in layouts["cifar10"]
    assert "struc" not in layouts["cifar10"] and layouts["cifar10_iddpm"]["struc"] == "iDDPM"
    assert list(architecture({"Model": {"image_size": 8, "ch": 32, "struc": "DDIM"}})) == ["ch", "image_size"]


def test_unbuildable_and_non_model_configs_are_skipped(tmp_path):
    (tmp_path / "ddpm.yml").write_text("Model:\n  struc: DDIM\n  ch: 32\n  ckpt: x.pt\n")
    (tmp_path / "pf.yml").write_text("Model:\n  struc: PF_deep\n  nf: 128\n")  # partial: not a whole network
    (tmp_path / "other.yml").write_text("Model:\n  struc: UNet3D\n  ch: 32\n")
    (tmp_path / "schedule_only.yml").write_text("Schedule:\n  type: linear\n")
    (tmp_path / "empty.yml").write_text("")
    assert read_layouts(tmp_path) == {"ddpm": {"ch": 32}}


def test_module_attribute_is_read_lazily_and_cannot_be_altered():
    assert factory.KNOWN_MODEL_CONFIGS == known_model_configs()
    factory.KNOWN_MODEL_CONFIGS["cifar10"]["ch"] = 1
    assert known_model_configs()["cifar10"]["ch"] == 128
    with pytest.raises(AttributeError):
        factory.NO_SUCH_NAME  # noqa: B018
