"""Deep Zoom (DZI) tiles of a case's stored slides and images, for the viewer.

Routes (all under the case's access rules: another site's case answers 404 like a missing one):

* ``GET /api/cases/{case_id}/files/{file_id}/dzi``: the Deep Zoom descriptor (XML), tiles of
  254 pixels with a 1-pixel overlap in JPEG, as OpenSlide's ``DeepZoomGenerator`` makes them.
* ``GET .../dzi_files/{level}/{col}_{row}.jpeg``: one tile (404 outside the pyramid). The
  address is the one OpenSeadragon derives from the descriptor's URL.
* ``GET .../info``: size, levels and the µm/px of level 0 for the viewer's scale bar.

Tiles come from :func:`shindan.io.open_slide`: an OpenSlide format goes through OpenSlide's
own ``DeepZoomGenerator``; other files (OME-TIFF, plain images) through :class:`DeepZoom`,
the same arithmetic over any :class:`~shindan.io.slide.Slide`. Opened slides are kept in a
small handle cache and encoded tiles in a byte-bounded LRU cache keyed by the file's SHA-256
and the tile address; the content behind a SHA-256 never changes, so tiles carry a strong
ETag and a conditional request answers 304 without decoding anything.

Label and macro images are never served: intake removes them, no route reads associated
images, and a file that still holds one is refused whole.

Overlays (job outputs: compartments, nuclei, heatmaps) will be more tile sources next to the
slide's: :class:`TileSource` is what a route needs of one, and :class:`TileService` caches
any of them by a key that names its content.
"""

import io
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi import Path as FastPath
from PIL import Image
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from shindan.errors import ShindanError
from shindan.service import audit
from shindan.service.intake import store_path
from shindan.service.models import CaseFile, User
from shindan.service.settings import Settings

TILE_SIZE = 254
OVERLAP = 1
FORMAT = "jpeg"
QUALITY = 75  # OpenSlide's deepzoom example server's default
# Deep Zoom levels at most this wide and high are made whole once, and their tiles cut out
SMALL_LEVEL = 1024
# names of associated images that show a patient's label: a file holding one is not served
REFUSED_ASSOCIATED = ("label", "macro")
# the content behind a SHA-256 is fixed: a browser may keep tiles, but asks again (If-None-Match)
# so a share withdrawn is honoured at once; the revalidation costs no decoding
CACHE_CONTROL = "private, no-cache"
DZI_NS = "http://schemas.microsoft.com/deepzoom/2008"

MAX_LEVEL = 64
MAX_TILE = 2**24
Level = Annotated[int, FastPath(ge=0, le=MAX_LEVEL)]
TileIndex = Annotated[int, FastPath(ge=0, le=MAX_TILE)]


class TileSource(Protocol):
    """What a tile route needs of a pyramid (a slide's, later an overlay's)."""

    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_tiles: tuple[tuple[int, int], ...]

    def get_tile(self, level: int, address: tuple[int, int]) -> Image.Image: ...


