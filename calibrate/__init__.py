"""calibrate: INT8 calibration of exported bundles and TensorRT engine building.

Planned in docs/ARCHITECTURE.md; its modules arrive with the calibrate + engines issue.
"""
