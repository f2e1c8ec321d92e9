"""Files that are not checkpoints at all: whatever the bytes and whichever trust mode, the caller gets one line
naming the file, as a CheckpointError, never the unpickler's or safetensors' own exception."""
import json
import random

import pytest
import torch

from models import CheckpointError, export_diffusers, load_model
from models.checkpoint_files import read_checkpoint


@pytest.fixture(scope="module")
def golden(reference_dir):
    return torch.load(reference_dir / "ddpm_unet_small.pt", weights_only=True)


def _random_bytes(golden, path):
    path.write_bytes(random.Random(0).randbytes(4096))


def _empty(golden, path):
    path.write_bytes(b"")


def _text(golden, path):
    path.write_text("model: cifar10\nthis is a text file, not a checkpoint\n")


def _truncated_zip_checkpoint(golden, path):
    torch.save(golden["state_dict"], path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncated_legacy_checkpoint(golden, path):
    torch.save(golden["state_dict"], path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncated_safetensors(golden, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in golden["state_dict"].items()}, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickled_number(golden, path):
    torch.save(3, path)  # a valid file holding no weights


WRITERS = [_random_bytes, _empty, _text, _truncated_zip_checkpoint, _truncated_legacy_checkpoint,
           _truncated_safetensors, _pickled_number]


def _assert_one_line_naming(info, path):
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
@pytest.mark.parametrize("trust_pickle", [False, True], ids=["weights-only", "trust-pickle"])
@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__.strip("_"))
def test_non_checkpoints_raise_one_line_naming_the_file(golden, tmp_path, writer, trust_pickle, suffix):
    path = tmp_path / f"not_a_model{suffix}"
    writer(golden, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, trust_pickle=trust_pickle)
    _assert_one_line_naming(info, path)
    with pytest.raises(CheckpointError) as info:
        load_model(golden["config"], path, trust_pickle=trust_pickle)
    _assert_one_line_naming(info, path)


def test_trusted_garbage_is_called_unreadable(golden, tmp_path):
    path = tmp_path / "junk.pth"
    _random_bytes(golden, path)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(golden["config"], path, trust_pickle=True)


def test_diffusers_directory_with_a_broken_config(golden, tmp_path):
    net = load_model(golden["config"], _save(golden, tmp_path / "model.pt"))
    out = export_diffusers(net, golden["config"], tmp_path / "unet")
    for text in ("{not json", json.dumps([1, 2, 3])):
        (out / "config.json").write_text(text)
        with pytest.raises(CheckpointError) as info:
            load_model(None, out)
        _assert_one_line_naming(info, out / "config.json")


def _save(golden, path):
    torch.save(golden["state_dict"], path)
    return path
