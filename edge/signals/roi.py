"""Skin-pixel colour means of face regions: the raw RGB trace that rPPG turns into a pulse.

A region's mean colour over skin pixels only is the standard rPPG observation (Verkruysse,
Svaasand & Nelson 2008, "Remote plethysmographic imaging using ambient light"; Wang et al.
2017, "Algorithmic principles of remote PPG", IEEE TBME 64(7)). Pixels are classified as skin
by a YCrCb box rule after Chai & Ngan 1999 ("Face segmentation using skin-color map in
videophone applications", IEEE TCSVT 9(4)): 133 <= Cr <= 173 and 77 <= Cb <= 127 as
published (``"chai_ngan"``), or with the Cb ceiling at 135 (``"chai_ngan_wide"``, the default;
see :data:`SKIN_RULES` for why).

The colour conversion uses the same 14-bit fixed-point arithmetic as OpenCV's 8-bit
``COLOR_BGR2YCrCb`` (verified equal on all 2**24 colours), so the skin mask is bit-identical to
``cv2.cvtColor`` + ``cv2.inRange`` and the means differ from a NumPy reference only by float
rounding of the final division. The kernel reads the frame in place: no crop, no colour image,
no mask is allocated, which is what makes it fast enough to call on every frame.

Empty results are NaN, not errors: a box wholly outside the frame, or a box with no skin
pixel (face turned away, over-exposed), gives ``(nan, nan, nan)`` and a count of 0, so that a
trace keeps one row per frame and the gap is visible downstream.
"""
from __future__ import annotations

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


class RoiStats(NamedTuple):
    """Mean colour of a region and how many pixels it came from.

    Attributes:
        rgb: float64 (3,) mean R, G, B in 8-bit units (0..255); NaN when ``n_skin`` is 0.
        n_skin: pixels that passed the skin rule (all pixels of the clipped box if no mask).
        n_box: pixels in the box after clipping it to the frame.
    """

    rgb: np.ndarray
    n_skin: int
    n_box: int


