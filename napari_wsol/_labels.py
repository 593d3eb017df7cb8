"""The Labels and Train tabs: pseudo-labels, corrections, click-to-flip, fine-tuning.

A mixin of :class:`napari_wsol.widget.WSOLWidget`; corrections are written to the
session folder after every change, fine-tuning rounds become model versions.
"""

from __future__ import annotations

import copy
import time

import numpy as np
from qtpy.QtCore import QTimer

from napari_wsol import layers as L
from napari_wsol.jobs import stream
from wsol.errors import InputError
from wsol.region import (
    PaintedLabels,
    Region,
    analysis_downsample,
    check_editable,
    clip_region,
    effective_labels,
    flip_component,
)

PSEUDO_LAYER = "pseudo-labels"
CORRECTIONS_LAYER = "corrections"


class LabelsMixin:
    # ================================================================ labels
    def _edit_region(self) -> Region:
        layer = self._source()
        slide = self._slide(layer)
        scope = self.scope.value if self.scope.value != "whole slide" else "current view"
        _, box = self._scope_box(layer, scope)
        model_ds = self._analysis_downsample(slide)
        region = clip_region(slide, *box.box, downsample=model_ds, multiple=32)
        return check_editable(region)

    def _analysis_downsample(self, slide) -> float:
        return analysis_downsample(slide, self._model_mpp())

    def make_pseudo_labels(self, region: Region | None = None) -> None:
        """Pseudo-labels of ``region``, by default the view (or drawn region), at the
        model's resolution; the region's saved corrections come with them."""
        if self._refuse_if_busy():
            return
        try:
            layer = self._source()
            region = region or self._edit_region()
        except InputError as exc:
            self.status.value = str(exc)
            return
        self._follow_image(layer)
        slide = self._slide(layer)
        method = self.seed_method.value
        bg, erode = float(self.bg_fraction.value), int(self.erode.value)
        target_name = self.target.value
        session = self.session

        stop = self._stop

        def job():
            from wsol.region import pseudo_labels, read_region_rgb, seed_map

            yield ("read", 0, 3)
            rgb = read_region_rgb(slide, region)
            if stop.is_set():
                return None
            yield ("map", 1, 3)
            model = self._model_for_job()
            names = list(model.config.class_names)
            target = names.index(target_name) if target_name in names else 1
            heat = seed_map(model, rgb, method, target)
            if stop.is_set():
                return None
            yield ("labels", 2, 3)
            pseudo = pseudo_labels(heat, bg, erode)
            session.save_labels(region, "pseudo", pseudo)
            return region, rgb, pseudo, session.load_labels(region, "corrections")

        self._edit_layer = layer
        self._start(job, "Pseudo-labels", self._steps_progress, self._pseudo_done, total=3)

    def _steps_progress(self, report) -> None:
        _, done, total = report
        self._set_progress(done, total)

    def _pseudo_done(self, result) -> None:
        if result is None:
            shown = PSEUDO_LAYER in self.viewer.layers
            self.status.value = "Pseudo-labels cancelled" + (
                "; the labels shown are unchanged." if shown else "."
            )
            return
        region, rgb, pseudo, corrections = result
        self._show_labels(self._edit_layer, region, pseudo, corrections, rgb, spread=True)
        self.status.value = (
            f"Pseudo-labels of {region.shape[1]} x {region.shape[0]} px: "
            f"{(pseudo == 2).mean():.0%} fg, {(pseudo == 1).mean():.0%} bg, rest ignored."
        )

    def _show_labels(
        self, layer, region, pseudo, corrections, rgb=None, spread: bool = False
    ) -> None:
        """Show pseudo-labels and corrections; with ``spread``, each layer on its own turn."""
        self._edit_layer = layer
        place = L.Placement.of(layer)
        grid = place.grid(region.downsample, region.y, region.x)
        meta = {"slide_mpp": place.slide_mpp, "label_names": L.LABEL_NAMES}
        if corrections is None:
            corrections = np.zeros(region.shape, np.uint8)
            self.session.save_labels(region, "corrections", corrections)
        edit = {"region": region, "pseudo": pseudo, "rgb": rgb}
        run = self._stepper(spread)
        run(self._show_pseudo_layer, pseudo, grid, meta)
        run(self._show_corrections_layer, edit, corrections, grid, meta)

    def _show_pseudo_layer(self, pseudo, grid: dict, meta: dict) -> None:
        # Layers are made once and then given new data: creating a layer costs the GUI
        # thread far more than replacing its pixels.
        if PSEUDO_LAYER in self.viewer.layers:
            self._replace(self.viewer.layers[PSEUDO_LAYER], pseudo, grid, meta)
            return
        layer = L.labels_layer(pseudo, PSEUDO_LAYER, 0.35, L.PSEUDO_COLORS, meta, grid)
        layer.editable = False
        self._add_layer(layer)

    def _show_corrections_layer(self, edit: dict, corrections, grid: dict, meta: dict) -> None:
        # The edited region changes in the same turn as the layer's pixels, so a save
        # of the corrections never writes one region's strokes under another's name.
        self._edit = edit
        self.session.state.edit_region = edit["region"].to_dict()
        self._saved_corrections = corrections.copy()
        self._save_session()
        self._later(self._masks_follow_corrections)
        if CORRECTIONS_LAYER in self.viewer.layers:
            painted = self.viewer.layers[CORRECTIONS_LAYER]
            self._replace(painted, corrections, grid, meta)
            self._start_editing(painted)
            return
        painted = L.labels_layer(
            corrections, CORRECTIONS_LAYER, 0.8, L.CORRECTION_COLORS, meta, grid
        )
        painted.selected_label = 2
        painted.brush_size = 8
        painted.events.paint.connect(self._corrections_edited)
        painted.events.set_data.connect(self._corrections_edited)  # undo / redo
        painted.mouse_drag_callbacks.append(self._flip_click)
        self._add_layer(painted, then=self._start_editing)

    def _start_editing(self, painted) -> None:
        self.viewer.layers.selection.active = painted
        painted.mode = "pan_zoom" if self.flip.value else "paint"

    def _replace(self, layer, data, grid: dict, meta: dict) -> None:
        self._pause_canvases()
        layer.data = data
        L.place(layer, grid)
        layer.metadata.update(meta)

    def _corrections_edited(self, _event: object = None) -> None:
        """Write the corrections as soon as they change (a crash loses nothing).

        A brush or fill stroke announces itself once its pixels are written; a single
        ``data_setitem`` or programmatic ``paint`` announces itself just *before*
        writing, so the save is repeated once the event loop turns.
        """
        self._save_corrections()
        QTimer.singleShot(0, self._save_corrections)

    def _save_corrections(self) -> None:
        if self._edit is None or CORRECTIONS_LAYER not in self.viewer.layers:
            return
        data = np.asarray(self.viewer.layers[CORRECTIONS_LAYER].data)
        if self._saved_corrections is not None and np.array_equal(data, self._saved_corrections):
            return
        if data.max(initial=0) > 2:
            self.status.value = "Corrections use labels 1 (background) and 2 (foreground) only."
        region, labels = self._edit["region"], np.minimum(data, 2)
        path = self.session.save_labels(region, "corrections", labels)
        self._saved_corrections = data.copy()
        # What was just written, without reading the file back (:meth:`_painted_file`).
        painted = PaintedLabels(labels, region)
        self._painted_files[path] = ((path.stat().st_mtime_ns, None), painted, painted)
        # On a turn of its own: the stroke's frame first, then the masks' refresh.
        self._later(self._masks_follow_corrections)

    def _flip_toggled(self) -> None:
        if CORRECTIONS_LAYER in self.viewer.layers:
            layer = self.viewer.layers[CORRECTIONS_LAYER]
            layer.mode = "pan_zoom" if self.flip.value else "paint"
            self.viewer.layers.selection.active = layer

    def _flip_click(self, layer, event) -> None:
        if not self.flip.value or layer.mode != "pan_zoom" or self._edit is None:
            return
        row, col = (round(float(v)) for v in layer.world_to_data(event.position)[-2:])
        self.flip_at(row, col)

    def flip_at(self, row: int, col: int) -> bool:
        """Swap fg/bg of the connected region at ``(row, col)`` (corrections grid)."""
        layer = self.viewer.layers[CORRECTIONS_LAYER]
        labels = effective_labels(self._edit["pseudo"], np.asarray(layer.data))
        found = flip_component(labels, row, col)
        if found is None:
            self.status.value = "Nothing to flip there (pixel not labelled)."
            return False
        indices, value = found
        layer.data_setitem(indices, value)  # one undoable step
        self._save_corrections()
        self.status.value = (
            f"Flipped {len(indices[0])} px to {L.LABEL_NAMES[value]} (Ctrl+Z undoes)."
        )
        return True

    def _seeder_changed(self) -> None:
        self.session.state.seeder = {
            "method": self.seed_method.value,
            "bg_fraction": float(self.bg_fraction.value),
            "erode": int(self.erode.value),
            "seeds_per_class": int(self.seeds.value),
        }
        self._save_session()

    def _tune_changed(self) -> None:
        self.session.state.fine_tune = {
            **self.session.state.fine_tune,
            "heads": list(self.heads.value),
            "steps": int(self.steps.value),
            "seconds": float(self.seconds.value),
            "lr": float(self.lr.value),
            "guide": bool(self.guide.value),
        }
        self._save_session()

    # ================================================================ fine-tuning
    def fine_tune(self) -> None:
        """One round of the ``heads`` stage on the labelled region, then fresh overlays."""
        from wsol.train import TrainConfig

        if self._edit is None or CORRECTIONS_LAYER not in self.viewer.layers:
            self.status.value = "Make pseudo-labels first (Labels tab)."
            return
        heads = tuple(self.heads.value)
        if not heads:
            self.status.value = "Choose the heads to fine-tune."
            return
        self._save_corrections()
        corrections = np.minimum(np.asarray(self.viewer.layers[CORRECTIONS_LAYER].data), 2)
        tune = self.session.state.fine_tune
        config = TrainConfig(
            steps=int(self.steps.value),
            heads_seconds=float(self.seconds.value) or None,
            batch_size=1,
            heads=heads,
            lr=float(self.lr.value),
            keep_weight=float(tune["keep_weight"]),
            keep_fg=float(tune["keep_fg"]),
            heads_crop=int(tune["crop"]),
            cpu_precision=str(tune["precision"]),
            cam_method=self.seed_method.value,
            bg_fraction=float(self.bg_fraction.value),
            erode=int(self.erode.value),
            seeds_per_class=int(self.seeds.value),
        )
        guide = bool(self.guide.value)
        if guide and not (corrections > 0).any():
            self.status.value = "Guiding the CAM needs corrections: paint some pixels first."
            return
        edit = self._edit
        slide = self._slide(self._edit_layer)  # the labelled image, whichever is chosen now
        target_name = self.target.value
        session = self.session
        cache = self._round_cache

        def job():
            from wsol.region import fine_tune, read_region_rgb

            rgb = edit["rgb"] if edit["rgb"] is not None else read_region_rgb(slide, edit["region"])
            edit["rgb"] = rgb
            model = copy.deepcopy(self._model_for_job())
            names = list(model.config.class_names)
            target = names.index(target_name) if target_name in names else 1
            started = time.perf_counter()
            result = yield from stream(
                fine_tune,
                self._stop,
                model,
                rgb,
                target,
                corrections,
                config,
                guide=guide,
                cache=cache,
            )
            seconds = time.perf_counter() - started  # encoding included, unlike result's
            saved = None
            if not result.cancelled:  # written here: a 12 MB save would stall the viewer
                saved = model.save(session.next_version_path())
            return model, result, saved, seconds

        what = "Fine-tuning heads + guiding the CAM" if guide else "Fine-tuning heads"
        total = config.steps * (2 if guide else 1)
        self._start(job, what, self._train_progress, self._train_done, total=total)

    def _train_progress(self, report) -> None:
        (p,) = report
        if p.stage == "guided":  # one step per epoch, as many as the heads round took
            self._set_progress(p.epochs + p.epoch, 2 * p.epochs)
            step, steps = p.epoch, p.epochs
        else:  # under a time limit p.steps is what the time left allows, not the cap
            self._set_progress(p.step, p.steps * (2 if self.guide.value else 1))
            step, steps = p.step, p.steps
        terms = ", ".join(f"{k} {v:.3f}" for k, v in p.losses.items())
        self.train_info.value = f"{p.stage} step {step}/{steps}: {terms}"

    def _train_done(self, payload) -> None:
        model, result, saved, seconds = payload
        if result.cancelled:
            self.status.value = "Fine-tuning cancelled; the model version is unchanged."
            return
        path = self.session.add_version(path=saved)
        self._model, self._model_source = model, path
        self._refresh_versions()
        # A round ends on the checked step that fit the whole region best, not always
        # on its last (wsol.train.TrainConfig.heads_check_every).
        kept = "" if result.kept_step is None else f"; weights of step {result.kept_step}"
        steps = f"{result.steps_done} steps"
        if result.timed_out:  # a slow machine: the time limit ended the round early
            steps = f"{result.steps_done} of {self.steps.value} steps in the time limit"
        self.status.value = f"Saved {path.name} ({steps}, {seconds:.1f} s{kept})."
        if self.store is not None and self._maps_layer is self._edit_layer:
            # Refresh the overlays with the new heads. Maps of another image are that
            # image's session's, not this new version's: they stay as they are.
            self._then = lambda: self._run_maps(self._edit_layer)
