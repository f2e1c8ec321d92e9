"""A small CNN classifier of scikit-learn's 8×8 digits, used as the FID feature network of the digits demo
(Inception features mean nothing on 8×8 grayscale digits). Features are its 128-d penultimate activations."""
from __future__ import annotations

import torch
from torch import nn


class DigitsClassifier(nn.Module):
    feature_dims = 128

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4×4
            nn.Flatten(), nn.Linear(64 * 4 * 4, self.feature_dims), nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dims, 10)

    @staticmethod
    def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
        return images_uint8.float() / 127.5 - 1.0

    def features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(images_uint8))

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images_uint8))
