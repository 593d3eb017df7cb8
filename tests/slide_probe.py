"""Open and read each file given on the command line; print one JSON line per file.

Run in a subprocess by test_corpus.py so that a crash or hang in a native reader is a
test failure naming the file, not a dead test run.
"""

from __future__ import annotations

import faulthandler
import json
import sys

from wsol.slide import SlideError, open_slide

faulthandler.enable()

for path in sys.argv[1:]:
    print(json.dumps({"path": path, "outcome": "start"}), flush=True)
    try:
        with open_slide(path) as slide:
            slide.thumbnail(256)
            for level in range(slide.level_count):
                h, w = slide.levels[level].shape
                slide.read_region(level, 0, 0, min(h, 300), min(w, 300))
                slide.read_region(level, max(0, h - 300), max(0, w - 300), 300, 300)
        outcome, error = "ok", ""
    except SlideError as exc:
        outcome, error = "SlideError", str(exc)
    except Exception as exc:  # anything else is a bug the test reports
        outcome, error = type(exc).__name__, str(exc)
    print(json.dumps({"path": path, "outcome": outcome, "error": error}), flush=True)
