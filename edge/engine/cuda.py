"""CUDA for the TensorRT engine: a context and stream on one device, device and page-locked host
buffers, copies and synchronisation, through pycuda (what the design names) or cuda-python,
whichever is installed; both are imported only when a context opens (the ``jetson`` extra).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from typing import Any

import numpy as np

from firmware_bridge.errors import DeviceError, MissingDependencyError

log = logging.getLogger("emofuse.engine")

EXTRA = "jetson"


def _cuda_class():
    """The CUDA wrapper class for whichever binding is installed (pycuda first)."""
    try:
        import pycuda.driver  # noqa: F401  # pyright: ignore[reportMissingImports]

        return _PyCuda
    except ImportError:
        pass
    try:
        _cudart()
        return _CudaPython
    except ImportError:
        pass
    raise MissingDependencyError(
        f"TensorRT inference needs CUDA from Python: pip install 'emofuse[{EXTRA}]' (pycuda), "
        "or install cuda-python")


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # pyright: ignore[reportMissingImports]  (>= 12.6)
    except ImportError:
        from cuda import cudart  # pyright: ignore[reportMissingImports, reportAttributeAccessIssue]  (older)
    return cudart


class _PyCuda:
    """CUDA through pycuda's driver API, on the device's primary context (the one TensorRT's
    runtime-API calls use), pushed onto the activating thread."""

    name = "pycuda"

    @staticmethod
    def device_info(device: int) -> tuple[str, str]:
        import pycuda.driver as drv  # pyright: ignore[reportMissingImports]

        try:
            drv.init()
            dev = drv.Device(device)
            major, minor = dev.compute_capability()
            return str(dev.name()), f"{major}.{minor}"
        except drv.Error as exc:
            raise DeviceError(f"CUDA device {device}: {exc}") from exc

    def __init__(self, device: int) -> None:
        import pycuda.driver as drv  # pyright: ignore[reportMissingImports]

        self._drv = drv
        try:
            drv.init()
            self._ctx = drv.Device(device).retain_primary_context()
            self._ctx.push()
        except drv.Error as exc:
            raise DeviceError(f"CUDA device {device}: {exc}") from exc
        self.owner = threading.get_ident()
        self._allocs = []
        self._stream = drv.Stream()

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def malloc(self, nbytes: int) -> int:
        mem = self._drv.mem_alloc(max(int(nbytes), 1))
        self._allocs.append(mem)
        return int(mem)

    def pinned(self, count: int, dtype) -> np.ndarray:
        return self._drv.pagelocked_empty(max(int(count), 1), dtype)

    def htod(self, dptr: int, host: np.ndarray) -> None:
        self._drv.memcpy_htod_async(dptr, host, self._stream)

    def dtoh(self, host: np.ndarray, dptr: int) -> None:
        self._drv.memcpy_dtoh_async(host, dptr, self._stream)

    def sync(self) -> None:
        self._stream.synchronize()

    @contextlib.contextmanager
    def current(self):
        """Make the context current for a call from a thread other than the activating one."""
        if threading.get_ident() == self.owner:
            yield
            return
        self._ctx.push()
        try:
            yield
        finally:
            self._drv.Context.pop()

    def close(self) -> None:
        with self.current():
            for mem in self._allocs:
                mem.free()
            self._allocs.clear()
            self._stream = None
        if threading.get_ident() == self.owner:
            self._drv.Context.pop()
        self._ctx.detach()


class _CudaPython:
    """CUDA through cuda-python's runtime API; ``cudaSetDevice`` binds the device's primary
    context to the calling thread, which is what TensorRT uses."""

    name = "cuda-python"

    @staticmethod
    def _check(result, what: str) -> Any:
        cudart = _cudart()
        err = result[0] if isinstance(result, tuple) else result
        if err != cudart.cudaError_t.cudaSuccess:
            text = cudart.cudaGetErrorString(err)
            text = text[1] if isinstance(text, tuple) else text
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            raise DeviceError(f"CUDA {what} failed: {text}")
        if isinstance(result, tuple):
            return result[1] if len(result) == 2 else result[1:]
        return None

    @classmethod
    def device_info(cls, device: int) -> tuple[str, str]:
        cudart = _cudart()
        prop = cls._check(cudart.cudaGetDeviceProperties(device), f"device {device} query")
        name = prop.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return str(name), f"{prop.major}.{prop.minor}"

    def __init__(self, device: int) -> None:
        self._rt = _cudart()
        self._device = device
        self._check(self._rt.cudaSetDevice(device), f"set device {device}")
        self.owner = threading.get_ident()
        self._stream = self._check(self._rt.cudaStreamCreate(), "stream create")
        self._device_ptrs = []
        self._host_ptrs = []

    @property
    def stream_handle(self) -> int:
        s = self._stream
        if s is None:
            raise DeviceError("the CUDA stream is closed")
        return int(s) if hasattr(s, "__int__") else int(s.getPtr())

    def malloc(self, nbytes: int) -> int:
        ptr = int(self._check(self._rt.cudaMalloc(max(int(nbytes), 1)), "malloc"))
        self._device_ptrs.append(ptr)
        return ptr

    def pinned(self, count: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(count), 1) * dtype.itemsize
        ptr = int(self._check(self._rt.cudaMallocHost(nbytes), "pinned host malloc"))
        self._host_ptrs.append(ptr)
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=np.uint8).view(dtype)  # pyright: ignore[reportArgumentType, reportCallIssue]  (a ctypes array is a buffer)

    def htod(self, dptr: int, host: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(dptr, host.ctypes.data, host.nbytes, kind,
                                             self._stream), "copy to device")

    def dtoh(self, host: np.ndarray, dptr: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, dptr, host.nbytes, kind,
                                             self._stream), "copy to host")

    def sync(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream), "stream synchronize")

    @contextlib.contextmanager
    def current(self):
        if threading.get_ident() != self.owner:
            self._check(self._rt.cudaSetDevice(self._device), f"set device {self._device}")
        yield

    def close(self) -> None:
        with self.current():
            for ptr in self._device_ptrs:
                self._rt.cudaFree(ptr)
            for ptr in self._host_ptrs:
                self._rt.cudaFreeHost(ptr)
            self._device_ptrs.clear()
            self._host_ptrs.clear()
            if self._stream is not None:
                self._rt.cudaStreamDestroy(self._stream)
                self._stream = None


def open_cuda(device: int = 0):
    """Open a CUDA context + stream on ``device`` in the calling thread (pycuda or cuda-python).

    Raises:
        MissingDependencyError: neither binding is installed.
        DeviceError: the device cannot be opened.
    """
    return _cuda_class()(device)
