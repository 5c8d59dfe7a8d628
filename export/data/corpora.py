"""Loaders for real emotion corpora (DEAP, MAHNOB-HCI, AMIGOS) and their contract windows.

Each loader yields one :class:`TrialRecord` per trial: subject, trial, self-reported valence
and arousal (1-9), the peripheral signals with their rates and units, the window's end, and
the trial's face video when one is given. :func:`windows_from_corpus` cuts the contract
windows from records with :func:`export.data.preprocess.windows_from_session`, so real and
synthetic data go through the same kernels. No corpus ships with emofuse: point a loader at
your licensed copy.

- DEAP (Koelstra et al. 2012, "DEAP: a database for emotion analysis using physiological
  signals", IEEE TAC 3(1):18-31): the preprocessed Python pickles ``sXX.dat``, a dict
  ``{"data": (40 trials, 40 channels, 8064) at 128 Hz, "labels": (40, 4) valence, arousal,
  dominance, liking}``; channels 37-40 (1-based) are GSR, respiration, plethysmograph,
  temperature; the first 3 s of a trial are a pre-trial baseline, so the window is 3-63 s.
  Frontal face videos exist for participants 1-22 (``face_video/sXX/sXX_trialYY.avi``).
- MAHNOB-HCI (Soleymani et al. 2012, "A multimodal database for affect recognition and
  implicit tagging", IEEE TAC 3(1):42-55): one folder per session with ``session.xml``
  (attributes ``feltArsl``, ``feltVlnc``, 1-9; a ``subject`` element with its ``id``) and a
  BioSemi BDF file (256 Hz; ECG ``EXG1``-``EXG3``, skin conductance ``GSR1``, ``Status``
  triggers) plus videos. No PPG: the heart-rate level comes from the ECG.
- AMIGOS (Miranda-Correa et al. 2021, "AMIGOS: a dataset for affect, personality and mood
  research on individuals and groups", IEEE TAC 12(2):479-493): the preprocessed MATLAB
  files ``Data_Preprocessed_PXX.mat`` with ``joined_data`` (a cell of trials, samples x 17
  channels at 128 Hz: 14 EEG, ECG right, ECG left, GSR) and ``labels_selfassessment`` (a cell
  of rows: arousal, valence, dominance, liking, familiarity, ...). No PPG either.

Corrupt or missing files raise :class:`~firmware_bridge.errors.BadInputError` naming the file.
DEAP's pickles are read with an unpickler that only accepts NumPy arrays and plain
containers, so a tampered file cannot run code.
"""
from __future__ import annotations

import logging
import math
import pickle
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.spec import DEFAULT, Preprocessing
from export.data.preprocess import EmotionWindows, Recording, Window, windows_from_session
from firmware_bridge.errors import BadInputError, ConfigError, require

__all__ = [
    "CORPORA",
    "GSR_UNITS",
    "Signal",
    "TrialRecord",
    "VideoSource",
    "load_amigos",
    "load_deap",
    "load_mahnob",
    "read_bdf",
    "windows_from_corpus",
]

log = logging.getLogger(__name__)

DEAP_FS_HZ = 128.0
DEAP_BASELINE_S = 3.0
# 0-based channel indices of DEAP's peripheral signals.
DEAP_GSR, DEAP_RESP, DEAP_PPG, DEAP_TEMP = 36, 37, 38, 39
AMIGOS_FS_HZ = 128.0
AMIGOS_ECG_RIGHT, AMIGOS_ECG_LEFT, AMIGOS_GSR = 14, 15, 16


