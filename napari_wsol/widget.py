"""The WSOL dock widget: pick a model, an image layer and methods; maps become layers.

Computation runs in a napari worker thread, one method per step, so the viewer never
blocks and Cancel takes effect between methods.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, Select
from napari.qt.threading import create_worker
from qtpy.QtWidgets import QVBoxLayout, QWidget

from wsol.cams import METHODS

if TYPE_CHECKING:
    import napari

PREDICTED = "predicted class"


class WSOLWidget(QWidget):
    """Dock widget computing CAM-family and head maps for an image layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._model = None
        self._model_key: object = ()
        self.worker = None

        self.checkpoint = FileEdit(
            label="checkpoint",
            mode="r",
            filter="*.safetensors",
            value="",
            tooltip="A napari-wsol .safetensors checkpoint. "
            "Empty: an untrained resnet18 demo model.",
        )
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.methods = Select(label="methods", choices=list(METHODS), value=["gradcam"])
        self.target = ComboBox(label="explain", choices=[PREDICTED], value=PREDICTED)
        self.run_button = PushButton(text="Compute maps")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.form = Container(
            widgets=[
                self.checkpoint,
                self.image,
                self.methods,
                self.target,
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        layout = QVBoxLayout()
        layout.addWidget(self.form.native)
        layout.addStretch()
        self.setLayout(layout)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.checkpoint.changed.connect(self._forget_model)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()

    def _refresh_images(self, _event: object = None) -> None:
        self.image.reset_choices()
        if self.image.value is None and self.image.choices[1:]:
            active = self.viewer.layers.selection.active
            choices = [c for c in self.image.choices if c is not None]
            self.image.value = active if active in choices else choices[0]

    def _image_layers(self, _widget: object = None) -> list:
        """Image layers to explain; the maps this widget made are not offered."""
        from napari.layers import Image

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and "wsol_method" not in layer.metadata
        ]

    def _forget_model(self) -> None:
        self._model, self._model_key = None, ()
        self.target.choices = [PREDICTED]

    def _checkpoint_path(self) -> Path | None:
        value = str(self.checkpoint.value or "").strip()
        return None if value in ("", ".") else Path(value)

    def run(self) -> None:
        """Start computing the selected methods for the selected image layer."""
        layer = self.image.value
        methods = list(self.methods.value)
        if layer is None or not methods:
            self.status.value = "Choose an image layer and at least one method."
            return
        pixels, factor = _rgb_pixels(layer)
        target = self.target.value
        self.worker = create_worker(
            self._compute,
            pixels,
            methods,
            target,
            self._checkpoint_path(),
            _progress={"total": len(methods) + 1, "desc": "WSOL maps"},
            _connect={
                "yielded": lambda item: self._show(layer, factor, item),
                "errored": self._failed,  # shown in the widget instead of re-raised
                "finished": self._done,
            },
            _start_thread=False,
        )
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "Computing..."
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "Cancelling after the current method..."

    def _compute(
        self, pixels: np.ndarray, methods: list[str], target: str, checkpoint: Path | None
    ) -> Generator[tuple[str, object], None, None]:
        from wsol.demo import demo_model
        from wsol.infer_image import image_maps

        if self._model is None or self._model_key != checkpoint:
            self._model, _ = demo_model(checkpoint)
            self._model_key = checkpoint
        model = self._model
        yield "model", model
        names = model.config.class_names
        target_index = names.index(target) if target in names else None
        for method in methods:
            result = image_maps(model, pixels, [method], target_index)
            yield method, result

    def _show(self, layer: napari.layers.Image, factor: float, item: tuple[str, object]) -> None:
        name, payload = item
        if name == "model":
            names = list(payload.config.class_names)  # type: ignore[attr-defined]
            if list(self.target.choices)[1:] != names:
                current = self.target.value
                self.target.choices = [PREDICTED, *names]
                self.target.value = current if current in names else PREDICTED
            return
        heatmap = payload.maps[name]  # type: ignore[attr-defined]
        probs = payload.probabilities  # type: ignore[attr-defined]
        names = self.target.choices[1:]
        self.status.value = "  ".join(f"{n}: {p:.2f}" for n, p in zip(names, probs, strict=True))
        layer_name = f"{name}"
        if layer_name in self.viewer.layers:
            self.viewer.layers[layer_name].data = heatmap
        else:
            self.viewer.add_image(
                heatmap,
                name=layer_name,
                colormap="inferno",
                opacity=0.5,
                blending="translucent",
                contrast_limits=(0.0, 1.0),
                scale=np.asarray(layer.scale[:2]) * factor,
                translate=layer.translate[:2],
                units=layer.units[:2],
                metadata={"wsol_method": name, "source_layer": layer.name},
            )

    def _failed(self, exc: Exception) -> None:
        self.status.value = f"Error: {exc}"

    def _done(self) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if self.status.value in ("Computing...", "Cancelling after the current method..."):
            self.status.value = (
                "Cancelled." if self.worker and self.worker.abort_requested else "Done."
            )
        self.worker = None


def _rgb_pixels(layer: napari.layers.Image) -> tuple[np.ndarray, float]:
    """The layer's pixels as RGB ``uint8 [H, W, 3]`` and their downsample factor.

    For a pyramid, the lowest-resolution level (the whole-slide tiled path is
    ``wsol.infer``'s job, not this preview's).
    """
    data = layer.data[-1] if layer.multiscale else layer.data
    factor = layer.data[0].shape[0] / data.shape[0] if layer.multiscale else 1.0
    array = np.asarray(data)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        lo, hi = layer.contrast_limits
        array = np.clip((array.astype(np.float32) - lo) / max(hi - lo, 1e-12) * 255, 0, 255)
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array), factor
