"""Lazy, thread-safe readers for whole-slide and plain images: ``open_slide(path) -> Slide``."""

from wsol.errors import SlideError
from wsol.slide.base import Level, Slide, to_rgb8
from wsol.slide.image_slide import ImageSlide
from wsol.slide.open import SLIDE_SUFFIXES, open_slide, slide_stem

__all__ = [
    "SLIDE_SUFFIXES",
    "ImageSlide",
    "Level",
    "Slide",
    "SlideError",
    "open_slide",
    "slide_stem",
    "to_rgb8",
]
