"""Deep Zoom tile throughput of ``shindan serve``, through the real server on loopback.

Exports a slide with ``shindan deid``, uploads it to a fresh service (``shindan serve
--workers 0`` in a subprocess), then fetches every tile of every Deep Zoom level with
``--clients`` concurrent HTTP clients: once cold (tile cache empty; the slide is opened by
the descriptor request before timing) and once warm (every tile cached). Prints tiles/s and
p50/p95 latency of each pass. Then the same tiles, as often, from a minimal server built on
openslide-python's ``DeepZoomGenerator`` as its own example (deepzoom_server.py) does: one
generator, ``get_tile`` and JPEG quality 75 per request, no cache, no authentication (served
by uvicorn with Starlette, as Flask is not installed).

    .venv/bin/python bench/service_tiles.py [--slide PATH] [--clients 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SLIDE = ROOT / "../shared/data/slides/CMU-1-Small-Region.svs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_all(base: str, token: str, urls: list[str], clients: int) -> tuple[float, list[float]]:
    """Seconds for all ``urls`` with ``clients`` concurrent clients, and each latency."""
    headers = {"Authorization": f"Bearer {token}"}
    shares = [urls[i::clients] for i in range(clients)]

    def run(share: list[str]) -> list[float]:
        times = []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            for url in share:
                start = time.perf_counter()
                answer = client.get(url)
                times.append(time.perf_counter() - start)
                if answer.status_code != 200:
                    raise RuntimeError(f"{url}: {answer.status_code} {answer.text[:200]}")
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for times in pool.map(run, shares) for t in times]
    return time.perf_counter() - start, latencies


def serve_baseline(slide: Path, port: int) -> None:
    """openslide-python's example Deep Zoom server, reduced to one slide."""
    import io

    import openslide
    import uvicorn
    from openslide.deepzoom import DeepZoomGenerator
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    generator = DeepZoomGenerator(openslide.OpenSlide(str(slide)), 254, 1, limit_bounds=False)

    def dzi(request):
        return Response(generator.get_dzi("jpeg"), media_type="application/xml")

    def tile(request):
        p = request.path_params
        try:
            image = generator.get_tile(int(p["level"]), (int(p["col"]), int(p["row"])))
        except ValueError:
            return Response("not found", status_code=404)
        buffer = io.BytesIO()
        image.save(buffer, "jpeg", quality=75)
        return Response(buffer.getvalue(), media_type="image/jpeg")

    app = Starlette(
        routes=[
            Route("/slide.dzi", dzi),
            Route("/slide_files/{level}/{col}_{row}.jpeg", tile),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def wait_up(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: the server did not start")


def report(name: str, count: int, seconds: float, latencies: list[float]) -> None:
    q = statistics.quantiles(latencies, n=20)
    print(
        f"{name}: {count / seconds:.0f} tiles/s ({seconds:.2f} s), latency p50 "
        f"{statistics.median(latencies) * 1000:.1f} ms, p95 {q[18] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.slide, args.serve_baseline)
        return
    if not args.slide.exists():
        sys.exit(f"error: {args.slide}: no such file (the shared data is absent)")
    from shindan.deid.export import export
    from shindan.service import accounts
    from shindan.service.client import upload_export
    from shindan.service.db import open_service

    tmp = Path(tempfile.mkdtemp(prefix="shindan-tiles-bench-"))
    server = None
    try:
        source = tmp / "in" / "patient-1"
        source.mkdir(parents=True)
        shutil.copy(args.slide, source / args.slide.name)
        out = tmp / "export"
        export([source], out, "BENCH", tmp / "link.bin", tmp / "key", ocr=False, progress=False)
        data = tmp / "svc"
        database = open_service(data)
        with database.session() as session:
            accounts.add_site(session, "bench")
            accounts.add_user(session, "uploader", "bench", "uploader")
            token = accounts.issue_token(session, "uploader")[1]
        database.close()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        shindan = Path(sys.executable).with_name("shindan")
        server = subprocess.Popen(
            [str(shindan), "serve", "--data", str(data), "--port", str(port), "--workers", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_up(f"{base}/api/health")
        upload = upload_export(out, base, token, progress=False)
        assert upload["state"] == "stored", upload
        headers = {"Authorization": f"Bearer {token}"}
        case = httpx.get(f"{base}/api/cases", headers=headers).json()[0]["id"]
        file_id = httpx.get(f"{base}/api/cases/{case}/files", headers=headers).json()[0]["id"]
        prefix = f"/api/cases/{case}/files/{file_id}"
        start = time.perf_counter()
        assert httpx.get(f"{base}{prefix}/dzi", headers=headers).status_code == 200
        first = time.perf_counter() - start
        info = httpx.get(f"{base}{prefix}/info", headers=headers).json()
        urls = []
        width, height = info["width"], info["height"]
        for level in range(info["levels"] - 1, -1, -1):
            scale = 2 ** (info["levels"] - 1 - level)
            w, h = -(-width // scale), -(-height // scale)
            cols, rows = -(-w // info["tile_size"]), -(-h // info["tile_size"])
            urls += [
                f"{prefix}/dzi_files/{level}/{c}_{r}.jpeg" for r in range(rows) for c in range(cols)
            ]
        print(
            f"slide {args.slide.name}: {width}x{height} px, {info['levels']} Deep Zoom levels, "
            f"{len(urls)} tiles, {args.clients} concurrent clients, cores {os.cpu_count()}; "
            f"descriptor (opens the slide) {first * 1000:.0f} ms"
        )
        results = {}
        for name in ("cold", "warm"):
            results[name] = fetch_all(base, token, urls, args.clients)
            report(f"shindan serve, {name}", len(urls), *results[name])
        server.terminate()
        server.wait(timeout=30)
        server = None
        # the baseline: the same tiles of the same slide, twice (it caches nothing)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--slide", str(args.slide), "--serve-baseline", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_up(f"http://127.0.0.1:{port}/slide.dzi")
        plain = [u.replace(f"{prefix}/dzi_files/", "/slide_files/") for u in urls]
        for name in ("first", "second"):
            seconds, latencies = fetch_all(f"http://127.0.0.1:{port}", token, plain, args.clients)
            report(f"DeepZoomGenerator example server, {name} pass", len(urls), seconds, latencies)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
