"""Real-corpus loaders on small files written here in each corpus's own format."""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from export.data.corpora import (
    Signal,
    TrialRecord,
    load_amigos,
    load_deap,
    load_mahnob,
    read_bdf,
    windows_from_corpus,
)
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.sim import SimConfig, synth_session

HR_BPM = 72.0
TONIC_US = 6.0


@pytest.fixture(scope="module")
def body():
    # 95 s of one person: ECG and PPG and EDA sampled at the corpora's rates.
    return synth_session(SimConfig(duration_s=95, seed=11, hr_bpm=HR_BPM, hrv_sdnn_ms=30, fs_ecg_hz=256,
                                   fs_ppg_hz=128, fs_eda_hz=128, eda_tonic_us=TONIC_US, ppg_noise=0.02,
                                   scr_onsets_s=(20, 45, 70), scr_amplitudes_us=0.5, frame_size=(128, 128)))


# -- writers in the corpora's formats ---------------------------------------------------------

def write_deap(path: Path, body, n_trials: int = 2) -> np.ndarray:
    n = 8064
    data = np.random.default_rng(0).normal(0, 10, (n_trials, 40, n))
    for t in range(n_trials):
        data[t, 38] = 1000 + 500 * body.ppg.values[t * 128:t * 128 + n]  # plethysmograph, raw counts
        data[t, 36] = body.eda.values[:n] * 100.0  # GSR in some raw unit
    labels = np.array([[7.1, 2.5, 5.0, 6.0], [3.2, 8.8, 4.0, 5.0]])[:n_trials]
    with open(path, "wb") as f:
        pickle.dump({"data": data, "labels": labels}, f, protocol=2)
    return labels


def write_bdf(path: Path, channels: dict[str, tuple[np.ndarray, float, str]], record_s: float = 1.0,
              truncate: int = 0) -> None:
    """A minimal valid BioSemi BDF: 24-bit little-endian samples, 1-s records."""
    names = list(channels)
    ns = len(names)
    n_rec = int(min(len(v) / fs for v, fs, _ in channels.values()) // record_s)
    per_rec = [int(round(channels[c][1] * record_s)) for c in names]
    scale = {}

    def txt(s, n):
        return str(s).ljust(n)[:n].encode("ascii")

    def num(v):  # the header's 8-character number fields
        if float(v).is_integer() and abs(v) < 1e7:
            return str(int(v))
        return next(t for t in (f"{v:.{p}g}" for p in range(6, 0, -1)) if len(t) <= 8)

    head = b"\xffBIOSEMI" + txt("test subject", 80) + txt("test recording", 80) + txt("01.01.24", 8) + \
        txt("00.00.00", 8) + txt(256 * (ns + 1), 8) + txt("24BIT", 44) + txt(n_rec, 8) + txt(record_s, 8) + txt(ns, 4)
    cols = {k: [] for k in ("label", "trans", "dim", "pmin", "pmax", "dmin", "dmax", "pre", "nsamp", "res")}
    for c, k in zip(names, per_rec):
        values, _, unit = channels[c]
        lo, hi = float(np.min(values)), float(np.max(values))
        if c == "Status":
            lo, hi = -8388608.0, 8388607.0
        elif hi == lo:
            hi = lo + 1.0
        scale[c] = (float(num(lo)), float(num(hi)))
        for key, val, n in (("label", c, 16), ("trans", "", 80), ("dim", unit, 8), ("pmin", num(lo), 8),
                            ("pmax", num(hi), 8), ("dmin", -8388608, 8), ("dmax", 8388607, 8), ("pre", "", 80),
                            ("nsamp", k, 8), ("res", "", 32)):
            cols[key].append(txt(val, n))
    head += b"".join(b"".join(v) for v in cols.values())
    body = bytearray()
    for r in range(n_rec):
        for c, k in zip(names, per_rec):
            values = channels[c][0][r * k:(r + 1) * k]
            lo, hi = scale[c]
            digital = np.round((values - lo) / (hi - lo) * (8388607 + 8388608) - 8388608).astype(np.int64)
            digital = np.clip(digital, -8388608, 8388607) & 0xFFFFFF
            triplets = np.stack([digital & 0xFF, (digital >> 8) & 0xFF, (digital >> 16) & 0xFF], 1)
            body += triplets.astype(np.uint8).tobytes()
    path.write_bytes(head + bytes(body[:len(body) - truncate]))


def write_mahnob(root: Path, body, session: str, subject: int, arousal, valence, t_on=30.0, t_off=90.0) -> Path:
    folder = root / session
    folder.mkdir(parents=True)
    fs = 256.0
    n = int(95 * fs)
    ecg = body.ecg.values[:n]
    eda = np.interp(np.arange(n) / fs, body.eda.t_s, body.eda.values)
    status = np.zeros(n)
    status[int(t_on * fs):int(t_off * fs)] = 1.0  # trigger code on during the stimulus
    write_bdf(folder / f"Part_{subject}_S_Trial1_emotion.bdf", {
        "EXG1": (-0.3 * ecg, fs, "uV"), "EXG2": (0.1 * ecg, fs, "uV"), "EXG3": (0.7 * ecg, fs, "uV"),
        "GSR1": (1e6 / eda, fs, "Ohm"), "Status": (status, fs, "Boolean"),
    })
    attrs = "" if arousal is None else f' feltArsl="{arousal}" feltVlnc="{valence}"'
    (folder / "session.xml").write_text(f'<?xml version="1.0"?>\n<session sessionId="{session}"{attrs}>'
                                        f'<subject id="{subject}" age="30"/></session>\n')
    return folder


def write_amigos(path: Path, body) -> None:
    fs = 128
    trials = np.empty((1, 3), dtype=object)
    labels = np.empty((1, 3), dtype=object)
    ecg = np.interp(np.arange(70 * fs) / fs, body.ecg.t_s, body.ecg.values)
    for t in range(3):
        x = np.random.default_rng(t).normal(0, 5, (70 * fs, 17))
        x[:, 14] = -ecg
        x[:, 15] = ecg
        x[:, 16] = np.interp(np.arange(70 * fs) / fs, body.eda.t_s, body.eda.values) * 1000
        trials[0, t] = x
        # arousal, valence, dominance, liking, familiarity, then seven basic emotions
        labels[0, t] = np.array([[2.0 + 3 * t, 8.0 - 2 * t, 5, 5, 1, 0, 0, 0, 0, 0, 0, 0]], float)
    trials[0, 2] = np.zeros((0, 0))  # a missing trial, as some AMIGOS trials are
    ids = np.empty((1, 3), dtype=object)
    ids[0, :] = ["10", "13", "138"]
    savemat(path, {"joined_data": trials, "labels_selfassessment": labels, "VideoIDs": ids})


def write_face_video(path: Path, seconds: float = 63.0, fps: float = 10.0) -> None:
    s = synth_session(SimConfig(duration_s=seconds, seed=3, hr_bpm=HR_BPM, fps=fps, frame_size=(128, 128),
                                face_scale=0.5, pulse_amplitude=0.02, noise_sigma=1.0, motion_px=0.3))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (128, 128))
    for frame in s.frames():
        writer.write(frame)
    writer.release()


