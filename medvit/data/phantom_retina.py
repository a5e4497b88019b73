"""Procedural foveal OCT B-scan phantoms for AMD staging, with biomarker truth, masks and a report.

Geometry is column-wise (one depth profile per A-scan): Bruch's membrane curve, foveal pit, inner
retinal layers (RNFL, GCL, IPL, INL, OPL) scaled to the local inner thickness and outer layers (ONL,
ELM, ellipsoid and interdigitation zones, RPE) of fixed thickness, choroid with vessels, vitreous.
Biomarkers: drusen (count, basal width in µm: small < 63, medium 63–125, large > 125) lifting the
RPE; pigmentary abnormalities (hyperreflective foci, RPE clumps); geographic atrophy (RPE and outer
retina loss with choroidal hypertransmission); subretinal and intraretinal fluid; pigment epithelial
detachment. Stage (Beckman-style, most advanced wins): healthy, early (medium drusen), intermediate
(large drusen or pigmentary abnormalities), late dry (atrophy), late wet (exudative fluid); referral:
none / routine / urgent (RetinaVLM referral guideline). Speckle is multiplicative, display is log.
Field of view: 3 mm wide × 0.8 mm deep around the fovea (anisotropic pixels, like the cropped Topcon
B-scans RetinaVLM trains on).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from medvit.data.phantom_common import (
    SPLITS,
    Difficulty,
    PhantomGenerator,
    check_draw,
    check_geometry,
    finite_number,
    image_rng,
    patient_meta,
    patient_rng,
    study_meta,
    take_window,
    texture_bank,
)
from medvit.data.phantom_cxr import Phantom

AMD_STAGES: tuple[str, ...] = ("healthy", "early", "intermediate", "late dry", "late wet")
REFERRALS: tuple[str, ...] = ("none", "routine", "urgent")
RETINA_BIOMARKERS: tuple[str, ...] = ("drusen", "large_drusen", "pigment", "atrophy", "srf", "irf", "ped")
WIDTH_UM, DEPTH_UM = 3000.0, 800.0
#: cap of a druse's elevation when ``lesion_size`` lifts it (µm; the largest default druse is 140 µm high)
_MAX_DRUSEN_UM = 200.0

# inner retina (fraction of inner thickness) and outer retina (fraction of outer thickness) reflectivity
_INNER = (np.array([0, .12, .13, .35, .36, .55, .56, .78, .79, .999]),
          np.array([.85, .8, .45, .45, .62, .62, .3, .3, .62, .62]))
_OUTER = (np.array([0, .58, .60, .63, .68, .70, .76, .80, .86, .90, .999]),
          np.array([.62, .16, .16, .5, .2, .2, .92, .92, .3, .55, .55]))


#: mean best-corrected visual acuity (logMAR) per stage; synthetic, monotone in severity as in AMD cohorts
_VA_MEAN = (0.05, 0.12, 0.22, 0.6, 0.55)


def _tabular(seed: int, index: int, stage: int, noise: float) -> dict[str, Any]:
    """Clinic-style tabular fields RetinaVLM's curriculum part 1 reads (its ``VALogMAR`` and ``QualityIndex``).

    ``va_logmar``: visual acuity in logMAR (0 = 6/6; higher is worse), stage mean + N(0, 0.1), clipped to
    [-0.1, 1.3], 2 decimals. ``quality_index``: Topcon-style image quality 0–100 falling with the speckle noise
    level ``noise`` (0.01–0.05). Drawn from their own random stream, so the image and other truth do not change.
    """
    r = np.random.default_rng([int(seed), 23, 97, int(index)])
    va = float(np.clip(_VA_MEAN[stage] + r.normal(0, 0.1), -0.1, 1.3))
    q = float(np.clip(95 - 900 * (noise - 0.01) + r.normal(0, 3), 20, 100))
    return {"va_logmar": round(va, 2), "quality_index": int(round(q))}


class RetinaPhantomGenerator(PhantomGenerator):
    """Deterministic generator: ``gen.sample(index, patient)`` → :class:`Phantom` with ``target`` = stage.

    Args:
        image_size: output size S (square: S A-scans × S depth samples).
        seed: dataset seed.
        stage_probs: probabilities of the 5 stages (default uniform).
        with_masks: also return masks (retina, drusen, fluid, atrophy, ped).
        lesion_contrast, lesion_size, anatomy, noise, label_noise, label_noise_splits: calibration knobs, see
            :class:`~medvit.data.phantom_common.Difficulty` (defaults: the original phantoms). ``lesion_size``
            multiplies the drusen elevation (height above Bruch's membrane, capped at 200 µm) and the size of the
            hyperreflective foci, never the drusen basal width: the width defines the stage (Beckman
            classification: small < 63 µm, medium 63–125 µm, large > 125 µm), so stage and report stay true.
    Raises:
        ValueError: image_size not a whole number in [32, 4096], seed not a whole number >= 0, with_masks not a
            bool, stage_probs not 5 numbers, or a knob outside its range,
            naming the argument (:func:`~medvit.data.phantom_common.check_geometry`).
    """

    kind = "retina"
    label_names = RETINA_BIOMARKERS
    class_names = AMD_STAGES
    CHECKED = ("image_size", "seed", "with_masks", "stage_probs")

    def __init__(self, image_size: int = 256, seed: int = 0, stage_probs: tuple[float, ...] | None = None,
                 with_masks: bool = True, lesion_contrast: float = 1.0, lesion_size: float = 1.0,
                 anatomy: float = 1.0, noise: float = 1.0, label_noise: float = 0.0,
                 label_noise_splits: tuple[str, ...] | list[str] = SPLITS):
        self.probs, self.difficulty = self._checked(image_size, seed, with_masks, stage_probs, (
            lesion_contrast, lesion_size, anatomy, noise, label_noise, label_noise_splits))
        self.size, self.seed, self.with_masks = int(image_size), int(seed), with_masks
        s = self.size
        self.x = ((np.arange(s) + 0.5) / s).astype(np.float32)
        self.z = ((np.arange(s) + 0.5) / s).astype(np.float32)[:, None]
        brng = np.random.default_rng([self.seed, 23, 9, s])
        self.choroid = texture_bank(brng, s, 2, (0.02, 0.08))
        # speckle is drawn at >= 384 px and area-averaged down: a small phantom looks like a downsampled
        # large B-scan (speckle averages out) rather than full-strength per-pixel noise
        f = -(-384 // s)
        sp = brng.gamma(3.0, 1 / 3.0, size=(2, 2 * s * f, 2 * s * f)).astype(np.float32)
        self.speckle = sp.reshape(2, 2 * s, f, 2 * s, f).mean((2, 4))
        self.um_x, self.um_z = WIDTH_UM / s, DEPTH_UM / s

    @staticmethod
    def _checked(image_size: Any, seed: Any, with_masks: Any, stage_probs: Any, knobs: tuple[Any, ...],
                 name: Callable[[str], str] = str) -> tuple[np.ndarray, Difficulty]:
        """The constructor's refusals (``ValueError`` naming ``name(arg)`` and the value), nothing drawn: the
        stage probabilities as a (5,) array and the knobs. Also :meth:`check_args`."""
        check_geometry(image_size, what="retina phantoms", name=name)
        check_draw(seed, with_masks, name)
        try:  # numbers only ("0.2" was read as 0.2, True as 1)
            values = [finite_number(p) for p in stage_probs] if stage_probs is not None else [0.2] * 5
        except TypeError:  # not a sequence
            values = [None]
        probs = np.full(1, np.nan) if None in values else np.asarray(values, float)  # not numbers: refused below
        if probs.shape != (5,) or (probs < 0).any() or not math.isclose(probs.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(f"{name('stage_probs')} must be 5 non-negative numbers summing to 1, got {stage_probs}")
        return probs, Difficulty(*knobs)

    # -- biomarker plan --------------------------------------------------------------------------
    def _plan(self, ri: np.random.Generator) -> tuple[int, dict[str, Any]]:
        stage = int(ri.choice(5, p=self.probs))
        f: dict[str, Any] = {"drusen": [], "pigment": False, "atrophy": None, "srf": None, "irf": [], "ped": None}

        def drusen(k: int, lo: float, hi: float) -> None:
            for _ in range(k):
                w = ri.uniform(lo, hi)
                f["drusen"].append((ri.uniform(0.12, 0.88), w, w * ri.uniform(0.25, 0.4)))

        if stage == 0:
            if ri.random() < 0.4:
                drusen(int(ri.integers(1, 4)), 30, 60)
        elif stage == 1:
            drusen(int(ri.integers(2, 8)), 70, 120)
        elif stage == 2:
            if ri.random() < 0.7:
                drusen(int(ri.integers(1, 5)), 150, 350)
                drusen(int(ri.integers(0, 4)), 70, 120)
                f["pigment"] = bool(ri.random() < 0.3)
            else:
                drusen(int(ri.integers(1, 6)), 70, 120)
                f["pigment"] = True
        elif stage == 3:
            w = ri.uniform(300, 1500)
            f["atrophy"] = (ri.uniform(0.3, 0.7), w)
            drusen(int(ri.integers(0, 4)), 70, 300)
            f["pigment"] = bool(ri.random() < 0.4)
        else:
            kinds = ri.random(2) < (0.7, 0.5)
            if not kinds.any():
                kinds[int(ri.integers(2))] = True
            if kinds[0]:
                w = ri.uniform(400, 1600)
                f["srf"] = (ri.uniform(0.35, 0.65), w, ri.uniform(40, 150))
            if kinds[1]:
                for _ in range(int(ri.integers(1, 5))):
                    f["irf"].append((ri.uniform(0.3, 0.7), ri.uniform(60, 250), ri.uniform(30, 90)))
            if ri.random() < 0.4:
                w = ri.uniform(500, 1400)
                f["ped"] = (ri.uniform(0.35, 0.65), w, ri.uniform(80, 220))
            drusen(int(ri.integers(0, 3)), 70, 300)
        return stage, f

    # -- image -----------------------------------------------------------------------------------
    def sample(self, index: int, patient: int = 0, visit: int = 0, split: str | None = None) -> Phantom:
        """Generate B-scan ``index`` of ``patient``.

        ``split`` (the image's split, when known) decides whether ``label_noise`` applies
        (``label_noise_splits``); the image is the same either way."""
        rp, ri = patient_rng(self.seed, "retina", patient), image_rng(self.seed, "retina", index)
        s, x, z = self.size, self.x, self.z
        eye_right = bool(rp.random() < 0.5)
        dk = self.difficulty
        an, cst = dk.uniform, dk.lesion_contrast
        thick0, pit, pit_w = an(rp, 0.26, 0.31), an(rp, 0.45, 0.65), an(rp, 0.10, 0.15)
        outer0 = an(rp, 0.11, 0.14)
        stage, f = self._plan(ri)
        z0, tilt, curv = an(ri, 0.58, 0.70), an(ri, -0.08, 0.08), an(ri, 0.05, 0.35)
        xf = 0.5 + an(ri, -0.05, 0.05)
        z_bm = z0 + tilt * (x - 0.5) + curv * (x - 0.5) ** 2  # (S,) Bruch's membrane depth
        ux, uz = 1.0 / WIDTH_UM, 1.0 / DEPTH_UM

        def dome(cx: float, w_um: float, h_um: float) -> np.ndarray:
            return (h_um * uz) * np.sqrt(np.clip(1 - ((x - cx) / (w_um * ux / 2)) ** 2, 0, 1))

        elev = np.zeros(s, np.float32)
        ls = dk.lesion_size
        for cx, w, h in f["drusen"]:  # lesion_size lifts drusen (height only: the basal width defines the stage)
            elev = np.maximum(elev, dome(cx, w, h if ls == 1.0 else min(h * ls, max(h, _MAX_DRUSEN_UM))))
        ped = dome(*f["ped"]) if f["ped"] else np.zeros(s, np.float32)
        rpe_th = 0.022
        z_rpe = z_bm - np.maximum(elev, ped) - rpe_th  # RPE top
        srf = dome(*f["srf"]) if f["srf"] else np.zeros(s, np.float32)
        ga = np.zeros(s, np.float32)
        if f["atrophy"]:
            cx, w = f["atrophy"]
            ga = np.clip(1 - np.abs(x - cx) / (w * ux / 2), 0, 1)
            ga = np.clip(ga * 6, 0, 1)
        outer = outer0 * (1 - 0.6 * ga)
        total = thick0 * (1 - pit * np.exp(-(((x - xf) / pit_w) ** 2)))
        inner = np.maximum(total - outer0, 0.004)
        lift = np.maximum(elev, ped)  # photoreceptors compress over drusen / PED, inner retina follows less
        outer = np.maximum(outer - 0.5 * lift, 0.35 * outer0)
        z_out = z_rpe - srf - outer  # top of the outer retina
        inner = np.maximum(inner - 0.3 * lift, 0.004)
        z_ilm = z_out - inner
        # reflectivity map (S, S)
        zz = np.broadcast_to(z, (s, s))
        s_in = (zz - z_ilm) / inner
        s_out = (zz - z_out) / outer
        refl = np.full((s, s), 0.006, np.float32)
        m_in = (s_in >= 0) & (s_in < 1)
        refl[m_in] = np.interp(s_in[m_in], *_INNER)
        m_out = (s_out >= 0) & (s_out < 1)
        refl[m_out] = np.interp(s_out[m_out], *_OUTER)
        d_rpe = zz - z_rpe
        rpe_m = (d_rpe >= 0) & (d_rpe < rpe_th)
        rpe_refl = 1.0 - 0.8 * ga
        refl = np.where(rpe_m, rpe_refl[None, :], refl)
        sub = (d_rpe >= rpe_th) & (zz < z_bm)  # drusen / PED content
        ped_mask = sub & (ped[None, :] > elev[None, :]) & (ped[None, :] > 0)
        refl = np.where(sub, 0.42 if cst == 1.0 else float(np.clip(0.3 + 0.12 * cst, 0.0, 1.0)), refl)
        dark = 0.08 if cst == 1.0 else float(np.clip(0.08 / cst, 0.005, 0.3))
        refl = np.where(ped_mask, dark, refl)  # serous PED is dark
        d_bm = zz - z_bm
        tex = take_window(self.choroid, ri, s, s)
        chor = (0.42 + 0.09 * tex) * np.exp(-d_bm / 0.16) * (1 + 1.4 * ga[None, :])
        refl = np.where(d_bm >= 0.004, np.clip(chor, 0.02, 1), refl)
        refl = np.where((d_bm >= 0) & (d_bm < 0.004), 0.7, refl)
        srf_m = (srf[None, :] > 0) & (zz >= z_rpe - srf) & (zz < z_rpe)
        fluid = 0.03 if cst == 1.0 else float(np.clip(0.03 / cst, 0.002, 0.3))
        refl = np.where(srf_m, fluid, refl)
        irf_m = np.zeros((s, s), bool)
        for cx, w, h in f["irf"]:
            col = int(np.clip(cx * s, 0, s - 1))
            cz = z_ilm[col] + inner[col] * 0.6 + outer[col] * 0.2
            irf_m |= ((x[None, :] - cx) / (w * ux / 2)) ** 2 + ((zz - cz) / (h * uz / 2)) ** 2 < 1
        refl = np.where(irf_m, fluid, refl)
        if f["pigment"]:
            for _ in range(int(ri.integers(3, 9))):
                col = int(ri.integers(int(0.15 * s), int(0.85 * s)))
                zc = z_out[col] + outer[col] * ri.uniform(0.1, 0.5)
                r = max(1.0, 15 * uz * s)
                if ls == 1.0:
                    refl = np.where(((x[None, :] - x[col]) * s / 2) ** 2 + ((zz - zc) * s / r) ** 2 < 1, 0.95,
                                    refl)
                else:  # lesion_size scales each focus (width and depth)
                    refl = np.where(((x[None, :] - x[col]) * s / (2 * ls)) ** 2 + ((zz - zc) * s / (r * ls)) ** 2
                                    < 1, 0.95, refl)
        # shadows of retinal vessels, speckle, log display
        shade = np.ones(s, np.float32)
        for _ in range(int(ri.integers(1, 4))):
            c = ri.uniform(0.1, 0.9)
            shade *= 1 - 0.5 * np.exp(-(((x - c) / 0.008) ** 2))
        below = zz > (z_ilm + 0.25 * inner)
        refl = refl * np.where(below, shade[None, :], 1.0)
        speck = take_window(self.speckle, ri, s, s)
        if dk.noise != 1.0:
            speck = 1.0 + dk.noise * (speck - 1.0)
        gain = ri.uniform(0.8, 1.2)
        img = np.log1p(40 * gain * refl * speck) / math.log1p(40 * 1.3)
        noise = ri.uniform(0.01, 0.05) * math.sqrt(s / 512) * dk.noise
        img += ri.normal(0, 0.03) + noise * ri.standard_normal((s, s), dtype=np.float32)
        image = np.clip(img, 0, 1).astype(np.float32)
        if not eye_right:  # left eyes are mirrored (nasal side flips)
            image = image[:, ::-1].copy()
        labels, findings = self._describe(f)
        true_stage = stage
        # reported stage replaced by a neighbour with this probability; the image keeps the truth
        if dk.noisy_labels(split):
            lr = dk.label_rng(self.seed, "retina", index)
            if lr.random() < dk.label_noise:
                stage = min(4, stage + 1) if (stage == 0 or (stage < 4 and lr.random() < 0.5)) else stage - 1
        referral = 0 if stage <= 2 else (1 if stage == 3 else 2)
        masks: dict[str, np.ndarray] = {}
        if self.with_masks:
            masks = {"retina": (zz >= z_ilm) & (zz < z_rpe + rpe_th), "drusen": sub & ~ped_mask, "ped": ped_mask,
                     "srf": srf_m, "irf": irf_m, "atrophy": np.broadcast_to((ga > 0.5)[None, :], (s, s)).copy()}
            if not eye_right:
                masks = {k: v[:, ::-1].copy() for k, v in masks.items()}
        meta: dict[str, Any] = {}
        meta.update(patient_meta(self.seed, "retina", patient))
        meta.update(study_meta(self.seed, "retina", index, patient, visit))
        meta.update({"Modality": "OPT", "ImageLaterality": "R" if eye_right else "L",
                     "Eye": "OD" if eye_right else "OS", "PixelSpacing": [round(self.um_z / 1000, 6),
                                                                           round(self.um_x / 1000, 6)],
                     "Rows": s, "Columns": s, "stage": stage, "stage_name": AMD_STAGES[stage],
                     "referral": referral, "referral_name": REFERRALS[referral], "patient_index": int(patient),
                     "visit": int(visit), "index": int(index)})
        meta.update(_tabular(self.seed, index, true_stage, noise / math.sqrt(s / 512)))
        if stage != true_stage:
            meta["true_stage"] = true_stage
        from medvit.data.phantom_reports import retina_report

        report = retina_report(findings, AMD_STAGES[stage], referral, np.random.default_rng([self.seed, index, 98]))
        return Phantom(image=image, labels=labels, label_names=RETINA_BIOMARKERS, masks=masks,
                       findings=[findings], meta=meta, report=report, target=stage)

    @staticmethod
    def _describe(f: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        widths = [w for _, w, _ in f["drusen"]]
        big = max(widths) if widths else 0.0
        out: dict[str, Any] = {"drusen_count": len(widths)}
        if widths:
            out["drusen_max_size"] = "small" if big < 63 else ("medium" if big <= 125 else "large")
            out["drusen_max_um"] = round(big)
        out["pigment"] = bool(f["pigment"])
        out["atrophy_um"] = round(f["atrophy"][1]) if f["atrophy"] else 0
        out["srf"], out["irf"], out["ped"] = f["srf"] is not None, bool(f["irf"]), f["ped"] is not None
        labels = np.array([bool(widths), big > 125, out["pigment"], bool(out["atrophy_um"]), out["srf"],
                           out["irf"], out["ped"]], np.uint8)
        return labels, out
