"""Rendering of a pulsing face: a real photo whose skin changes colour with the blood volume.

The face is the public-domain astronaut portrait shipped with scikit-image (NASA photo of
Eileen Collins, ``skimage.data.astronaut()``), placed on a plain wall in a frame of the asked
size. Its skin is darkened by the blood-volume pulse along the blood-volume signature
``Pbv ~ [0.33, 0.77, 0.53]`` (R, G, B) of de Haan & van Leest 2014 ("Improved motion robustness
of remote-PPG by using the blood volume pulse signature", Physiol Meas 35:1913-1926): more blood
absorbs more light, most of all in green. Then come the nuisances a real camera adds: head
motion (smooth random translation and scale), a global illumination change, Gaussian sensor
noise and, optionally, JPEG compression.

A face-library photo (:mod:`firmware_bridge.sim.faces`, tight 128x128 crops) is placed the same
way but also fades into the wall along an oval about its face box (``_PHOTO_VIGNETTE``). With
a square edge, the crop's corners (its own backdrop, darkened with a dark tone by the subject
scale) sat on the light wall as a dark square whose edges drew the Haar cascade away from the
face (at 640x480, seeds 0-3, Monk 9 was tracked in 75 % of frames; with the oval 89 %, seeds 0-5
93 %; docs/BENCHMARKS.md). The oval's size is a modelling choice: a tighter one helped 640x480
and cost the 128x128 corpus layout, a wider one the reverse.

The frame is rendered in float32 and the sensor noise is added before rounding to uint8, so
the noise dithers the quantiser: a 0.3 % pulse on a grey level of 150 is less than one level,
yet its mean over the skin region survives, as in a real camera (Verkruysse, Svaasand &
Nelson 2008 saw the pulse in 8-bit consumer video for the same reason).

Rendering is stateless per frame: frame i depends only on the configuration and i (noise is
drawn from a seed derived from both), so random access and iteration give the same bytes.

Per-subject appearance (skin tone, wall tint, face proportions, landmark offsets) and facial
expressions (valence and arousal warps) come from :mod:`firmware_bridge.sim.expression`; at
their defaults the renderer produces exactly the plain photo's frames.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import cv2
import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.sim.expression import _TONE_ELLIPSE, ExpressionRig, FaceAppearance
from firmware_bridge.sim.faces import FacePhoto, _ellipse_mask, colourise, tone_pulse_factors

__all__ = ["AE_GAIN_RANGE", "AE_STRENGTH", "AE_TARGET_LUMA", "FaceRenderer", "Motion", "PBV_RGB",
           "PHOTO_FACE_BOX", "auto_exposure_gain", "face_meter_luma"]

# The box OpenCV's Haar frontal-face cascade (haarcascade_frontalface_default.xml,
# scaleFactor 1.1, minNeighbors 5) finds on the unscaled 512x512 photo, (x, y, w, h) px:
# measured once, so that the ground-truth box has the convention a face tracker produces.
PHOTO_FACE_BOX = (177.0, 66.0, 95.0, 95.0)
# The face-skin ellipse on the unscaled photo ((cx, cy), (semi-axis x, semi-axis y)) px: the
# forehead below the fringe down to the chin, cheek to cheek; not the neck or the hair.
_FACE_ELLIPSE = ((225, 128), (40, 52))
# Chai & Ngan 1999 YCrCb skin box, the same rule the ROI kernel uses.
_CR_RANGE = (133, 173)
_CB_RANGE = (77, 127)

# Relative pulsatile strength per channel, (R, G, B), de Haan & van Leest 2014.
PBV_RGB = (0.33, 0.77, 0.53)

# Auto-exposure (see auto_exposure_gain). Target: the mean luma of 18 % grey (the reflectance
# reflected-light meters are calibrated to, ISO 2720), 0.18 ** (1 / 2.2) * 255 = 118 in 8-bit
# sRGB-like code values.
AE_TARGET_LUMA = 118.0
# Share of the log distance to the target that the loop closes (1 = every face at the target).
AE_STRENGTH = 0.7
# Gain limits in code-value (gamma-domain) units: down to 1/8 of the light in linear terms
# (a shorter exposure), up to 24 dB (16x) of sensor gain, a webcam's typical ceiling;
# under the power-law gamma a linear gain g is g ** (1 / 2.2) in code values.
AE_GAIN_RANGE = (0.125 ** (1 / 2.2), 16.0 ** (1 / 2.2))
# Face-priority metering: the face box's mean luma weighs this much, the centre-weighted frame
# the rest.
_AE_FACE_WEIGHT = 0.8

# A pale grey-beige wall, BGR, top and bottom of the frame.
_WALL_TOP_BGR = (178.0, 182.0, 186.0)
_WALL_BOTTOM_BGR = (140.0, 146.0, 152.0)
# Feathered edge of the photo on the wall, in photo pixels.
_FEATHER_PX = 12
# Oval fade of a face-library photo into the wall, ((cx, cy), (semi-axis x, semi-axis y), soft)
# as fractions of its face box: opaque inside r = 1 - soft, gone at r = 1 + soft.
_PHOTO_VIGNETTE = ((0.5, 0.55), (0.70, 0.85), 0.2)


class Motion(NamedTuple):
    """Rigid motion of the subject at one instant: translation (dx, dy) px and scale about the
    face centre (1 = none)."""

    dx_px: float
    dy_px: float
    scale: float


def face_meter_luma(bgr: np.ndarray, face_box: tuple[float, float, float, float]) -> float:
    """Face-priority exposure metering: the luma an auto-exposure loop steers toward its target.

    0.8 x the mean BT.601 luma of the face box (the part inside the frame) + 0.2 x the frame's
    centre-weighted mean luma (Gaussian weight, sigma = a quarter of the shorter side), the
    face-detection-driven metering of current webcams and phones with a centre-weighted
    average as its fallback share (e.g. Kuno, Sugiura & Matoba 1998, "A new automatic exposure
    system for digital still cameras", IEEE Trans. Consumer Electronics 44(1):192-199, meter
    the main subject's region rather than the frame mean). The weights are a modelling choice.

    Args:
        bgr: float32 or uint8 (H, W, 3) BGR code values 0-255.
        face_box: (x, y, w, h) frame px; it may extend past the frame.

    Returns:
        Metered luma, code values 0-255 (float).

    Raises:
        BadInputError: bgr is not (H, W, 3).
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise BadInputError(f"bgr must be (H, W, 3), got shape {bgr.shape}")
    h, w = bgr.shape[:2]
    luma = cv2.transform(np.asarray(bgr, np.float32), np.array([[0.114, 0.587, 0.299]], np.float32))
    luma = luma.reshape(h, w)
    sigma = 0.25 * min(w, h)
    gx = np.exp(-0.5 * ((np.arange(w, dtype=np.float32) - (w - 1) / 2.0) / sigma) ** 2)
    gy = np.exp(-0.5 * ((np.arange(h, dtype=np.float32) - (h - 1) / 2.0) / sigma) ** 2)
    centre = float((gy @ luma @ gx) / (gy.sum() * gx.sum()))
    x, y, bw, bh = face_box
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(w, int(round(x + bw))), min(h, int(round(y + bh)))
    if x1 <= x0 or y1 <= y0:
        return centre
    return _AE_FACE_WEIGHT * float(luma[y0:y1, x0:x1].mean()) + (1.0 - _AE_FACE_WEIGHT) * centre


def auto_exposure_gain(meter_luma: float, target_luma: float = AE_TARGET_LUMA, strength: float = AE_STRENGTH,
                       gain_range: tuple[float, float] = AE_GAIN_RANGE) -> float:
    """The converged gain of an auto-exposure loop, in code-value (gamma-domain) units.

    ``gain = clip((target / meter) ** strength, *gain_range)``: a reflected-light meter places
    the metered region at mid-grey (18 % reflectance, ISO 2720), so a dark face is brightened
    and a light one darkened; ``strength`` < 1 closes only part of that distance (a camera
    that put every face at exactly 118 would erase skin tone; the partial compensation keeps
    the tones' order and is a modelling choice), and the range caps the sensor gain.

    Args:
        meter_luma: metered luma, code values (see :func:`face_meter_luma`), > 0.
        target_luma: the loop's target, code values.
        strength: 0 (no auto-exposure) to 1 (full compensation).
        gain_range: (lowest, highest) gain, code-value units.

    Returns:
        The gain (float) by which every code value of the scene is multiplied.

    Raises:
        ConfigError: a non-positive meter or target, strength outside 0-1, or a bad range.
    """
    lo, hi = (float(v) for v in gain_range)
    if not (meter_luma > 0 and target_luma > 0):
        raise ConfigError(f"auto-exposure needs a positive meter and target, got {meter_luma}, {target_luma}")
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"auto-exposure strength must be within 0-1, got {strength}")
    if not 0.0 < lo <= 1.0 <= hi:
        raise ConfigError(f"auto-exposure gain_range must satisfy 0 < low <= 1 <= high, got {gain_range}")
    return float(np.clip((float(target_luma) / float(meter_luma)) ** float(strength), lo, hi))