class DeepZoom:
    """Deep Zoom levels and tiles of any :class:`~shindan.io.slide.Slide`, with the arithmetic
    of ``openslide.deepzoom.DeepZoomGenerator`` (``limit_bounds=False``).

    Deep Zoom level ``L`` of ``n`` halves level 0 ``n - 1 - L`` times (rounding up), down to
    1x1; each tile is read from the finest slide level not finer than needed and resized.

    Parameters
    ----------
    slide : Slide
    tile_size : int
        Tile side without the overlap.
    overlap : int
        Pixels added on each inner side of a tile.

    Examples
    --------
    >>> from shindan.io.slide import ImageSlide
    >>> import numpy as np
    >>> slide = ImageSlide.from_array(np.zeros((300, 600, 3), np.uint8), mpp=0.5)
    >>> dz = DeepZoom(slide)
    >>> dz.level_count, dz.level_dimensions[-1], dz.level_tiles[-1]
    (11, (600, 300), (3, 2))
    >>> dz.get_tile(10, (1, 0)).size  # 254 plus an overlap pixel on each inner side
    (256, 255)
    """

    def __init__(self, slide, tile_size: int = TILE_SIZE, overlap: int = OVERLAP) -> None:
        self._slide = slide
        self._tile = tile_size
        self._overlap = overlap
        size = tuple(slide.dimensions)
        sizes = [size]
        while size[0] > 1 or size[1] > 1:
            size = (max(1, math.ceil(size[0] / 2)), max(1, math.ceil(size[1] / 2)))
            sizes.append(size)
        self.level_dimensions = tuple(reversed(sizes))
        self.level_tiles = tuple(
            (math.ceil(w / tile_size), math.ceil(h / tile_size)) for w, h in self.level_dimensions
        )
        self.level_count = len(self.level_dimensions)
        self._l0_downsample = [2 ** (self.level_count - i - 1) for i in range(self.level_count)]
        self._slide_level = [slide.best_level_for_downsample(d) for d in self._l0_downsample]
        self._l_downsample = [
            self._l0_downsample[i] / slide.level_downsamples[self._slide_level[i]]
            for i in range(self.level_count)
        ]

    def get_tile(self, level: int, address: tuple[int, int]) -> Image.Image:
        """The RGB tile at ``address`` (col, row) of Deep Zoom ``level``.

        Raises
        ------
        ValueError
            The level or address is outside the pyramid.
        """
        if not 0 <= level < self.level_count:
            raise ValueError("Invalid level")
        limits = self.level_tiles[level]
        if not all(0 <= t < n for t, n in zip(address, limits, strict=True)):
            raise ValueError("Invalid address")
        slide_level = self._slide_level[level]
        ds = self._l_downsample[level]
        tl = [self._overlap * int(t != 0) for t in address]
        br = [self._overlap * int(t != n - 1) for t, n in zip(address, limits, strict=True)]
        z_size = tuple(
            min(self._tile, dim - self._tile * t) + a + b
            for t, dim, a, b in zip(address, self.level_dimensions[level], tl, br, strict=True)
        )
        l_loc = [ds * (self._tile * t - a) for t, a in zip(address, tl, strict=True)]
        l0_loc = tuple(int(self._slide.level_downsamples[slide_level] * v) for v in l_loc)
        l_dims = self._slide.level_dimensions[slide_level]
        l_size = tuple(
            int(min(math.ceil(ds * z), lim - math.ceil(v)))
            for v, z, lim in zip(l_loc, z_size, l_dims, strict=True)
        )
        tile = Image.fromarray(self._slide.read_region(l0_loc, slide_level, l_size))
        if tile.size != z_size:
            tile.thumbnail(z_size, Image.Resampling.LANCZOS)
        return tile


class NoTiles(ShindanError):
    """A stored file that cannot be shown as tiles (not an image, or holds a label)."""


class _Opened:
    """One opened file: its slide, its Deep Zoom source and a lock when reads are not
    thread-safe."""

    def __init__(self, slide, source: TileSource, lock: "threading.Lock | None") -> None:
        self.slide = slide
        self.source = source
        self.lock = lock
        # whole small Deep Zoom levels, each made once (see TileService._small_level)
        self.levels: dict[int, Image.Image] = {}
        self.levels_lock = threading.RLock()


def _suffix(name: str) -> str:
    lower = name.lower()
    for double in (".ome.tiff", ".ome.tif"):
        if lower.endswith(double):
            return double
    return PurePosixPath(lower).suffix


