"""Calibration sets: model-ready windows, cut with exactly the bundle's preprocessing.

INT8 ranges are only as good as the data they are computed on, and they are only valid for
inputs made the way the device makes them. So a calibration set is built from recordings (or
the synthetic generator) through :func:`export.data.windows_from_session` with the bundle
manifest's own ``preprocessing`` dict - the function and the settings that made the training
data and that the runtime uses - never from random tensors and never from a second copy of the
settings.

Sources (``--data``):

- ``synth[:seed=S,trials=T,subjects=N]``: the synthetic generator (:mod:`export.data.synth`,
  docs/DATASET.md) with its own seed (default :data:`DEFAULT_SYNTH_SEED`, so its subjects are
  people the model was not trained on), as many subjects as the requested windows need;
- ``recordings:DIR``: emofuse recordings (:func:`firmware_bridge.recording.open_recording`),
  DIR itself or every recording folder inside it; windows of ``window_s`` every ``window_s / 2``
  seconds; faces found by the runtime's Haar detector; labels from an optional
  ``labels.json`` (``{"valence": 1-9, "arousal": 1-9, "subject": id}``) in each folder;
- ``deap:DIR``: the DEAP corpus via :func:`export.data.load_deap` /
  :func:`export.data.windows_from_corpus`;
- ``npz:PATH``: an :class:`export.data.EmotionWindows` file (its preprocessing must equal the
  manifest's).

The pool of windows is split by subject into the calibration windows (ranges are computed on
them) and held-out windows, themselves split by subject into a *sweep* part (the per-layer
sensitivity sweep measures drift on it) and a *gate* part (the accuracy gate's verdict), so the
gate judges on windows that chose nothing. Within each part windows are drawn stratified over
subject x valence class x arousal class (round-robin over the cells), so no subject or label
combination dominates the ranges.

Files, beside the bundle's graphs (inside the bundle folder):

- ``calibration.npz``: one float32 array per model input, named as the input (N, ...), plus
  ``valence``, ``arousal`` (float32 1-9), ``valence_high``, ``arousal_high``, ``subject``,
  ``trial`` (int64) and ``meta`` (a JSON string: source, preprocessing hash, seeds, counts).
  TensorRT's implicit calibrator (calibrate/engine_build.py) and ModelOpt read it too.
- ``calibration_holdout.npz``: the held-out windows in the same layout plus ``part``
  (int64: 0 sweep, 1 gate).

Neither file is listed in the manifest's ``files`` (they are not needed on the device); the
calibration file's SHA-256 is recorded under ``quantization.calibration`` by
:mod:`calibrate.quantize`.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from calibrate.gate import run_graph
from edge.bundle import sha256_file
from edge.preprocess import modality_flags_batch
from edge.spec import Preprocessing
from edge.windows import recording_session, window_shapes, windows_from_session
# calibrate builds on export's torch-free dataset package (the synthetic corpus, corpus loaders
# and the EmotionWindows container) on purpose: calibration data is training data. It never
# imports export's torch side (models, training); tests/test_layering.py holds it to that.
from export.data.corpora import load_deap, windows_from_corpus
from export.data.preprocess import EmotionWindows
from export.data.synth import SynthConfig, synth_trials
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.recording import is_recording, open_recording
from firmware_bridge.sim import synth_session

log = logging.getLogger("emofuse.calibrate")

CALIBRATION_FILE = "calibration.npz"
HOLDOUT_FILE = "calibration_holdout.npz"
FORMAT = "emofuse-calibration/1"
DEFAULT_WINDOWS = 500
DEFAULT_HOLDOUT = 1400
# Training uses seed 0 by default; calibration people must be other people.
DEFAULT_SYNTH_SEED = 1001
LABEL_ARRAYS = ("valence", "arousal", "valence_high", "arousal_high", "subject", "trial")
PART_SWEEP, PART_GATE = 0, 1
SOURCES = ("synth", "recordings", "deap", "npz")


def canonical_json(value) -> str:
    """Stable JSON text of a JSON-like value (sorted keys, no spaces): for hashing/comparing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def preprocessing_hash(preprocessing: Preprocessing) -> str:
    """SHA-256 (hex, first 16 digits) of a preprocessing record's canonical JSON."""
    return hashlib.sha256(canonical_json(preprocessing.to_dict()).encode()).hexdigest()[:16]


# -- the calibration set ---------------------------------------------------------------------------

