"""Skin-pixel colour means of face regions: the raw RGB trace that rPPG turns into a pulse.

A region's mean colour over skin pixels only is the standard rPPG observation (Verkruysse,
Svaasand & Nelson 2008, "Remote plethysmographic imaging using ambient light"; Wang et al.
2017, "Algorithmic principles of remote PPG", IEEE TBME 64(7)). Pixels are classified as skin
by a YCrCb box rule after Chai & Ngan 1999 ("Face segmentation using skin-color map in
videophone applications", IEEE TCSVT 9(4)): 133 <= Cr <= 173 and 77 <= Cb <= 127 as
published (``"chai_ngan"``), or with the Cb ceiling at 135 (``"chai_ngan_wide"``, the default;
see :data:`SKIN_RULES` for why). A fixed box rejects whole faces whose chroma lies outside it (the
darkest and lightest skin tones, coloured light, an off white balance), so ``"adaptive"`` (what
:data:`edge.spec.DEFAULT` uses) keeps the fixed ``chai_ngan_wide`` box where it holds at least
90 % of the face, and otherwise judges skin against the face's own colour: pixels within a
chroma distance of the regions' median Cr and Cb and within a luminance band around their
median Y, nothing when that median is not reddish (a wall, hair); see :data:`ADAPTIVE_SKIN_RULES`.

The colour conversion uses the same 14-bit fixed-point arithmetic as OpenCV's 8-bit
``COLOR_BGR2YCrCb`` (verified equal on all 2**24 colours), so the skin mask is bit-identical to
``cv2.cvtColor`` + ``cv2.inRange`` and the means differ from a NumPy reference only by float
rounding of the final division. The kernel reads the frame in place: no crop, no colour image,
no mask is allocated, which is what makes it fast enough to call on every frame.

Region edges (:data:`ROI_EDGES`): a face box from a tracker moves by fractions of a pixel, and
on a small face (a 60 px face has 12 x 12 px cheeks) a region whose edges snap to whole pixels
adds or drops a whole row or column of pixels at a time: a step in the mean far larger than the
0.1-0.5 % pulse. With ``"fractional"`` edges (the default) a pixel on a region's edge counts with
the share of its area inside the region, the weighting of area-averaging resampling, so the
mean moves continuously with the box; integral boxes give the whole-pixel result exactly. The
face regions are then combined by area and skin share (:func:`face_stats`). ``"pixel"`` keeps
the whole-pixel regions that bundles trained before the setting used.

Empty results are NaN, not errors: a box wholly outside the frame, or a box with no skin
pixel (face turned away, over-exposed), gives ``(nan, nan, nan)`` and a count of 0, so that a
trace keeps one row per frame and the gap is visible downstream.
"""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
from numba import njit

from firmware_bridge.errors import BadInputError, ConfigError

# OpenCV's RGB->YCrCb integer coefficients (imgproc/src/color_yuv: R2Y, G2Y, B2Y, Cr, Cb) at
# 14 fractional bits; reproducing them keeps our mask equal to cv2.cvtColor's.
_SHIFT = 14
_HALF = 1 << (_SHIFT - 1)
_R2Y = 4899
_G2Y = 9617
_B2Y = 1868
_CR = 11682
_CB = 9241
# 128 << 14 (the chroma offset) plus the rounding half, folded into one constant.
_CBIAS = (128 << _SHIFT) + _HALF

# Skin rules as inclusive (Cr_lo, Cr_hi, Cb_lo, Cb_hi) boxes in 8-bit YCrCb. "chai_ngan" is the
# published rule. "chai_ngan_wide" raises the Cb ceiling from 127 to 135: under cool (bluish)
# light, e.g. the daylight-lit office of the physrecorder test clip, facial skin sits at
# Cb 124-132 and the published ceiling cuts a cheek in two, so the mask flickers along the cut
# from frame to frame. Grey and white backgrounds (Cr ~ 128) still fail the Cr floor.
SKIN_RULES: dict[str, tuple[int, int, int, int]] = {
    "chai_ngan": (133, 173, 77, 127),
    "chai_ngan_wide": (133, 173, 77, 135),
}
DEFAULT_SKIN_RULE = "chai_ngan_wide"