@dataclass(frozen=True, eq=False)
class Signal:
    """A regularly sampled signal of a trial: sample i at ``t0_s + i / fs_hz``.

    Attributes:
        values: float64 (N,) samples (NaN = missing), in ``units``.
        fs_hz: sampling rate, Hz.
        units: ``"uS"`` for skin conductance in microsiemens; otherwise as recorded.
        t0_s: time of sample 0 in the trial's time base, s.
    """

    values: np.ndarray
    fs_hz: float
    units: str = "a.u."
    t0_s: float = 0.0

    @property
    def t_s(self) -> np.ndarray:
        """Sample times, s, float64 (N,)."""
        return self.t0_s + np.arange(self.values.size) / self.fs_hz


@dataclass(frozen=True, eq=False)
class TrialRecord:
    """One trial of a corpus.

    Attributes:
        corpus: ``"deap"``, ``"mahnob"`` or ``"amigos"``.
        subject: participant number as the corpus numbers it.
        trial: trial index within the participant (0-based, presentation order of the file).
        valence, arousal: self-reports, 1-9.
        signals: name -> :class:`Signal` (``"ppg"``, ``"eda"``, ``"ecg"``, ``"resp"``, ...).
        t_end_s: end of the analysis window in the signals' time base, s.
        video_path: the trial's face video, or None.
        video_t0_s: time of the video's first frame in the signals' time base, s.
        source: the file the trial came from.
    """

    corpus: str
    subject: int
    trial: int
    valence: float
    arousal: float
    signals: dict[str, Signal]
    t_end_s: float
    video_path: Path | None = None
    video_t0_s: float = 0.0
    source: Path | None = None


def _check_labels(path: Path, valence: float, arousal: float) -> tuple[float, float]:
    v, a = float(valence), float(arousal)
    if not (1.0 <= v <= 9.0 and 1.0 <= a <= 9.0):
        raise BadInputError(f"{path}: self-reports must be within 1-9, got valence {v}, arousal {a}")
    return v, a


def _root(root: str | Path, what: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise BadInputError(f"{path}: no such {what} directory")
    return path


# -- skin conductance units ------------------------------------------------------------------

def _ohm_to_us(x: np.ndarray) -> np.ndarray:
    # Conductance is the reciprocal of resistance; a non-positive resistance is a dropout.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, 1e6 / x, np.nan)


#: Skin-conductance unit conversions to microsiemens. ``"raw"`` keeps the values (z-scored
#: inputs are unaffected) but marks them as not in uS, so no EDA level is computed.
GSR_UNITS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "us": lambda x: x,
    "ns": lambda x: x / 1000.0,
    "ohm": _ohm_to_us,
    "kohm": lambda x: _ohm_to_us(1000.0 * x),
    "raw": None,
}


def _gsr_signal(values: np.ndarray, fs_hz: float, units: str, t0_s: float = 0.0) -> Signal:
    key = units.lower().replace("µ", "u").strip()
    if key not in GSR_UNITS:
        raise ConfigError(f"unknown GSR units {units!r}; choose one of {sorted(GSR_UNITS)}")
    convert = GSR_UNITS[key]
    if convert is None:
        return Signal(np.asarray(values, np.float64), fs_hz, "a.u.", t0_s)
    return Signal(np.asarray(convert(np.asarray(values, np.float64)), np.float64), fs_hz, "uS", t0_s)


# -- DEAP ------------------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and plain containers only: no other global may load."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"), ("builtins", "bytearray"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_deap_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError as exc:
        raise BadInputError(f"{path}: no such DEAP file") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise BadInputError(f"{path}: not a DEAP preprocessed pickle ({exc})") from exc
    if not isinstance(obj, dict) or "data" not in obj or "labels" not in obj:
        raise BadInputError(f"{path}: a DEAP pickle must be a dict with 'data' and 'labels'")
    data, labels = np.asarray(obj["data"]), np.asarray(obj["labels"])
    if data.ndim != 3 or data.shape[1] <= DEAP_PPG or data.dtype.kind not in "fiu":
        raise BadInputError(f"{path}: DEAP 'data' must be (trials, >= 39 channels, samples), got {data.shape}")
    if labels.ndim != 2 or labels.shape[0] != data.shape[0] or labels.shape[1] < 2:
        raise BadInputError(f"{path}: DEAP 'labels' must be (trials, >= 2), got {labels.shape}")
    if data.shape[2] < int(DEAP_BASELINE_S * DEAP_FS_HZ) + 8:
        raise BadInputError(f"{path}: DEAP trials are too short ({data.shape[2]} samples)")
    return data, labels


