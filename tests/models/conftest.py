"""The score-SDE golden files (../shared/reference), shared by the PF and PF_deep tests."""
import json

import pytest
import torch


@pytest.fixture(scope="module")
def cases(reference_dir):
    """scoresde_models.pt: each case's config, state dict, inputs and the released network's ε."""
    return torch.load(reference_dir / "scoresde_models.pt", weights_only=True)


@pytest.fixture(scope="module")
def shapes(reference_dir):
    """scoresde_checkpoint_shapes.json: the full-size layouts of the release's PF configs."""
    return json.loads((reference_dir / "scoresde_checkpoint_shapes.json").read_text())