class TileService:
    """Open slides (a few at a time) and encoded tiles (up to ``cache_bytes``) of one service.

    Parameters
    ----------
    settings : Settings
        The service's folders: files are read from its content store.
    cache_bytes : int
        Bound of the encoded tile cache.
    handles : int
        How many opened files are kept.
    """

    def __init__(self, settings: Settings, cache_bytes: int = 256 * 2**20, handles: int = 8):
        self.settings = settings
        self.cache_bytes = cache_bytes
        self.handles = handles
        self._opened: OrderedDict[str, _Opened] = OrderedDict()
        self._tiles: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def _link(self, sha256: str, name: str) -> Path:
        # readers choose by file name: give the content its export name's suffix
        links = self.settings.data / "tiles"
        links.mkdir(parents=True, exist_ok=True)
        link = links / f"{sha256}{_suffix(name)}"
        if not link.exists():
            temporary = links / f".{sha256}.{os.getpid()}.{threading.get_ident()}{_suffix(name)}"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(store_path(self.settings, sha256))
            temporary.replace(link)
        return link

    def open(self, sha256: str, name: str) -> _Opened:
        """The opened file with this content (kept for the next request)."""
        with self._lock:
            found = self._opened.get(sha256)
            if found is not None:
                self._opened.move_to_end(sha256)
                return found
            opening = self._opening.setdefault(sha256, threading.Lock())
        with opening:  # one thread opens a file; the others wait for it
            with self._lock:
                if sha256 in self._opened:
                    return self._opened[sha256]
            opened = self._open(sha256, name)
            with self._lock:
                self._opened[sha256] = opened
                self._opening.pop(sha256, None)
                while len(self._opened) > self.handles:
                    self._opened.popitem(last=False)  # closed when the last reader lets go
            return opened

    def _open(self, sha256: str, name: str) -> _Opened:
        from openslide.deepzoom import DeepZoomGenerator

        from shindan.io.slide import OpenSlideSlide, open_slide

        try:
            slide = open_slide(self._link(sha256, name))
        except ShindanError as exc:
            raise NoTiles(f"{PurePosixPath(name).name} has no tiles: {exc}") from None
        held = sorted(set(slide.associated_names) & set(REFUSED_ASSOCIATED))
        if held:
            slide.close()
            raise NoTiles(f"{PurePosixPath(name).name} still holds a {held[0]} image: not served")
        if isinstance(slide, OpenSlideSlide):  # OpenSlide's own tiler; its reads are thread-safe
            source = DeepZoomGenerator(slide._os, TILE_SIZE, OVERLAP, limit_bounds=False)
            return _Opened(slide, source, None)
        lock = None if type(slide).__name__ == "ImageSlide" else threading.Lock()
        return _Opened(slide, DeepZoom(slide), lock)

    def _small_level(self, opened: _Opened, level: int) -> Image.Image:
        """A whole Deep Zoom level of at most SMALL_LEVEL pixels a side, made once: halved
        from the next finer one when that is small too, else read from the slide once.

        Without it every tile of the coarse levels of a slide with few levels reads (and
        resizes) the same large region again: 9 of 13 levels of a one-level 2220x2967 slide.
        """
        with opened.levels_lock:
            found = opened.levels.get(level)
            if found is not None:
                return found
            source, slide = opened.source, opened.slide
            size = source.level_dimensions[level]
            finer = level + 1
            if finer < source.level_count and max(source.level_dimensions[finer]) <= SMALL_LEVEL:
                image = self._small_level(opened, finer).resize(size, Image.Resampling.LANCZOS)
            else:
                downsample = 2 ** (source.level_count - 1 - level)
                slide_level = slide.best_level_for_downsample(downsample)
                whole = slide.level_dimensions[slide_level]
                if opened.lock is not None:
                    with opened.lock:
                        pixels = slide.read_region((0, 0), slide_level, whole)
                else:
                    pixels = slide.read_region((0, 0), slide_level, whole)
                image = Image.fromarray(pixels)
                if image.size != size:
                    image = image.resize(size, Image.Resampling.LANCZOS)
            opened.levels[level] = image
            return image

    def tile(self, sha256: str, name: str, level: int, col: int, row: int) -> bytes | None:
        """The JPEG bytes of a tile, or None when the address is outside the pyramid."""
        key = (sha256, level, col, row)
        with self._lock:
            data = self._tiles.get(key)
            if data is not None:
                self._tiles.move_to_end(key)
                self.hits += 1
                return data
        opened = self.open(sha256, name)
        source = opened.source
        if not (
            level < source.level_count
            and col < source.level_tiles[level][0]
            and row < source.level_tiles[level][1]
        ):
            return None
        if max(source.level_dimensions[level]) <= SMALL_LEVEL:
            image = _crop_tile(self._small_level(opened, level), level, source, col, row)
        elif opened.lock is not None:
            with opened.lock:
                image = source.get_tile(level, (col, row))
        else:
            image = source.get_tile(level, (col, row))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=QUALITY)
        data = buffer.getvalue()
        with self._lock:
            self.misses += 1
            if key not in self._tiles and len(data) <= self.cache_bytes:
                self._tiles[key] = data
                self._bytes += len(data)
                while self._bytes > self.cache_bytes:
                    self._bytes -= len(self._tiles.popitem(last=False)[1])
        return data