@functools.lru_cache(maxsize=1)
def _photo() -> tuple[np.ndarray, np.ndarray]:
    # scikit-image is a core dependency, but importing it is slow: only when a face is needed.
    from skimage import data

    rgb = data.astronaut()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    skin = cv2.inRange(ycrcb, (0, _CR_RANGE[0], _CB_RANGE[0]), (255, _CR_RANGE[1], _CB_RANGE[1]))
    ellipse = np.zeros(skin.shape, np.uint8)
    cv2.ellipse(ellipse, _FACE_ELLIPSE[0], _FACE_ELLIPSE[1], 0, 0, 360, 255, -1)
    mask = ((skin > 0) & (ellipse > 0)).astype(np.float32)
    bgr.setflags(write=False)
    mask.setflags(write=False)
    return bgr, mask


@functools.lru_cache(maxsize=1)
def _photo_backdrop() -> np.ndarray:
    # The studio backdrop behind the subject (and the white parts of the suit): bright,
    # unsaturated pixels, opened to drop specks and blurred to a soft float32 weight in [0, 1].
    # An appearance's wall tint applies there as on the plain wall.
    bgr, _ = _photo()
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    mask = ((hsv[:, :, 1] < 60) & (hsv[:, :, 2] > 140)).astype(np.uint8) * 255
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 3.0)
    soft.setflags(write=False)
    return soft


