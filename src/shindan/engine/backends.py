"""Run a model card's network on uint8 RGB batches: torch (fp32 / bf16 autocast) or ONNX Runtime.

Every backend takes the same input (N, H, W, C) uint8 and returns float32 probabilities,
(N, classes) or (N, classes, H, W); preprocessing comes from the card alone.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shindan.engine.tta import tta_logits
from shindan.errors import ModelError
from shindan.models import ModelCard, load_card
from shindan.models.decision import Decision
from shindan.util.extras import has_train, require_train

if TYPE_CHECKING:  # torch is the train extra: imported only by the torch backends
    import torch

BACKENDS = ("auto", "onnx", "torch", "torch-bf16")


def _threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device.

    Without an NVIDIA driver the answer is no without importing torch (3 s); ONNX analysis
    on the base install never imports it.
    """
    if not (Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi")):
        return False
    if not has_train():
        return False
    import torch

    return torch.cuda.is_available()


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported() -> bool:
    """Whether this CPU has native bf16 matrix instructions (else autocast is slower)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    fn = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return bool(fn and fn() in ("AVX512", "AMX")) and bool(
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    )


def normaliser(card: ModelCard) -> Callable[[np.ndarray], np.ndarray]:
    """The card's preprocessing: uint8 (N, H, W, C) → normalised float32 (N, C, H, W)."""
    c = card.channels
    # (x / 255 - mean) / std folded into one scale and one offset.
    std = np.asarray(card.std, np.float32).reshape(1, c, 1, 1)
    scale = 1.0 / (255.0 * std)
    offset = np.asarray(card.mean, np.float32).reshape(1, c, 1, 1) / std

    def normalise(batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4:
            raise ModelError(f"expected a batch (N, H, W, C), got shape {batch.shape}")
        # one pass to contiguous float32 NCHW (astype alone keeps the NHWC memory order)
        x = batch.transpose(0, 3, 1, 2).astype(np.float32, order="C")
        x *= scale
        x -= offset
        return x

    return normalise


class Predictor(ABC):
    """A loaded model: ``predict(batch)`` → probabilities. Subclasses override ``_forward``.

    Logits are averaged over the card's test-time views (``tta``); set ``tta = ()`` to run
    the plain input alone.
    """

    backend: str

    def __init__(self, card: ModelCard):
        self.card = card
        self.preprocess = normaliser(card)
        self.tta: tuple[str, ...] = card.tta
        # the card's temperature and cut-off (plain softmax and arg-max without a decision)
        self.decision = Decision.from_card(card)

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @abstractmethod
    def _forward(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 NCHW → logits float32."""

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits for a uint8 NHWC batch."""
        return tta_logits(self._forward, self.preprocess(batch), self.tta)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities for a uint8 NHWC batch, calibrated with the card's
        temperature (``decision.temperature``) when it has one."""
        z = self.logits(batch)
        if self.decision.temperature != 1.0:
            z = z / np.float32(self.decision.temperature)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Class indices of :meth:`predict`'s probabilities by the card's decision rule
        (the positive class at or above its cut-off; else the arg-max)."""
        return self.decision.labels(probs)


class TorchPredictor(Predictor):
    def __init__(self, card: ModelCard, bf16: bool = False, device: str | None = None):
        require_train("the torch backend")
        import torch

        from shindan.models.network import load_network

        super().__init__(card)
        self.device = torch.device(device) if device else default_device()
        self.net = load_network(card).to(self.device)
        self.bf16 = bf16
        self.backend = "torch-bf16" if bf16 else "torch"
        torch.set_num_threads(_threads())

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        t = torch.from_numpy(x).to(self.device)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
        ):
            out = self.net(t)
        return out.float().cpu().numpy()


class OnnxPredictor(Predictor):
    backend = "onnx"

    def __init__(self, card: ModelCard):
        super().__init__(card)
        import onnxruntime as ort

        if card.onnx_path is None or not card.onnx_path.exists():
            raise ModelError(f"{card.name}: no ONNX file in its card")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ORT threads sleep instead of spinning, leaving the cores to tile reading and
        # blending between runs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in ort.get_available_providers()
        ]
        self.session = ort.InferenceSession(str(card.onnx_path), opts, providers=providers)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": np.ascontiguousarray(x)})[0]


def load_predictor(model: str | ModelCard, backend: str = "auto") -> Predictor:
    """Load a shipped model name, model folder or card with the chosen backend.

    ``auto`` picks torch on CUDA, else ONNX Runtime when the card has an ONNX file (measured
    fastest on CPU at fp32 numbers, see BENCHMARKS.md), else torch fp32.
    """
    card = model if isinstance(model, ModelCard) else load_card(model)
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "auto":
        if cuda_available():
            backend = "torch"
        elif card.onnx_path is not None and card.onnx_path.exists():
            backend = "onnx"
        else:
            backend = "torch"
    if backend == "onnx":
        return OnnxPredictor(card)
    return TorchPredictor(card, bf16=backend == "torch-bf16")