def _crop_tile(image: Image.Image, level: int, source: TileSource, col: int, row: int):
    # the tile of DeepZoomGenerator's arithmetic: 254 px plus the overlap on inner sides
    cols, rows = source.level_tiles[level]
    width, height = source.level_dimensions[level]
    left = col * TILE_SIZE - OVERLAP * int(col > 0)
    top = row * TILE_SIZE - OVERLAP * int(row > 0)
    right = min((col + 1) * TILE_SIZE + OVERLAP * int(col < cols - 1), width)
    bottom = min((row + 1) * TILE_SIZE + OVERLAP * int(row < rows - 1), height)
    return image.crop((left, top, right, bottom))


def dzi_xml(width: int, height: int) -> str:
    """The Deep Zoom descriptor of an image of ``width`` x ``height`` pixels.

    Examples
    --------
    >>> print(dzi_xml(600, 300))  # doctest: +NORMALIZE_WHITESPACE
    <?xml version="1.0" encoding="UTF-8"?>
    <Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="jpeg" Overlap="1"
    TileSize="254"><Size Width="600" Height="300"/></Image>
    """
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="{DZI_NS}" Format="{FORMAT}" Overlap="{OVERLAP}" TileSize="{TILE_SIZE}">'
        f'<Size Width="{width}" Height="{height}"/></Image>'
    )


class TileInfo(BaseModel):
    width: int = Field(description="Level-0 width in pixels.")
    height: int
    tile_size: int
    overlap: int
    format: str
    levels: int = Field(description="Number of Deep Zoom levels (the last is level 0).")
    mpp: float | None = Field(description="µm per level-0 pixel, for a scale bar (None: unknown).")
    mpp_source: str | None = Field(description="'file' when the file records it.")
    reader: str = Field(description="The file's format as shindan read it (aperio, png ...).")


def _etag(sha256: str, what: str) -> str:
    return f'"{sha256[:32]}-{what}-{TILE_SIZE}-{OVERLAP}-q{QUALITY}"'


def _not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match", "")
    return etag in [t.strip().removeprefix("W/") for t in wanted.split(",")] or wanted == "*"