# Adaptive rules: skin judged against the face's own colour (see :func:`face_stats`). A fixed
# box rejects whole faces whose chroma sits outside it: the darkest Monk tones (Cr ~ 131, under
# the Cr floor of 133), very light skin, and any face under coloured light or an off white
# balance. "adaptive" takes the weighted median Y, Cr and Cb of the regions' pixels (the regions
# are chosen to be mostly skin, so the median is a skin colour; pooled over the face's regions,
# a forehead under hair is judged by the cheeks' colour) and keeps pixels with
#   |Cr - Cr_med| <= ADAPTIVE_CHROMA_RADIUS, |Cb - Cb_med| <= ADAPTIVE_CHROMA_RADIUS,
#   Y_med / 2 <= Y <= min(3 Y_med / 2, 254),
# the luminance band dropping eyebrows, hair and shadows (darker than half the face) and
# specular highlights and clipped pixels. It rejects everything when the median itself is not
# reddish (Cr_med - Cb_med < ADAPTIVE_MIN_REDNESS): a grey or white wall (Cr = Cb = 128), blue-
# black hair or a background under the regions. After the adaptive skin-colour filter idea of
# Cho, Jang & Hong 2001 ("Adaptive skin-color filter", Pattern Recognition 34(5)): thresholds
# from the image's own skin distribution instead of fixed ones; the median box is our variant.
# The radius covers the chroma spread of every synthetic tone's face (5th-95th percentile within
# +-6 of the median) and of the real webcam face (2nd-98th within -7..+3).
ADAPTIVE_SKIN_RULES = ("adaptive",)
ADAPTIVE_CHROMA_RADIUS = 8
# Measured Cr_med - Cb_med: 5 (Monk tone 10) to 20 (tone 6) on the synthetic faces, 14 on the
# real webcam face; 0 on a neutral surface (+-1 from rounding), negative on the clip's hair.
ADAPTIVE_MIN_REDNESS = 2
# The fixed box first: when at least ADAPTIVE_BOX_MIN_SHARE of the sampled face pixels pass
# ADAPTIVE_BOX_RULE, that rule is the mask, and the median box only takes over for a face the
# box cuts or rejects (the lightest tones, coloured light). On the real webcam clip the median
# box alone cut the gate's quality in the last seconds (8 of 11 windows reported against 11 of
# 11, worst error 3.15 vs 2.5 bpm); its luminance band is what costs there (the box with the
# band added: 7 of 11). With the box first the clip is measured exactly as before. A face the box
# holds only in part (Monk 2-3: 52-65 % of the cheek) goes to the median box, not to a mask cut
# through the middle of its colours.
ADAPTIVE_BOX_RULE = "chai_ngan_wide"
ADAPTIVE_BOX_MIN_SHARE = 0.9
# The median is taken over every second pixel of every second row: a quarter of the pixels (a
# 12 x 12 px cheek still gives 36 votes) halves the rule's cost, and a median moves by at most a
# bin or so between the full set and the sample.
ADAPTIVE_STRIDE = 2
#: Every skin rule name: the fixed boxes (:data:`SKIN_RULES`) and the adaptive rules.
SKIN_RULE_NAMES = (*SKIN_RULES, *ADAPTIVE_SKIN_RULES)

# Face sub-regions as fractions (x0, y0, x1, y1) of a Haar frontal-face box (x, y, w, h).
# The Haar box spans roughly mid-forehead to chin with the eyes at 0.35-0.45 h and the mouth
# at 0.70-0.85 h. The forehead strip sits above the brows and inside the temples (no hair, no
# background at the box edge); each cheek patch sits under the eye, outside the nose and above
# the mouth corners (no eyelids blinking, no lips moving, no nostril shadow). These are the
# regions with the strongest, most motion-robust pulse in Kwon et al. 2015 ("ROI analysis for
# remote photoplethysmography on facial video", EMBC).
FACE_ROI_FRACTIONS: dict[str, tuple[float, float, float, float]] = {
    "forehead": (0.30, 0.06, 0.70, 0.20),
    "left_cheek": (0.16, 0.50, 0.36, 0.70),
    "right_cheek": (0.64, 0.50, 0.84, 0.70),
}


