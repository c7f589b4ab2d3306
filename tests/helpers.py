"""Test helpers: tiny models built and saved on the fly (no shipped weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shindan.models import ModelCard, build_network, save_model


def seg_card_dict(
    size: int = 64,
    overlap: int = 16,
    classes: int | list[str] = 3,
    mpp: float = 1.0,
    decoder_channels: tuple[int, ...] = (32, 16, 8),
    name: str = "tiny-seg",
) -> dict:
    return {
        "name": name,
        "version": "0.0.1",
        "task": "segmentation",
        "architecture": {
            "library": "smp",
            "name": "Unet",
            "kwargs": {
                "encoder_name": "resnet18",
                "encoder_depth": 3,
                "decoder_channels": list(decoder_channels),
            },
        },
        "classes": (
            list(classes) if isinstance(classes, list) else [f"c{i}" for i in range(classes)]
        ),
        "input": {
            "mpp": mpp,
            "size": size,
            "overlap": overlap,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        },
        "files": {"weights": "weights.safetensors"},
        "training": {"data": "none (random init)", "licence": "n/a", "command": "tests"},
    }


def tiny_seg_model(out: Path, seed: int = 0, **kwargs) -> ModelCard:
    """A randomly initialised small U-Net saved with card, fp16 weights and ONNX."""
    torch.manual_seed(seed)
    data = seg_card_dict(**kwargs)
    return save_model(build_network(data), data, out)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (uint8), like tissue at low power."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.random((h, w, 3)), sigma=(6, 6, 0))
    img = (img - img.min()) / np.ptp(img)
    return (img * 255).astype(np.uint8)
