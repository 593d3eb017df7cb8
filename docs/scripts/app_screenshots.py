"""Screenshots of the real rendered app for the README and docs/.

    xvfb-run -a .venv/bin/python docs/scripts/app_screenshots.py docs/

Writes ``app_overlays.png`` (the sample slide with CAM, F-CAM and PixelCAM side by
side, and the whole window), ``app_threshold.png`` (F-CAM mask at Otsu's threshold)
and ``app_labels.png`` (the pseudo-label editor after a click-to-flip and a stroke).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _label(rgb: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 12 + 8 * len(text), 22), fill=(0, 0, 0))
    draw.text((6, 5), text, fill=(255, 255, 255))
    return np.asarray(img)


def main(out: Path) -> None:
    os.environ.setdefault("WSOL_SESSIONS", tempfile.mkdtemp(prefix="wsol-shots-"))
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    (image,) = viewer.open_sample("napari-wsol", "cmu_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-wsol", "WSOL")
    QApplication.processEvents()
    viewer.reset_view()

    def wait() -> None:
        # The job, then the widget's queued steps (it repaints new layers a turn later).
        while widget.worker is not None or widget._turns:
            QApplication.processEvents()
            time.sleep(0.01)
        QApplication.processEvents()

    widget.run()
    wait()
    maps = ["cam", "fcam", "pixelcam"]
    for layer in viewer.layers:
        layer.visible = layer.name in (image.name, "fcam")
    window = viewer.screenshot(canvas_only=False)
    panels = []
    for method in maps:
        for layer in viewer.layers:
            layer.visible = layer.name in (image.name, method)
        QApplication.processEvents()
        shot = viewer.screenshot(canvas_only=True)[..., :3]
        panels.append(_label(shot, method))
    strip = np.concatenate(panels, axis=1)
    Image.fromarray(strip).save(out / "app_overlays.png")
    Image.fromarray(window[..., :3]).save(out / "app_window.png")

    widget.tabs.setCurrentIndex(1)
    widget.thr_method.value = "fcam"
    widget.otsu()
    for layer in viewer.layers:
        layer.visible = layer.name in (image.name, "fcam mask")
    wait()
    Image.fromarray(viewer.screenshot(canvas_only=False)[..., :3]).save(out / "app_threshold.png")

    widget.tabs.setCurrentIndex(2)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 2.5
    widget.make_pseudo_labels()
    wait()
    for layer in viewer.layers:
        layer.visible = layer.name in (image.name, "pseudo-labels", "corrections")
    corrections = viewer.layers["corrections"]
    pseudo = viewer.layers["pseudo-labels"].data
    fg = np.argwhere(pseudo == 2)
    if len(fg):
        widget.flip_at(*fg[len(fg) // 2])
    with corrections.block_history():
        for k in range(40):
            corrections.paint((pseudo.shape[0] // 2 + k, pseudo.shape[1] // 3 + k), 2)
    wait()
    Image.fromarray(viewer.screenshot(canvas_only=False)[..., :3]).save(out / "app_labels.png")
    viewer.close()
    print(
        "wrote",
        *(
            out / n
            for n in ("app_overlays.png", "app_window.png", "app_threshold.png", "app_labels.png")
        ),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
