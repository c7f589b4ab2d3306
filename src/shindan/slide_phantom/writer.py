"""Write a phantom as a tiled, JPEG-compressed pyramidal TIFF (OpenSlide "generic-tiff")."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shindan.errors import InputError
from shindan.slide_phantom.render import render
from shindan.slide_phantom.scene import PhantomScene, make_scene


def pyramid_levels(width: int, height: int, smallest: int = 1024) -> list[tuple[int, int]]:
    """Level sizes halving from (width, height) until the larger side is below ``smallest``."""
    levels = [(width, height)]
    while max(levels[-1]) >= smallest:
        k = len(levels)
        levels.append((math.ceil(width / 2**k), math.ceil(height / 2**k)))
    return levels


def _tiles(
    scene: PhantomScene, level: int, size: tuple[int, int], tile: int, advance
) -> Iterator[np.ndarray]:
    ds = float(2**level)
    w, h = size
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            box = (int(tx * ds), int(ty * ds), int(tile * ds), int(tile * ds))
            yield render(scene, box, ds, rgb=True)["rgb"]
            advance()


def write_phantom(
    out: Path | str,
    width: int,
    height: int,
    mpp: float = 0.5,
    *,
    tile: int = 512,
    quality: int = 90,
    progress: bool = True,
    **scene_kwargs: Any,
) -> PhantomScene:
    """Render a phantom slide to a pyramidal tiled TIFF, streaming (memory flat in size).

    Parameters
    ----------
    out : Path
        Output file (``.tif``/``.tiff``); written to a temporary name and renamed when done.
    width, height : int
        Level-0 size in pixels.
    mpp : float
        µm per level-0 pixel, stored as the TIFF resolution (pixels per centimetre).
    tile : int
        Tile edge in pixels (a multiple of 16).
    quality : int
        JPEG quality, 1-100.
    progress : bool
        Show a progress bar on stderr.
    **scene_kwargs
        Passed to :func:`shindan.slide_phantom.make_scene` (fibrosis, inflammation, stain, seed...).

    Returns
    -------
    PhantomScene
        The scene that was rendered (use it with :func:`shindan.slide_phantom.truth`).
    """
    import tifffile
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    out = Path(out)
    if tile % 16 or tile <= 0:
        raise InputError(f"tile must be a positive multiple of 16, got {tile}")
    if not 1 <= quality <= 100:
        raise InputError(f"quality must be in 1..100, got {quality}")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: output folder does not exist")
    scene = make_scene(width, height, mpp, **scene_kwargs)
    levels = pyramid_levels(scene.width, scene.height)
    n_tiles = sum(math.ceil(w / tile) * math.ceil(h / tile) for w, h in levels)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    bigtiff = scene.width * scene.height * 3 > 2**31
    res = (1e4 / scene.mpp, 1e4 / scene.mpp)  # pixels per centimetre
    bar = Progress(
        TextColumn("phantom"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
        transient=True,
    )
    try:
        with bar, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            task = bar.add_task("tiles", total=n_tiles)

            def advance() -> None:
                bar.advance(task)

            for k, (w, h) in enumerate(levels):
                ds = 2**k
                tw.write(
                    _tiles(scene, k, (w, h), tile, advance),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": quality},
                    subfiletype=0 if k == 0 else 1,
                    resolution=(res[0] / ds, res[1] / ds),
                    resolutionunit="CENTIMETER",
                    description=f"shindan phantom seed={scene.seed} mpp={scene.mpp}"
                    if k == 0
                    else None,
                    metadata=None,
                )
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{out}: cannot write phantom ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return scene
