"""Live detection demo: the same as `flexdet demo`, as a script.

    python demos/live_demo.py --source webcam:0 --model nano --rate 30
    python demos/live_demo.py --source recording.raw --model exported/ --rate 90 --headless --out demo.mp4
"""

from __future__ import annotations

import sys

from flexdet.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
