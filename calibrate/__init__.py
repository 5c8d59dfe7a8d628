"""calibrate: INT8 calibration of exported bundles and TensorRT engine building.

Planned in docs/ARCHITECTURE.md; its modules arrive with the calibrate + engines issue.

Modules: ``calibration`` (calibration sets through the manifest's preprocessing), ``quantize``
(Q/DQ INT8 graphs), ``gate`` (FP32 vs INT8 accuracy gate), ``engine_build`` (TensorRT 10 / 11
engines, ``emofuse build``; docs/ENGINES.md), ``triton`` (Triton Inference Server model
repositories, ``emofuse triton``). CLI modules live in ``calibrate.commands``. Builds on ``edge``
and ``firmware_bridge``; tensorrt is optional and imported only where an engine is built.
"""