@dataclass(eq=False)
class CalibrationSet:
    """Model-ready windows with their labels.

    Attributes:
        inputs: input name -> array (N, ...) with the manifest's dtype (float32), in the
            manifest's input order.
        valence, arousal: float32 (N,) self-reports 1-9 (5.0 when unlabelled).
        valence_high, arousal_high: int64 (N,) class index 0 low / 1 high (score > 5).
        subject, trial: int64 (N,).
        meta: JSON-ready dict (source, preprocessing hash, seeds, counts, labelled flag...).
        part: int64 (N,) for held-out sets (0 sweep, 1 gate), else None.
    """

    inputs: dict
    valence: np.ndarray
    arousal: np.ndarray
    valence_high: np.ndarray
    arousal_high: np.ndarray
    subject: np.ndarray
    trial: np.ndarray
    meta: dict = field(default_factory=dict)
    part: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise BadInputError("a calibration set needs at least one input array")
        n = None
        for name, a in list(self.inputs.items()) + [(k, getattr(self, k)) for k in LABEL_ARRAYS]:
            if not isinstance(a, np.ndarray) or a.ndim < 1:
                raise BadInputError(f"calibration array {name!r} must be an ndarray with a window axis")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise BadInputError(f"calibration array {name!r} has {a.shape[0]} windows, expected {n}")
        if self.part is not None and self.part.shape != (n,):
            raise BadInputError(f"calibration 'part' must have shape ({n},), got {self.part.shape}")

    def __len__(self) -> int:
        return int(self.subject.shape[0])

    @property
    def labelled(self) -> bool:
        return bool(self.meta.get("labelled", True))

    @property
    def labels(self) -> dict | None:
        """Head -> int64 (N,) true class, or None for unlabelled windows."""
        if not self.labelled:
            return None
        return {"valence": self.valence_high, "arousal": self.arousal_high}

    def subset(self, idx) -> "CalibrationSet":
        """The windows ``idx`` (indices or bool mask), same meta (with an updated count): views
        of these arrays when ``idx`` is one contiguous ascending block, else copies."""
        sel = np.asarray(idx)
        if sel.dtype == bool:
            sel = np.nonzero(sel)[0]
        if sel.size and np.array_equal(sel, np.arange(sel[0], sel[0] + sel.size)):
            # A contiguous block: views instead of copies (the arrays are never written to).
            sel = slice(int(sel[0]), int(sel[0]) + sel.size)
        meta = copy.deepcopy(self.meta)
        out = CalibrationSet(
            inputs={k: np.ascontiguousarray(v[sel]) for k, v in self.inputs.items()},
            **{k: np.ascontiguousarray(getattr(self, k)[sel]) for k in LABEL_ARRAYS},
            meta=meta, part=None if self.part is None else np.ascontiguousarray(self.part[sel]))
        out.meta["n_windows"] = len(out)
        return out

    def select_part(self, part: int) -> "CalibrationSet":
        """The held-out windows of one part (:data:`PART_SWEEP` or :data:`PART_GATE`).

        Raises:
            ConfigError: this set has no parts.
        """
        if self.part is None:
            raise ConfigError("this calibration set has no sweep/gate parts (not a held-out set)")
        return self.subset(np.nonzero(self.part == part)[0])

    def save(self, path) -> Path:
        """Write one compressed ``.npz`` (atomically: a temporary file renamed at the end).

        Raises:
            ConfigError: an input is named like a label array or ``meta``/``part``.
        """
        path = Path(path)
        clash = set(self.inputs) & (set(LABEL_ARRAYS) | {"meta", "part"})
        if clash:
            raise ConfigError(f"model inputs {sorted(clash)} clash with calibration array names")
        arrays = dict(self.inputs)
        arrays.update({k: getattr(self, k) for k in LABEL_ARRAYS})
        if self.part is not None:
            arrays["part"] = self.part
        meta = dict(self.meta, format=FORMAT, input_names=list(self.inputs), n_windows=len(self))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays, meta=np.array(json.dumps(meta)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "CalibrationSet":
        """Read a file written by :meth:`save` (no pickle).

        Raises:
            BadInputError: missing, unreadable, not a calibration file, or inconsistent arrays.
        """
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path}: no such calibration file")
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "meta" not in npz.files:
                    raise BadInputError(f"{path}: not a calibration file (no 'meta')")
                meta = json.loads(str(npz["meta"]))
                if meta.get("format") != FORMAT:
                    raise BadInputError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
                names = meta.get("input_names") or []
                missing = [k for k in (*names, *LABEL_ARRAYS) if k not in npz.files]
                if missing or not names:
                    raise BadInputError(f"{path}: missing arrays {missing or ['<inputs>']}")
                inputs = {k: npz[k] for k in names}
                labels = {k: npz[k] for k in LABEL_ARRAYS}
                part = npz["part"] if "part" in npz.files else None
        except BadInputError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as exc:
            raise BadInputError(f"{path}: unreadable calibration file ({exc})") from exc
        try:
            return cls(inputs=inputs, **labels, meta=meta, part=part)
        except BadInputError as exc:
            raise BadInputError(f"{path}: {exc}") from exc

    def check_bundle(self, bundle) -> None:
        """Check that these windows fit a bundle: same inputs (names, non-batch shapes,
        dtypes) and the same preprocessing.

        Raises:
            ConfigError: they do not (the message says what differs).
        """
        specs = {s.name: s for s in bundle.inputs}
        if list(self.inputs) != list(specs):
            raise ConfigError(f"calibration inputs {list(self.inputs)} differ from the bundle's {list(specs)}")
        for name, a in self.inputs.items():
            s = specs[name]
            if tuple(a.shape[1:]) != tuple(s.shape[1:]) or str(a.dtype) != s.dtype:
                raise ConfigError(f"calibration input {name!r} is {a.dtype} {a.shape[1:]}, the bundle "
                                  f"wants {s.dtype} {tuple(s.shape[1:])}")
        want = preprocessing_hash(bundle.manifest.preprocessing)
        got = self.meta.get("preprocessing_hash")
        if got != want:
            raise ConfigError(f"calibration windows were preprocessed with settings {got}, the bundle's "
                              f"manifest has {want}; rebuild them (emofuse calibrate --rebuild)")