def load_deap(root: str | Path, subjects: Iterable[int] | None = None, video_dir: str | Path | None = None,
              gsr_units: str = "raw") -> Iterator[TrialRecord]:
    """Trials of DEAP's preprocessed Python data.

    Args:
        root: folder holding ``s01.dat`` ... ``s32.dat``.
        subjects: participant numbers to load (default: every ``sXX.dat`` found).
        video_dir: folder of the face videos (``sXX/sXX_trialYY.avi``, participants 1-22);
            a trial without a video file gets ``video_path=None``. The video is assumed to
            start with the trial (including its 3 s baseline).
        gsr_units: a key of :data:`GSR_UNITS`. DEAP documents no unit for the preprocessed
            GSR channel, hence ``"raw"`` by default (no EDA level summary).

    Yields:
        :class:`TrialRecord` with ``ppg`` (plethysmograph) and ``eda`` (GSR) at 128 Hz, the
        window ending at the trial's end (3 s baseline + 60 s).

    Raises:
        BadInputError: the folder or a requested file is missing, or a file is corrupt.
        ConfigError: unknown gsr_units.
    """
    base = _root(root, "DEAP")
    if gsr_units.lower() not in GSR_UNITS:
        raise ConfigError(f"unknown GSR units {gsr_units!r}; choose one of {sorted(GSR_UNITS)}")
    if subjects is None:
        files = sorted(p for p in base.glob("s[0-9][0-9].dat"))
    else:
        files = [base / f"s{int(s):02d}.dat" for s in subjects]
    if not files:
        raise BadInputError(f"{base}: no DEAP sXX.dat files")
    for path in files:
        data, labels = _read_deap_pickle(path)
        subject = int(path.stem[1:])
        for trial in range(data.shape[0]):
            valence, arousal = _check_labels(path, labels[trial, 0], labels[trial, 1])
            video = None
            if video_dir is not None:
                candidate = Path(video_dir) / f"s{subject:02d}" / f"s{subject:02d}_trial{trial + 1:02d}.avi"
                video = candidate if candidate.is_file() else None
            x = data[trial].astype(np.float64)
            yield TrialRecord(
                corpus="deap", subject=subject, trial=trial, valence=valence, arousal=arousal,
                signals={
                    "ppg": Signal(x[DEAP_PPG], DEAP_FS_HZ),
                    "eda": _gsr_signal(x[DEAP_GSR], DEAP_FS_HZ, gsr_units),
                    "resp": Signal(x[DEAP_RESP], DEAP_FS_HZ),
                    "temp": Signal(x[DEAP_TEMP], DEAP_FS_HZ),
                },
                t_end_s=x.shape[1] / DEAP_FS_HZ, video_path=video, source=path,
            )


# -- BDF / EDF -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BdfSignal:
    """One channel of a BDF/EDF file: physical values, rate, unit and its raw header fields."""

    label: str
    values: np.ndarray
    fs_hz: float
    unit: str
    digital: np.ndarray = field(repr=False)


