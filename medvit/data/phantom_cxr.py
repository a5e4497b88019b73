"""Procedural frontal chest radiograph phantoms with exact multi-label truth, masks and a report.

Anatomy (body, shoulders, lungs, mediastinum and trachea, heart, diaphragm domes, stomach bubble,
posterior/anterior ribs, clavicles, spine, vessel markings, breast shadows) is drawn as a density
map in "anatomical" coordinates (x: image left→right = patient right→left, y: top→bottom, both
≈[-1, 1]) after a random rotation / scale / shift. Findings change that density where a radiologist
would see them: cardiomegaly (cardiothoracic ratio > 0.5), pleural effusion (meniscus, blunted
costophrenic angle), nodule (< 30 mm) and mass (≥ 30 mm, lobulated), pneumothorax (lucent rim without
lung markings behind a visceral pleural line), consolidation (patchy air-space opacity with air
bronchograms), atelectasis (elevated hemidiaphragm, mediastinal shift, plate-like band). The density
is turned into a radiograph by ``1 - exp(-k·density)`` with random exposure, contrast, heel effect
and quantum noise. Everything is vectorised numpy; lesions are drawn in their bounding boxes only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medvit.data.phantom_common import (
    SPLITS,
    Difficulty,
    PhantomGenerator,
    check_draw,
    check_geometry,
    check_probability,
    image_rng,
    patient_meta,
    patient_rng,
    ramp,
    study_meta,
    take_window,
    texture_bank,
)

#: label order of the chest phantoms (NIH ChestX-ray14 spellings; "No Finding" = all zeros)
CXR_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Effusion", "Mass", "Nodule", "Pneumothorax",
)
_SIDE = ("right", "left")  # patient side of image-left (0) and image-right (1)


@dataclass
class Phantom:
    """One generated image with its truth.

    image: (H, W) float32 in [0, 1], displayed orientation (bright = dense, MONOCHROME2).
    labels: (K,) uint8 multi-label truth in ``label_names`` order (retina: biomarker presence).
    masks: name → (H, W) bool (``lung_right``, ``lung_left``, ``heart``, ``<finding>_<n>``, ...).
    findings: structured description of each finding (label, side, zone, size_mm, ...).
    meta: patient / study / geometry metadata (synthetic).
    report: template report (findings + impression) consistent with ``labels``.
    target: class index for classification phantoms (retina AMD stage), else None.
    """

    image: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    report: str = ""
    target: int | None = None


class ChestPhantomGenerator(PhantomGenerator):
    """Deterministic generator: ``gen.sample(index, patient)`` → :class:`Phantom` (image (S, S)).

    Args:
        image_size: output size S in pixels (square).
        seed: dataset seed; image ``index`` of seed ``seed`` is always the same image.
        prevalence: probability of each finding in a non-healthy image.
        healthy_fraction: probability that an image has no finding at all.
        fov_mm: detector field of view in mm, 50-1000 (sets pixel spacing and lesion sizes in pixels).
        with_masks: also return masks (slightly slower).
        lesion_contrast, lesion_size, anatomy, noise, label_noise, label_noise_splits: calibration knobs, see
            :class:`~medvit.data.phantom_common.Difficulty` (defaults: the original phantoms).
    Raises:
        ValueError: image_size not a whole number in [32, 4096], fov_mm not a number in [50, 1000], seed not a
            whole number >= 0, with_masks not a bool, a probability outside [0, 1] or a knob outside its range,
            naming the argument
            (:func:`~medvit.data.phantom_common.check_geometry`).
    """

    kind = "cxr"
    label_names = CXR_LABELS
    CHECKED = ("image_size", "seed", "with_masks", "prevalence", "healthy_fraction", "fov_mm")

    def __init__(self, image_size: int = 512, seed: int = 0, prevalence: float = 0.22,
                 healthy_fraction: float = 0.3, fov_mm: float = 400.0, with_masks: bool = True,
                 lesion_contrast: float = 1.0, lesion_size: float = 1.0, anatomy: float = 1.0, noise: float = 1.0,
                 label_noise: float = 0.0,
                 label_noise_splits: tuple[str, ...] | list[str] = SPLITS):
        self.difficulty = self._checked(image_size, seed, with_masks, prevalence, healthy_fraction, fov_mm,
                                        (lesion_contrast, lesion_size, anatomy, noise, label_noise, label_noise_splits))
        self.size, self.seed, self.prevalence = int(image_size), int(seed), float(prevalence)
        self.healthy_fraction, self.fov_mm, self.with_masks = float(healthy_fraction), float(fov_mm), with_masks
        s = self.size
        lin = ((np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1).astype(np.float32)
        self.v, self.u = np.meshgrid(lin, lin, indexing="ij")
        bank_rng = np.random.default_rng([self.seed, 11, 9, s])
        # vessel filaments are drawn at >= 384 px and area-averaged down, so a small phantom looks like a
        # downsampled large one (thin lines fade) instead of aliased full-contrast speckle
        f = -(-384 // s)
        fine = texture_bank(bank_rng, s * f, 3, (0.012, 0.05))
        fil = np.exp(-((fine / 0.45) ** 2))
        self.filaments = fil.reshape(3, 2 * s, f, 2 * s, f).mean((2, 4)).astype(np.float32)
        self.blobs = texture_bank(bank_rng, s, 2, (0.06, 0.25))
        self.px = 2.0 / s  # anatomical units per pixel (before pose scaling)

    @staticmethod
    def _checked(image_size: Any, seed: Any, with_masks: Any, prevalence: Any, healthy_fraction: Any, fov_mm: Any,
                 knobs: tuple[Any, ...], name: Callable[[str], str] = str) -> Difficulty:
        """The constructor's refusals (``ValueError`` naming ``name(arg)`` and the value), nothing drawn; the
        knobs. Also :meth:`check_args`."""
        check_geometry(image_size, fov_mm, what="chest phantoms", name=name)
        check_draw(seed, with_masks, name)
        check_probability(prevalence, "prevalence", name)
        check_probability(healthy_fraction, "healthy_fraction", name)
        return Difficulty(*knobs)

    # -- helpers ---------------------------------------------------------------------------------
    def _bbox(self, pose: tuple[float, ...], cx: float, cy: float, radius: float) -> tuple[slice, slice]:
        """Pixel window covering anatomical disc (cx, cy, radius)."""
        th, sc, tx, ty = pose
        c, s_ = math.cos(th), math.sin(th)
        u = sc * (c * cx - s_ * cy) + tx
        v = sc * (s_ * cx + c * cy) + ty
        r = radius * sc + 3 * self.px
        n = self.size

        def rng_(a: float) -> slice:
            lo = int(max(0, math.floor((a - r + 1) / 2 * n)))
            hi = int(min(n, math.ceil((a + r + 1) / 2 * n)))
            return slice(lo, max(lo, hi))

        return rng_(v), rng_(u)

    @staticmethod
    def _point_in_lung(rng: np.random.Generator, geo: dict, side: int,
                       zones: tuple[str, ...]) -> tuple[float, float, str]:
        """A random (x, y, zone) inside the lung of ``side`` in one of ``zones``."""
        g = geo["lungs"][side]
        for _ in range(50):
            zone = zones[int(rng.integers(len(zones)))]
            lo, hi = {"upper": (-0.85, -0.3), "mid": (-0.3, 0.25), "lower": (0.25, 0.75)}[zone]
            yl = rng.uniform(lo, hi)
            y = g["cy"] + yl * g["ry"]
            frac = np.clip((y - geo["apex"]) / (g["dome"] - geo["apex"]), 0, 1)
            rx = g["rx"] * (0.55 + 0.45 * frac)
            lim = math.sqrt(max(0.0, 1 - yl * yl)) * 0.8
            x = g["cx"] + rng.uniform(-lim, lim) * rx
            dome_here = g["dome"] - geo["dh"] * (1 - ((x - g["cx"]) / (1.15 * g["rx"])) ** 2)
            if y < dome_here - 0.04 and abs(x - geo["mx"]) > 0.16:
                return float(x), float(y), zone
        return float(g["cx"]), float(g["cy"]), "mid"

    # -- main ------------------------------------------------------------------------------------
    def sample(self, index: int, patient: int = 0, visit: int = 0, split: str | None = None) -> Phantom:
        """Generate image ``index`` of ``patient`` (``visit``-th study of that patient).

        ``split`` (the image's split, when known) decides whether ``label_noise`` applies
        (``label_noise_splits``); the image is the same either way."""
        rp, ri = patient_rng(self.seed, "cxr", patient), image_rng(self.seed, "cxr", index)
        K = len(CXR_LABELS)
        lab = {n: i for i, n in enumerate(CXR_LABELS)}
        dk = self.difficulty
        an, cst, siz = dk.uniform, dk.lesion_contrast, dk.lesion_size
        # patient anatomy (spread scaled by the `anatomy` knob)
        bw, lcx, lw = an(rp, 0.84, 0.95), an(rp, 0.41, 0.46), an(rp, 0.34, 0.39)
        apex, dome, dome_diff = an(rp, -0.80, -0.70), an(rp, 0.40, 0.50), an(rp, 0.02, 0.06)
        ctr0, female, dh = an(rp, 0.39, 0.47), bool(rp.random() < 0.5), an(rp, 0.08, 0.13)
        # image-level pose and findings
        pose = (math.radians(an(ri, -4, 4)), an(ri, 0.92, 1.05), an(ri, -0.04, 0.04), an(ri, -0.04, 0.04))
        dome += an(ri, -0.04, 0.04)  # inspiration depth
        healthy = ri.random() < self.healthy_fraction
        present = (ri.random(K) < self.prevalence) & (not healthy)
        findings: list[dict[str, Any]] = []
        domes = [dome - dome_diff, dome]
        mx = ri.uniform(-0.015, 0.015)
        if present[lab["Atelectasis"]]:
            a_side = int(ri.integers(2))
            lift = ri.uniform(0.05, 0.11)
            if siz != 1.0:  # volume loss grows with the finding: hemidiaphragm lift and mediastinal shift (capped)
                lift = min(lift * siz, 0.25)
            domes[a_side] -= lift
            mx += (-1 if a_side == 0 else 1) * ri.uniform(0.01, 0.03) * min(siz, 2.5)
        ctr = ri.uniform(0.53, 0.64) if present[lab["Cardiomegaly"]] else float(np.clip(ctr0 + ri.normal(0, 0.01),
                                                                                      0.36, 0.49))
        # coordinates
        th, sc, tx, ty = pose
        c, s_ = math.cos(th), math.sin(th)
        uu, vv = self.u - tx, self.v - ty
        x = (c * uu + s_ * vv) / sc
        y = (-s_ * uu + c * vv) / sc
        ax = np.abs(x)
        e = max(0.012, 1.5 * self.px)
        geo: dict[str, Any] = {"apex": apex, "dh": dh, "mx": mx, "lungs": []}
        lungs_raw, r_side, dome_curves = [], [], []
        for side, sgn in ((0, -1.0), (1, 1.0)):
            cx = sgn * lcx + 0.5 * mx
            dy = domes[side]
            cy = (apex + dy) / 2 + 0.05
            ry = (dy - apex) / 2 + 0.12
            frac = np.clip((y - apex) * (1.0 / (dy - apex)), 0, 1)
            rxy = lw * (0.55 + 0.45 * frac)
            xl = (x - cx) / rxy
            yl = (y - cy) * (1.0 / ry)
            r2 = xl * xl + yl * yl
            q = (x - cx - sgn * 0.05) * (1.0 / (1.15 * lw))
            ydome = dy - dh * (1 - q * q)
            dome_curves.append(ydome)
            lung = ramp(1 - r2, 0.08) * ramp(ydome - y, e)
            lungs_raw.append(lung)
            r_side.append(r2)
            geo["lungs"].append({"cx": cx, "cy": cy, "rx": lw, "ry": ry, "dome": dy})
        # mediastinum, heart, body
        mw = 0.085 + 0.05 * np.clip((y + 0.5), 0, 1)
        med = ramp(mw - np.abs(x - mx), e) * ramp(y + 0.95, 0.05) * ramp(max(domes) - 0.05 - y, 0.06)
        thor_w = 2 * (lcx + lw)
        hw = ctr * thor_w
        ha, hb = hw / 2, hw / 2 * rp.uniform(0.66, 0.76)
        hcx, hcy = mx + 0.17 * hw, domes[1] - 0.6 * dh - 0.35 * hb
        hth = math.radians(-18)
        hx_, hy_ = x - hcx, y - hcy
        hxr = (math.cos(hth) * hx_ + math.sin(hth) * hy_) / ha
        hyr = (-math.sin(hth) * hx_ + math.cos(hth) * hy_) / hb
        heart = ramp(1 - (hxr * hxr + hyr * hyr), 0.12)
        notmed = (1 - med) * (1 - heart)
        lungs_raw = [lr * notmed for lr in lungs_raw]
        shoulder = -0.97 + 0.45 * np.clip(ax - 0.2, 0, 1) ** 2
        body = ramp(bw - ax, 0.03) * np.maximum(ramp(y - shoulder, 0.03), ramp(0.2 - ax, 0.02))
        trachea = ramp(0.022 - np.abs(x - mx), e) * ramp(-0.25 - y, 0.06)
        abd = np.where(x < mx, ramp(y - dome_curves[0], e), ramp(y - dome_curves[1], e))
        # texture
        fil = take_window(self.filaments, ri, self.size, self.size)
        blob = take_window(self.blobs, ri, self.size, self.size)
        dist_h = np.sqrt((ax - 0.16) ** 2 + (y + 0.05) ** 2)
        vessels = fil * np.clip(1.15 - 1.4 * dist_h, 0.12, 1.0)
        air = lungs_raw[0] + lungs_raw[1]
        extra = np.zeros_like(x)  # findings' own density
        masks: dict[str, np.ndarray] = {}
        # findings -----------------------------------------------------------------------------
        if present[lab["Atelectasis"]]:
            gx, gy, zone = self._point_in_lung(ri, geo, a_side, ("lower",))
            L, t, ang = ri.uniform(0.12, 0.25), ri.uniform(0.012, 0.03), math.radians(ri.uniform(-20, 20))
            if siz != 1.0:
                L, t = min(L * siz, 0.5), t * siz
            sl = self._bbox(pose, gx, gy, L / 2 + t)
            bx, by = x[sl] - gx, y[sl] - gy
            along = math.cos(ang) * bx + math.sin(ang) * by
            perp = -math.sin(ang) * bx + math.cos(ang) * by
            band = ramp(t - np.abs(perp), e) * ramp(L / 2 - np.abs(along), e) * lungs_raw[a_side][sl]
            air[sl] *= 1 - min(0.85 * cst, 1.0) * band
            self._mask(masks, "atelectasis", sl, band)
            findings.append({"label": "Atelectasis", "side": _SIDE[a_side], "zone": zone,
                             "lift_mm": round(lift * self.fov_mm / 2), "size_mm": round(L * self.fov_mm / 2)})
        for name, lo_mm, hi_mm in (("Nodule", 12, 28), ("Mass", 32, 65)):
            if not present[lab[name]]:
                continue
            side = int(ri.integers(2))
            gx, gy, zone = self._point_in_lung(ri, geo, side, ("upper", "mid", "lower"))
            diam = ri.uniform(lo_mm, hi_mm) * siz
            r = diam / 2 / (self.fov_mm / 2)
            contrast = (ri.uniform(0.10, 0.20) if name == "Nodule" else ri.uniform(0.14, 0.26)) * cst
            sl = self._bbox(pose, gx, gy, r * 1.4)
            bx, by = x[sl] - gx, y[sl] - gy
            d2 = (bx * bx + by * by) / (r * r)
            if name == "Mass":
                ang = np.arctan2(by, bx)
                ph1, ph2 = ri.uniform(0, 2 * math.pi, 2)
                lob = 1 + 0.14 * np.cos(3 * ang + ph1) + 0.08 * np.cos(5 * ang + ph2)
                d2 = d2 / (lob * lob)
            les = ramp(1 - d2, 0.35)
            extra[sl] += contrast * les
            self._mask(masks, name.lower(), sl, les)
            findings.append({"label": name, "side": _SIDE[side], "zone": zone, "size_mm": round(diam)})
        if present[lab["Consolidation"]]:
            side = int(ri.integers(2))
            gx, gy, zone = self._point_in_lung(ri, geo, side, ("upper", "mid", "lower"))
            sig = ri.uniform(0.06, 0.13) * siz
            sl = self._bbox(pose, gx, gy, 2.6 * sig)
            bx, by = x[sl] - gx, y[sl] - gy
            patch = np.exp(-(bx * bx + by * by) / (2 * sig * sig)) * (1 + 0.5 * blob[sl])
            cons = ramp(patch - 0.5, 0.25) * lungs_raw[side][sl]
            air[sl] *= 1 - min(ri.uniform(0.7, 0.95) * cst, 1.0) * cons
            extra[sl] += 0.04 * cst * cons
            extra[sl] -= 0.03 * cst * cons * fil[sl]  # air bronchograms
            self._mask(masks, "consolidation", sl, cons)
            findings.append({"label": "Consolidation", "side": _SIDE[side], "zone": zone,
                             "size_mm": round(4 * sig * self.fov_mm / 2)})
        if present[lab["Effusion"]]:
            sides = [0, 1] if ri.random() < 0.3 else [int(ri.integers(2))]
            for side in sides:
                g, sgn = geo["lungs"][side], (-1.0 if side == 0 else 1.0)
                h, men = ri.uniform(0.04, 0.30), ri.uniform(0.05, 0.14)
                if siz != 1.0:
                    h = min(h * siz, 0.45)
                qq = np.clip(sgn * (x - g["cx"]) / lw, -1, 1.3)
                fluid = ramp(y - (g["dome"] - h - men * (qq + 1) ** 2 / 4), e) * ramp(sgn * (x - mx) - 0.02, e)
                self._mask(masks, f"effusion_{_SIDE[side]}", (slice(None), slice(None)), fluid * lungs_raw[side])
                air *= 1 - (fluid if cst == 1.0 else np.minimum(cst * fluid, 1.0))
                if cst > 1.0:
                    extra += 0.05 * (cst - 1.0) * fluid * lungs_raw[side]  # denser fluid
                findings.append({"label": "Effusion", "side": _SIDE[side],
                                 "amount": "small" if h < 0.1 else ("moderate" if h < 0.2 else "large")})
        if present[lab["Pneumothorax"]]:
            side = int(ri.integers(2))
            g = geo["lungs"][side]
            dep = ri.uniform(0.07, 0.32)
            if siz != 1.0:
                dep = min(dep * siz, 0.6)
            rr = np.sqrt(r_side[side])
            upper = ramp(g["cy"] + 0.25 * g["ry"] - y, 0.1)
            ptx = lungs_raw[side] * ramp(rr - (1 - dep), 0.02) * upper
            line = ramp(0.02 - np.abs(rr - (1 - dep)), 0.015) * lungs_raw[side] * upper
            vessels = vessels * (1 - ptx)
            extra += (0.06 * line - ri.uniform(0.06, 0.10) * ptx) * cst
            self._mask(masks, "pneumothorax", (slice(None), slice(None)), ptx)
            findings.append({"label": "Pneumothorax", "side": _SIDE[side],
                             "size": "small" if dep < 0.15 else ("moderate" if dep < 0.25 else "large"),
                             "rim_mm": round(dep * lw * self.fov_mm / 2)})
        if present[lab["Cardiomegaly"]]:
            findings.append({"label": "Cardiomegaly", "ctr": round(ctr, 2)})
        # bones
        thorax = ramp(lcx + lw + 0.06 - ax, 0.03) * ramp(y - apex + 0.12, 0.04) * ramp(max(domes) + 0.1 - y, 0.05)
        sp = rp.uniform(0.13, 0.16)
        post = ramp(np.cos((y - 0.32 * ax * ax) * (2 * math.pi / sp) + rp.uniform(0, 6.3)) - 0.35, 0.3)
        ant = ramp(np.cos((y + 0.45 * ax) * (2 * math.pi / (1.3 * sp)) + rp.uniform(0, 6.3)) - 0.5, 0.25)
        ribs = (0.8 * post + 0.45 * ant) * thorax * ramp(ax - 0.07, 0.03)
        spine = ramp(0.05 - np.abs(x - 0.3 * mx), 0.012) * (0.8 + 0.2 * np.cos(y * (2 * math.pi / 0.09)))
        clav = np.zeros_like(x)
        rows = slice(0, int(self.size * 0.45))
        for sgn in (-1.0, 1.0):
            p0 = np.array([sgn * 0.07, apex + 0.06])
            p1 = np.array([sgn * rp.uniform(0.55, 0.65), apex - rp.uniform(0.0, 0.06)])
            dvec = p1 - p0
            tpar = np.clip(((x[rows] - p0[0]) * dvec[0] + (y[rows] - p0[1]) * dvec[1]) / (dvec @ dvec), 0, 1)
            dx_, dy_ = x[rows] - (p0[0] + tpar * dvec[0]), y[rows] - (p0[1] + tpar * dvec[1])
            clav[rows] += ramp(0.026 - np.sqrt(dx_ * dx_ + dy_ * dy_), e)
        soft = 0.32 * body + 0.025 * blob * body
        if female:
            for side, sgn in ((0, -1.0), (1, 1.0)):
                bx, by = (x - sgn * (lcx + 0.08)) / 0.33, (y - domes[side] + 0.05) / 0.2
                soft += 0.07 * ramp(1 - (bx * bx + by * by), 0.5) * body
        bubble_y = domes[1] + 0.07
        bb = ((x - (mx + 0.3)) / 0.1) ** 2 + ((y - bubble_y) / 0.05) ** 2
        density = (soft + 0.22 * med + 0.20 * heart + 0.17 * abd * body + 0.05 * spine * body + 0.07 * ribs
                   + 0.10 * clav - 0.24 * air + 0.06 * air * vessels + extra - 0.10 * ramp(1 - bb, 0.3) * abd
                   - 0.08 * trachea)
        # radiograph formation
        k = ri.uniform(1.8, 2.8)
        img = (1 - np.exp(-k * np.maximum(density, 0))) / (1 - math.exp(-k * 0.85))
        lo_, hi_ = ri.uniform(-0.06, 0.04), ri.uniform(0.95, 1.12)
        img = (img - lo_) * (1 / (hi_ - lo_))
        img *= 1 + ri.uniform(-0.06, 0.06) * self.v
        sigma = ri.uniform(0.008, 0.03) * math.sqrt(self.size / 512) * dk.noise
        img += sigma * ri.standard_normal((self.size, self.size), dtype=np.float32)
        image = np.clip(img, 0, 1).astype(np.float32)
        labels = present.astype(np.uint8)
        if dk.noisy_labels(split):  # reported labels wrong with this probability each; the image keeps the truth
            flip = dk.label_rng(self.seed, "cxr", index).random(K) < dk.label_noise
            labels = np.where(flip, 1 - labels, labels).astype(np.uint8)
        if self.with_masks:
            masks["lung_right"] = lungs_raw[0] * (air > 0.3 * lungs_raw[0]) > 0.5
            masks["lung_left"] = lungs_raw[1] * (air > 0.3 * lungs_raw[1]) > 0.5
            masks["heart"] = heart > 0.5
        else:
            masks = {}
        meta = self._meta(index, patient, visit, ctr, pose, rp)
        from medvit.data.phantom_reports import cxr_report

        return Phantom(image=image, labels=labels, label_names=CXR_LABELS, masks=masks, findings=findings,
                       meta=meta, report=cxr_report(findings, meta, np.random.default_rng([self.seed, index, 99])))

    def _mask(self, masks: dict[str, np.ndarray], name: str, sl: tuple[slice, slice], soft: np.ndarray) -> None:
        if not self.with_masks:
            return
        m = np.zeros((self.size, self.size), bool)
        m[sl] = soft > 0.5
        masks[name] = m

    def _meta(self, index: int, patient: int, visit: int, ctr: float, pose: tuple[float, ...],
              rp: np.random.Generator) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        meta.update(patient_meta(self.seed, "cxr", patient))
        meta.update(study_meta(self.seed, "cxr", index, patient, visit))
        view = "AP" if (index * 7919 + self.seed) % 10 == 0 else "PA"
        meta.update({
            "Modality": "DX", "BodyPartExamined": "CHEST", "ViewPosition": view,
            "PixelSpacing": round(self.fov_mm / self.size, 6), "Rows": self.size, "Columns": self.size,
            "CardiothoracicRatio": round(float(ctr), 3), "RotationDeg": round(math.degrees(pose[0]), 2),
            "patient_index": int(patient), "visit": int(visit), "index": int(index),
        })
        return meta
