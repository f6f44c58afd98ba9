"""Screenshot of `flexdet demo`'s live window on a virtual X display (Xvfb), made from a synthetic sequence:
checks that the install's OpenCV opens the window and shows what it draws.

    python tests/window_screenshot.py --out docs/demo_window.png [--model RUN/checkpoints/last.pt] [--preset P]

Needs Xvfb, xwininfo and xwd (packages xvfb, x11-utils, x11-apps) and OpenCV with GUI support (opencv-python,
flexdet's default install).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WINDOW_PREFIX = "flexdet demo"
TOOLS = ("Xvfb", "xwininfo", "xwd")


def missing_tools() -> list[str]:
    """The programs this script needs that are not on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def demo_windows(display: str) -> list[str]:
    """Titles of the demo's windows open on `display`."""
    listing = subprocess.run(["xwininfo", "-root", "-tree"], capture_output=True, text=True,
                             env={**os.environ, "DISPLAY": display}).stdout
    return [line.split('"')[1] for line in listing.splitlines() if f'"{WINDOW_PREFIX}' in line]


def xwd_image(dump: bytes) -> np.ndarray:
    """The BGR image of an `xwd` dump of a TrueColor screen (ZPixmap, 24 or 32 bits per pixel)."""
    header = np.frombuffer(dump[:100], ">u4")
    header_size, width, height, byte_order = int(header[0]), int(header[4]), int(header[5]), int(header[7])
    bits_per_pixel, line_bytes, colours = int(header[11]), int(header[12]), int(header[19])
    if bits_per_pixel not in (24, 32):
        raise SystemExit(f"xwd dump with {bits_per_pixel} bits per pixel; run Xvfb at depth 24")
    start, size = header_size + 12 * colours, bits_per_pixel // 8
    rows = np.frombuffer(dump[start:start + line_bytes * height], np.uint8).reshape(height, line_bytes)
    pixels = rows[:, :size * width].reshape(height, width, size)
    return np.ascontiguousarray(pixels[..., :3] if byte_order == 0 else pixels[..., -1:-4:-1])


def crop_to_content(image: np.ndarray) -> np.ndarray:
    """The screen cropped to what differs from its bottom-right (root window background) colour."""
    differs = np.any(image != image[-1, -1], axis=2)
    ys, xs = np.nonzero(differs)
    return image if len(ys) == 0 else image[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def save_png(path: str | Path, image: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"{path}: could not write the PNG")


def capture_demo_window(source: str | Path, model: str, png: str | Path, rate: str = "20", after_s: float = 3.0,
                        display: str = ":97", extra: tuple[str, ...] = ()) -> list[str]:
    """Run the demo windowed on `display` (a fresh Xvfb), save into `png` the last screen with something drawn
    up to `after_s` seconds after its window appeared, stop it; returns the demo window titles seen (empty: no
    window was shown; `png` is written only when the window drew something)."""
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "DISPLAY": display}
    demo = None
    try:
        time.sleep(1.0)
        demo = subprocess.Popen([sys.executable, "-m", "flexdet.cli", "demo", "--source", str(source), "--model", model,
                                 "--rate", rate, "--speed", "1", *extra], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline, titles = time.monotonic() + 120, []
        while not titles and time.monotonic() < deadline and demo.poll() is None:
            time.sleep(0.5)
            titles = demo_windows(display)
        shown, until = None, time.monotonic() + after_s
        while titles and demo.poll() is None and (shown is None or time.monotonic() < until):
            dump = subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True).stdout
            if dump:  # the latest screen with something drawn, up to after_s after the window appeared
                screen = xwd_image(dump)
                shown = screen if np.any(screen != screen[-1, -1]) else shown
            time.sleep(0.2)
        if shown is not None:
            save_png(png, crop_to_content(shown))
        return titles
    finally:
        if demo is not None and demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=30)
        xvfb.terminate()
        xvfb.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/demo_window.png", help="PNG to write")
    parser.add_argument("--model", default="nano", help="checkpoint, export folder or preset (random weights)")
    parser.add_argument("--preset", default="quickstart", help="synthetic scene preset of the replayed sequence")
    parser.add_argument("--rate", default="20", help="detection rate in Hz")
    args = parser.parse_args()
    if missing_tools():
        print(f"missing: {', '.join(missing_tools())}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "flexdet.cli", "synth", "--out", tmp, "--preset", args.preset,
                        "--sequences", "1", "--duration", "6", "--split", "1,0,0", "--workers", "1"], check=True)
        source = next((Path(tmp) / "train").iterdir())
        titles = capture_demo_window(source, args.model, args.out, args.rate)
    if not titles:
        print("the demo showed no window", file=sys.stderr)
        return 1
    print(f"window {titles[0]!r} -> {args.out} ({Path(args.out).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