@njit(cache=True, nogil=True)
def _roi_sums(frame, x0, y0, x1, y1, skin, cr_lo, cr_span, cb_lo, cb_span):
    """Integer sums of R, G, B over (skin) pixels of frame[y0:y1, x0:x1] and their count.

    The skin test is cr_lo <= Cr <= cr_lo + cr_span and likewise for Cb.
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
        row = frame[y]
        # Per-row int32 accumulators: a row of <= 2**23 / 255 pixels cannot overflow, and
        # 32-bit lanes let LLVM vectorise the branch-free body below.
        rr = np.int32(0)
        rg = np.int32(0)
        rb = np.int32(0)
        rn = np.int32(0)
        for x in range(x0, x1):
            b = np.int32(row[x, 0])
            g = np.int32(row[x, 1])
            r = np.int32(row[x, 2])
            yy = (r * _R2Y + g * _G2Y + b * _B2Y + _HALF) >> _SHIFT
            cr = ((r - yy) * _CR + _CBIAS) >> _SHIFT
            cb = ((b - yy) * _CB + _CBIAS) >> _SHIFT
            # Unsigned compare: values below the low edge wrap to huge and fail too.
            m = np.int32(
                (np.uint32(cr - cr_lo) <= np.uint32(cr_span))
                & (np.uint32(cb - cb_lo) <= np.uint32(cb_span))
            )
            rr += r * m
            rg += g * m
            rb += b * m
            rn += m
        sr += rr
        sg += rg
        sb += rb
        n += rn
    return sr, sg, sb, n


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


def _skin_args(skin) -> tuple[bool, int, int, int, int]:
    """(use_mask, cr_lo, cr_span, cb_lo, cb_span) for the kernel from a ``skin`` argument."""
    if skin is True:
        skin = DEFAULT_SKIN_RULE
    if skin is False or skin is None:
        return False, 0, 0, 0, 0
    try:
        cr_lo, cr_hi, cb_lo, cb_hi = SKIN_RULES[skin]
    except (KeyError, TypeError):
        raise ConfigError(
            f"skin must be True, False or one of {sorted(SKIN_RULES)}, got {skin!r}"
        ) from None
    return True, cr_lo, cr_hi - cr_lo, cb_lo, cb_hi - cb_lo


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


def _pooled(frame_bgr: np.ndarray, boxes, skin) -> RoiStats:
    """One mean over the (skin) pixels of several boxes, weighted by their pixel counts."""
    _check_frame(frame_bgr)
    mask_args = _skin_args(skin)
    height, width = frame_bgr.shape[:2]
    sr = sg = sb = n = n_box = 0
    for box in boxes:
        x0, y0, x1, y1 = _clip_box(box, height, width)
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


def roi_stats(frame_bgr: np.ndarray, box, skin: bool | str = True) -> RoiStats:
    """Mean R, G, B of the skin pixels in a box of a BGR frame, with pixel counts.

    Args:
        frame_bgr: uint8 (H, W, 3) BGR image, any strides (a view is read in place, never
            copied).
        box: (x, y, w, h) in pixels, numbers (rounded to int); clipped to the frame.
        skin: True: keep pixels passing the default skin rule (:data:`DEFAULT_SKIN_RULE`);
            a name from :data:`SKIN_RULES`: that rule; False: average every pixel.

    Returns:
        RoiStats(rgb float64 (3,) in 0..255 R, G, B order, n_skin, n_box). ``rgb`` is NaN
        when the clipped box is empty or holds no skin pixel.

    Raises:
        BadInputError: frame not uint8 (H, W, 3); box not 4 numbers or with negative size.
        ConfigError: unknown skin rule.

    Method: YCrCb skin box after Chai & Ngan 1999 (IEEE TCSVT 9(4)); colour conversion in
    OpenCV's 14-bit fixed point.
    """
    return _pooled(frame_bgr, (box,), skin)


def roi_mean_rgb(frame_bgr: np.ndarray, box, skin: bool | str = True) -> np.ndarray:
    """Mean R, G, B of the skin pixels in box (x, y, w, h) of a uint8 BGR frame.

    The frame is read in place (no crop copy, no mask image). Arguments and errors as
    :func:`roi_stats`, which also returns the pixel counts.

    Returns:
        float64 (3,) mean R, G, B (that order) in 8-bit units; NaN triple when the box clipped
        to the frame is empty or contains no skin pixel.

    Method: YCrCb skin box after Chai & Ngan 1999 (IEEE TCSVT 9(4)).
    """
    return _pooled(frame_bgr, (box,), skin).rgb


def face_rois(box, regions=None) -> list[tuple[int, int, int, int]]:
    """Forehead, left-cheek and right-cheek sub-boxes of a face box.

    Args:
        box: face box (x, y, w, h) in pixels, e.g. from ``edge.face.HaarFaceDetector``.
        regions: name -> (x0, y0, x1, y1) fractions of the box (a bundle's
            ``preprocessing.rppg.roi``); default :data:`FACE_ROI_FRACTIONS`.

    Returns:
        Three int boxes (x, y, w, h) in frame pixels, in the order of
        :data:`FACE_ROI_FRACTIONS` (forehead, left cheek, right cheek; "left" is image left).
        The fractions avoid eyes, mouth, hair and background (see the comment there); they
        follow the regions ranked best by Kwon et al. 2015 (EMBC).

    Raises:
        BadInputError: box not 4 numbers or with negative size.
    """
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"box must be 4 numbers (x, y, w, h), got {box!r}") from exc
    if w < 0 or h < 0:
        raise BadInputError(f"box width and height must be >= 0, got {box!r}")
    out = []
    for fx0, fy0, fx1, fy1 in (FACE_ROI_FRACTIONS if regions is None else regions).values():
        bx0 = int(round(x + fx0 * w))
        by0 = int(round(y + fy0 * h))
        bx1 = int(round(x + fx1 * w))
        by1 = int(round(y + fy1 * h))
        out.append((bx0, by0, bx1 - bx0, by1 - by0))
    return out


def face_stats(frame_bgr: np.ndarray, box, skin: bool | str = True, regions=None) -> RoiStats:
    """Pixel-weighted mean RGB over the forehead and both cheeks of a face box, with counts.

    Same arguments, result type and errors as :func:`roi_stats` (``regions`` as in
    :func:`face_rois`); ``n_skin`` and ``n_box`` are totals over the sub-boxes.
    """
    return _pooled(frame_bgr, face_rois(box, regions), skin)


def face_rgb(frame_bgr: np.ndarray, box, skin: bool | str = True, regions=None) -> np.ndarray:
    """Mean R, G, B over the skin pixels of the forehead and both cheeks of a face box.

    Each region contributes in proportion to its skin-pixel count (one pooled mean), so a
    cheek half hidden by a hand weighs less instead of adding noise.

    Args:
        frame_bgr: uint8 (H, W, 3) BGR frame, read in place.
        box: face box (x, y, w, h) in pixels.
        skin: as in :func:`roi_stats`.
        regions: as in :func:`face_rois`.

    Returns:
        float64 (3,) mean R, G, B in 8-bit units; NaN triple if no sub-box pixel qualifies.

    Raises:
        BadInputError: frame not uint8 (H, W, 3); box not 4 numbers or with negative size.
        ConfigError: unknown skin rule.
    """
    return _pooled(frame_bgr, face_rois(box, regions), skin).rgb


def warmup() -> None:
    """Compile (or load from Numba's cache) the ROI kernel for camera frames and views.

    Call it before the first frame so that no frame waits for the compiler.
    """
    frame = np.zeros((8, 8, 3), np.uint8)
    for image in (frame, frame[::2, ::2]):  # a whole frame and a strided view
        roi_stats(image, (0, 0, 4, 4))
        roi_stats(image, (0, 0, 4, 4), skin=False)
