"""Which threads ran, and on what, during each long GUI-thread gap: perf samples per gap.

Run under an X server from the repository root (perf timestamps in CLOCK_MONOTONIC,
the clock of Python's ``time.perf_counter`` on Linux)::

    perf record -k CLOCK_MONOTONIC -F 999 -g -o /tmp/perf.data -- xvfb-run -a \\
        .venv/bin/python docs/scripts/stall_breakdown.py --min-ms 90 \\
        --gaps-json /tmp/gaps.json --script pseudo_label_stalls.py -- --zoom 3 --repeats 3
    perf script -i /tmp/perf.data -F comm,pid,tid,time,ip,sym,dso > /tmp/perf.txt
    python docs/scripts/perf_gaps.py /tmp/gaps.json /tmp/perf.txt

For each gap: the samples of each thread (about one per ms of CPU at 999 Hz), so a gap
whose GUI thread has few samples was spent waiting (on llvmpipe's threads, or X), and
the GUI thread's samples by what is on their stack: Mesa (swrast, LLVM), Qt without
Python above it, Python (with what it called), or other.
"""

from __future__ import annotations

import argparse
import collections
import json
import re

HEADER = re.compile(r"^(\S.*?)\s+(\d+)/(\d+)\s+([\d.]+):")
FRAME = re.compile(r"^\s*[0-9a-f]+ (.*) \((.*)\)$")


def samples(path: str) -> list[tuple[float, str, int, int, list[str]]]:
    """``(time, thread name, pid, tid, [library of each frame, leaf first])``."""
    out, current = [], None
    for line in open(path):
        head = HEADER.match(line)
        if head:
            current = (float(head[4]), head[1], int(head[2]), int(head[3]), [])
            out.append(current)
        elif current is not None and (frame := FRAME.match(line)):
            current[4].append(frame[2].rsplit("/", 1)[-1])
    return out


def kind(stack: list[str]) -> str:
    joined = " ".join(stack)
    if "swrast" in joined or "libLLVM" in joined:
        return "mesa"
    if "libpython" in joined:
        return "python"
    if "libQt6" in joined:
        return "qt"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gaps", help="stall_breakdown.py --gaps-json output")
    parser.add_argument("perf", help="perf script -F comm,pid,tid,time,ip,sym,dso output")
    args = parser.parse_args()
    record = json.load(open(args.gaps))
    every = samples(args.perf)
    gui = collections.Counter(s[2] for s in every if s[1] == "python").most_common(1)[0][0]
    for start, end in record["gaps"]:
        inside = [s for s in every if start <= s[0] <= end]
        threads = collections.Counter(
            "GUI thread" if s[3] == gui else s[1] for s in inside if s[2] == gui or "llvm" in s[1]
        )
        stacks = collections.Counter(kind(s[4]) for s in inside if s[3] == gui)
        top = sorted(
            (c for c in record["calls"] if c[0] < end and c[1] > start and c[3] == 0),
            key=lambda c: c[0],
        )
        what = ", ".join(f"{c[2]} {1000 * (c[1] - c[0]):.0f}" for c in top)
        print(f"gap {1000 * (end - start):.0f} ms: {what}")
        print(f"  samples by thread: {dict(threads.most_common())}")
        print(f"  GUI thread's samples by stack: {dict(stacks.most_common())}")


if __name__ == "__main__":
    main()