# -- tests --------------------------------------------------------------------------------------

def test_deap_loader_and_windows(tmp_path, body):
    labels = write_deap(tmp_path / "s07.dat", body)
    write_face_video(tmp_path / "video" / "s07" / "s07_trial02.avi")
    records = list(load_deap(tmp_path, video_dir=tmp_path / "video"))
    assert [(r.subject, r.trial) for r in records] == [(7, 0), (7, 1)]
    assert records[0].valence == pytest.approx(labels[0, 0]) and records[0].arousal == pytest.approx(labels[0, 1])
    assert records[0].signals["ppg"].fs_hz == 128 and records[0].t_end_s == pytest.approx(63.0)
    assert records[0].video_path is None and records[1].video_path.name == "s07_trial02.avi"
    data = windows_from_corpus(records)
    assert len(data) == 2 and data.valence_high.tolist() == [1, 0] and data.arousal_high.tolist() == [0, 1]
    # Heart rate from the plethysmograph; GSR in raw units: no EDA level.
    assert 100 * data.contact_level[:, 0] == pytest.approx([HR_BPM, HR_BPM], abs=2.5)
    assert data.contact_present.all() and data.level_present[:, 0].all() and not data.level_present[:, 1].any()
    # Trial 1 has no video: zero face tensors and a flag; trial 2's face is found and pulses.
    assert not data.face_present[0] and not data.face_clip[0].any() and not data.tfr[0].any()
    assert data.face_present[1] and data.face_clip[1].mean() > 50 and data.face_seq_crops[1].std() > 20
    f = np.linspace(0.7, 3.5, 32)
    assert 60 * f[np.argmax(data.tfr[1].mean(axis=1))] == pytest.approx(HR_BPM, abs=6)
    assert data.meta["records"][1]["video"].endswith("s07_trial02.avi")