#: How a region's edges meet the pixel grid. ``"pixel"``: the box is rounded to whole pixels
#: and regions pool their skin pixels (what bundles trained before the setting existed use).
#: ``"fractional"``: a pixel on a box edge counts with the share of its area inside the box, so
#: the mean moves continuously with a sub-pixel box move, and regions are combined by area with
#: a minimum skin share (:data:`MIN_SKIN_FRACTION`); see :func:`face_stats`.
ROI_EDGES = ("pixel", "fractional")
DEFAULT_ROI_EDGES = "fractional"

# With fractional edges a region counts fully once skin covers FULL_SKIN_FRACTION of it, not at
# all below MIN_SKIN_FRACTION, linearly between. A region that is mostly not skin (hair over the
# forehead, a hand over a cheek, a box slipping off the face) holds few, flickering skin pixels
# whose mean is mostly noise; on a 60 px face a cheek is about 12 x 12 px.
MIN_SKIN_FRACTION = 0.2
FULL_SKIN_FRACTION = 0.5


class RoiStats(NamedTuple):
    """Mean colour of a region and how many pixels it came from.

    Attributes:
        rgb: float64 (3,) mean R, G, B in 8-bit units (0..255); NaN when ``n_skin`` is 0.
        n_skin: pixels that passed the skin rule (all pixels of the clipped box if no mask);
            with fractional edges the area-weighted count, rounded.
        n_box: pixels in the box after clipping it to the frame (area, rounded, with fractional
            edges).
    """

    rgb: np.ndarray
    n_skin: int
    n_box: int


@njit(cache=True, nogil=True)
def _roi_sums(frame, x0, y0, x1, y1, skin, cr_lo, cr_span, cb_lo, cb_span, y_lo=0, y_span=255):
    """Integer sums of R, G, B over (skin) pixels of frame[y0:y1, x0:x1] and their count.

    The skin test is cr_lo <= Cr <= cr_lo + cr_span and likewise for Cb and Y (the box rules
    pass the whole Y range, 0..255, which every pixel passes).
    """
    sr = 0
    sg = 0
    sb = 0
    n = 0
    if not skin:
        for y in range(y0, y1):
            row = frame[y]
            for x in range(x0, x1):
                sb += np.int64(row[x, 0])
                sg += np.int64(row[x, 1])
                sr += np.int64(row[x, 2])
        return sr, sg, sb, (y1 - y0) * (x1 - x0)
    for y in range(y0, y1):
        rr, rg, rb, rn = _row_sums(frame[y], x0, x1, True, cr_lo, cr_span, cb_lo, cb_span, y_lo, y_span)
        sr += rr
        sg += rg
        sb += rb
        n += rn
    return sr, sg, sb, n


@njit(cache=True, nogil=True, inline="always")
def _row_sums(row, x0, x1, skin, cr_lo, cr_span, cb_lo, cb_span, y_lo, y_span):
    """Integer sums of R, G, B over the (skin) pixels row[x0:x1] and their count.

    int32 accumulators: a row of <= 2**23 / 255 pixels cannot overflow, and 32-bit lanes let
    LLVM vectorise the branch-free skin test (an unsigned compare: values below the low edge
    wrap to huge and fail too)."""
    rr = np.int32(0)
    rg = np.int32(0)
    rb = np.int32(0)
    rn = np.int32(0)
    for x in range(x0, x1):
        b = np.int32(row[x, 0])
        g = np.int32(row[x, 1])
        r = np.int32(row[x, 2])
        if skin:
            yy = (r * _R2Y + g * _G2Y + b * _B2Y + _HALF) >> _SHIFT
            cr = ((r - yy) * _CR + _CBIAS) >> _SHIFT
            cb = ((b - yy) * _CB + _CBIAS) >> _SHIFT
            m = np.int32(
                (np.uint32(cr - cr_lo) <= np.uint32(cr_span))
                & (np.uint32(cb - cb_lo) <= np.uint32(cb_span))
                & (np.uint32(yy - y_lo) <= np.uint32(y_span))
            )
        else:
            m = np.int32(1)
        rr += r * m
        rg += g * m
        rb += b * m
        rn += m
    return rr, rg, rb, rn


