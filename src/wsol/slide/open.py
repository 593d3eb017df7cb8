"""Pick the reader for a file from its extension and its first bytes."""

from __future__ import annotations

from pathlib import Path

from wsol.errors import SlideError
from wsol.slide.base import Slide

#: Vendor formats OpenSlide reads that are TIFF containers.
_OPENSLIDE_TIFF = {".svs", ".ndpi", ".scn", ".bif"}
#: Vendor formats OpenSlide reads that are not TIFF containers (index files, Sakura's
#: SQLite, DICOM).
_OPENSLIDE_OTHER = {".mrxs", ".vms", ".vmu", ".svslide", ".dcm"}
_TIFF = {".tif", ".tiff", ".btf", ".tf8"}
_IMAGES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp"}
SLIDE_SUFFIXES = tuple(sorted(_OPENSLIDE_TIFF | _OPENSLIDE_OTHER | _TIFF | set(_IMAGES)))

_MAGIC = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
)


def sniff(head: bytes) -> str | None:
    """The container format from a file's first bytes, or None."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def slide_stem(path: str | Path) -> str:
    """File name without its image extension(s): ``a.ome.tif`` -> ``a``."""
    name = Path(path).name
    lower = name.lower()
    for suffix in (".ome.tiff", ".ome.tif", *SLIDE_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def open_slide(path: str | Path) -> Slide:
    """Open a whole-slide image or a plain image for lazy region reads.

    OpenSlide reads vendor formats (svs, ndpi, mrxs, scn, vms, vmu, bif, svslide, dcm,
    and TIFFs it recognises as Philips/Ventana/...); tifffile reads other TIFFs (pyramidal, OME,
    generic tiled, single-page); Pillow reads png/jpg/bmp.

    Raises
    ------
    SlideError
        Naming the file and the reason, for a missing, empty, truncated, corrupt or
        unsupported file, a directory, or an extension that does not match the content.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(f"{path}: file not found")
    if path.is_dir():
        raise SlideError(f"{path}: is a directory, expected a slide or image file")
    suffix = path.suffix.lower()
    if suffix not in SLIDE_SUFFIXES:
        raise SlideError(
            f"{path}: unsupported file type {suffix or '(no extension)'}; "
            f"supported: {', '.join(SLIDE_SUFFIXES)}"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise SlideError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not head:
        raise SlideError(f"{path}: empty file")
    kind = sniff(head)

    from wsol.slide.openslide_slide import OpenSlideSlide, detect_vendor

    if suffix in _OPENSLIDE_OTHER:
        return OpenSlideSlide(path)
    if suffix in _IMAGES:
        _expect(path, kind, _IMAGES[suffix])
        from wsol.slide.image_slide import ImageSlide

        return ImageSlide(path, kind)
    _expect(path, kind, "tiff")
    vendor = detect_vendor(path)
    if vendor is not None and vendor != "generic-tiff":
        return OpenSlideSlide(path)
    # Generic, pyramidal and OME TIFFs (and vendor TIFFs whose header OpenSlide rejects,
    # so the error comes from a full TIFF parse): tifffile.
    from wsol.slide.tiff_slide import TiffSlide

    return TiffSlide(path)


def _expect(path: Path, kind: str | None, expected: str) -> None:
    if kind == expected:
        return
    found = f"{kind.upper()} data" if kind else "not a recognised image format"
    raise SlideError(
        f"{path}: extension {path.suffix} expects {expected.upper()}, but the file is {found}"
    )