def test_deap_rejects_corrupt_and_unsafe_pickles(tmp_path):
    (tmp_path / "s01.dat").write_bytes(b"\x80\x02garbage")
    with pytest.raises(BadInputError, match="s01.dat"):
        list(load_deap(tmp_path))
    with open(tmp_path / "s02.dat", "wb") as f:
        pickle.dump({"data": np.zeros((2, 40, 8064))}, f, protocol=2)
    with pytest.raises(BadInputError, match="s02.dat.*labels"):
        list(load_deap(tmp_path, subjects=[2]))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "s03.dat", "wb") as f:
        pickle.dump({"data": Evil(), "labels": np.zeros((1, 4))}, f, protocol=2)
    with pytest.raises(BadInputError, match="s03.dat.*refusing"):
        list(load_deap(tmp_path, subjects=[3]))
    with pytest.raises(BadInputError, match="s09.dat"):
        list(load_deap(tmp_path, subjects=[9]))
    with pytest.raises(BadInputError, match="nowhere"):
        list(load_deap(tmp_path / "nowhere"))
    with pytest.raises(ConfigError):
        list(load_deap(tmp_path, gsr_units="volts"))


def test_bdf_reader_round_trips_24_bit_samples(tmp_path):
    fs = 256.0
    t = np.arange(int(4 * fs)) / fs
    x = 100 * np.sin(2 * np.pi * 3 * t)
    write_bdf(tmp_path / "a.bdf", {"EXG1": (x, fs, "uV"), "GSR1": (np.full_like(x, 2e5) + t, fs, "Ohm")})
    ch = read_bdf(tmp_path / "a.bdf")
    assert set(ch) == {"EXG1", "GSR1"} and ch["EXG1"].fs_hz == 256 and ch["GSR1"].unit == "Ohm"
    # One 24-bit step of a 200 uV range is 1.2e-5 uV (+ the header's 6-digit rounding).
    assert np.abs(ch["EXG1"].values - x).max() < 1e-3
    assert np.abs(ch["GSR1"].values - (2e5 + t)).max() < 0.5
    write_bdf(tmp_path / "short.bdf", {"EXG1": (x, fs, "uV")}, truncate=10)
    with pytest.raises(BadInputError, match="short.bdf.*truncated"):
        read_bdf(tmp_path / "short.bdf")
    (tmp_path / "junk.bdf").write_bytes(b"x" * 600)
    with pytest.raises(BadInputError, match="junk.bdf"):
        read_bdf(tmp_path / "junk.bdf")


def test_mahnob_loader_and_windows(tmp_path, body):
    write_mahnob(tmp_path, body, "2", subject=4, arousal=7, valence=3)
    write_mahnob(tmp_path, body, "10", subject=4, arousal=2, valence=8, t_on=20.0, t_off=85.0)
    write_mahnob(tmp_path, body, "3", subject=4, arousal=None, valence=None)  # implicit tagging: skipped
    records = list(load_mahnob(tmp_path))
    assert [(r.trial, r.valence, r.arousal) for r in records] == [(0, 3.0, 7.0), (1, 8.0, 2.0)]
    assert records[0].t_end_s == pytest.approx(90.0, abs=0.01) and records[1].t_end_s == pytest.approx(85.0, abs=0.01)
    assert records[0].signals["eda"].units == "uS" and records[0].video_path is None
    data = windows_from_corpus(records)
    # No PPG: zero row, flag down, heart rate from the ECG; GSR (Ohm) converted to uS.
    assert not data.contact[:, 0].any() and not data.contact_present[:, 0].any()
    assert data.level_present.all()
    assert 100 * data.contact_level[:, 0] == pytest.approx([HR_BPM, HR_BPM], abs=2.0)
    assert 10 * data.contact_level[:, 1] == pytest.approx([TONIC_US, TONIC_US], rel=0.15)
    assert not data.face_present.any()
    (tmp_path / "2" / "session.xml").write_text("<session feltArsl='7'")
    with pytest.raises(BadInputError, match="session.xml"):
        list(load_mahnob(tmp_path))