def file_sha256(path) -> str:
    """Lowercase hex SHA-256 of a file.

    Raises:
        BadInputError: unreadable file.
    """
    return sha256_file(path)


# -- data sources -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value: ``kind`` (one of :data:`SOURCES`), a path, options."""

    kind: str
    path: Path | None = None
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        if self.kind == "synth":
            opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
            return "synth" + (f":{opts}" if opts else "")
        return f"{self.kind}:{self.path}"


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``synth[:k=v,...]``, ``recordings:DIR``, ``deap:DIR``, ``npz:PATH`` or ``PATH.npz``.

    Raises:
        ConfigError: unknown kind, a path-less spec, or a bad synth option.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("--data is empty; use synth, recordings:DIR, deap:DIR or npz:PATH")
    kind, _, rest = spec.strip().partition(":")
    if spec.strip().endswith(".npz") and kind not in SOURCES:
        return DataSpec("npz", Path(spec.strip()))
    if kind not in SOURCES:
        raise ConfigError(f"unknown data source {kind!r} in {spec!r}; use one of {', '.join(SOURCES)}")
    if kind == "synth":
        options = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key not in ("seed", "trials", "subjects"):
                raise ConfigError(f"bad synth option {item!r}; use seed=S, trials=T, subjects=N")
            try:
                options[key] = int(value)
            except ValueError:
                raise ConfigError(f"synth option {key} must be an integer, got {value!r}") from None
            if options[key] < (0 if key == "seed" else 1):
                raise ConfigError(f"synth option {key} out of range: {value}")
        return DataSpec("synth", None, options)
    if not rest:
        raise ConfigError(f"--data {kind} needs a path: {kind}:PATH")
    return DataSpec(kind, Path(rest))


def _render_synth(item):
    # Top level so that a process pool can pickle it. Without ``keep_seq`` the 120 face crops
    # (the bulk of a window: 1.5 MB at 64 px) are dropped in the worker, before they are sent.
    trial, preprocessing, keep_seq = item
    window = windows_from_session(synth_session(trial.sim), preprocessing, t_end_s=trial.sim.duration_s)
    return window if keep_seq else dataclasses.replace(window, face_seq_crops=None)


def _synth_trials(n_windows: int, seed: int, trials_per_subject: int, n_subjects: int | None):
    subjects = n_subjects or max(2, math.ceil(n_windows / trials_per_subject))
    cfg = SynthConfig(n_subjects=int(subjects), trials_per_subject=int(trials_per_subject), seed=int(seed))
    return cfg, synth_trials(cfg)


def _synth_meta(cfg, preprocessing: Preprocessing) -> dict:
    return {"source": "synthetic", "preprocessing": preprocessing.to_dict(),
            "config": {"n_subjects": cfg.n_subjects, "trials_per_subject": cfg.trials_per_subject,
                       "seed": cfg.seed}}


