"""The ``--encoder`` / ``--decoder-channels`` options of the segmenter train commands."""

from __future__ import annotations

from typing import Annotated

import typer

from shindan.errors import InputError, ModelError
from shindan.models.card import DEFAULT_DECODER, DEFAULT_ENCODER, unet_architecture

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
DEFAULT_DECODER_TEXT = ",".join(map(str, DEFAULT_DECODER))


def parse_architecture(
    encoder: str, decoder_channels: str
) -> tuple[str, tuple[int, ...], list[str]]:
    """Checked encoder and decoder widths, and the command-line words that reproduce them
    (none for the defaults). Bad values raise :class:`InputError`."""
    try:
        encoder, widths = unet_architecture(encoder, decoder_channels)
    except ModelError as exc:
        raise InputError(str(exc)) from None
    words = [f"--encoder {encoder}"] if encoder != DEFAULT_ENCODER else []
    if widths != DEFAULT_DECODER:
        words.append(f"--decoder-channels {','.join(map(str, widths))}")
    return encoder, widths, words
