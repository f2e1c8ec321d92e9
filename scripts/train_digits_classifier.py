#!/usr/bin/env python
"""Train the digits demo's FID feature network (models/digits_classifier.py) on scikit-learn's digits.

    python scripts/train_digits_classifier.py [--out models/weights/digits_classifier.pt]

Held-out split: every 5th image is a test image (the rest train, with ±1 pixel random shifts). Prints the test
accuracy; the weights are written atomically.
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.digits_classifier import DigitsClassifier  # noqa: E402
from runners.datasets import digits_images  # noqa: E402
from runners.files import save_torch_atomic  # noqa: E402


def shift(batch: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random translation by up to one pixel (zero padding), per image."""
    padded = F.pad(batch, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2, len(batch)), generator=g)
    return torch.stack([padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(len(batch))])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="models/weights/digits_classifier.pt")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from sklearn.datasets import load_digits

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    images, labels = digits_images(), torch.from_numpy(load_digits().target)
    test = torch.arange(len(images)) % 5 == 0
    xtr, ytr, xte, yte = images[~test], labels[~test], images[test], labels[test]
    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    for epoch in range(args.epochs):
        net.train()
        for idx in torch.randperm(len(xtr), generator=g).split(64):
            loss = F.cross_entropy(net(shift(xtr[idx], g)), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    out = Path(args.out)
    save_torch_atomic(net.state_dict(), out)
    print(f"test accuracy {100 * acc:.2f} % on {int(test.sum())} held-out digits; weights → {out}")


if __name__ == "__main__":
    main()
