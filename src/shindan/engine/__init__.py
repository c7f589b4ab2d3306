"""Engine: backends, batched tiled inference with blending, streaming writers, training loops."""

from shindan.engine.backends import Predictor, load_predictor

__all__ = ["Predictor", "load_predictor"]
