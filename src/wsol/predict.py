"""``wsol predict``: one slide in, heatmaps + masks + polygons + tile scores out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wsol.infer import InferenceResult, infer_slide
from wsol.infer.export import write_geojson, write_mask_tiff, write_tile_csv
from wsol.model import WSOLModel
from wsol.region import PaintedLabels
from wsol.slide import open_slide, slide_stem


@dataclass
class Prediction:
    slide: Path
    store: Path
    masks: dict[str, Path] = field(default_factory=dict)
    geojson: dict[str, Path] = field(default_factory=dict)
    csv: Path | None = None
    result: InferenceResult | None = None
    thresholds: dict[str, float] = field(default_factory=dict)  # each mask's threshold
    slide_mpp: float | None = None  # the slide's µm/px the run used (None: unknown)
    mpp_recorded: bool = False  # ``slide_mpp`` is the file's own, not one given

    def files(self) -> list[Path]:
        return [self.store, *self.masks.values(), *self.geojson.values(), self.csv]


def predict_slide(
    model: WSOLModel,
    path: str | Path,
    out_dir: str | Path,
    methods: Sequence[str],
    *,
    threshold: float = 0.5,
    thresholds: Mapping[str, float] | None = None,
    corrections: Sequence[PaintedLabels] = (),
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    slide_mpp: float | None = None,
    **options: object,
) -> Prediction:
    """Run :func:`wsol.infer.infer_slide` on one slide and write its exports.

    Writes into ``out_dir``: ``<stem>.zarr`` (heatmaps, tile scores), per method
    ``<stem>.<method>.mask.ome.tif`` (``map >= threshold``, pyramidal) and
    ``<stem>.<method>.geojson`` (QuPath annotations), and ``<stem>.tiles.csv``.
    ``thresholds`` gives some methods their own threshold; ``corrections`` (painted
    labels in this slide's level-0 pixels, e.g. :meth:`wsol.session.Session.painted`)
    override every mask and polygon where they are set, as they do in the app.
    Exports are written only when the run completes (not when cancelled).
    ``slide_mpp`` is the slide's pixel size (µm) where its file records none; a
    recorded one is used as it is.
    """
    path = Path(path)
    out_dir = Path(out_dir)
    stem = slide_stem(path)
    prediction = Prediction(path, out_dir / f"{stem}.zarr")
    with open_slide(path) as slide:
        prediction.mpp_recorded = slide.mpp is not None
        if slide_mpp:
            slide.assume_mpp(slide_mpp)
        prediction.slide_mpp = slide.mpp
        result = infer_slide(
            model,
            slide,
            prediction.store,
            methods,
            progress=progress,
            should_stop=should_stop,
            **options,
        )
    prediction.result = result
    if result.cancelled:
        return prediction
    for method in result.store.methods:
        t = (thresholds or {}).get(method, threshold)
        prediction.thresholds[method] = t
        prediction.masks[method] = write_mask_tiff(
            result.store,
            method,
            out_dir / f"{stem}.{method}.mask.ome.tif",
            t,
            corrections=corrections,
        )
        prediction.geojson[method] = write_geojson(
            result.store, method, out_dir / f"{stem}.{method}.geojson", t, corrections=corrections
        )
    prediction.csv = write_tile_csv(result.store, out_dir / f"{stem}.tiles.csv")
    return prediction
