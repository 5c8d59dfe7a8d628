"""LSL inlets: missing-dependency messages, the clock mapping, and a real round trip when
pylsl runs here."""
from __future__ import annotations

import importlib.machinery
import sys
import time
import types
import uuid

import numpy as np
import pytest

from firmware_bridge.errors import DeviceError, MissingDependencyError, SourceEndedError
from firmware_bridge.transports.lsl import LslSource, import_pylsl, lsl_to_monotonic_offset_ns


def _pylsl_works() -> bool:
    try:
        import pylsl  # noqa: F401
    except Exception:  # ImportError, or RuntimeError when liblsl is missing
        return False
    return True


PYLSL = _pylsl_works()


@pytest.mark.skipif(PYLSL, reason="pylsl and liblsl are installed here")
def test_missing_pylsl_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"pylsl.*emofuse\[sensors\]"):
        LslSource(type="ECG")


class _LiblslMissing(importlib.machinery.PathFinder):
    """Makes ``import pylsl`` fail the way it does when pylsl is installed without liblsl."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "pylsl":
            return None
        return importlib.machinery.ModuleSpec(name, cls)

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        raise RuntimeError("LSL binary library file was not found.")


def test_pylsl_without_liblsl_is_a_missing_dependency(monkeypatch):
    monkeypatch.delitem(sys.modules, "pylsl", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_LiblslMissing, *sys.meta_path])
    expected = r"liblsl.*LSL binary library.*emofuse\[sensors\]"
    with pytest.raises(MissingDependencyError, match=expected):
        import_pylsl()


def test_offset_between_lsl_clock_and_monotonic():
    shift_s = 1234.5  # a clock that reads 1234.5 s behind the monotonic clock
    offset = lsl_to_monotonic_offset_ns(lambda: time.monotonic_ns() / 1e9 - shift_s)
    assert abs(offset - shift_s * 1e9) < 2e6  # within 2 ms, whatever the scheduling


@pytest.mark.skipif(not PYLSL, reason="pylsl with liblsl is not installed (extra 'sensors')")
def test_round_trip_on_localhost():
    import pylsl

    name = f"emofuse-test-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(name, "ECG", 2, 250.0, "float32", name)
    channel = info.desc().append_child("channels").append_child("channel")
    channel.append_child_value("unit", "mV")
    outlet = pylsl.StreamOutlet(info)
    with LslSource(name=name, timeout_s=10.0) as source:
        assert (source.stream, source.fs_hz) == ("ecg", 250.0)
        assert (source.n_channels, source.units) == (2, "mV")
        time.sleep(0.5)  # let the inlet subscribe before data flows
        sent = np.arange(100, dtype=np.float32).reshape(50, 2)
        stamp0 = pylsl.local_clock()
        push_ns = time.monotonic_ns()
        for k, row in enumerate(sent):
            outlet.push_sample(row.tolist(), stamp0 + k / 250.0)
        got, t_ns = [], []
        while sum(len(g) for g in got) < 50:
            chunk = next(source)
            got.append(chunk.samples)
            t_ns.append(chunk.meta["t_ns"])
        values, times = np.concatenate(got), np.concatenate(t_ns)
    np.testing.assert_array_equal(values[:50], sent)
    # Same machine: the sample stamped "now" maps to about now on the monotonic clock.
    assert abs(times[0] - push_ns) < 20e6
    np.testing.assert_allclose(np.diff(times[:50]), 4e6, atol=1e4)


def _fake_pylsl(chunks: list[tuple[list, list]], correction_s: float, found: bool = True):
    """A stand-in with the parts of pylsl's documented API the source uses (liblsl is not
    installed here); it checks the source's own chunking and clock mapping, not pylsl."""

    class Node:
        def __init__(self, unit=""):
            self.unit = unit

        def child(self, _name):
            return self

        def child_value(self, _name):
            return self.unit

    class Info:
        def name(self):
            return "chest"

        def type(self):
            return "ECG"

        def source_id(self):
            return "strap-1"

        def channel_format(self):
            return 1

        def nominal_srate(self):
            return 250.0

        def channel_count(self):
            return 1

        def desc(self):
            return Node("mV")

    class StreamInlet:
        def __init__(self, info, max_chunklen=0, recover=True):
            self.pending = list(chunks)

        def open_stream(self, timeout):
            pass

        def info(self, timeout):
            return Info()

        def time_correction(self, timeout):
            return correction_s

        def pull_chunk(self, timeout, max_samples):
            if self.pending:
                return self.pending.pop(0)
            time.sleep(timeout)
            return [], []

        def close_stream(self):
            pass

    module = types.ModuleType("pylsl")
    module.cf_string = 3
    module.local_clock = lambda: time.monotonic_ns() / 1e9 - 100.0  # 100 s behind monotonic
    module.resolve_byprop = lambda prop, value, minimum, timeout: [Info()] if found else []
    module.StreamInlet = StreamInlet
    return module


def test_source_maps_sender_stamps_onto_the_monotonic_clock(monkeypatch):
    stamps = [50.0, 50.004, 50.008]
    module = _fake_pylsl([([[1.0], [2.0], [3.0]], stamps)], correction_s=0.25)
    monkeypatch.setitem(sys.modules, "pylsl", module)
    with LslSource(type="ECG", timeout_s=0.3) as source:
        chunk = next(source)
        assert (chunk.stream, chunk.fs_hz, chunk.units, chunk.seq) == ("ecg", 250.0, "mV", 0)
        assert chunk.samples.tolist() == [1.0, 2.0, 3.0]  # one channel -> shape (N,)
        # sender stamp + correction = local LSL time; local LSL clock + 100 s = monotonic.
        expected = (np.array(stamps) + 0.25 + 100.0) * 1e9
        assert np.max(np.abs(chunk.meta["t_ns"] - expected)) < 2e6
        assert chunk.t0_ns == chunk.meta["t_ns"][0] and chunk.device_t0_us == 50_000_000
        with pytest.raises(SourceEndedError, match="no samples"):
            next(source)


def test_no_stream_found_is_a_device_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pylsl", _fake_pylsl([], 0.0, found=False))
    with pytest.raises(DeviceError, match="no LSL stream with type='EEG'"):
        LslSource(type="EEG", timeout_s=0.1)
