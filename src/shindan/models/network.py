"""Build networks from cards (smp for segmentation, timm for classification) and save them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shindan.errors import ModelError
from shindan.models.card import MODEL_FILES, ModelCard, validate_card
from shindan.util.atomic import atomic_dir


def build_network(card: ModelCard | dict[str, Any]) -> nn.Module:
    """An untrained network as the card describes it (logits out, no softmax)."""
    data = card.data if isinstance(card, ModelCard) else card
    arch = data["architecture"]
    n_classes = len(data["classes"])
    in_ch = int(data["input"].get("channels", 3))
    kwargs = dict(arch.get("kwargs", {}))
    if arch["library"] == "smp":
        import segmentation_models_pytorch as smp

        cls = getattr(smp, arch["name"], None)
        if cls is None:
            raise ModelError(f"unknown smp architecture {arch['name']!r}")
        kwargs.setdefault("encoder_weights", None)  # never download
        return cls(in_channels=in_ch, classes=n_classes, **kwargs)
    if arch["library"] == "timm":
        import timm

        return timm.create_model(
            arch["name"], pretrained=False, num_classes=n_classes, in_chans=in_ch, **kwargs
        )
    raise ModelError(f"unknown architecture library {arch['library']!r}")


def load_network(card: ModelCard) -> nn.Module:
    """The card's network with its trained weights, in eval mode, on the CPU."""
    from safetensors.torch import load_file

    net = build_network(card)
    try:
        state = load_file(str(card.weights_path))
    except Exception as exc:
        raise ModelError(f"{card.weights_path}: unreadable weights ({exc})") from None
    state = {k: v.float() for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"{card.weights_path}: weights do not fit {card.data['architecture']['name']} "
            f"(missing {len(missing)}, unexpected {len(unexpected)})"
        )
    return net.eval()


def export_onnx(
    net: nn.Module, card_data: dict[str, Any], path: Path, fold_pads: bool = True
) -> None:
    """Export to ONNX with dynamic batch (and, for segmentation, dynamic height/width); "same"
    pads folded into their convolutions when that keeps the logits (:mod:`.onnx_graph`),
    unless ``fold_pads`` is False (the plain export, as before the rewrite)."""
    size = int(card_data["input"]["size"])
    ch = int(card_data["input"].get("channels", 3))
    dummy = torch.zeros(1, ch, size, size)
    axes = {"input": {0: "n"}, "logits": {0: "n"}}
    if card_data["task"] == "segmentation":
        axes = {"input": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}}
    net = net.eval().float()
    # The TorchScript exporter is deprecated but exports smp/timm nets reliably offline.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            dummy,
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    # Run-time "same" pads of TF-ported encoders become the convolutions' own padding: the
    # same logits (checked on several input shapes), 1.16x faster on ONNX Runtime.
    if fold_pads:
        from shindan.models.onnx_graph import check_shapes, fold_same_padding_file

        fold_same_padding_file(path, check_shapes(card_data))


def save_model(
    net: nn.Module, card_data: dict[str, Any], out_dir: str | Path, onnx: bool = True
) -> ModelCard:
    """Write ``card.json``, ``weights.safetensors`` (fp16) and ``model.onnx`` atomically.

    The folder appears only when complete; an existing folder is replaced only then.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    data = json.loads(json.dumps(card_data))  # deep copy, JSON-clean
    data.setdefault("files", {})
    data["files"]["weights"] = "weights.safetensors"
    if onnx:
        data["files"]["onnx"] = "model.onnx"
    else:
        data["files"].pop("onnx", None)
    validate_card(data, str(out / "card.json"))
    # fp16 halves the shipped size; loading casts back to fp32 for exact backends.
    state = {
        k: v.detach().cpu().to(torch.float16).contiguous()
        if v.is_floating_point()
        else v.detach().cpu().contiguous()
        for k, v in net.state_dict().items()
    }
    with atomic_dir(out, owned=MODEL_FILES) as tmp:
        save_file(state, str(tmp / "weights.safetensors"))
        if onnx:
            # Export from the fp16-rounded weights so both backends give the same numbers.
            ref = build_network(data)
            ref.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            )
            export_onnx(ref, data, tmp / "model.onnx")
        (tmp / "card.json").write_text(json.dumps(data, indent=2) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)
    return ModelCard(data, out)
