"""Small classifiers that ticketforge trains on a dataset to get offline features for a Frechet distance.

Neither is Inception: a distance on their features is reported as ``fd_lenet`` / ``fd_resnet``, never
as FID, and numbers are comparable only between scores with the same featurizer sha256.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LeNet(nn.Module):
    """LeNet-5 style CNN for small grayscale (or colour) images, 28x28 or 32x32.

    ``features`` returns the 84-d penultimate layer before its ReLU (no dead, constant coordinates
    that would make the covariance singular).
    """

    feature_dim = 84

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.AdaptiveAvgPool2d(5)  # 28x28 and 32x32 inputs both end at 16x5x5
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = self.pool(F.max_pool2d(F.relu(self.conv2(h)), 2))
        return self.fc2(F.relu(self.fc1(h.flatten(1))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.features(x)))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class SmallResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, section 4.2): three stages of basic blocks, widths 32/64/128.

    ``features`` returns the 128-d globally average-pooled output of the last stage.
    """

    feature_dim = 128

    def __init__(self, in_channels: int = 3, num_classes: int = 10, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        layers, cin = [], 32
        for i, width in enumerate((32, 64, 128)):
            for j in range(blocks):
                layers.append(_Basic(cin, width, 2 if i > 0 and j == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"lenet": LeNet, "resnet": SmallResNet}


def normalize(images: Tensor) -> Tensor:
    """uint8 (or [0, 1] float) images -> float in [-1, 1], the classifiers' input."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x * 2.0 - 1.0


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random 4-pixel-padded crops and horizontal flips (the standard CIFAR augmentation)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy, dx = torch.randint(0, 9, (2,), generator=generator).tolist()
    x = padded[:, :, dy:dy + h, dx:dx + w]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None].to(x.device), x.flip(3), x)


__all__ = ["ARCHITECTURES", "LeNet", "SmallResNet", "augment", "normalize"]