@njit(cache=True, nogil=True)
def _roi_sums_frac(frame, x0, y0, x1, y1, skin, cr_lo, cr_span, cb_lo, cb_span, y_lo=0, y_span=255):
    """Area-weighted sums of R, G, B over the (skin) pixels of the real box [x0, x1) x [y0, y1).

    Pixel (x, y) covers the unit square [x, x + 1) x [y, y + 1); its weight is the area of that
    square inside the box, so the sums change continuously as an edge moves. The box must lie
    inside the frame (0 <= x0 <= x1 <= W, likewise y). Returns (sr, sg, sb, skin_area, area),
    float64; with integral edges every weight is exactly 1 and the sums equal
    :func:`_roi_sums`'s integers.
    """
    sr = 0.0
    sg = 0.0
    sb = 0.0
    sn = 0.0
    ix0 = int(np.floor(x0))
    ix1 = int(np.ceil(x1))
    iy0 = int(np.floor(y0))
    iy1 = int(np.ceil(y1))
    if ix1 <= ix0 or iy1 <= iy0:
        return sr, sg, sb, sn, 0.0
    # Column weights: the first and last columns may be partial; the ones between are whole.
    if ix1 - ix0 == 1:
        wl = x1 - x0
        wr = 0.0
        in0 = ix1
        in1 = ix1
    else:
        wl = (ix0 + 1) - x0
        wr = x1 - (ix1 - 1)
        in0 = ix0 + 1
        in1 = ix1 - 1
    for y in range(iy0, iy1):
        wy = min(y + 1.0, y1) - max(float(y), y0)
        row = frame[y]
        rr, rg, rb, rn = _row_sums(row, in0, in1, skin, cr_lo, cr_span, cb_lo, cb_span, y_lo, y_span)
        er, eg, eb, en = _row_sums(row, ix0, ix0 + 1, skin, cr_lo, cr_span, cb_lo, cb_span, y_lo, y_span)
        fr = rr + wl * er
        fg = rg + wl * eg
        fb = rb + wl * eb
        fn = rn + wl * en
        if wr > 0.0:
            er, eg, eb, en = _row_sums(row, ix1 - 1, ix1, skin, cr_lo, cr_span, cb_lo, cb_span, y_lo, y_span)
            fr += wr * er
            fg += wr * eg
            fb += wr * eb
            fn += wr * en
        sr += wy * fr
        sg += wy * fg
        sb += wy * fb
        sn += wy * fn
    return sr, sg, sb, sn, (x1 - x0) * (y1 - y0)


@njit(cache=True, nogil=True)
def _ycc_hist(frame, x0, y0, x1, y1, step, hist, cr_lo, cr_hi, cb_lo, cb_hi):
    """Count the pixels of frame[y0:y1:step, x0:x1:step] in their Y, Cr and Cb bins.

    hist: int64 (4, 256), rows Y, Cr, Cb (8-bit YCrCb as :func:`_row_sums` computes it, Cr and
    Cb clamped to 0..255 as OpenCV saturates them); ``hist[3, 0]`` counts the pixels inside
    the fixed rule ``box`` (cr_lo, cr_hi, cb_lo, cb_hi), inclusive. Whole pixels: the caller passes the pixels
    whose centres lie in the region (a median is a whole bin anyway, and unit weights keep the
    loop free of per-pixel float work).
    """
    for y in range(y0, y1, step):
        row = frame[y]
        for x in range(x0, x1, step):
            b = np.int32(row[x, 0])
            g = np.int32(row[x, 1])
            r = np.int32(row[x, 2])
            yy = (r * _R2Y + g * _G2Y + b * _B2Y + _HALF) >> _SHIFT
            cr = min(max(((r - yy) * _CR + _CBIAS) >> _SHIFT, 0), 255)
            cb = min(max(((b - yy) * _CB + _CBIAS) >> _SHIFT, 0), 255)
            hist[0, yy] += 1
            hist[1, cr] += 1
            hist[2, cb] += 1
            if cr_lo <= cr <= cr_hi and cb_lo <= cb <= cb_hi:
                hist[3, 0] += 1