def read_bdf(path: str | Path) -> dict[str, BdfSignal]:
    """Read a BioSemi BDF (24-bit) or European Data Format EDF (16-bit) file with ``pyedflib``.

    Format: Kemp et al. 1992, "A simple format for exchange of digitized polygraphic
    recordings", Electroencephalogr Clin Neurophysiol 82:391-393 (EDF); BDF is BioSemi's
    24-bit variant. The file is read by pyedflib (EDFlib; extra ``export``), which applies
    physical value = (digital - dmin) * (pmax - pmin) / (dmax - dmin) + pmin.

    Args:
        path: the file.

    Returns:
        dict label -> :class:`BdfSignal` (float64 physical values, rate in Hz, unit, int32
        digital values).

    Raises:
        BadInputError: missing file, or a file pyedflib cannot read (a malformed header, a
            data section that is not a whole number of records); the message names the file.
        MissingDependencyError: pyedflib is not installed.
    """
    pyedflib = require("pyedflib", "export", "reading BDF/EDF files (MAHNOB-HCI)")
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: cannot read BDF/EDF file (no such file)")
    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as exc:  # pyedflib reports every malformed or truncated file as OSError
        why = str(exc).replace(f"{path}: ", "")
        if "Filesize" in why:
            why = "truncated: its size does not match the header's records"
        raise BadInputError(f"{path}: not a readable BDF/EDF file ({why})") from exc
    try:
        out: dict[str, BdfSignal] = {}
        for i, label in enumerate(reader.getSignalLabels()):
            digital = np.asarray(reader.readSignal(i, digital=True), dtype=np.int32)
            values = np.asarray(reader.readSignal(i), dtype=np.float64)
            out[label.strip()] = BdfSignal(label.strip(), values, float(reader.getSampleFrequency(i)),
                                           reader.getPhysicalDimension(i).strip(), digital)
    finally:
        reader.close()
    if not out:
        raise BadInputError(f"{path}: the file holds no signals")
    return out


# -- MAHNOB-HCI ------------------------------------------------------------------------------

def _stimulus_end_s(status: BdfSignal) -> float | None:
    # Trigger codes live in the low 16 bits of the Status channel; the last change of code
    # marks the end of the stimulus (its first change the start).
    codes = status.digital & 0xFFFF
    edges = np.nonzero(np.diff(codes) != 0)[0] + 1
    if edges.size < 2:
        return None
    return float(edges[-1] / status.fs_hz)


def load_mahnob(root: str | Path, subjects: Iterable[int] | None = None,
                with_video: bool = True) -> Iterator[TrialRecord]:
    """Emotion-elicitation trials of MAHNOB-HCI.

    Args:
        root: the ``Sessions`` folder (one sub-folder per session, each with ``session.xml``
            and a ``.bdf``); sessions without ``feltArsl``/``feltVlnc`` (implicit tagging)
            are skipped.
        subjects: participant ids to keep (default all).
        with_video: attach the session's ``.avi`` (one whose name contains "C1" if several,
            the frontal colour camera), assumed to start with the BDF recording.

    Yields:
        :class:`TrialRecord` with ``ecg`` (lead EXG3 - EXG1, else the first EXG channel) and
        ``eda`` (GSR1 converted to uS from the unit in the BDF header), the window ending at
        the last trigger change in ``Status`` (the stimulus end), or at the record's end
        when there are fewer than two trigger changes. ``trial`` is the session's order
        among that subject's emotion sessions (sorted by folder name).

    Raises:
        BadInputError: the folder is missing; a session.xml or BDF is malformed or missing.
    """
    base = _root(root, "MAHNOB-HCI sessions")
    keep = None if subjects is None else {int(s) for s in subjects}
    folders = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name))
    counts: dict[int, int] = {}
    for folder in folders:
        xml_path = folder / "session.xml"
        if not xml_path.is_file():
            continue
        try:
            root_el = ET.parse(xml_path).getroot()
        except ET.ParseError as exc:
            raise BadInputError(f"{xml_path}: malformed XML ({exc})") from exc
        if "feltArsl" not in root_el.attrib or "feltVlnc" not in root_el.attrib:
            continue
        subject_el = root_el.find("subject")
        try:
            subject = int((subject_el.get("id") if subject_el is not None else None) or root_el.get("subject") or -1)
            valence, arousal = _check_labels(xml_path, float(root_el.get("feltVlnc")), float(root_el.get("feltArsl")))
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"{xml_path}: malformed subject id or self-report ({exc})") from exc
        if keep is not None and subject not in keep:
            continue
        bdfs = sorted(folder.glob("*.bdf"))
        if not bdfs:
            raise BadInputError(f"{folder}: session has self-reports but no .bdf file")
        channels = read_bdf(bdfs[0])
        signals: dict[str, Signal] = {}
        exg = [c for c in ("EXG1", "EXG2", "EXG3") if c in channels]
        if "EXG1" in channels and "EXG3" in channels:
            a, b = channels["EXG3"], channels["EXG1"]
            signals["ecg"] = Signal(a.values - b.values, a.fs_hz, a.unit)
        elif exg:
            signals["ecg"] = Signal(channels[exg[0]].values, channels[exg[0]].fs_hz, channels[exg[0]].unit)
        if "GSR1" in channels:
            g = channels["GSR1"]
            unit = g.unit.lower().replace("µ", "u")
            signals["eda"] = _gsr_signal(g.values, g.fs_hz, unit if unit in GSR_UNITS else "raw")
        if not signals:
            raise BadInputError(f"{bdfs[0]}: no ECG (EXG1-3) or GSR1 channel")
        any_sig = next(iter(channels.values()))
        t_end = any_sig.values.size / any_sig.fs_hz
        if "Status" in channels:
            t_end = _stimulus_end_s(channels["Status"]) or t_end
        video = None
        if with_video:
            avis = sorted(folder.glob("*.avi"))
            frontal = [p for p in avis if "C1" in p.name]
            video = (frontal or avis or [None])[0]
        trial = counts.get(subject, 0)
        counts[subject] = trial + 1
        yield TrialRecord("mahnob", subject, trial, valence, arousal, signals, t_end, video, 0.0, bdfs[0])