def _rendered(trials, preprocessing: Preprocessing, workers: int, progress: bool, keep_seq: bool = True):
    """Yield the :class:`edge.preprocess.Window` of each trial, in trial order, one at a time
    (a tqdm bar on stderr counts them when ``progress``)."""
    items = [(t, preprocessing, keep_seq) for t in trials]
    with tqdm(total=len(items), desc="calibration windows", unit="window", disable=not progress,
              file=sys.stderr) as bar:
        if workers > 1:
            # spawn: the parent may hold OpenMP/ORT threads that a fork could deadlock on.
            # Chunks of one: results come back in order as they are made, so only a few
            # windows wait in the parent at any time.
            with ProcessPoolExecutor(int(workers), mp_context=multiprocessing.get_context("spawn")) as pool:
                for window in pool.map(_render_synth, items, chunksize=1):
                    bar.update()
                    yield window
        else:
            for item in items:
                window = _render_synth(item)
                bar.update()
                yield window


def synth_windows(preprocessing: Preprocessing, n_windows: int, seed: int = DEFAULT_SYNTH_SEED,
                  trials_per_subject: int = 8, n_subjects: int | None = None, workers: int = 1,
                  progress: bool = False):
    """Synthetic windows rendered with the given preprocessing (the bundle's), every array of
    every window kept (for training-style use; calibration streams with :func:`synth_pool`).

    Args:
        preprocessing: the manifest's preprocessing record.
        n_windows: windows wanted (subjects = ceil(n / trials_per_subject) unless given).
        seed: generator seed (subjects, labels, rendering).
        trials_per_subject: trials (one window each) per subject, >= 1.
        n_subjects: override the subject count.
        workers: processes rendering in parallel.
        progress: show a tqdm bar (on stderr).

    Returns:
        An :class:`export.data.EmotionWindows`.

    Raises:
        ConfigError: bad settings.
    """
    cfg, trials = _synth_trials(n_windows, seed, trials_per_subject, n_subjects)
    windows = list(_rendered(trials, preprocessing, workers, progress))
    return EmotionWindows.from_windows(windows, [t.valence for t in trials], [t.arousal for t in trials],
                                       [t.subject for t in trials], [t.trial for t in trials],
                                       _synth_meta(cfg, preprocessing))


@dataclass(eq=False)
class WindowPool:
    """Labelled windows kept only as far as one bundle's inputs need them (the streamed pool).

    The same attributes as :class:`export.data.EmotionWindows` that :func:`model_inputs` and
    the selection read, without ``face_seq_crops`` (120 crops, 1.5 MB per window at 64 px, are
    turned into ``face_feats`` by the bundle's face encoder as they arrive, or dropped when the
    bundle takes no ``face_feats``). Shapes as in EmotionWindows; ``face_feats`` float32
    (N, seq_frames, D) or None.
    """

    face_clip: np.ndarray
    tfr: np.ndarray
    contact: np.ndarray
    contact_level: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    valence_high: np.ndarray
    arousal_high: np.ndarray
    subject: np.ndarray
    trial: np.ndarray
    face_present: np.ndarray
    contact_present: np.ndarray
    level_present: np.ndarray
    meta: dict
    face_feats: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.valence.shape[0])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.meta["preprocessing"])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray))


_POOL_ARRAYS = ("face_clip", "tfr", "contact", "contact_level", "face_present", "contact_present", "level_present")


def synth_pool(bundle, n_windows: int, seed: int = DEFAULT_SYNTH_SEED, trials_per_subject: int = 8,
               n_subjects: int | None = None, workers: int = 1, progress: bool = False,
               chunk: int = 32) -> WindowPool:
    """Synthetic windows for one bundle, streamed: each window is rendered (in ``workers``
    processes), reduced to what the bundle's inputs need and written into preallocated arrays,
    so memory grows by about 0.1 MB per window at 64 px instead of 1.6 MB
    (:func:`synth_windows` keeps every window whole).

    Args:
        bundle: an :class:`edge.bundle.Bundle`; its manifest's preprocessing renders the windows
            and its inputs say what is kept (``face_feats`` are computed from the crops by its
            ``face_encoder`` graph, ``chunk`` windows at a time).
        n_windows, seed, trials_per_subject, n_subjects, workers, progress: as :func:`synth_windows`.
        chunk: windows whose crops wait for one face-encoder run.

    Returns:
        A :class:`WindowPool` with the same windows, labels and meta as :func:`synth_windows`.

    Raises:
        ConfigError: bad settings, or a bundle with ``face_feats`` but no face encoder.
        BadInputError: the face encoder fails.
    """
    preprocessing = bundle.manifest.preprocessing
    cfg, trials = _synth_trials(n_windows, seed, trials_per_subject, n_subjects)
    n = len(trials)
    shapes = window_shapes(preprocessing)
    arrays = {k: np.zeros((n,) + shapes[k][0], shapes[k][1]) for k in _POOL_ARRAYS}
    want_feats = "face_feats" in {s.name for s in bundle.inputs}
    feats, pending = None, []

    def flush() -> None:
        nonlocal feats
        if not pending:
            return
        got = _face_feats(bundle, np.stack([c for _, c in pending]), 1024)
        if feats is None:
            feats = np.zeros((n,) + got.shape[1:], np.float32)
        feats[[i for i, _ in pending]] = got
        pending.clear()

    for i, window in enumerate(_rendered(trials, preprocessing, workers, progress, keep_seq=want_feats)):
        for k in _POOL_ARRAYS:
            arrays[k][i] = getattr(window, k)
        if want_feats:
            pending.append((i, np.asarray(window.face_seq_crops, np.uint8)))
            if len(pending) >= chunk:
                flush()
    flush()
    v = np.asarray([t.valence for t in trials], np.float32)
    a = np.asarray([t.arousal for t in trials], np.float32)
    return WindowPool(**arrays, valence=v, arousal=a, valence_high=(v > 5.0).astype(np.int64),
                      arousal_high=(a > 5.0).astype(np.int64),
                      subject=np.asarray([t.subject for t in trials], np.int64),
                      trial=np.asarray([t.trial for t in trials], np.int64),
                      meta=_synth_meta(cfg, preprocessing), face_feats=feats)