@njit(cache=True, nogil=True)
def _adaptive_box(hist, radius, min_redness):
    """(cr_lo, cr_span, cb_lo, cb_span, y_lo, y_span) of the adaptive rule from the histograms
    of :func:`_ycc_hist` (medians: the lowest bin whose cumulative count reaches half). A rule
    that passes nothing when the histogram is empty or the median is not reddish."""
    total = 0
    for i in range(256):
        total += hist[0, i]
    if total <= 0:
        return 0, 0, 0, 0, 256, 0
    m0 = _hist_median(hist[0], total)
    m1 = _hist_median(hist[1], total)
    m2 = _hist_median(hist[2], total)
    if m1 - m2 < min_redness:
        return 0, 0, 0, 0, 256, 0
    y_lo = (m0 + 1) // 2
    y_hi = min(m0 + m0 // 2, 254)
    return m1 - radius, 2 * radius, m2 - radius, 2 * radius, y_lo, max(y_hi - y_lo, 0)


@njit(cache=True, nogil=True, inline="always")
def _hist_median(h, total):
    c = 0
    for i in range(256):
        c += h[i]
        if 2 * c >= total:
            return i
    return 255


def _check_frame(frame_bgr: np.ndarray) -> None:
    if not isinstance(frame_bgr, np.ndarray):
        raise BadInputError(f"frame_bgr must be a numpy array, got {type(frame_bgr).__name__}")
    if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise BadInputError(
            f"frame_bgr must be uint8 (H, W, 3) BGR, got {frame_bgr.dtype} {frame_bgr.shape}"
        )
    if frame_bgr.shape[1] >= (1 << 23) // 255:
        # The kernel's per-row int32 sums would overflow; no camera is this wide.
        raise BadInputError(f"frame is {frame_bgr.shape[1]} px wide; at most 32,000 supported")


def _skin_args(skin) -> tuple | None:
    """(use_mask, cr_lo, cr_span, cb_lo, cb_span, y_lo, y_span) for the kernel from a ``skin``
    argument; None for an adaptive rule (its box comes from the frame, :func:`_adaptive_args`)."""
    if skin is True:
        skin = DEFAULT_SKIN_RULE
    if skin is False or skin is None:
        return False, 0, 0, 0, 0, 0, 255
    if isinstance(skin, str) and skin in ADAPTIVE_SKIN_RULES:
        return None
    try:
        cr_lo, cr_hi, cb_lo, cb_hi = SKIN_RULES[skin]
    except (KeyError, TypeError):
        raise ConfigError(
            f"skin must be True, False or one of {sorted(SKIN_RULE_NAMES)}, got {skin!r}"
        ) from None
    return True, cr_lo, cr_hi - cr_lo, cb_lo, cb_hi - cb_lo, 0, 255


# The adaptive rule's fixed box: its Cr / Cb bounds for the histogram's count, and the kernel
# arguments the rule returns when that box holds the face (computed once, not per frame).
_ADAPTIVE_BOX_BOUNDS = SKIN_RULES[ADAPTIVE_BOX_RULE]
_ADAPTIVE_BOX_ARGS = _skin_args(ADAPTIVE_BOX_RULE)

# One (4, 256) histogram per thread, reused: the adaptive rule allocates nothing per frame.
_HIST = threading.local()


def _adaptive_args(frame_bgr, clipped) -> tuple:
    """The adaptive rule's kernel arguments for the clipped boxes ``clipped`` (x0, y0, x1, y1),
    pooled: every ADAPTIVE_STRIDE-th pixel (both ways) whose centre lies in a box votes."""
    hist = getattr(_HIST, "hist", None)
    if hist is None:
        hist = _HIST.hist = np.zeros((4, 256), np.int64)
    hist[:] = 0
    for x0, y0, x1, y1 in clipped:
        # Pixel j's centre j + 0.5 is in [x0, x1) for round-half-up(x0) <= j < round-half-up(x1).
        ix0, iy0 = int(np.floor(x0 + 0.5)), int(np.floor(y0 + 0.5))
        ix1, iy1 = int(np.floor(x1 + 0.5)), int(np.floor(y1 + 0.5))
        if ix1 > ix0 and iy1 > iy0:
            _ycc_hist(frame_bgr, ix0, iy0, ix1, iy1, ADAPTIVE_STRIDE, hist, *_ADAPTIVE_BOX_BOUNDS)
    total = int(hist[0].sum())
    if total > 0 and hist[3, 0] >= ADAPTIVE_BOX_MIN_SHARE * total:
        # The fixed box holds most of the face: it is the steadier mask (a median moves by a
        # bin from frame to frame and its box edge with it).
        return _ADAPTIVE_BOX_ARGS
    return (True, *_adaptive_box(hist, ADAPTIVE_CHROMA_RADIUS, ADAPTIVE_MIN_REDNESS))


def _clip_box(box, height: int, width: int) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(round(float(v))) for v in box)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"box must be 4 numbers (x, y, w, h), got {box!r}") from exc
    if w < 0 or h < 0:
        raise BadInputError(f"box width and height must be >= 0, got {box!r}")
    x0 = min(max(x, 0), width)
    y0 = min(max(y, 0), height)
    x1 = min(max(x + w, 0), width)
    y1 = min(max(y + h, 0), height)
    return x0, y0, x1, y1