# -- AMIGOS -----------------------------------------------------------------------------------

def _cells(obj: Any) -> list:
    a = np.asarray(obj, dtype=object)
    return [a.flat[i] for i in range(a.size)]


def load_amigos(root: str | Path, subjects: Iterable[int] | None = None, video_dir: str | Path | None = None,
                gsr_units: str = "raw",
                video_pattern: str = "P{subject:02d}_{video_id}_face*") -> Iterator[TrialRecord]:
    """Trials of AMIGOS's preprocessed data (short videos, individual setting).

    Args:
        root: folder searched (recursively) for ``Data_Preprocessed_PXX.mat``.
        subjects: participant numbers to load (default all found).
        video_dir: folder of the face videos, matched by ``video_pattern`` (formatted with
            ``subject`` and the trial's ``video_id`` from ``VideoIDs``, or its 1-based index
            when the file has none); assumed to start with the trial's signals.
        gsr_units: a key of :data:`GSR_UNITS` (default ``"raw"``: no EDA level summary).
        video_pattern: glob pattern of a trial's video under ``video_dir``.

    Yields:
        :class:`TrialRecord` with ``ecg`` (ECG left, column 16) and ``eda`` (GSR, column 17)
        at 128 Hz, the window ending at the trial's end. Empty trials are skipped.

    Raises:
        BadInputError: the folder or a file is missing, or a file is not AMIGOS-shaped.
        ConfigError: unknown gsr_units.
    """
    from scipy.io import loadmat

    base = _root(root, "AMIGOS")
    if gsr_units.lower() not in GSR_UNITS:
        raise ConfigError(f"unknown GSR units {gsr_units!r}; choose one of {sorted(GSR_UNITS)}")
    found = {}
    for p in base.rglob("Data_Preprocessed_P*.mat"):
        m = re.fullmatch(r"Data_Preprocessed_P(\d+)\.mat", p.name)
        if m:
            found[int(m.group(1))] = p
    wanted = sorted(found) if subjects is None else [int(s) for s in subjects]
    if not wanted:
        raise BadInputError(f"{base}: no AMIGOS Data_Preprocessed_PXX.mat files")
    for subject in wanted:
        path = found.get(subject, base / f"Data_Preprocessed_P{subject:02d}.mat")
        try:
            mat = loadmat(path)
        except FileNotFoundError as exc:
            raise BadInputError(f"{path}: no such AMIGOS file") from exc
        except (ValueError, TypeError, OSError, NotImplementedError) as exc:
            raise BadInputError(f"{path}: not a readable MATLAB file ({exc})") from exc
        if "joined_data" not in mat or "labels_selfassessment" not in mat:
            raise BadInputError(f"{path}: missing joined_data or labels_selfassessment")
        trials, labels = _cells(mat["joined_data"]), _cells(mat["labels_selfassessment"])
        ids = _cells(mat["VideoIDs"]) if "VideoIDs" in mat else [None] * len(trials)
        if len(labels) != len(trials):
            raise BadInputError(f"{path}: {len(trials)} trials but {len(labels)} label rows")
        for trial, (x, lab, vid) in enumerate(zip(trials, labels, ids)):
            x = np.asarray(x, dtype=np.float64)
            if x.size == 0:
                continue
            lab = np.asarray(lab, dtype=np.float64).ravel()
            if x.ndim != 2 or x.shape[1] <= AMIGOS_GSR or lab.size < 2:
                raise BadInputError(f"{path}: trial {trial + 1} is not (samples, 17) with >= 2 labels")
            arousal, valence = lab[0], lab[1]
            if not (np.isfinite(valence) and np.isfinite(arousal)):
                continue
            valence, arousal = _check_labels(path, valence, arousal)
            video = None
            if video_dir is not None:
                named = vid is not None and np.asarray(vid).size > 0
                video_id = str(np.asarray(vid).ravel()[0]) if named else str(trial + 1)
                matches = sorted(Path(video_dir).glob(video_pattern.format(subject=subject, video_id=video_id)))
                video = matches[0] if matches else None
            yield TrialRecord(
                corpus="amigos", subject=subject, trial=trial, valence=valence, arousal=arousal,
                signals={
                    "ecg": Signal(x[:, AMIGOS_ECG_LEFT], AMIGOS_FS_HZ),
                    "ecg_right": Signal(x[:, AMIGOS_ECG_RIGHT], AMIGOS_FS_HZ),
                    "eda": _gsr_signal(x[:, AMIGOS_GSR], AMIGOS_FS_HZ, gsr_units),
                },
                t_end_s=x.shape[0] / AMIGOS_FS_HZ, video_path=video, source=path,
            )


