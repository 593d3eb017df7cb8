"""Peak memory of ``wsol predict`` on generated 10,000² and 50,000² pyramidal TIFFs.

Generates the slides (0.25 µm/px, 25% tissue in islands across the whole slide) and a
resnet18 checkpoint trained-for-0.5-µm/px (untrained weights: memory and speed do not
depend on them), then runs ``wsol predict`` on each slide in a fresh process, several
times, and reports the peak resident set size (ru_maxrss) of each run.

    .venv/bin/python docs/scripts/slide_memory.py --work /tmp/wsol-scale \
        --json docs/slide_memory.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = (10_000, 50_000)
LAUNCH = (
    "import resource, subprocess, sys; "
    "rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of ``command``, run as the only child of a launcher."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", LAUNCH, *command], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/wsol-scale"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", default="cam,gradcam")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    wsol = str(Path(sys.executable).with_name("wsol"))
    checkpoint = args.work / "resnet18-mpp0.5.safetensors"
    if not checkpoint.exists():
        subprocess.run(
            [wsol, "create-model", str(checkpoint), "--mpp", "0.5"], check=True, capture_output=True
        )
    from wsol.synthetic import write_synthetic_slide

    slides = {}
    for size in SIZES:
        path = args.work / f"synthetic-{size}.ome.tif"
        if not path.exists():
            write_synthetic_slide(path, size, tissue_fraction=0.25)
        slides[size] = path
    runs: dict[int, list[dict]] = {size: [] for size in SIZES}
    for r in range(args.repeats):
        for size, path in slides.items():
            command = [
                wsol,
                "predict",
                str(path),
                "--checkpoint",
                str(checkpoint),
                "--methods",
                args.methods,
                "--out",
                str(args.work / "out"),
                "--restart",
            ]
            rss, seconds = peak_rss_mb(command)
            store = args.work / "out" / f"synthetic-{size}.zarr"
            tiles = json.loads((store / ".zattrs").read_text())["wsol"]["grid"]
            runs[size].append({"peak_rss_mb": rss, "seconds": seconds})
            print(
                f"round {r}: {size}²: peak RSS {rss:.0f} MB, {seconds:.0f} s "
                f"({tiles['rows']}x{tiles['cols']} grid)",
                flush=True,
            )
    report = {
        "command": f"wsol predict SLIDE --checkpoint {checkpoint.name} --methods {args.methods}",
        "runs": {str(k): v for k, v in runs.items()},
        "median_peak_rss_mb": {
            str(k): statistics.median(x["peak_rss_mb"] for x in v) for k, v in runs.items()
        },
    }
    small, large = (report["median_peak_rss_mb"][str(s)] for s in SIZES)
    report["large_over_small"] = large / small
    print(json.dumps(report["median_peak_rss_mb"]), f"ratio {large / small:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
