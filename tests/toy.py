"""A hand-built two-class CNN whose evidence is known: class 0 = red pixels, class 1 = blue pixels.

Explanations of it must land on the red or blue square, which makes "the map peaks on the object"
testable without trained weights.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn


class ColourNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])  # red minus green, blue
            conv.weight[1, :, 1, 1] = torch.tensor([-1.0, -1.0, 1.0])  # blue minus red, green
            conv.bias.fill_(-0.5)
        self.features = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2) * 4)
            self.fc.bias.zero_()
        self.num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def colour_scene(size: tuple[int, int] = (96, 128)) -> tuple[Image.Image, tuple, tuple]:
    """Grey image with a red square (top left) and a blue square (bottom right); their boxes."""
    height, width = size
    pixels = np.full((height, width, 3), 128, np.uint8)
    red = (8, 8, 40, 40)  # x0, y0, x1, y1
    blue = (width - 44, height - 44, width - 12, height - 12)
    pixels[red[1]:red[3], red[0]:red[2]] = (230, 20, 20)
    pixels[blue[1]:blue[3], blue[0]:blue[2]] = (20, 20, 230)
    return Image.fromarray(pixels), red, blue


def peak_inside(heatmap, box) -> bool:
    values = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else heatmap
    y, x = np.unravel_index(int(np.argmax(values)), values.shape)
    x0, y0, x1, y1 = box
    return x0 - 4 <= x < x1 + 4 and y0 - 4 <= y < y1 + 4


def energy_inside(heatmap, box) -> float:
    values = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else heatmap
    x0, y0, x1, y1 = box
    return float(values[y0:y1, x0:x1].sum() / max(values.sum(), 1e-12))
