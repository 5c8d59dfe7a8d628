"""rPPG: the blood-volume pulse from the mean skin colour of a face, frame by frame.

Input is an (N, 3) trace of skin-pixel means in R, G, B order (see ``edge.signals.roi``).
Every method here works on sliding windows of ``window_s`` seconds whose pulse segments are
overlap-added: windows advance by one frame as in POS (Wang et al. 2017), or by half a window
for CHROM as in its paper. Because a window only sees its own frames, :class:`RppgStream`
reproduces :func:`rppg_extract` exactly, block by block, with O(window) memory.

Methods (registry :data:`METHODS`, chosen by name; window length L = round(window_s * fs)):

========== ==================================================================== ===== ======
name       paper                                                                taper hop
========== ==================================================================== ===== ======
green      Verkruysse, Svaasand & Nelson 2008, Optics Express 16(26): green     none  1
           channel
chrom      de Haan & Jeanne 2013, IEEE TBME 60(10): chrominance Xf - alpha Yf   Hann  L / 2
           of the band-passed X and Y
pos        Wang, den Brinker, Stuijk & de Haan 2017, IEEE TBME 64(7): plane     none  1
           orthogonal to skin
lgi        Pilz, Zaunseder, Krajewski & Blazek 2018, CVPR Workshops: local      none  1
           group invariance (project out the principal colour direction)
pbv        de Haan & van Leest 2014, Physiol. Meas. 35(9): blood-volume pulse   none  1
           signature
omit       Alvarez Casado & Bordallo Lopez 2023, IEEE JBHI, "Face2PPG":         none  1
           orthogonal matrix image transformation (QR)
chrom_nobp our variant of chrom: the window mean removed instead of the in-window   Hann  1
           band-pass, windows advancing by one frame
========== ==================================================================== ===== ======

Per-window steps and constants (C is the window's (L, 3) trace, mu its per-channel mean). The
window length is a setting of every method (default 1.6 s: POS's 32 frames at 20 fps, also
the common choice for CHROM); each overlap-added segment has its mean removed or, for chrom,
is band-passed, so the overlap-add itself is a mild high-pass below about fs / L.

- green: segment = G - mean(G), in the units of C: the raw green channel, as Verkruysse et al.
  (their band-pass is :func:`rppg_clean`). Before issue 10 it was G / mu_G (relative units).
- chrom: Cn = C / mu - 1; Xs = 3 Rn - 2 Gn, Ys = 1.5 Rn + Gn - 1.5 Bn (the paper's
  skin-tone-standardised chrominance); Xf, Yf = zero-phase Butterworth band-pass of Xs and Ys
  inside the window (:data:`CHROM_BAND_HZ`, order :data:`CHROM_ORDER`, forward and backward
  with scipy.signal.sosfiltfilt's odd padding); alpha = std(Xf) / std(Yf); segment =
  (Xf - alpha Yf) * periodic Hann(L); windows of an even L overlapping by half, so the
  Hann copies sum to one. The paper does not fix the filter for every camera; the band is
  this package's pulse band, 42-210 bpm (the iPhys toolbox uses 0.7-2.5 Hz, which caps
  the rate at 150 bpm). Measured limit at the default 1.6 s: inside 1.2 beats the high-pass
  suppresses a 45 bpm fundamental below its harmonic (48 bpm and up are recovered; tested).
  The frames after the last whole window (fewer than L / 2) have no output (NaN).
- chrom_nobp: Cn = C / mu; X = 3 Rn - 2 Gn, Y = 1.5 Rn + Gn - 1.5 Bn, each with its window
  mean removed; alpha = std(X) / std(Y); segment = (X - alpha Y) * periodic Hann(L); hop 1.
  This was ``chrom`` before issue 10. It keeps 45 bpm and costs no filter, but any colour
  change outside the pulse band (a slow flush in one channel) pulls alpha away from the
  value that cancels intensity changes (tested against chrom).
- pos: Cn = C / mu; S = P Cn with P = [[0, 1, -1], [-2, 1, 1]]; h = S1 + alpha S2 with
  alpha = std(S1) / std(S2); segment = h - mean(h) (Wang et al. 2017, Algorithm 1).
- lgi: u = principal left singular vector of the raw (not normalised) 3 x L window, the
  dominant colour direction; Y = (I - u u^T) C^T; segment = Y_G - mean(Y_G), in the units of C.
  The kernel finds u by power iteration on the 3 x 3 Gram matrix (LAPACK eigh if it does not
  converge); the reference uses np.linalg.svd.
- pbv: Cn = C / mu - 1; Q = Cn^T Cn; W = Q^-1 p / (p^T Q^-1 p) with the fixed, normalised
  signature p = [0.33, 0.77, 0.53] (:data:`PBV_SIGNATURE`; the paper's a-priori signature, not
  one estimated from the window as some toolboxes do); segment = Cn W - mean(Cn W).
  A ridge of 1e-12 trace(Q) keeps Q invertible on noise-free input.
- omit: Q R = qr(3 x L window); u = Q[:, 0], which is the window's first colour sample made
  unit length; Y = (I - u u^T) C^T; segment = Y_G - mean(Y_G), in the units of C. This is the
  authors' own implementation of OMIT (QR of the 3 x L colour matrix, first column of Q).

Missing frames: a row with any NaN or infinite value (no face in that frame) makes every window
that contains it contribute nothing, and so does a window whose channel means are not > 0 or
whose projection is degenerate. An output sample that no contributing window covers is NaN, so
a gap stays visible but does not spread: only the frames that are themselves missing come out
NaN (when N >= L) for the hop-1 methods; for chrom every window that touches a missing frame
is lost, so up to about 1.5 L frames around it are NaN. Neighbours of a gap carry fewer
overlap-added segments. :func:`rppg_clean`
keeps NaN where the pulse is NaN.

Polarity: for a trace whose channels all rise along the signature [0.33, 0.77, 0.53] with a
pulse p(t), green, pos, lgi, pbv and omit follow p and chrom and chrom_nobp follow -p (tested). A contact
BVP's sign depends on its device, so compare waveforms sign-agnostically.

Length (about 870 lines, a sixth of it the method notes above) on purpose: each method's
kernel, its registry entry and the driver that calls it are kept in one file, so a method is
read, and added, in one place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import njit

from edge.signals.detrend import signal_detrend
from edge.signals.filters import _sosfiltfilt_scratch, bandpass, butter_sos, check_rate
from firmware_bridge.errors import BadInputError, ConfigError

#: POS projection onto the plane orthogonal to the normalised skin tone (Wang et al. 2017).
POS_PROJECTION = ((0.0, 1.0, -1.0), (-2.0, 1.0, 1.0))
#: CHROM chrominance signals X = 3R - 2G and Y = 1.5R + G - 1.5B (de Haan & Jeanne 2013).
CHROM_X = (3.0, -2.0, 0.0)
CHROM_Y = (1.5, 1.0, -1.5)
#: Blood-volume pulse signature in normalised R, G, B (de Haan & van Leest 2014).
PBV_SIGNATURE = (0.33, 0.77, 0.53)
#: Relative ridge added to PBV's colour covariance before solving.
PBV_RIDGE = 1e-12
#: CHROM's band-pass of X and Y inside each window: band edges in Hz (42-210 bpm, the band of
#: :func:`rppg_clean`) and Butterworth prototype order (3, as the iPhys toolbox's CHROM).
CHROM_BAND_HZ = (0.7, 3.5)
CHROM_ORDER = 3
#: Fewest frames a chrom window may hold: more than the filter's odd-extension length,
#: 3 (2 CHROM_ORDER + 1), as scipy.signal.sosfiltfilt requires.
CHROM_MIN_WINDOW = 3 * (2 * CHROM_ORDER + 1) + 1

_GREEN, _CHROM, _POS, _LGI, _PBV, _OMIT, _CHROM_NOBP = range(7)


# --------------------------------------------------------------------------- per-window kernels
# Each takes the (L, 3) window w (all finite: the driver skips windows with missing rows) and
# scratch vectors, writes the window's pulse segment into h and returns False when the window
# must contribute nothing (channel means not > 0, degenerate projection). They fuse passes
# over the window because the driver calls them once per frame.


@njit(cache=True, nogil=True)
def _means(w):
    L = w.shape[0]
    sr = 0.0
    sg = 0.0
    sb = 0.0
    for i in range(L):
        sr += w[i, 0]
        sg += w[i, 1]
        sb += w[i, 2]
    return sr / L, sg / L, sb / L


@njit(cache=True, nogil=True)
def _center(h):
    L = h.shape[0]
    m = 0.0
    for i in range(L):
        m += h[i]
    m /= L
    for i in range(L):
        h[i] -= m


@njit(cache=True, nogil=True)
def _green_window(w, h):
    # Verkruysse et al. use the raw green channel: no normalisation, the window mean removed.
    L = w.shape[0]
    for i in range(L):
        h[i] = w[i, 1]
    _center(h)
    return True


@njit(cache=True, nogil=True)
def _pos_window(w, h, s2):
    mr, mg, mb = _means(w)
    if not (mr > 0.0 and mg > 0.0 and mb > 0.0):
        return False
    ir = 1.0 / mr
    ig = 1.0 / mg
    ib = 1.0 / mb
    L = w.shape[0]
    m1 = 0.0
    q1 = 0.0
    m2 = 0.0
    q2 = 0.0
    for i in range(L):
        rn = w[i, 0] * ir
        gn = w[i, 1] * ig
        bn = w[i, 2] * ib
        a = gn - bn
        b = gn + bn - 2.0 * rn
        h[i] = a
        s2[i] = b
        m1 += a
        q1 += a * a
        m2 += b
        q2 += b * b
    # S1 and S2 have zero mean by construction (normalised channels average to one), so the
    # one-pass variance loses no digits here.
    m1 /= L
    m2 /= L
    var1 = max(q1 / L - m1 * m1, 0.0)
    var2 = max(q2 / L - m2 * m2, 0.0)
    alpha = math.sqrt(var1 / var2) if var2 > 0.0 else 0.0
    mh = m1 + alpha * m2
    for i in range(L):
        h[i] = h[i] + alpha * s2[i] - mh
    return True


@njit(cache=True, nogil=True)
def _filtfilt_inplace(filt, x, ext, zi):
    """x <- x filtered forward and backward by the sections in filt, as scipy.signal.sosfiltfilt
    (:func:`edge.signals.filters._sosfiltfilt_scratch`).

    filt: (n_sections, 8) rows [b0, b1, b2, 1, a1, a2, zi0, zi1], the last two the section's
    steady-state state for a unit step (scipy.signal.sosfilt_zi); the caller guarantees
    len(x) > padlen; ext (>= len(x) + 2 padlen) and zi (n_sections, 2) are scratch, so a
    window allocates nothing.
    """
    _sosfiltfilt_scratch(filt[:, :6], filt[:, 6:8], x, x, ext, zi)


@njit(cache=True, nogil=True)
def _chrom_window(w, h, y, filt, ext, zi):
    mr, mg, mb = _means(w)
    if not (mr > 0.0 and mg > 0.0 and mb > 0.0):
        return False
    ir = 1.0 / mr
    ig = 1.0 / mg
    ib = 1.0 / mb
    L = w.shape[0]
    for i in range(L):
        rn = w[i, 0] * ir - 1.0
        gn = w[i, 1] * ig - 1.0
        bn = w[i, 2] * ib - 1.0
        h[i] = 3.0 * rn - 2.0 * gn
        y[i] = 1.5 * rn + gn - 1.5 * bn
    # The paper's step: band-pass Xs and Ys before alpha is tuned, so alpha balances only the
    # in-band distortions (colour changes outside the pulse band cannot pull it).
    _filtfilt_inplace(filt, h, ext, zi)
    _filtfilt_inplace(filt, y, ext, zi)
    mx = 0.0
    my = 0.0
    for i in range(L):
        mx += h[i]
        my += y[i]
    mx /= L
    my /= L
    vx = 0.0
    vy = 0.0
    for i in range(L):
        a = h[i] - mx
        b = y[i] - my
        vx += a * a
        vy += b * b
    alpha = math.sqrt(vx / vy) if vy > 0.0 else 0.0
    for i in range(L):
        h[i] -= alpha * y[i]
    return True


@njit(cache=True, nogil=True)
def _chrom_nobp_window(w, h, y):
    mr, mg, mb = _means(w)
    if not (mr > 0.0 and mg > 0.0 and mb > 0.0):
        return False
    ir = 1.0 / mr
    ig = 1.0 / mg
    ib = 1.0 / mb
    L = w.shape[0]
    mx = 0.0
    qx = 0.0
    my = 0.0
    qy = 0.0
    for i in range(L):
        rn = w[i, 0] * ir
        gn = w[i, 1] * ig
        bn = w[i, 2] * ib
        a = 3.0 * rn - 2.0 * gn
        b = 1.5 * rn + gn - 1.5 * bn
        h[i] = a
        y[i] = b
        mx += a
        qx += a * a
        my += b
        qy += b * b
    # X and Y average to one, not zero: a centred second pass keeps the variances exact.
    mx /= L
    my /= L
    vx = 0.0
    vy = 0.0
    for i in range(L):
        a = h[i] - mx
        b = y[i] - my
        h[i] = a
        y[i] = b
        vx += a * a
        vy += b * b
    alpha = math.sqrt(vx / vy) if vy > 0.0 else 0.0
    for i in range(L):
        h[i] -= alpha * y[i]
    return True


@njit(cache=True, nogil=True)
def _project_out_green(w, h, u0, u1, u2):
    """h = green row of (I - u u^T) C^T, mean removed."""
    L = w.shape[0]
    m = 0.0
    for i in range(L):
        dot = u0 * w[i, 0] + u1 * w[i, 1] + u2 * w[i, 2]
        v = w[i, 1] - u1 * dot
        h[i] = v
        m += v
    m /= L
    for i in range(L):
        h[i] -= m


@njit(cache=True, nogil=True)
def _lgi_window(w, h):
    L = w.shape[0]
    g00 = g01 = g02 = g11 = g12 = g22 = 0.0
    sr = sg = sb = 0.0
    for i in range(L):
        r = w[i, 0]
        g = w[i, 1]
        b = w[i, 2]
        sr += r
        sg += g
        sb += b
        g00 += r * r
        g01 += r * g
        g02 += r * b
        g11 += g * g
        g12 += g * b
        g22 += b * b
    if not g00 + g11 + g22 > 0.0:
        return False
    # Power iteration from the mean colour: on skin the dominant singular value exceeds the
    # next by orders of magnitude, so it converges in a few steps; LAPACK is the fallback.
    nrm = math.sqrt(sr * sr + sg * sg + sb * sb)
    if nrm > 0.0:
        v0, v1, v2 = sr / nrm, sg / nrm, sb / nrm
    else:
        v0 = v1 = v2 = 1.0 / math.sqrt(3.0)
    converged = False
    for _ in range(100):
        n0 = g00 * v0 + g01 * v1 + g02 * v2
        n1 = g01 * v0 + g11 * v1 + g12 * v2
        n2 = g02 * v0 + g12 * v1 + g22 * v2
        nrm = math.sqrt(n0 * n0 + n1 * n1 + n2 * n2)
        if nrm == 0.0:
            break
        n0 /= nrm
        n1 /= nrm
        n2 /= nrm
        change = max(abs(n0 - v0), abs(n1 - v1), abs(n2 - v2))
        v0, v1, v2 = n0, n1, n2
        if change < 1e-14:
            converged = True
            break
    if not converged:
        gram = np.array([[g00, g01, g02], [g01, g11, g12], [g02, g12, g22]])
        _, vecs = np.linalg.eigh(gram)
        v0, v1, v2 = vecs[0, 2], vecs[1, 2], vecs[2, 2]
    _project_out_green(w, h, v0, v1, v2)
    return True


@njit(cache=True, nogil=True)
def _omit_window(w, h):
    # The first column of Q in the QR factorisation of the 3 x L window is its first column
    # (the first frame's colour) scaled to unit length; the sign cancels in u u^T.
    r, g, b = w[0, 0], w[0, 1], w[0, 2]
    nrm = math.sqrt(r * r + g * g + b * b)
    if nrm == 0.0:
        return False
    _project_out_green(w, h, r / nrm, g / nrm, b / nrm)
    return True


@njit(cache=True, nogil=True)
def _pbv_window(w, h, sig):
    mr, mg, mb = _means(w)
    if not (mr > 0.0 and mg > 0.0 and mb > 0.0):
        return False
    ir = 1.0 / mr
    ig = 1.0 / mg
    ib = 1.0 / mb
    L = w.shape[0]
    q00 = q01 = q02 = q11 = q12 = q22 = 0.0
    for i in range(L):
        r = w[i, 0] * ir - 1.0
        g = w[i, 1] * ig - 1.0
        b = w[i, 2] * ib - 1.0
        q00 += r * r
        q01 += r * g
        q02 += r * b
        q11 += g * g
        q12 += g * b
        q22 += b * b
    tr = q00 + q11 + q22
    if not tr > 0.0:
        return False
    ridge = PBV_RIDGE * tr
    q00 += ridge
    q11 += ridge
    q22 += ridge
    # 3 x 3 Cholesky solve of Q W = p.
    l00 = math.sqrt(q00)
    l10 = q01 / l00
    l20 = q02 / l00
    d11 = q11 - l10 * l10
    if not d11 > 0.0:
        return False
    l11 = math.sqrt(d11)
    l21 = (q12 - l20 * l10) / l11
    d22 = q22 - l20 * l20 - l21 * l21
    if not d22 > 0.0:
        return False
    l22 = math.sqrt(d22)
    y0 = sig[0] / l00
    y1 = (sig[1] - l10 * y0) / l11
    y2 = (sig[2] - l20 * y0 - l21 * y1) / l22
    w2 = y2 / l22
    w1 = (y1 - l21 * w2) / l11
    w0 = (y0 - l10 * w1 - l20 * w2) / l00
    den = sig[0] * w0 + sig[1] * w1 + sig[2] * w2
    if not den > 0.0:
        return False
    # Fold the normalisation into the weights: segment = sum_c k_c C_c - mean.
    k0 = w0 / den * ir
    k1 = w1 / den * ig
    k2 = w2 / den * ib
    m = 0.0
    for i in range(L):
        v = k0 * w[i, 0] + k1 * w[i, 1] + k2 * w[i, 2]
        h[i] = v
        m += v
    m /= L
    for i in range(L):
        h[i] -= m
    return True


@njit(cache=True, nogil=True)
def _ola_core(buf, first, n_win, L, hop, kind, taper, aux, acc, cov):
    """Overlap-add n_win windows of buf starting at first, first + hop, ... into acc.

    acc and cov are aligned with buf's rows; cov counts the contributing windows per sample.
    One kernel with a method switch, because Numba cannot cache a driver that takes the
    per-window function as an argument or closure, and recompiling per process is too slow.
    aux is float64 (rows, 8) method data: pbv's signature in row 0, columns 0-2; chrom's
    band-pass sections, one per row (see :func:`_filtfilt_inplace`).
    """
    n = buf.shape[0]
    # bad[i] = rows with a NaN or infinite value among buf[:i], so a window's check is O(1).
    bad = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        r = buf[i, 0]
        g = buf[i, 1]
        b = buf[i, 2]
        ok_row = math.isfinite(r) and math.isfinite(g) and math.isfinite(b)
        bad[i + 1] = bad[i] + (0 if ok_row else 1)
    h = np.empty(L)
    s2 = np.empty(L)
    sig = np.ascontiguousarray(aux[0, :3])
    # Scratch for chrom's in-window filter: its odd extension is at most 3 (2 n_sections + 1)
    # samples per side.
    ext = np.empty(L + 6 * (2 * aux.shape[0] + 1))
    zi = np.empty((aux.shape[0], 2))
    for j in range(n_win):
        st = first + j * hop
        if bad[st + L] != bad[st]:
            continue
        w = buf[st:st + L]
        if kind == _POS:
            ok = _pos_window(w, h, s2)
        elif kind == _CHROM:
            ok = _chrom_window(w, h, s2, aux, ext, zi)
        elif kind == _CHROM_NOBP:
            ok = _chrom_nobp_window(w, h, s2)
        elif kind == _GREEN:
            ok = _green_window(w, h)
        elif kind == _LGI:
            ok = _lgi_window(w, h)
        elif kind == _PBV:
            ok = _pbv_window(w, h, sig)
        else:
            ok = _omit_window(w, h)
        if ok:
            for i in range(L):
                acc[st + i] += taper[i] * h[i]
                cov[st + i] += 1


# --------------------------------------------------------------------------- registry


def _no_aux(fs: float) -> np.ndarray:
    return np.zeros((1, 8))


def _pbv_aux(fs: float) -> np.ndarray:
    sig = np.asarray(PBV_SIGNATURE, dtype=np.float64)
    aux = np.zeros((1, 8))
    aux[0, :3] = sig / np.linalg.norm(sig)
    return aux


def _chrom_aux(fs: float) -> np.ndarray:
    from scipy import signal  # design time only

    sos = butter_sos(fs, CHROM_BAND_HZ[0], CHROM_BAND_HZ[1], CHROM_ORDER)
    aux = np.zeros((sos.shape[0], 8))
    aux[:, :6] = sos
    aux[:, 6:] = signal.sosfilt_zi(sos)
    return aux


def _rect(L: int) -> np.ndarray:
    return np.ones(L)


def _hann_periodic(L: int) -> np.ndarray:
    # Periodic (DFT-even) Hann: its copies shifted by every hop-1 offset sum to exactly L / 2,
    # and at hop L / 2 (even L) to exactly 1, so the taper weights the window's centre without
    # rippling the overlap-added output.
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(L) / L)


@dataclass(frozen=True)
class RppgMethod:
    """One rPPG method: how :func:`rppg_extract` windows the trace and which kernel turns a window
    into a pulse segment.

    Attributes:
        name: registry key.
        kernel: the per-window kernel's id in the shared overlap-add kernel.
        taper: L -> float64 (L,) weights applied to each segment before overlap-add.
        make_aux: fs_hz -> float64 (rows, 3) method data for the kernel.
        min_window: fewest frames per window the method accepts.
        paper: where the method comes from.
        half_overlap: windows of an even length L that advance by L / 2 (chrom, as its paper)
            instead of by one frame.
    """

    name: str
    kernel: int
    taper: Callable[[int], np.ndarray]
    make_aux: Callable[[float], np.ndarray]
    min_window: int
    paper: str
    half_overlap: bool = False

    def geometry(self, fs: float, window_s: float) -> tuple[int, int]:
        """(window length L, hop) in frames for sampling rate fs (Hz) and window_s (s).

        L = round(window_s * fs) and hop 1, or with ``half_overlap`` L rounded to the nearest
        even count and hop L / 2 (periodic Hann copies at that hop sum to exactly 1).

        Raises:
            ConfigError: the window holds fewer than ``min_window`` frames.
        """
        if self.half_overlap:
            L = 2 * int(math.floor(window_s * fs / 2.0 + 0.5))
        else:
            L = int(math.floor(window_s * fs + 0.5))
        if L < self.min_window:
            raise ConfigError(
                f"rPPG method '{self.name}' needs windows of >= {self.min_window} frames; "
                f"window_s={window_s} s at fs={fs} Hz gives {L}"
            )
        return L, (L // 2 if self.half_overlap else 1)


#: rPPG methods by name; every entry runs through the same overlap-add kernel.
METHODS: dict[str, RppgMethod] = {
    "green": RppgMethod(
        "green", _GREEN, _rect, _no_aux, 2,
        "Verkruysse, Svaasand & Nelson 2008, Optics Express 16(26):21434",
    ),
    "chrom": RppgMethod(
        "chrom", _CHROM, _hann_periodic, _chrom_aux, CHROM_MIN_WINDOW,
        "de Haan & Jeanne 2013, Robust pulse rate from chrominance-based rPPG, IEEE TBME 60(10):2878",
        half_overlap=True,
    ),
    "chrom_nobp": RppgMethod(
        "chrom_nobp", _CHROM_NOBP, _hann_periodic, _no_aux, 2,
        "variant of de Haan & Jeanne 2013 (IEEE TBME 60(10):2878): window mean removed instead "
        "of the band-pass, windows advance by one frame",
    ),
    "pos": RppgMethod(
        "pos", _POS, _rect, _no_aux, 2,
        "Wang, den Brinker, Stuijk & de Haan 2017, IEEE TBME 64(7):1479",
    ),
    "lgi": RppgMethod(
        "lgi", _LGI, _rect, _no_aux, 2,
        "Pilz, Zaunseder, Krajewski & Blazek 2018, Local group invariance, CVPR Workshops",
    ),
    "pbv": RppgMethod(
        "pbv", _PBV, _rect, _pbv_aux, 2,
        "de Haan & van Leest 2014, Physiol. Meas. 35(9):1913",
    ),
    "omit": RppgMethod(
        "omit", _OMIT, _rect, _no_aux, 2,
        "Alvarez Casado & Bordallo Lopez 2023, Face2PPG, IEEE JBHI",
    ),
}


def _method(name) -> RppgMethod:
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown rPPG method {name!r}; valid: {', '.join(sorted(METHODS))}"
        ) from None


def _check_window_s(window_s) -> float:
    try:
        window_s = float(window_s)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"window_s must be a real number ({exc})") from exc
    if not math.isfinite(window_s) or window_s <= 0:
        raise ConfigError(f"window_s must be finite and > 0 s, got {window_s}")
    return window_s


def _check_rgb(rgb, name: str = "rgb") -> np.ndarray:
    try:
        arr = np.ascontiguousarray(rgb, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{name} must be a real numeric (N, 3) array ({exc})") from exc
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise BadInputError(f"{name} must have shape (N, 3) in R, G, B order, got {arr.shape}")
    if (arr < 0).any():
        raise BadInputError(
            f"{name} must hold non-negative colour intensities (raw skin means, not "
            "mean-removed or normalised signals)"
        )
    return arr


def _finish(acc: np.ndarray, cov: np.ndarray) -> np.ndarray:
    acc[cov == 0] = np.nan
    return acc


def rppg_extract(rgb, fs: float, method: str = "pos", window_s: float = 1.6) -> np.ndarray:
    """Pulse signal from a trace of skin-colour means (see the module docstring per method).

    Args:
        rgb: real (N, 3) per-frame skin-pixel means in R, G, B order, non-negative (any
            scale, e.g. 8-bit units). Rows with NaN or infinite values mark frames without
            a face.
        fs: frame rate in Hz.
        method: a key of :data:`METHODS`: "green", "chrom", "pos", "lgi", "pbv", "omit" or
            the variant "chrom_nobp".
        window_s: sliding-window length in seconds (default 1.6 s, POS's 32 frames at 20 fps).

    Returns:
        float64 (N,) pulse, unfiltered (run :func:`rppg_clean` before estimating heart
        rate). Units: relative colour change for chrom, chrom_nobp, pos and pbv; the units of
        rgb for green, lgi and omit. NaN where no contributing window covers a sample: every
        sample if N < L, at missing frames, and for chrom around them and after its last
        whole window.

    Raises:
        BadInputError: rgb not (N, 3) real or holding negative values, fs not finite and
            > 0, or (chrom) fs too low for its band (CHROM_BAND_HZ[1] >= fs / 2).
        ConfigError: unknown method (the message lists the valid names), window_s not
            finite and > 0, or window_s * fs rounding to fewer than 2 frames (chrom: fewer
            than :data:`CHROM_MIN_WINDOW`).
    """
    spec = _method(method)
    fs = check_rate(fs)
    window_s = _check_window_s(window_s)
    x = _check_rgb(rgb)
    L, hop = spec.geometry(fs, window_s)
    aux = spec.make_aux(fs)
    n = x.shape[0]
    acc = np.zeros(n)
    cov = np.zeros(n, dtype=np.int64)
    n_win = (n - L) // hop + 1 if n >= L else 0
    _ola_core(x, 0, n_win, L, hop, spec.kernel, spec.taper(L), aux, acc, cov)
    return _finish(acc, cov)


class RppgStream:
    """Block-by-block :func:`rppg_extract` with bounded memory and identical output.

    Every pushed frame is eventually returned as one pulse sample, in order: :meth:`push`
    returns the samples that no future frame can change, :meth:`flush` the rest. The
    concatenation of all returned arrays equals ``rppg_extract(all_frames, fs, method, window_s)``
    (the same kernel adds the same windows in the same order, so it is equal bit for bit).
    A sample is final ``window_frames - 1`` frames after it arrives. Between calls the stream
    holds fewer than ``window_frames`` frames; during a call, those plus the block pushed.

    Args:
        fs: frame rate in Hz.
        method: a key of :data:`METHODS`.
        window_s: sliding-window length in seconds.

    Raises:
        BadInputError, ConfigError: as :func:`rppg_extract`.

    Attributes:
        window_frames: L, frames per window.
        hop_frames: frames between window starts.
    """

    def __init__(self, fs: float, method: str = "pos", window_s: float = 1.6):
        self._spec = _method(method)
        self.fs = check_rate(fs)
        self.window_s = _check_window_s(window_s)
        self.method = self._spec.name
        self.window_frames, self.hop_frames = self._spec.geometry(self.fs, self.window_s)
        self._aux = self._spec.make_aux(self.fs)
        self._taper = self._spec.taper(self.window_frames)
        self._reset()
        # Compile (or load from cache) now, not when the first frame arrives.
        _ola_core(self._buf, 0, 0, self.window_frames, self.hop_frames, self._spec.kernel,
                  self._taper, self._aux, self._acc, self._cov)

    def _reset(self) -> None:
        self._buf = np.empty((0, 3))
        self._acc = np.empty(0)
        self._cov = np.empty(0, dtype=np.int64)
        self._n_in = 0  # frames pushed so far
        self._next = 0  # global index of the next window start, also of buf[0]

    def push(self, rgb_block) -> np.ndarray:
        """Add frames and return the pulse samples that are now final.

        Args:
            rgb_block: real (M, 3) non-negative skin-colour means, R, G, B; M may be 0; NaN
                rows allowed.

        Returns:
            float64 (K,) pulse samples, K >= 0, continuing where the last call stopped.

        Raises:
            BadInputError: rgb_block not (M, 3) real and non-negative.
        """
        block = _check_rgb(rgb_block, "rgb_block")
        m = block.shape[0]
        if m:
            self._buf = np.concatenate([self._buf, block])
            self._acc = np.concatenate([self._acc, np.zeros(m)])
            self._cov = np.concatenate([self._cov, np.zeros(m, dtype=np.int64)])
            self._n_in += m
        L, hop = self.window_frames, self.hop_frames
        avail = self._n_in - self._next
        n_win = (avail - L) // hop + 1 if avail >= L else 0
        if n_win == 0:
            return np.empty(0)
        _ola_core(self._buf, 0, n_win, L, hop, self._spec.kernel, self._taper, self._aux,
                  self._acc, self._cov)
        done = n_win * hop
        out = _finish(self._acc[:done].copy(), self._cov[:done])
        self._buf = self._buf[done:].copy()
        self._acc = self._acc[done:].copy()
        self._cov = self._cov[done:].copy()
        self._next += done
        return out

    def flush(self) -> np.ndarray:
        """Return the remaining samples (the stream has ended) and start over empty.

        Returns:
            float64 (K,) the last pulse samples; NaN where no window covered them.
        """
        out = _finish(self._acc.copy(), self._cov)
        self._reset()
        return out


def rppg_clean(
    pulse,
    fs: float,
    lam: float = 100.0,
    lo: float = 0.7,
    hi: float = 3.5,
    order: int = 4,
) -> np.ndarray:
    """The standard cleaning before heart-rate estimation: detrend, then zero-phase band-pass.

    Smoothness-priors detrending (Tarvainen et al. 2002, :func:`edge.signals.detrend.signal_detrend`)
    removes slow illumination and motion drift; a Butterworth band-pass
    (:func:`edge.signals.filters.bandpass`) keeps 42-210 bpm. Training, the runtime and the CLI
    all call this one function so they clean alike.

    NaN samples (gaps from :func:`rppg_extract`) are treated as zero pulse while filtering, and are NaN
    again in the result; finite samples stay finite.

    Args:
        pulse: real (N,) pulse from :func:`rppg_extract`, NaN allowed.
        fs: sampling rate in Hz.
        lam: detrending smoothness parameter (cut-off near fs / (2 pi sqrt(lam)) Hz).
        lo, hi: band edges in Hz.
        order: Butterworth prototype order.

    Returns:
        float64 (N,) cleaned pulse; all NaN if the input is all NaN.

    Raises:
        BadInputError: pulse not 1-D real, bad fs or band, or too short (needs N > 27 at order
            4; see :func:`edge.signals.filters.bandpass`).
        ConfigError: lam not finite and > 0.
    """
    try:
        p = np.array(pulse, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"pulse must be a real numeric (N,) array ({exc})") from exc
    if p.ndim != 1:
        raise BadInputError(f"pulse must be 1-D (N,), got shape {p.shape}")
    gap = ~np.isfinite(p)
    if gap.all() and p.size:
        # Still validate the settings, so a bad band is not hidden by a missing face.
        butter_sos(fs, lo, hi, order)
        signal_detrend(np.zeros(3), lam)
        return np.full_like(p, np.nan)
    p[gap] = 0.0
    out = bandpass(signal_detrend(p, lam), fs, lo, hi, order, zero_phase=True)
    out[gap] = np.nan
    return out


def warmup() -> None:
    """Compile (or load from Numba's cache) every kernel this module uses, on a tiny input.

    Call it before the first frame so that no frame waits for the compiler.
    """
    t = np.arange(64) / 30.0
    rgb = np.column_stack([150 + np.sin(t), 110 + np.cos(t), 90 + np.sin(2 * t)])
    for name in METHODS:
        pulse = rppg_extract(rgb, 30.0, name)
    rppg_clean(np.nan_to_num(pulse), 30.0)
    bandpass(np.zeros(8), 30.0, zero_phase=False)