def router(
    settings: Settings,
    session_dependency: Callable,
    user_dependency: Callable,
    case_or_404: Callable,
    tiles: TileService | None = None,
) -> APIRouter:
    """The tile routes, with the app's session and user dependencies and its case check.

    Parameters
    ----------
    settings : Settings
    session_dependency, user_dependency : callable
        The app's FastAPI dependencies giving the database session and the caller.
    case_or_404 : callable
        ``(session, user, case_id) -> Case``, raising 404 for a case the caller may not see.
    tiles : TileService, optional
        The caches (a new one by default).
    """
    service = tiles or TileService(settings)
    api = APIRouter(tags=["tiles"])
    SessionDep = Annotated[Session, Depends(session_dependency)]
    UserDep = Annotated[User, Depends(user_dependency)]
    headers = {"Cache-Control": CACHE_CONTROL}

    def case_file(session: Session, user: User, case_id: str, file_id: int) -> CaseFile:
        case = case_or_404(session, user, case_id)
        entry = session.scalar(
            select(CaseFile).where(CaseFile.id == file_id, CaseFile.case_id == case.id)
        )
        if entry is None:
            raise HTTPException(404, f"no file {file_id} in case {case_id}")
        return entry

    def opened(entry: CaseFile):
        try:
            return service.open(entry.sha256, entry.path)
        except NoTiles as exc:
            raise HTTPException(422, str(exc)) from None

    @api.get(
        "/api/cases/{case_id}/files/{file_id}/dzi",
        response_class=Response,
        responses={200: {"content": {"application/xml": {}}}, 304: {"description": "unchanged"}},
    )
    def read_dzi(
        request: Request,
        case_id: str,
        file_id: Annotated[int, FastPath(ge=0, le=2**31 - 1)],
        user: UserDep,
        session: SessionDep,
    ) -> Response:
        """The Deep Zoom descriptor of a stored slide or image (opens the file; audited)."""
        entry = case_file(session, user, case_id, file_id)
        etag = _etag(entry.sha256, "dzi")
        if _not_modified(request, etag):
            return Response(status_code=304, headers={"ETag": etag, **headers})
        width, height = opened(entry).slide.dimensions
        client = request.client.host if request.client else None
        audit.record(session, user, "file.view", f"case:{case_id}", {"file": entry.path}, client)
        session.commit()
        return Response(
            dzi_xml(width, height), media_type="application/xml", headers={"ETag": etag, **headers}
        )

    @api.get("/api/cases/{case_id}/files/{file_id}/info")
    def read_tile_info(
        response: Response,
        case_id: str,
        file_id: Annotated[int, FastPath(ge=0, le=2**31 - 1)],
        user: UserDep,
        session: SessionDep,
    ) -> TileInfo:
        """Size, Deep Zoom levels and µm/px of a stored slide or image (for a scale bar)."""
        entry = case_file(session, user, case_id, file_id)
        found = opened(entry)
        width, height = found.slide.dimensions
        response.headers.update({"ETag": _etag(entry.sha256, "info"), **headers})
        return TileInfo(
            width=width,
            height=height,
            tile_size=TILE_SIZE,
            overlap=OVERLAP,
            format=FORMAT,
            levels=found.source.level_count,
            mpp=found.slide.mpp,
            mpp_source=found.slide.mpp_source,
            reader=found.slide.format,
        )

    @api.get(
        "/api/cases/{case_id}/files/{file_id}/dzi_files/{level}/{col}_{row}.jpeg",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "unchanged"}},
    )
    def read_tile(
        request: Request,
        case_id: str,
        file_id: Annotated[int, FastPath(ge=0, le=2**31 - 1)],
        level: Level,
        col: TileIndex,
        row: TileIndex,
        user: UserDep,
        session: SessionDep,
    ) -> Response:
        """One JPEG tile (404 outside the pyramid). Not audited one by one: the descriptor
        read is (a viewer fetches hundreds of tiles)."""
        entry = case_file(session, user, case_id, file_id)
        session.close()  # release the connection before decoding
        etag = _etag(entry.sha256, f"{level}-{col}-{row}")
        if _not_modified(request, etag):
            return Response(status_code=304, headers={"ETag": etag, **headers})
        try:
            data = service.tile(entry.sha256, entry.path, level, col, row)
        except NoTiles as exc:
            raise HTTPException(422, str(exc)) from None
        if data is None:
            raise HTTPException(404, f"no tile {level}/{col}_{row} in file {file_id}")
        return Response(data, media_type="image/jpeg", headers={"ETag": etag, **headers})

    return api


__all__ = ["DeepZoom", "NoTiles", "TileService", "TileSource", "dzi_xml", "router"]