@functools.lru_cache(maxsize=1)
def _astronaut_tone_mask() -> np.ndarray:
    # The rig's face-and-neck tone ellipse on the unscaled photo (flat inside, cosine ramp from
    # r = 0.8 to 1.2), where a skin tone colourises her.
    bgr, _ = _photo()
    h, w = bgr.shape[:2]
    (cx, cy), (ax, ay) = _TONE_ELLIPSE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    ramp = np.clip((1.2 - r) / 0.4, 0.0, 1.0)
    mask = (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)
    mask.setflags(write=False)
    return mask


class FaceRenderer:
    """Renders frames of the pulsing face at given times; one instance per session.

    The static scene (wall, placed photo, skin weights) is built once; each frame then costs a
    few full-frame float32 operations (about 4 ms at 640x480 on one core, plus 3-4 ms when JPEG
    is on).

    Args:
        frame_size: (width, height) px, each >= 64.
        face_scale: face-box height as a fraction of the frame height (0.05-1).
        face_center: face-box centre as fractions (x, y) of the frame.
        pulse_amplitude: systole-to-diastole relative intensity change of the skin in green
            (e.g. 0.003 = 0.3 %); red and blue scale with :data:`PBV_RGB`. 0 = a printed photo.
        noise_sigma: per-pixel Gaussian sensor noise, grey levels (>= 0).
        jpeg_quality: JPEG quality 1-100 applied to every frame, or None for none.
        seed: seed of the per-frame sensor noise.
        appearance: the subject's look (:class:`~firmware_bridge.sim.expression.FaceAppearance`);
            None or the default = the plain photo.
        photo: the identity's base photo (:class:`~firmware_bridge.sim.faces.FacePhoto`); None =
            the astronaut.
        skin_tone: Monk Skin Tone 1-10 that colourises the face, with the pulse scaled per
            channel by :func:`~firmware_bridge.sim.faces.tone_pulse_factors`; None = the photo's
            own colours (grey for a grey photo) and the plain Pbv pulse.

    Raises:
        ConfigError: a parameter out of range.
    """

    def __init__(
        self,
        frame_size: tuple[int, int] = (640, 480),
        face_scale: float = 0.35,
        face_center: tuple[float, float] = (0.5, 0.45),
        pulse_amplitude: float = 0.003,
        noise_sigma: float = 0.0,
        jpeg_quality: int | None = None,
        seed: int = 0,
        appearance: FaceAppearance | None = None,
        photo: FacePhoto | None = None,
        skin_tone: int | None = None,
        auto_exposure: bool = True,
    ) -> None:
        w, h = (int(v) for v in frame_size)
        if w < 64 or h < 64:
            raise ConfigError(f"frame_size must be at least 64x64, got {frame_size}")
        if not 0.05 <= face_scale <= 1.0:
            raise ConfigError(f"face_scale must be within 0.05-1, got {face_scale}")
        if not 0.0 <= pulse_amplitude <= 0.05:
            raise ConfigError(f"pulse_amplitude must be within 0-0.05, got {pulse_amplitude}")
        if not noise_sigma >= 0:
            raise ConfigError(f"noise_sigma must be >= 0 grey levels, got {noise_sigma}")
        if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError(f"jpeg_quality must be within 1-100 or None, got {jpeg_quality}")
        if appearance is not None and not isinstance(appearance, FaceAppearance):
            raise ConfigError(f"appearance must be a FaceAppearance or None, got {type(appearance).__name__}")
        if photo is not None and not isinstance(photo, FacePhoto):
            raise ConfigError(f"photo must be a FacePhoto or None, got {type(photo).__name__}")
        # Validates the tone (ConfigError) and gives the pulse's per-channel survival.
        self.pulse_factors_rgb = (1.0, 1.0, 1.0) if skin_tone is None else tone_pulse_factors(skin_tone)
        self.appearance = appearance if appearance is not None else FaceAppearance()
        self.photo = photo
        self.skin_tone = None if skin_tone is None else int(skin_tone)
        self.size = (w, h)
        self.pulse_amplitude = float(pulse_amplitude)
        self.noise_sigma = float(noise_sigma)
        self.jpeg_quality = None if jpeg_quality is None else int(jpeg_quality)
        self.seed = int(seed)
        self.auto_exposure = bool(auto_exposure)
        self._build(face_scale, face_center)

    def _build(self, face_scale: float, face_center: tuple[float, float]) -> None:
        w, h = self.size
        photo, mask, photo_tone, backdrop_photo = self._source()
        bx, by, bw, bh = self._photo_box
        k = face_scale * h / bh
        # The appearance's proportions stretch the photo about its own pixel grid; at 1 and 1
        # this is exactly the plain photo's scaling.
        kx, ky = k * self.appearance.width_scale, k * self.appearance.height_scale
        pw, ph = max(1, round(photo.shape[1] * kx)), max(1, round(photo.shape[0] * ky))
        shrink = min(kx, ky) < 1.0
        interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        # Resampled in float so pixel values keep fractional parts: the sub-grey-level pulse
        # then survives rounding on average even without sensor noise.
        scaled = cv2.resize(photo.astype(np.float32), (pw, ph), interpolation=interp)
        skin = cv2.resize(mask, (pw, ph), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        np.clip(scaled, 0.0, 255.0, out=scaled)
        np.clip(skin, 0.0, 1.0, out=skin)
        feather = np.ones((ph, pw), np.float32)
        f = max(1, round(_FEATHER_PX * min(kx, ky)))
        ramp = np.minimum(np.arange(f, dtype=np.float32) + 0.5, f) / f
        feather[:f, :] *= ramp[:, None]
        feather[-f:, :] *= ramp[::-1, None]
        feather[:, :f] *= ramp[None, :]
        feather[:, -f:] *= ramp[None, ::-1]
        if self.photo is not None and _PHOTO_VIGNETTE is not None:
            # A tight face crop would sit on the wall as a square, its corners the photo's own
            # backdrop: fade it out along an oval about the face box (a head's outline), so the
            # subject meets the wall without a square edge whatever its tone (see module doc).
            (vx, vy), (ax, ay), soft = _PHOTO_VIGNETTE
            pbx, pby, pbw, pbh = self.photo.face_box
            feather *= _ellipse_mask((ph, pw), (pbx * kx, pby * ky, pbw * kx, pbh * ky),
                                     ((vx, vy), (ax, ay)), soft)
        # Integer placement keeps the photo's own pixel grid; the box is exact in frame px.
        ox = round(face_center[0] * w - (bx + bw / 2.0) * kx)
        oy = round(face_center[1] * h - (by + bh / 2.0) * ky)
        self.face_box0 = (ox + bx * kx, oy + by * ky, bw * kx, bh * ky)
        self._placement = ((float(ox), float(oy)), (kx, ky))

        wall = np.empty((h, w, 3), np.float32)
        a = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        for c in range(3):
            wall[:, :, c] = (1.0 - a) * _WALL_TOP_BGR[c] + a * _WALL_BOTTOM_BGR[c]
        base = wall
        skin_full = np.zeros((h, w), np.float32)
        # Intersection of the placed photo with the frame.
        x0, y0 = max(ox, 0), max(oy, 0)
        x1, y1 = min(ox + pw, w), min(oy + ph, h)
        if x1 > x0 and y1 > y0:
            sx, sy = slice(x0 - ox, x1 - ox), slice(y0 - oy, y1 - oy)
            alpha = feather[sy, sx][:, :, None]
            base[y0:y1, x0:x1] = alpha * scaled[sy, sx] + (1.0 - alpha) * base[y0:y1, x0:x1]
            skin_full[y0:y1, x0:x1] = skin[sy, sx] * feather[sy, sx]
        self._tone_full = None
        if photo_tone is not None:
            self._tone_full = np.zeros((h, w), np.float32)
            if x1 > x0 and y1 > y0:
                placed = cv2.resize(photo_tone, (pw, ph), interpolation=interp)
                self._tone_full[y0:y1, x0:x1] = placed[sy, sx] * feather[sy, sx]
        if not self.appearance.is_default:
            photo_alpha = np.zeros((h, w), np.float32)
            backdrop = np.zeros((h, w), np.float32)
            if x1 > x0 and y1 > y0:
                photo_alpha[y0:y1, x0:x1] = feather[sy, sx]
                if backdrop_photo is not None:
                    placed = cv2.resize(backdrop_photo, (pw, ph), interpolation=cv2.INTER_AREA if shrink
                                        else cv2.INTER_LINEAR)
                    backdrop[y0:y1, x0:x1] = placed[sy, sx]
            base, skin_full = self._apply_appearance(base, skin_full, photo_alpha, backdrop)
        # The pulse per channel: the Pbv signature, diluted on darker tones by the surface
        # reflection (faces.tone_pulse_factors).
        weights_bgr = (np.asarray(PBV_RGB[::-1], np.float32) / PBV_RGB[1]
                       * np.asarray(self.pulse_factors_rgb[::-1], np.float32))
        # Auto-exposure, converged on the still scene and then held (rPPG recordings lock
        # exposure; a loop that kept adapting would also follow the pulse and the light's
        # drift). The gain multiplies the diffuse light and the pulse alike, so the relative
        # pulse is unchanged; a gain above 1 is sensor gain and amplifies the sensor noise
        # with it, a gain below 1 is a shorter exposure and leaves the noise floor as it is.
        self.exposure_gain = 1.0
        if self.auto_exposure:
            self.exposure_gain = auto_exposure_gain(face_meter_luma(base, self.face_box0))
            base = np.clip(base * np.float32(self.exposure_gain), 0.0, 255.0)
        self._noise_sigma_out = self.noise_sigma * max(1.0, self.exposure_gain)
        self._base = np.ascontiguousarray(base)
        self._skin = skin_full
        # Per-pixel, per-channel intensity lost per unit of blood volume at unit amplitude.
        self._pulse_gain = np.ascontiguousarray(base * skin_full[:, :, None] * weights_bgr)
        self._center = (self.face_box0[0] + self.face_box0[2] / 2.0, self.face_box0[1] + self.face_box0[3] / 2.0)

    def _source(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        # The base photo (BGR float32), its pulsing skin, its tone weights (None: the rig's
        # ellipse) and its backdrop (None: none), coloured to the skin tone if one is set.
        if self.photo is None:
            bgr, mask = _photo()
            self._photo_box = PHOTO_FACE_BOX
            if self.skin_tone is None:
                return bgr, mask, None, _photo_backdrop()
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
            tone = _astronaut_tone_mask()
            return colourise(gray, mask, tone, self.skin_tone, rest=bgr.astype(np.float32)), mask, None, \
                _photo_backdrop()
        p = self.photo
        self._photo_box = p.face_box
        gray = p.gray
        if self.skin_tone is None:
            bgr = np.repeat(gray[:, :, None], 3, axis=2)
        else:
            bgr = p.colourise(self.skin_tone)
        return bgr, p.skin, p.tone, None

    @functools.cached_property
    def rig(self) -> ExpressionRig:
        """The expression warps on this frame layout (built on first use)."""
        origin, scale = self._placement
        if self.photo is None:
            return ExpressionRig(self.size, origin, scale)
        bw = self.photo.face_box[2]
        # The astronaut's warps were drawn on her 95 px face box; a photo's scale with its box.
        return ExpressionRig(self.size, origin, scale, landmarks=self.photo.landmarks,
                             unit=bw / PHOTO_FACE_BOX[2])

    def _apply_appearance(self, base: np.ndarray, skin: np.ndarray, photo_alpha: np.ndarray,
                          backdrop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self.appearance
        wall_gain = np.asarray(a.wall_tone_rgb[::-1], np.float32) - 1.0
        skin_gain = np.asarray(a.skin_tone_rgb[::-1], np.float32) - 1.0
        tone = (self.rig.tone_mask() if self._tone_full is None else self._tone_full) * photo_alpha
        # Gains as (1 + weight * (g - 1)): the wall where the photo is absent and the photo's
        # own backdrop, the face and neck where the tone mask is; the feathered photo edge
        # blends them.
        wall = (1.0 - photo_alpha) + photo_alpha * backdrop * (1.0 - tone)
        base = base * (1.0 + wall[:, :, None] * wall_gain + tone[:, :, None] * skin_gain)
        if a.has_static_warp:
            field = self.rig.field(appearance=a)
            base = self.rig.warp(base, field)
            skin = self.rig.warp(skin, field)
        return np.clip(base, 0.0, 255.0).astype(np.float32), np.clip(skin, 0.0, 1.0).astype(np.float32)

    def _matrix(self, motion: Motion) -> np.ndarray:
        s = motion.scale
        cx, cy = self._center
        return np.array(
            [[s, 0.0, (1.0 - s) * cx + motion.dx_px], [0.0, s, (1.0 - s) * cy + motion.dy_px]], np.float64
        )

    def face_box(self, motion: Motion, exact: bool = False) -> tuple:
        """Ground-truth face box (x, y, w, h) in frame px under ``motion``: rounded to ints, or
        with ``exact`` the float box that moves with the image (sub-pixel, as a tracker's)."""
        x, y, bw, bh = self.face_box0
        cx, cy = self._center
        s = motion.scale
        nx = s * (x - cx) + cx + motion.dx_px
        ny = s * (y - cy) + cy + motion.dy_px
        if exact:
            return (float(nx), float(ny), float(s * bw), float(s * bh))
        return (round(nx), round(ny), round(s * bw), round(s * bh))

    def _expression_field(self, expression: tuple[float, float]) -> np.ndarray | None:
        valence, arousal = (float(v) for v in expression)
        if valence == 0.0 and arousal == 0.0:
            return None
        return self.rig.field(valence, arousal)

    def skin_mask(self, motion: Motion, expression: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Which pixels carry the pulse under ``motion`` and ``expression`` (valence, arousal
        intensities, see :meth:`render`): float32 (H, W) weights in [0, 1]."""
        field = self._expression_field(expression)
        skin = self._skin if field is None else self.rig.warp(self._skin, field)
        if motion == Motion(0.0, 0.0, 1.0):
            return skin.copy()
        w, h = self.size
        return cv2.warpAffine(skin, self._matrix(motion), (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def render(self, index: int, blood_volume: float, gain: float, motion: Motion,
               expression: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """One frame.

        Args:
            index: frame index (selects the sensor-noise seed).
            blood_volume: face blood volume at this frame's time, dimensionless (the BVP).
            gain: global illumination gain (1 = nominal).
            motion: the subject's rigid motion.
            expression: effective (valence, arousal) intensities, each clipped to +-1.5:
                valence > 0 smiles, < 0 frowns; arousal > 0 raises the brows and opens the
                eyes (see :mod:`firmware_bridge.sim.expression`). (0, 0) = the photo's own face.

        Returns:
            uint8 BGR image, shape (H, W, 3).
        """
        w, h = self.size
        # Skin darkens with blood: I_c = base_c * (1 - A * w_c * bvp).
        img = cv2.addWeighted(self._base, 1.0, self._pulse_gain, -self.pulse_amplitude * float(blood_volume), 0.0)
        # The expression moves the pulsing skin with the face, before the head's rigid motion.
        field = self._expression_field(expression)
        if field is not None:
            img = self.rig.warp(img, field)
        if motion != Motion(0.0, 0.0, 1.0):
            img = cv2.warpAffine(img, self._matrix(motion), (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT101)
        if self._noise_sigma_out > 0.0:
            noise = np.empty_like(img)
            # OpenCV's randn is 3x faster than NumPy's here; seeding its thread-local RNG per
            # frame keeps frame i the same whatever order frames are rendered in.
            seq = np.random.SeedSequence([self.seed, 0x5EED, int(index)])
            cv2.setRNGSeed(int(seq.generate_state(1)[0] & 0x7FFFFFFF))
            cv2.randn(noise, 0.0, self._noise_sigma_out)
            img = cv2.scaleAdd(img, float(gain), noise)
        elif gain != 1.0:
            img = img * np.float32(gain)
        # Round after the noise (dithering); clip first so rounding saturates like a sensor.
        out = cv2.convertScaleAbs(cv2.max(img, 0.0))
        if self.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out
