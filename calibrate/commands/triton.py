"""``emofuse triton BUNDLE --out DIR``: a Triton Inference Server model repository.

Writes config.pbtxt (inputs, outputs, platform, dynamic batching, instance group) and the
versioned model file for the bundle with :func:`calibrate.triton.write_triton_repo`.
"""
from __future__ import annotations

from calibrate.triton import KINDS, PLATFORMS, model_config_schema, write_triton_repo
from edge.cli import bundle_folder


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "triton",
        help="write a Triton Inference Server model repository for a bundle",
        description="Write a Triton model repository (config.pbtxt + versioned model folder) "
        "serving the bundle with ONNX Runtime or a TensorRT plan, with dynamic batching, for "
        "one GPU server behind many cameras.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder (holds manifest.json), or 'default': "
                   "the packaged bundle")
    p.add_argument("--out", required=True, metavar="DIR", help="model repository folder")
    p.add_argument("--platform", default="onnxruntime_onnx", choices=sorted(PLATFORMS),
                   help="onnxruntime_onnx (default) or tensorrt_plan (an engine from "
                   "`emofuse build` on a machine like the server)")
    p.add_argument("--precision", default="fp32", choices=["int8", "fp16", "fp32"],
                   help="graph or engine precision (default fp32)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="Triton max_batch_size (default 8; 0 disables batching)")
    p.add_argument("--instances", type=int, default=1, help="instances per device (default 1)")
    p.add_argument("--kind", choices=sorted(KINDS), default=None,
                   help="instance kind (default gpu for tensorrt_plan, auto for onnx)")
    p.add_argument("--max-queue-delay-us", type=int, default=100,
                   help="dynamic batcher's wait to fill a batch, microseconds (default 100)")
    p.add_argument("--name", default=None, help="model name (default: the bundle's model name)")
    p.add_argument("--engine", default=None, metavar="FILE",
                   help="the recorded plan to serve (tensorrt_plan; default: the one for "
                   "--precision)")
    p.add_argument("--force", action="store_true", help="replace existing model folders")
    p.set_defaults(func=run)


def run(args) -> int:
    """Write the repository and list its models. Returns 0.

    Raises:
        ConfigError, BadInputError: see :func:`calibrate.triton.write_triton_repo`.
    """
    models = write_triton_repo(
        bundle_folder(args.bundle), args.out, args.platform, max_batch=args.max_batch,
        precision=args.precision, name=args.name, instances=args.instances, kind=args.kind,
        max_queue_delay_us=args.max_queue_delay_us, engine_file=args.engine,
        overwrite=args.force)
    _, schema = model_config_schema()
    for m in models:
        print(f"{m.folder}: {m.model_file.relative_to(m.folder)} ({m.role}); config.pbtxt "
              f"checked against {schema}")
    return 0