def _clip_box_frac(box, height: int, width: int) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"box must be 4 numbers (x, y, w, h), got {box!r}") from exc
    if not all(np.isfinite((x, y, w, h))):
        raise BadInputError(f"box must be finite numbers, got {box!r}")
    if w < 0 or h < 0:
        raise BadInputError(f"box width and height must be >= 0, got {box!r}")
    x0 = min(max(x, 0.0), width)
    y0 = min(max(y, 0.0), height)
    x1 = min(max(x + w, 0.0), width)
    y1 = min(max(y + h, 0.0), height)
    return x0, y0, x1, y1


def _check_edges(edges) -> str:
    if edges not in ROI_EDGES:
        raise ConfigError(f"edges must be one of {list(ROI_EDGES)}, got {edges!r}")
    return edges


def _skin_weight(fraction: float) -> float:
    """A region's weight factor (0..1) from its skin share: 0 up to MIN_SKIN_FRACTION, 1 from
    FULL_SKIN_FRACTION, linear between (continuous, so a region fades out instead of dropping)."""
    span = FULL_SKIN_FRACTION - MIN_SKIN_FRACTION
    return min(max((fraction - MIN_SKIN_FRACTION) / span, 0.0), 1.0)


def _pooled(frame_bgr: np.ndarray, boxes, skin, edges: str = "pixel") -> RoiStats:
    """The mean over the (skin) pixels of several boxes (see :func:`face_stats` for the rules)."""
    _check_frame(frame_bgr)
    mask_args = _skin_args(skin)
    height, width = frame_bgr.shape[:2]
    if _check_edges(edges) == "fractional":
        clipped = [_clip_box_frac(box, height, width) for box in boxes]
        if mask_args is None:
            mask_args = _adaptive_args(frame_bgr, clipped)
        return _pooled_frac(frame_bgr, clipped, mask_args)
    clipped = [_clip_box(box, height, width) for box in boxes]
    if mask_args is None:
        mask_args = _adaptive_args(frame_bgr, clipped)
    sr = sg = sb = n = n_box = 0
    for x0, y0, x1, y1 in clipped:
        area = max(x1 - x0, 0) * max(y1 - y0, 0)
        if area == 0:
            continue
        r, g, b, k = _roi_sums(frame_bgr, x0, y0, x1, y1, *mask_args)
        sr += r
        sg += g
        sb += b
        n += k
        n_box += area
    if n == 0:
        return RoiStats(np.full(3, np.nan), 0, n_box)
    return RoiStats(np.array([sr, sg, sb], dtype=np.float64) / n, int(n), n_box)


def _pooled_frac(frame_bgr, clipped, mask_args) -> RoiStats:
    # Per region: its skin mean, weighted by its (fixed) area times the skin-share factor, so
    # pixels flickering across the skin threshold move neither the mix between regions (whose
    # colours differ) nor, above FULL_SKIN_FRACTION, the region's weight.
    used = []
    pooled = [0.0, 0.0, 0.0]
    skin_area = 0.0
    box_area = 0.0
    for x0, y0, x1, y1 in clipped:
        if x1 <= x0 or y1 <= y0:
            continue
        r, g, b, k, area = _roi_sums_frac(frame_bgr, x0, y0, x1, y1, *mask_args)
        box_area += area
        if k <= 0.0:
            continue
        skin_area += k
        pooled = [pooled[0] + r, pooled[1] + g, pooled[2] + b]
        wk = area * _skin_weight(k / area)
        if wk > 0.0:
            used.append((wk, r, g, b, k))
    n_skin, n_box = int(round(skin_area)), int(round(box_area))
    if len(used) == 1:
        # One region: its own mean, computed as the whole-pixel path does (equal bit for bit
        # when the box is integral).
        _, r, g, b, k = used[0]
        return RoiStats(np.array([r, g, b]) / k, n_skin, n_box)
    if used:
        weight = sum(u[0] for u in used)
        mean = sum(wk / k * np.array([r, g, b]) for wk, r, g, b, k in used) / weight
        return RoiStats(mean, n_skin, n_box)
    if skin_area > 0.0:
        # Every region below the skin share: the pooled mean of what skin there is.
        return RoiStats(np.array(pooled) / skin_area, n_skin, n_box)
    return RoiStats(np.full(3, np.nan), 0, n_box)


