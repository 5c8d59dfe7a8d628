"""Benchmarks of emofuse: ``emofuse bench signals | BUNDLE | default | pipeline | rppg-methods``.

A tool layer above the runtime, beside ``export`` and ``calibrate``: it imports ``edge`` and
``firmware_bridge`` (only their public API) and nothing of ours imports it. It is not part of
what runs on the device.

- :mod:`bench.signals`: the Numba signal kernels against NumPy/SciPy baselines.
- :mod:`bench.bundle`: a bundle's latency and throughput per backend, precision and batch.
- :mod:`bench.pipeline`: the whole runtime on a recording against the issue-6 targets, with
  :mod:`bench.recording` (synthetic recordings), :mod:`bench.child` (one measurement in a
  fresh process), :mod:`bench.orin` (the Jetson Orin Nano estimate) and :mod:`bench.host`
  (machine and process facts).
- :mod:`bench.rppg_methods`: each rPPG method's heart-rate error on the synthetic sweep and the
  real clip, and its per-window cost.
- :mod:`bench.command`: the ``emofuse bench`` subcommand.

Speed is measured here, never in timed tests (STYLE rule 14). Modules are imported on use, so
importing this package is cheap.
"""