def _recording_folders(root: Path) -> list[Path]:
    if is_recording(root):
        return [root]
    if not root.is_dir():
        raise BadInputError(f"recordings folder not found: {root}")
    found = sorted(p for p in root.iterdir() if p.is_dir() and is_recording(p))
    if not found:
        raise BadInputError(f"{root}: no recording folders in it (emofuse recordings or PhysRecorder folders)")
    return found


def recording_windows(root, preprocessing: Preprocessing, hop_s: float | None = None):
    """Windows from emofuse recordings (see the module docstring).

    Args:
        root: a recording folder or a folder of them.
        preprocessing: the manifest's preprocessing record.
        hop_s: seconds between window ends (default ``window_s / 2``).

    Returns:
        An :class:`export.data.EmotionWindows` (``meta["labelled"]`` False when a folder had no
        ``labels.json``).

    Raises:
        BadInputError: no recordings, unreadable files, or recordings shorter than a window.
    """
    window_s = preprocessing.window_s
    hop = float(hop_s) if hop_s else window_s / 2.0
    wins, val, aro, subj, trial = [], [], [], [], []
    labelled = True
    for k, folder in enumerate(_recording_folders(Path(root))):
        labels_path = folder / "labels.json"
        labels = {}
        if labels_path.is_file():
            try:
                labels = json.loads(labels_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise BadInputError(f"{labels_path}: unreadable ({exc})") from exc
        else:
            labelled = False
        v, a = float(labels.get("valence", 5.0)), float(labels.get("arousal", 5.0))
        if not (1.0 <= v <= 9.0 and 1.0 <= a <= 9.0):
            raise BadInputError(f"{labels_path}: valence/arousal must be within 1-9")
        session = recording_session(open_recording(folder), preprocessing)
        ends = [e for e in (session.ppg, session.eda, session.ecg) if e is not None and e.t_s.size]
        last = [float(s.t_s[-1]) for s in ends]
        if session.frame_times_s is not None and session.frame_times_s.size:
            last.append(float(session.frame_times_s[-1]))
        if not last:
            raise BadInputError(f"{folder}: the recording holds no usable stream")
        t_end = min(last)
        n_win = int((t_end - window_s) // hop) + 1 if t_end >= window_s else 0
        if n_win < 1:
            log.warning("%s: %.1f s is shorter than one %.0f s window; skipped", folder, t_end, window_s)
            continue
        for j in range(n_win):
            wins.append(windows_from_session(session, preprocessing, t_end_s=t_end - j * hop))
            val.append(v)
            aro.append(a)
            subj.append(int(labels.get("subject", k)))
            trial.append(j)
    if not wins:
        raise BadInputError(f"{root}: no recording is long enough for one {window_s:.0f} s window")
    meta = {"source": f"recordings:{root}", "preprocessing": preprocessing.to_dict(), "labelled": labelled}
    return EmotionWindows.from_windows(wins, val, aro, subj, trial, meta)


def deap_windows(root, preprocessing: Preprocessing):
    """Windows of the DEAP corpus through H10's loaders (:func:`export.data.load_deap`,
    :func:`export.data.windows_from_corpus`) with the manifest's preprocessing.

    Raises:
        BadInputError: unreadable corpus files. MissingDependencyError-free: pure NumPy.
    """
    return windows_from_corpus(load_deap(Path(root)), preprocessing)


def load_pool(spec: DataSpec, preprocessing: Preprocessing, n_windows: int, workers: int = 1, progress: bool = False,
              bundle=None):
    """The pool of windows a calibration set is drawn from.

    With ``bundle`` (whose preprocessing is ``preprocessing``), synthetic windows are streamed
    into a :class:`WindowPool` that keeps only what that bundle's inputs need
    (:func:`synth_pool`); otherwise an :class:`export.data.EmotionWindows`.

    Raises:
        ConfigError: the data was preprocessed differently from ``preprocessing``.
        BadInputError: unreadable data.
    """
    if spec.kind == "synth":
        opts = spec.options
        kwargs = dict(seed=opts.get("seed", DEFAULT_SYNTH_SEED), trials_per_subject=opts.get("trials", 8),
                      n_subjects=opts.get("subjects"), workers=workers, progress=progress)
        if bundle is not None:
            pool = synth_pool(bundle, n_windows, **kwargs)
        else:
            pool = synth_windows(preprocessing, n_windows, **kwargs)
    elif spec.kind == "recordings":
        pool = recording_windows(spec.path, preprocessing)
    elif spec.kind == "deap":
        pool = deap_windows(spec.path, preprocessing)
    else:
        pool = EmotionWindows.load(spec.path)
    got = preprocessing_hash(pool.preprocessing)
    want = preprocessing_hash(preprocessing)
    if got != want:
        raise ConfigError(f"{spec}: windows were preprocessed with settings {got}, the bundle's manifest "
                          f"has {want}; calibration must use the bundle's own preprocessing")
    return pool


# -- selection -----------------------------------------------------------------------------------

def stratified_order(subject, valence_high, arousal_high, seed: int = 0) -> np.ndarray:
    """An order of window indices that cycles over (subject, valence class, arousal class) cells.

    The first k indices of the order are as evenly spread over the cells as k allows: round r
    takes the r-th window (in a seeded random order) of every cell that still has one, and
    cells are visited subject by subject.

    Args:
        subject, valence_high, arousal_high: int (N,) per window.
        seed: shuffles windows within a cell and the subject order.

    Returns:
        int64 (N,) a permutation of range(N).
    """
    s = np.asarray(subject, np.int64)
    v = np.asarray(valence_high, np.int64)
    a = np.asarray(arousal_high, np.int64)
    rng = np.random.default_rng(seed)
    subjects = rng.permutation(np.unique(s))
    cells = []
    for u in subjects:
        for vc in (0, 1):
            for ac in (0, 1):
                idx = np.nonzero((s == u) & (v == vc) & (a == ac))[0]
                if idx.size:
                    cells.append(rng.permutation(idx))
    order = []
    depth = max((c.size for c in cells), default=0)
    for r in range(depth):
        order.extend(int(c[r]) for c in cells if r < c.size)
    return np.asarray(order, np.int64)


def split_subjects(subject, n_holdout: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split windows into calibration and held-out by subject.

    Held-out subjects are taken (in a seeded order) until they hold about ``n_holdout`` windows,
    leaving at least one subject for calibration. With one subject, windows are split instead.

    Returns:
        (calibration indices, held-out indices), int64.
    """
    s = np.asarray(subject, np.int64)
    n = s.size
    if n_holdout <= 0:
        return np.arange(n), np.zeros(0, np.int64)
    ids = np.random.default_rng(seed + 1).permutation(np.unique(s))
    if ids.size < 2:
        perm = np.random.default_rng(seed + 1).permutation(n)
        k = min(n_holdout, n // 2)
        return np.sort(perm[k:]), np.sort(perm[:k])
    held = []
    count = 0
    for u in ids[:-1]:
        if count >= n_holdout:
            break
        held.append(u)
        count += int(np.sum(s == u))
    mask = np.isin(s, held)
    return np.nonzero(~mask)[0], np.nonzero(mask)[0]


def sweep_gate_parts(subject, seed: int = 0) -> np.ndarray:
    """Split held-out windows into the sweep (0) and gate (1) parts, alternating subjects
    (windows alternate when there is one subject).

    Returns:
        int64 (N,) part per window.
    """
    s = np.asarray(subject, np.int64)
    ids = np.random.default_rng(seed + 2).permutation(np.unique(s))
    if ids.size < 2:
        return (np.arange(s.size) % 2).astype(np.int64)
    part_of = {int(u): k % 2 for k, u in enumerate(ids)}
    return np.asarray([part_of[int(u)] for u in s], np.int64)


# -- model inputs --------------------------------------------------------------------------------

def model_inputs(windows, bundle, idx=None, batch: int = 1024) -> dict:
    """The bundle's model inputs for windows of an :class:`export.data.EmotionWindows`.

    The same layout the training code feeds (``export.train.window_inputs``): ``face_clip``
    uint8 (N, T, H, W, 3) -> float32 (N, T, 3, H, W) / 255; ``tfr`` (N, F, T) -> (N, 1, F, T);
    ``contact`` and ``contact_level`` as stored; ``present`` by
    :func:`edge.preprocess.modality_flags_batch`; ``face_feats`` from the bundle's own
    ``face_encoder.onnx`` on ``face_seq_crops`` / 255, as the device computes them.

    Args:
        windows: the dataset.
        bundle: an :class:`edge.bundle.Bundle`.
        idx: optional window indices.
        batch: crops per face-encoder run.

    Returns:
        input name -> array (N, ...) with the manifest's dtype, in the manifest's order.

    Raises:
        ConfigError: an input this code does not know how to build, or a shape that differs
            from the manifest's.
    """
    sel = slice(None) if idx is None else np.asarray(idx)
    out = {}
    for spec in bundle.inputs:
        name = spec.name
        if name == "face_clip":
            arr = _clip_floats(windows.face_clip, sel)
        elif name == "tfr":
            arr = np.ascontiguousarray(windows.tfr[sel], dtype=np.float32)[:, None]
        elif name in ("contact", "contact_level"):
            arr = np.ascontiguousarray(getattr(windows, name)[sel], dtype=np.float32)
        elif name == "present":
            arr = modality_flags_batch(windows.face_clip[sel], windows.tfr[sel], windows.contact_present[sel],
                                       windows.level_present[sel])
        elif name == "face_feats" and getattr(windows, "face_feats", None) is not None:
            arr = np.ascontiguousarray(windows.face_feats[sel], dtype=np.float32)  # a streamed pool's
        elif name == "face_feats":
            arr = _face_feats(bundle, np.asarray(windows.face_seq_crops[sel]), batch)
        else:
            raise ConfigError(f"bundle input {name!r} is not one calibration knows how to build")
        if tuple(arr.shape[1:]) != tuple(spec.shape[1:]):
            raise ConfigError(f"input {name!r}: windows give shape {arr.shape[1:]}, the manifest "
                              f"says {tuple(spec.shape[1:])}")
        out[name] = arr.astype(spec.dtype, copy=False)
    return out


def _clip_floats(face_clip: np.ndarray, sel, chunk: int = 64) -> np.ndarray:
    # uint8 (N, T, H, W, 3) -> float32 (N, T, 3, H, W) / 255, filled a chunk at a time: the
    # float array (4x the bytes) is the only full-size copy ever held.
    idx = np.arange(face_clip.shape[0])[sel]
    n, t, h, w, c = (idx.size,) + face_clip.shape[1:]
    out = np.empty((n, t, c, h, w), np.float32)
    for start in range(0, n, chunk):
        part = out[start:start + chunk]
        part[...] = face_clip[idx[start:start + chunk]].transpose(0, 1, 4, 2, 3)
        part /= np.float32(255.0)
    return out


def _face_feats(bundle, crops: np.ndarray, batch: int) -> np.ndarray:
    path = bundle.face_encoder_path
    if path is None:
        raise ConfigError(f"bundle {bundle.root} takes face_feats but has no face_encoder graph")
    entry = bundle.manifest.role_file("face_encoder")
    in_name = entry.inputs[0].name if entry.inputs else "face_crop"
    n, t = crops.shape[:2]
    flat = crops.reshape(n * t, *crops.shape[2:])
    x = np.ascontiguousarray(flat.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
    feats = next(iter(run_graph(path, {in_name: x}, batch_size=batch).values()))
    return feats.reshape(n, t, -1).astype(np.float32)


def _as_set(windows, bundle, idx, meta: dict, part=None) -> CalibrationSet:
    idx = np.asarray(idx, np.int64)
    return CalibrationSet(
        inputs=model_inputs(windows, bundle, idx),
        valence=np.asarray(windows.valence[idx], np.float32),
        arousal=np.asarray(windows.arousal[idx], np.float32),
        valence_high=np.asarray(windows.valence_high[idx], np.int64),
        arousal_high=np.asarray(windows.arousal_high[idx], np.int64),
        subject=np.asarray(windows.subject[idx], np.int64),
        trial=np.asarray(windows.trial[idx], np.int64),
        meta=dict(meta, n_windows=int(idx.size), subjects=sorted(int(u) for u in np.unique(windows.subject[idx]))),
        part=part,
    )


def build_calibration(bundle, data: str = "synth", n_windows: int = DEFAULT_WINDOWS,
                      n_holdout: int = DEFAULT_HOLDOUT, seed: int = 0, workers: int = 1,
                      pool=None, progress: bool = False) -> tuple[CalibrationSet, CalibrationSet]:
    """Build the calibration windows and the held-out windows for a bundle.

    Args:
        bundle: an :class:`edge.bundle.Bundle` (its manifest's preprocessing is used).
        data: a ``--data`` spec (see the module docstring).
        n_windows: calibration windows (fewer if the data has fewer), >= 1.
        n_holdout: held-out windows for the sweep and the gate, >= 2 (0: none).
        seed: selection seed.
        workers: processes for rendering synthetic windows.
        pool: an already loaded :class:`export.data.EmotionWindows` (skips loading ``data``).
        progress: show a progress bar while rendering synthetic windows.

    Returns:
        (calibration set, held-out set with ``part``).

    Raises:
        ConfigError: bad counts or spec, data preprocessed differently from the bundle.
        BadInputError: unreadable data, or too few windows/subjects to split.
    """
    if isinstance(n_windows, bool) or int(n_windows) < 1:
        raise ConfigError(f"--windows must be >= 1, got {n_windows}")
    if int(n_holdout) < 0 or int(n_holdout) == 1:
        raise ConfigError(f"--holdout must be 0 or >= 2 (a sweep part and a gate part), got {n_holdout}")
    spec = parse_data_spec(data)
    preprocessing = bundle.manifest.preprocessing
    if pool is None:
        pool = load_pool(spec, preprocessing, int(n_windows) + int(n_holdout), workers, progress, bundle=bundle)
    n = len(pool)
    if n < 1 + (2 if n_holdout else 0):
        raise BadInputError(f"{spec}: only {n} windows, too few for calibration and a held-out split")
    face_inputs = {"face_clip", "face_feats", "tfr"} & {s.name for s in bundle.inputs}
    face_share = float(np.mean(pool.face_present)) if len(pool) else 0.0
    if face_inputs and face_share < 0.5:
        log.warning("%s: the face was found in only %.0f%% of the windows, but the model takes %s; "
                    "ranges computed on zero face inputs calibrate the face path badly", spec,
                    100 * face_share, ", ".join(sorted(face_inputs)))
    cal_pool, hold_pool = split_subjects(pool.subject, int(n_holdout), seed)
    meta = {
        "source": str(spec), "model": bundle.manifest.model_name, "model_version": bundle.manifest.model_version,
        "preprocessing_hash": preprocessing_hash(preprocessing), "seed": int(seed),
        "labelled": bool(pool.meta.get("labelled", True)), "stratified": "subject x valence x arousal",
    }
    if spec.kind == "synth":
        meta["synth"] = pool.meta.get("config", {})

    def pick(candidates: np.ndarray, k: int) -> np.ndarray:
        order = stratified_order(pool.subject[candidates], pool.valence_high[candidates],
                                 pool.arousal_high[candidates], seed)
        return np.sort(candidates[order[:k]])

    cal_idx = pick(cal_pool, int(n_windows))
    calib = _as_set(pool, bundle, cal_idx, dict(meta, role="calibration"))
    hold_idx = pick(hold_pool, int(n_holdout)) if hold_pool.size else hold_pool
    parts = sweep_gate_parts(pool.subject[hold_idx], seed)
    # Sweep windows first, then gate windows: each part is one block, so select_part gives
    # views, not copies (the held-out floats are the largest arrays calibration holds).
    by_part = np.argsort(parts, kind="stable")
    hold_idx, parts = hold_idx[by_part], parts[by_part]
    holdout = _as_set(pool, bundle, hold_idx, dict(meta, role="holdout"), part=parts)
    if len(calib) < int(n_windows):
        log.warning("%s gave %d calibration windows (asked for %d)", spec, len(calib), n_windows)
    log.info("calibration: %d windows from %d subjects; held out: %d (sweep %d, gate %d)", len(calib),
             len(calib.meta["subjects"]), len(holdout), int(np.sum(parts == PART_SWEEP)),
             int(np.sum(parts == PART_GATE)))
    return calib, holdout


def write_calibration(bundle_root, calib: CalibrationSet, holdout: CalibrationSet) -> tuple[Path, Path]:
    """Save both sets beside the bundle's graphs; returns their paths."""
    root = Path(bundle_root)
    return calib.save(root / CALIBRATION_FILE), holdout.save(root / HOLDOUT_FILE)


def load_calibration(bundle) -> tuple[CalibrationSet, CalibrationSet]:
    """Read a bundle's calibration and held-out sets and check they fit it.

    Raises:
        BadInputError: missing or unreadable files. ConfigError: they do not fit the bundle.
    """
    calib = CalibrationSet.load(bundle.root / CALIBRATION_FILE)
    holdout = CalibrationSet.load(bundle.root / HOLDOUT_FILE)
    calib.check_bundle(bundle)
    holdout.check_bundle(bundle)
    return calib, holdout
