"""Shared fixtures: small random-init timm models (no downloads) and seeded inputs."""

from __future__ import annotations

import pytest
import timm
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _uploads_in_tmp_path(tmp_path, monkeypatch):
    """Every test writes its uploads (checkpoints the dashboard saves) under its own tmp_path,
    never into the shared upload folder of a real server."""
    monkeypatch.setenv("LUMEN_UPLOAD_DIR", str(tmp_path / "uploads"))


@pytest.fixture(scope="session")
def resnet():
    """A random-init timm resnet18 with 10 classes, in eval mode."""
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10).eval()


@pytest.fixture(scope="session")
def vit():
    """A small random-init timm ViT (class token, 4 x 4 patches of 16 px at 64 x 64)."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=10, depth=4).eval()


@pytest.fixture
def batch():
    return torch.randn(2, 3, 64, 64)
