"""Benchmark the review workstation; prints JSON (a benchmark, not a test).

- Deep Zoom tile latency over HTTP on the demo slide, p50/p95, cold (empty tile cache) and warm;
- page ready: from navigation to the slide and its outlines shown (and to the network going
  idle, every tile of the first view loaded), in headless Chromium;
- save-and-rescore round trip (one edit -> lnpath.review -> new revision -> the page's new state)
  and the live preview (score_findings only) on a result with ~100 glomeruli.

    python scripts/bench_workstation.py [--glomeruli 100] [--rounds 5]

Goals from the issue: tile p95 < 50 ms warm on 2 cores, page ready < 2 s, save < 300 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shapely.geometry import Point

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo_biopsy.tiff"
CHROMIUM = Path("/usr/bin/chromium")


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(p95, 2),
        "n": len(values),
    }


def score(folder: Path, geojson: Path | None) -> Path:
    args = [sys.executable, "-m", "lnpath", "score", str(DEMO), "--out", str(folder)]
    if geojson is not None:
        args += ["--glomeruli", str(geojson)]
    subprocess.run(args, check=True, capture_output=True)
    return folder


def grid_glomeruli(n: int, path: Path) -> Path:
    """``n`` round outlines (~150 µm across) on a grid over the demo slide."""
    from lnpath.io.qupath import QuPathFeature, write_qupath

    width, height, radius = 13696, 3584, 150
    cols = max(1, round((n * width / height) ** 0.5))
    rows = -(-n // cols)
    features = [
        QuPathFeature(
            geometry=Point((c + 0.5) * width / cols, (r + 0.5) * height / rows).buffer(radius),
            classification="Glomerulus",
        )
        for r in range(rows)
        for c in range(cols)
    ][:n]
    return write_qupath(features, path)


def get(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    conn.request("GET", path, headers={"X-Lnpath-Token": token})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status}")
    return (time.perf_counter() - start) * 1000, body


def post(conn: http.client.HTTPConnection, path: str, token: str, body: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"X-Lnpath-Token": token, "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    data = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status}: {data}")
    return (time.perf_counter() - start) * 1000, data


def bench_tiles(result: Path) -> dict[str, Any]:
    from lnpath.workstation import Workstation

    with Workstation([result]) as ws:
        conn = http.client.HTTPConnection(ws.host, ws.port)
        tiles = ws.sessions[0].tiles
        levels = range(tiles.level_count - 4, tiles.level_count)  # the levels a viewer shows
        paths = []
        for level in levels:
            cols, rows = tiles.level_tiles[level]
            paths += [
                f"/api/r/0/slide_files/{level}/{c}_{r}.jpeg"
                for c in range(cols)
                for r in range(rows)
            ]
        paths = paths[:400]
        tiles.clear_cache()
        cold = [get(conn, p, ws.token)[0] for p in paths]
        warm = [get(conn, p, ws.token)[0] for p in paths]
    return {"levels": list(levels), "cold": percentiles(cold), "warm": percentiles(warm)}


def bench_page(result: Path, rounds: int) -> dict[str, Any] | str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: pip install playwright"
    if not CHROMIUM.is_file():
        return "skipped: apt-get install chromium"
    from lnpath.workstation import Workstation

    ready, idle = [], []
    with Workstation([result]) as ws, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        for _ in range(rounds):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            start = time.perf_counter()
            page.goto(ws.url)
            page.wait_for_selector("body[data-ready=true]")
            page.wait_for_selector("#overlay path")
            ready.append((time.perf_counter() - start) * 1000)
            page.wait_for_load_state("networkidle")
            idle.append((time.perf_counter() - start) * 1000)
            context.close()
        browser.close()
    return {"ready": percentiles(ready), "all_tiles_loaded": percentiles(idle)}


def bench_save(result: Path, rounds: int) -> dict[str, Any]:
    from lnpath.workstation import Workstation

    with Workstation([result]) as ws:
        conn = http.client.HTTPConnection(ws.host, ws.port)
        _, state = get(conn, "/api/r/0/state", ws.token)
        state = json.loads(state)
        n = len(state["glomeruli"])
        gid = state["glomeruli"][0]["id"]
        saves, previews = [], []
        for i in range(rounds):
            body = {
                "base_revision": state["revision"],
                "pathologist": "bench",
                "glomeruli": {str(gid): {"cellular_crescent": i % 2 == 0}},
            }
            previews.append(post(conn, "/api/r/0/preview", ws.token, body)[0])
            elapsed, state = post(conn, "/api/r/0/save", ws.token, body)
            saves.append(elapsed)
    return {
        "glomeruli": n,
        "save_and_rescore": percentiles(saves),
        "preview": percentiles(previews),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glomeruli", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo = score(root / "demo", REPO / "examples" / "demo_biopsy_glomeruli.geojson")
        many = score(root / "many", grid_glomeruli(args.glomeruli, root / "grid.geojson"))
        out = {
            "slide": DEMO.name,
            "tiles": bench_tiles(demo),
            "page": bench_page(demo, args.rounds),
            "save": bench_save(many, args.rounds),
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