def roi_stats(frame_bgr: np.ndarray, box, skin: bool | str = True, edges: str = DEFAULT_ROI_EDGES) -> RoiStats:
    """Mean R, G, B of the skin pixels in a box of a BGR frame, with pixel counts.

    Args:
        frame_bgr: uint8 (H, W, 3) BGR image, any strides (a view is read in place, never
            copied).
        box: (x, y, w, h) in pixels, numbers; clipped to the frame. Pixel (i, j) covers
            [i, i + 1) x [j, j + 1).
        skin: True: keep pixels passing the default box rule (:data:`DEFAULT_SKIN_RULE`);
            a name from :data:`SKIN_RULE_NAMES`: that rule (an adaptive rule takes its median
            colour over the box, or over all of a face's regions together in
            :func:`face_stats`); False: average every pixel.
        edges: ``"fractional"``: each pixel weighs the share of its area inside the box (an
            area-weighted mean, continuous in the box); ``"pixel"``: the box is rounded to
            whole pixels first (:data:`ROI_EDGES`). Equal when the box is integral.

    Returns:
        RoiStats(rgb float64 (3,) in 0..255 R, G, B order, n_skin, n_box). ``rgb`` is NaN
        when the clipped box is empty or holds no skin pixel.

    Raises:
        BadInputError: frame not uint8 (H, W, 3); box not 4 finite numbers or with negative
            size.
        ConfigError: unknown skin rule or edge mode.

    Method: YCrCb skin box after Chai & Ngan 1999 (IEEE TCSVT 9(4)), or the adaptive rule
    (thresholds from the region's own colour, after Cho, Jang & Hong 2001, Pattern
    Recognition 34(5); :data:`ADAPTIVE_SKIN_RULES`); colour conversion in
    OpenCV's 14-bit fixed point; partial-pixel area weights as in area-averaging resampling.
    """
    return _pooled(frame_bgr, (box,), skin, edges)


def roi_mean_rgb(frame_bgr: np.ndarray, box, skin: bool | str = True,
                 edges: str = DEFAULT_ROI_EDGES) -> np.ndarray:
    """Mean R, G, B of the skin pixels in box (x, y, w, h) of a uint8 BGR frame.

    The frame is read in place (no crop copy, no mask image). Arguments and errors as
    :func:`roi_stats`, which also returns the pixel counts.

    Returns:
        float64 (3,) mean R, G, B (that order) in 8-bit units; NaN triple when the box clipped
        to the frame is empty or contains no skin pixel.

    Method: YCrCb skin box after Chai & Ngan 1999 (IEEE TCSVT 9(4)).
    """
    return _pooled(frame_bgr, (box,), skin, edges).rgb


