"""export: the torch side of emofuse (models, datasets, training, ONNX bundles).

Planned in docs/ARCHITECTURE.md; its modules arrive with the export issue. Only this package
and ``calibrate`` may import torch.
"""
