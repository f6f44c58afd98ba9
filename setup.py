"""Packaging entry for flexdet: `pip install -c constraints.txt -e ".[dev]"`."""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "flexdet" / "__init__.py").read_text()).group(1)

INSTALL_REQUIRES = [
    "numpy>=1.24",
    "numba>=0.59",
    "h5py>=3.8",
    "hdf5plugin>=4.1",
    "aedat>=2.0",
    "pyyaml>=6.0",
    "tqdm>=4.60",
    "torch>=2.2",
    "torchvision>=0.17",
    # GUI OpenCV, so `flexdet demo` opens its window on a desktop; without a display the demo runs headless.
    "opencv-python>=4.8",
    "matplotlib>=3.7",
    "pycocotools>=2.0.7",
    "tensorboard>=2.14",
    "onnx>=1.15",
    "onnxruntime>=1.17",  # export, bench and demo run ONNX graphs out of the box
]

# `flexdet serve`: the tritonserver binary the nvidia-pytriton wheel ships (x86-64 Linux only; its 0.6+ releases
# cap numpy below 2, 0.5.5 does not) and the HTTP / gRPC client.
SERVE = ["nvidia-pytriton>=0.5.5; platform_system == 'Linux' and platform_machine == 'x86_64'",
         "tritonclient[http,grpc]>=2.44"]

EXTRAS = {
    "ort": [],  # kept for old install lines: onnxruntime is in the base install now
    "dev": ["pytest>=7.4", "pytest-timeout>=2.2", "hypothesis>=6.90", "onnxslim>=0.1.30", "ruff>=0.6", *SERVE],
    "serve": SERVE,
    # TensorRT engines; for onnxruntime on CUDA replace the CPU build: pip uninstall -y onnxruntime &&
    # pip install onnxruntime-gpu (both provide the `onnxruntime` module, so pip cannot hold them side by side).
    "gpu": ["tensorrt>=10.0"],
    "camera": ["dv-processing>=1.7"],
}

setup(
    name="flexdet",
    version=VERSION,
    description="Real-time object detection with event cameras, fused with RGB, at any detection rate",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["flexdet", "flexdet.*"]),
    package_data={"flexdet": ["configs/*.yaml", "configs/**/*.yaml", "benchmarks_data/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["flexdet = flexdet.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