#: Loaders by corpus name (``emofuse train --data deap:DIR`` and friends).
CORPORA: dict[str, Callable[..., Iterator[TrialRecord]]] = {
    "deap": load_deap,
    "mahnob": load_mahnob,
    "amigos": load_amigos,
}


# -- video -----------------------------------------------------------------------------------

class VideoSource:
    """Frames of a video file with their times, read on demand (faces are found by
    :func:`edge.windows.windows_from_session` with the record's face-box method).

    Frame i is at ``t0_s + i / fps`` (the container's nominal rate).

    Args:
        path: the video file.
        t0_s: time of frame 0 in the trial's time base, s.

    Raises:
        BadInputError: the file cannot be opened or reports no frames or no frame rate.
    """

    def __init__(self, path: str | Path, t0_s: float = 0.0) -> None:
        import cv2

        self.path = Path(path)
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise BadInputError(f"{self.path}: cannot open video")
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(cap.get(cv2.CAP_PROP_FPS))
        finally:
            cap.release()
        if n < 2 or not (math.isfinite(fps) and fps > 0):
            raise BadInputError(f"{self.path}: video reports {n} frames at {fps} fps")
        self.fps = fps
        self.frame_times_s = float(t0_s) + np.arange(n) / fps
        self._frames: dict[int, np.ndarray] = {}

    def frames_at(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        """Decode the given frames (sorted ascending), reading sequentially from the first.

        Returns:
            dict index -> uint8 (H, W, 3) BGR frame; frames past the real end are absent.

        Raises:
            BadInputError: the file cannot be opened.
        """
        import cv2

        wanted = sorted({int(i) for i in indices})
        if not wanted:
            return {}
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise BadInputError(f"{self.path}: cannot open video")
        try:
            cap.set(cv2.CAP_PROP_POS_FRAMES, wanted[0])
            pos, want = wanted[0], set(wanted)
            while pos <= wanted[-1]:
                if not cap.grab():
                    break
                if pos in want:
                    ok, frame = cap.retrieve()
                    if ok:
                        self._frames[pos] = frame
                pos += 1
        finally:
            cap.release()
        return {i: self._frames[i] for i in wanted if i in self._frames}

    def frame(self, i: int) -> np.ndarray:
        """Frame i, uint8 BGR. Raises BadInputError when it cannot be decoded."""
        got = self.frames_at([i])
        if i not in got:
            raise BadInputError(f"{self.path}: cannot decode frame {i}")
        return got[i]


def _recording(record: TrialRecord) -> Recording:
    rec = Recording(ppg=record.signals.get("ppg"), eda=record.signals.get("eda"), ecg=record.signals.get("ecg"),
                    t_end_s=record.t_end_s)
    if record.video_path is not None:
        video = VideoSource(record.video_path, record.video_t0_s)
        rec.frame_times_s = video.frame_times_s
        rec.frame = video.frame
        rec.frames_at = video.frames_at
    return rec


def windows_from_corpus(records: Iterable[TrialRecord], preprocessing: Preprocessing | None = None,
                        progress: bool = False) -> EmotionWindows:
    """The contract windows of corpus trials, one per trial (its last ``window_s`` seconds).

    Missing parts are explicit, never invented: a trial without a video (or where the face is
    never found) has zero face tensors and ``face_present`` False; a signal the corpus lacks
    (PPG in MAHNOB and AMIGOS) is a zero contact row with ``contact_present`` False; the
    heart-rate level then comes from the ECG; the EDA level needs the GSR in microsiemens
    (``level_present`` says which summaries exist). A window reaching before the start of a
    trial's signals leaves those samples invalid (0).

    Args:
        records: from :func:`load_deap`, :func:`load_mahnob`, :func:`load_amigos`.
        preprocessing: the record (default :data:`edge.spec.DEFAULT`); faces are found by its
            face-box method (:mod:`edge.windows`), as on the device.
        progress: show a tqdm progress bar.

    Returns:
        :class:`~export.data.preprocess.EmotionWindows`; ``meta`` lists each window's corpus,
        source file and video.

    Raises:
        BadInputError: a corrupt file met while loading; no records at all.
    """
    p = DEFAULT if preprocessing is None else preprocessing
    windows: list[Window] = []
    rows: list[TrialRecord] = []
    iterator: Iterable[TrialRecord] = records
    if progress:
        from tqdm import tqdm

        iterator = tqdm(records, desc="corpus trials", unit="trial")
    for record in iterator:
        windows.append(windows_from_session(_recording(record), p))
        rows.append(record)
    if not rows:
        raise BadInputError("no trials to cut windows from")
    meta = {
        "source": sorted({r.corpus for r in rows}),
        "preprocessing": p.to_dict(),
        "records": [{"corpus": r.corpus, "subject": r.subject, "trial": r.trial,
                     "source": str(r.source) if r.source else None,
                     "video": str(r.video_path) if r.video_path else None, "t_end_s": r.t_end_s} for r in rows],
    }
    return EmotionWindows.from_windows(windows, [r.valence for r in rows], [r.arousal for r in rows],
                                       [r.subject for r in rows], [r.trial for r in rows], meta)