def test_amigos_loader_and_windows(tmp_path, body):
    write_amigos(tmp_path / "Data_Preprocessed_P05.mat", body)
    records = list(load_amigos(tmp_path))
    # Two real trials (the empty one is skipped); labels are (arousal, valence, ...) in the file.
    assert [(r.subject, r.trial, r.arousal, r.valence) for r in records] == [(5, 0, 2.0, 8.0), (5, 1, 5.0, 6.0)]
    assert records[0].t_end_s == pytest.approx(70.0)
    data = windows_from_corpus(records)
    assert 100 * data.contact_level[:, 0] == pytest.approx([HR_BPM, HR_BPM], abs=2.0)
    assert data.contact_present.tolist() == [[False, True], [False, True]]
    assert data.level_present.tolist() == [[True, False], [True, False]]
    savemat(tmp_path / "Data_Preprocessed_P06.mat", {"something": np.zeros(3)})
    with pytest.raises(BadInputError, match="P06.mat.*joined_data"):
        list(load_amigos(tmp_path, subjects=[6]))
    (tmp_path / "Data_Preprocessed_P07.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(BadInputError, match="P07.mat"):
        list(load_amigos(tmp_path, subjects=[7]))


def test_windows_from_corpus_needs_records_and_a_readable_video(tmp_path):
    with pytest.raises(BadInputError):
        windows_from_corpus([])
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"\x00" * 100)
    fs = 128.0
    rec = TrialRecord("deap", 1, 0, 5.5, 4.0, {"ppg": Signal(np.sin(np.arange(8064) / fs * 7.5), fs)}, 63.0, bad)
    with pytest.raises(BadInputError, match="broken.avi"):
        windows_from_corpus([rec])


# MAHNOB-HCI's BDF layout (Soleymani et al. 2012): 32 EEG channels, 8 external (EXG1-3 the ECG),
# two GSR, two respiration-belt/temperature-style inputs, the Status trigger channel; 256 Hz.
MAHNOB_LABELS = (["Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7", "PO3", "O1", "Oz",
                  "Pz", "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz", "C4", "T8", "CP6", "CP2", "P4", "P8",
                  "PO4", "O2"] + [f"EXG{k}" for k in range(1, 9)]
                 + ["GSR1", "GSR2", "Erg1", "Erg2", "Resp", "Temp", "Status"])


def test_mahnob_session_written_by_pyedflib(tmp_path, body):
    # A BDF written by the library itself (not by this file's writer) with MAHNOB's 47 channels:
    # the loader finds the ECG leads, converts GSR1 from Ohm and reads the stimulus end from the
    # Status channel's trigger codes.
    pyedflib = pytest.importorskip("pyedflib", reason="pyedflib (extra 'export') reads BDF files")
    fs, n = 256, 95 * 256
    ecg = body.ecg.values[:n]
    eda = np.interp(np.arange(n) / fs, body.eda.t_s, body.eda.values)
    status = np.zeros(n)
    status[int(25 * fs):int(80 * fs)] = 3.0  # trigger code 3 during the stimulus
    physical = {"EXG1": -0.3 * ecg * 1000, "EXG2": 0.1 * ecg * 1000, "EXG3": 0.7 * ecg * 1000, "GSR1": 1e6 / eda,
                "GSR2": 1e6 / eda, "Status": status}
    folder = tmp_path / "7"
    folder.mkdir()
    path = folder / "Part_2_S_Trial4_emotion.bdf"
    writer = pyedflib.EdfWriter(str(path), len(MAHNOB_LABELS), file_type=pyedflib.FILETYPE_BDF)
    headers, data = [], []
    for label in MAHNOB_LABELS:
        x = physical.get(label, np.zeros(n))
        unit = {"GSR1": "Ohm", "GSR2": "Ohm", "Status": "Boolean"}.get(label, "uV")
        lo, hi = (-8388608.0, 8388607.0) if label == "Status" else (float(x.min()) - 1.0, float(x.max()) + 1.0)
        headers.append({"label": label, "dimension": unit, "sample_frequency": fs, "physical_min": lo,
                        "physical_max": hi, "digital_min": -8388608, "digital_max": 8388607})
        data.append(x)
    writer.setSignalHeaders(headers)
    writer.writeSamples(data)
    writer.close()
    (folder / "session.xml").write_text('<?xml version="1.0"?>\n<session sessionId="7" feltArsl="6" feltVlnc="2">'
                                        '<subject id="2" age="30"/></session>\n')
    channels = read_bdf(path)
    assert list(channels) == MAHNOB_LABELS and all(c.fs_hz == fs for c in channels.values())
    assert channels["GSR1"].unit == "Ohm" and np.abs(channels["GSR1"].values - 1e6 / eda).max() < 1.0
    (record,) = load_mahnob(tmp_path)
    assert (record.subject, record.valence, record.arousal) == (2, 2.0, 6.0)
    assert record.t_end_s == pytest.approx(80.0, abs=0.01)
    assert record.signals["eda"].units == "uS"
    np.testing.assert_allclose(record.signals["eda"].values, eda, rtol=1e-4)
