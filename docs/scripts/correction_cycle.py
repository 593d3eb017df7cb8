"""How long the app's correction cycle takes: a fine-tuning round, then fresh overlays.

Opens the sample slide in napari with the WSOL widget (the demo's defaults: the sample
model, the whole view), computes the maps, makes pseudo-labels for the view, and then,
``--rounds`` times, paints ten foreground and ten background disks on the corrections
layer and clicks "Fine-tune heads"; the app then recomputes the view's overlays with the
new heads. For each round it prints the time from the click until the round's version
is saved, the time of the overlays' refresh that follows, and, inside them, the engine's
fine-tuning call (``wsol.region.fine_tune``) and its map computation
(``wsol.infer.infer_slide``).

    xvfb-run -a .venv/bin/python docs/scripts/correction_cycle.py --rounds 3

Run it alone: the figures are wall-clock times on a shared machine. To compare with
other code, run it from a worktree (``PYTHONPATH=/tmp/base/src:/tmp/base``) in
alternation with this one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-cycle-"))

    import napari
    from qtpy.QtWidgets import QApplication

    import wsol.infer
    import wsol.region

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-wsol", "cmu_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    viewer.window.resize(1600, 1000)
    QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()

    engine: dict[str, list[float]] = {"fine_tune": [], "infer_slide": []}

    def timed(module, name: str):
        call = getattr(module, name)

        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return call(*a, **k)
            finally:
                engine[name].append(time.perf_counter() - started)

        setattr(module, name, wrapper)

    timed(wsol.region, "fine_tune")  # the job imports it from wsol.region when it runs
    timed(wsol.infer, "infer_slide")

    def wait(done=lambda: widget.worker is None) -> None:
        while not done():
            QApplication.processEvents()
            time.sleep(0.001)

    started = time.perf_counter()
    widget.run()
    wait()
    print(f"maps of the view: {time.perf_counter() - started:.2f} s; {widget.status.value}")
    widget.make_pseudo_labels()
    wait()
    print(widget.status.value)

    marks: dict = {"saved": None, "status": ""}
    train_done = widget._train_done

    def recorded(payload) -> None:
        train_done(payload)
        marks["saved"], marks["status"] = time.perf_counter(), widget.status.value

    widget._train_done = recorded  # looked up when the round starts
    layer = viewer.layers["corrections"]
    rng = np.random.default_rng(0)
    rounds = []
    for r in range(args.rounds):
        data = np.asarray(layer.data)
        h, w = data.shape
        yy, xx = np.mgrid[0:h, 0:w]
        for value in (1, 2) * 10:  # background, foreground: 20 disks of radius 6
            y, x = int(rng.integers(6, h - 6)), int(rng.integers(6, w - 6))
            data[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = value
        layer.data = data
        QApplication.processEvents()
        engine["fine_tune"].clear()
        engine["infer_slide"].clear()
        clicked = time.perf_counter()
        widget.fine_tune()
        # The round's version is saved and the overlays' refresh queued in one turn.
        wait(lambda: marks["saved"] is not None)
        wait(lambda: widget.worker is None and widget._then is None)
        refreshed, saved = time.perf_counter(), marks["saved"]
        round_status, marks["saved"] = marks["status"], None
        rounds.append(
            {
                "round_s": round(saved - clicked, 2),
                "refresh_s": round(refreshed - saved, 2),
                "cycle_s": round(refreshed - clicked, 2),
                "fine_tune_call_s": round(sum(engine["fine_tune"]), 2),
                "infer_slide_call_s": round(sum(engine["infer_slide"]), 2),
                "status": round_status,
                # rounds so far that took over the round before's features and maps
                "reused": dict(getattr(getattr(widget, "_round_cache", None), "hits", {})),
            }
        )
        print(f"round {r + 1}: {rounds[-1]}", flush=True)
    summary = {
        key: round(statistics.median(x[key] for x in rounds[1:] or rounds), 2)
        for key in ("round_s", "refresh_s", "cycle_s", "fine_tune_call_s", "infer_slide_call_s")
    }
    print("median of rounds 2 on:", summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, "median_after_first": summary}, f, indent=1)
    viewer.close()


if __name__ == "__main__":
    main()