def face_rois(box, regions=None, edges: str = DEFAULT_ROI_EDGES) -> list[tuple]:
    """Forehead, left-cheek and right-cheek sub-boxes of a face box.

    Args:
        box: face box (x, y, w, h) in pixels, e.g. from ``edge.face.HaarFaceDetector``.
        regions: name -> (x0, y0, x1, y1) fractions of the box (a bundle's
            ``preprocessing.rppg.roi``); default :data:`FACE_ROI_FRACTIONS`.
        edges: ``"fractional"``: float boxes, exactly the fractions of the face box;
            ``"pixel"``: each edge rounded to the nearest whole pixel (int boxes).

    Returns:
        One box (x, y, w, h) in frame pixels per region, in the order of ``regions``
        (:data:`FACE_ROI_FRACTIONS`: forehead, left cheek, right cheek; "left" is image left).
        The fractions avoid eyes, mouth, hair and background (see the comment there); they
        follow the regions ranked best by Kwon et al. 2015 (EMBC).

    Raises:
        BadInputError: box not 4 numbers or with negative size.
        ConfigError: unknown edge mode.
    """
    whole = _check_edges(edges) == "pixel"
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"box must be 4 numbers (x, y, w, h), got {box!r}") from exc
    if w < 0 or h < 0:
        raise BadInputError(f"box width and height must be >= 0, got {box!r}")
    out = []
    for fx0, fy0, fx1, fy1 in (FACE_ROI_FRACTIONS if regions is None else regions).values():
        if not whole:
            out.append((x + fx0 * w, y + fy0 * h, (fx1 - fx0) * w, (fy1 - fy0) * h))
            continue
        bx0 = int(round(x + fx0 * w))
        by0 = int(round(y + fy0 * h))
        bx1 = int(round(x + fx1 * w))
        by1 = int(round(y + fy1 * h))
        out.append((bx0, by0, bx1 - bx0, by1 - by0))
    return out


def face_stats(frame_bgr: np.ndarray, box, skin: bool | str = True, regions=None,
               edges: str = DEFAULT_ROI_EDGES) -> RoiStats:
    """Mean RGB over the skin of the forehead and both cheeks of a face box, with counts.

    How the regions combine depends on ``edges``:

    - ``"pixel"``: every skin pixel of every (whole-pixel) region counts once: one pooled mean.
    - ``"fractional"``: each region's area-weighted skin mean, weighted by the region's area
      times a factor of its skin share ``s`` (skin area / region area): 0 for ``s`` <=
      :data:`MIN_SKIN_FRACTION`, 1 for ``s`` >= :data:`FULL_SKIN_FRACTION`, linear between.
      A region that is mostly not skin therefore fades out instead of adding the noise of a
      few flickering pixels, and skin pixels crossing the threshold do not shift the mix
      between regions of different colour. When every region is below the minimum, the
      pooled mean of the skin that there is (the fallback; NaN only without any skin pixel).

    Same arguments, result type and errors as :func:`roi_stats` (``regions`` as in
    :func:`face_rois`); ``n_skin`` and ``n_box`` are totals over the sub-boxes.
    """
    return _pooled(frame_bgr, face_rois(box, regions, edges), skin, edges)


def face_rgb(frame_bgr: np.ndarray, box, skin: bool | str = True, regions=None,
             edges: str = DEFAULT_ROI_EDGES) -> np.ndarray:
    """Mean R, G, B over the skin pixels of the forehead and both cheeks of a face box.

    A cheek half hidden by a hand weighs less instead of adding noise: with ``"pixel"`` edges
    each region counts by its skin pixels; with ``"fractional"`` edges by its area and skin
    share (see :func:`face_stats`).

    Args:
        frame_bgr: uint8 (H, W, 3) BGR frame, read in place.
        box: face box (x, y, w, h) in pixels.
        skin: as in :func:`roi_stats`.
        regions: as in :func:`face_rois`.
        edges: as in :func:`roi_stats` (a bundle's ``preprocessing.rppg.roi_edges``).

    Returns:
        float64 (3,) mean R, G, B in 8-bit units; NaN triple if no sub-box pixel qualifies.

    Raises:
        BadInputError: frame not uint8 (H, W, 3); box not 4 numbers or with negative size.
        ConfigError: unknown skin rule or edge mode.
    """
    return _pooled(frame_bgr, face_rois(box, regions, edges), skin, edges).rgb


def warmup() -> None:
    """Compile (or load from Numba's cache) the ROI kernel for camera frames and views.

    Call it before the first frame so that no frame waits for the compiler.
    """
    frame = np.zeros((8, 8, 3), np.uint8)
    for image in (frame, frame[::2, ::2]):  # a whole frame and a strided view
        for edges in ROI_EDGES:
            roi_stats(image, (0.5, 0.5, 3.2, 3.2), edges=edges)
            roi_stats(image, (0.5, 0.5, 3.2, 3.2), skin=False, edges=edges)
            roi_stats(image, (0.5, 0.5, 3.2, 3.2), skin=ADAPTIVE_SKIN_RULES[0], edges=edges)
