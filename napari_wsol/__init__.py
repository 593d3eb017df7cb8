"""napari glue for napari-wsol: sample data and the WSOL dock widget.

The engine is the ``wsol`` package; this package only turns its results into layers.
The npe2 manifest is ``napari.yaml`` at the repository root (linked here so that both
editable installs and wheels find it at ``napari_wsol/napari.yaml``).
"""

from napari_wsol._preload import preload_triton

preload_triton()

__version__ = "0.1.0"
