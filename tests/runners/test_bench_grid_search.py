"""scripts/bench_grid_search.py --search-classifier: the transfer check searches on another digits classifier's
Fréchet distance; its reference statistics are the digits dataset in that network's features."""
import numpy as np
import pytest
import torch

from models.digits_classifier import DigitsClassifier
from runners.datasets import digits_images
from runners.fid import fid_from_features
from runners.frontier.fid_screen import DigitsFID
from tests.conftest import REPO, load_script


def test_other_network_fid(tmp_path):
    torch.manual_seed(7)
    weights = tmp_path / "other.pt"
    torch.save(DigitsClassifier().state_dict(), weights)  # random weights: any network other than the FID one
    fid = DigitsFID(16)
    other = load_script("bench_grid_search").other_network_fid(fid, str(weights))
    assert other.extractor.weights_sha256 != fid.extractor.weights_sha256
    assert other.schedule is fid.schedule and other.x_T is fid.x_T and other.reference["num_images"] == 1797
    images = digits_images()
    feats = other.extractor(images).numpy()
    # independent statistics of the same features: the dataset is at distance ~0 from itself, upside down it is not
    np.testing.assert_allclose(other.reference["mu"], feats.astype(np.float64).mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(other.reference["sigma"], np.cov(feats.astype(np.float64), rowvar=False),
                               rtol=1e-9, atol=1e-12)
    assert abs(fid_from_features(feats, other.reference, other.extractor.name)) < 1e-6
    flipped = other.extractor(images.flip(-2)).numpy()
    assert fid_from_features(flipped, other.reference, other.extractor.name) > 1e-3


def test_other_network_fid_refuses_the_scoring_network():
    fid = DigitsFID(16)
    with pytest.raises(SystemExit, match="scoring FID network itself"):
        load_script("bench_grid_search").other_network_fid(fid, str(REPO / "models/weights/digits_classifier.pt"))


def test_other_network_fid_unreadable_weights_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a state dict")
    with pytest.raises(SystemExit, match="^error: --search-classifier: cannot load the digits classifier"):
        load_script("bench_grid_search").other_network_fid(DigitsFID(16), str(bad))
    with pytest.raises(SystemExit, match="^error: --search-classifier: digits classifier weights not found"):
        load_script("bench_grid_search").other_network_fid(DigitsFID(16), str(tmp_path / "missing.pt"))
