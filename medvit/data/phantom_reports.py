"""Template reports (findings + impression) for the phantoms, consistent with their labels.

Phrasing varies with a random generator so report-writing models cannot key on one sentence, but every
sentence is derived from the structured findings: a label is mentioned positively iff it is present.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cxr_sentence(f: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    """(findings sentence, impression phrase) for one structured chest finding."""
    lab = f["label"]
    side, zone = f.get("side", ""), f.get("zone", "")
    if lab == "Cardiomegaly":
        return (f"The cardiac silhouette is enlarged (cardiothoracic ratio approximately {f['ctr']:.2f}).",
                "Cardiomegaly.")
    if lab == "Effusion":
        amt = f["amount"]
        blunt = " with blunting of the costophrenic angle" if amt == "small" else " with a meniscus"
        return (f"There is a {amt} {side} pleural effusion{blunt}.", f"{amt.capitalize()} {side} pleural effusion.")
    if lab == "Nodule":
        return (f"A {f['size_mm']} mm {_pick(rng, ['rounded', 'well-defined', 'soft-tissue'])} nodule projects over "
                f"the {side} {zone} zone.", f"{side.capitalize()} {zone} zone pulmonary nodule ({f['size_mm']} mm); "
                "CT recommended.")
    if lab == "Mass":
        return (f"A lobulated {f['size_mm']} mm mass is seen in the {side} {zone} zone.",
                f"{side.capitalize()} {zone} zone mass ({f['size_mm']} mm); further evaluation with CT advised.")
    if lab == "Pneumothorax":
        return (f"A {f['size']} {side} pneumothorax is present with a visible visceral pleural line and absent lung "
                "markings peripherally.", f"{f['size'].capitalize()} {side} pneumothorax.")
    if lab == "Consolidation":
        return (f"Patchy air-space consolidation with air bronchograms in the {side} {zone} zone.",
                f"{side.capitalize()} {zone} zone consolidation; infection is a consideration.")
    if lab == "Atelectasis":
        return (f"Plate-like opacity in the {side} lower zone with elevation of the {side} hemidiaphragm, "
                "in keeping with atelectasis.", f"{side.capitalize()} basal atelectasis.")
    raise ValueError(f"no report template for chest finding {lab!r}")


def cxr_report(findings: list[dict[str, Any]], meta: dict[str, Any], rng: np.random.Generator) -> str:
    """Report text for a chest phantom: ``FINDINGS: ... IMPRESSION: ...``."""
    view = meta.get("ViewPosition", "PA")
    lines = [f"{_pick(rng, ['Single frontal', 'Frontal'])} {view} chest radiograph."]
    labels = {f["label"] for f in findings}
    sentences = [_cxr_sentence(f, rng) for f in findings]
    lines += [s for s, _ in sentences]
    if "Cardiomegaly" not in labels:
        lines.append(_pick(rng, ["Heart size is within normal limits.", "The cardiac silhouette is not enlarged."]))
    if "Effusion" not in labels:
        lines.append(_pick(rng, ["No pleural effusion.", "Costophrenic angles are sharp."]))
    if "Pneumothorax" not in labels:
        lines.append("No pneumothorax.")
    if not labels & {"Nodule", "Mass", "Consolidation", "Atelectasis"}:
        lines.append(_pick(rng, ["The lungs are clear.", "No focal air-space opacity."]))
    imp = " ".join(i for _, i in sentences) if sentences else _pick(
        rng, ["No acute cardiopulmonary abnormality.", "Normal chest radiograph."])
    return "FINDINGS: " + " ".join(lines) + "\nIMPRESSION: " + imp


_DRUSEN_SIZE = {"small": "small (<63 µm)", "medium": "medium (63–125 µm)", "large": "large (>125 µm)"}
_REFERRAL_TEXT = {
    0: "No referral needed; routine monitoring.",
    1: "Refer for general attention by a retinal specialist (routine).",
    2: "Urgent referral for anti-VEGF assessment.",
}


def retina_report(findings: dict[str, Any], stage_name: str, referral: int, rng: np.random.Generator) -> str:
    """Specialist-style OCT report: biomarkers → stage (with why) → referral."""
    lines = [_pick(rng, ["Foveal OCT B-scan.", "Single foveal B-scan."])]
    nd, size = findings.get("drusen_count", 0), findings.get("drusen_max_size", "")
    if nd:
        head = f"{nd} drusen beneath the RPE, the largest" if nd > 1 else "A single druse beneath the RPE,"
        lines.append(f"{head} {_DRUSEN_SIZE[size]}"
                     + (f" ({findings['drusen_max_um']} µm)." if "drusen_max_um" in findings else "."))
    else:
        lines.append(_pick(rng, ["No drusen.", "RPE contour is smooth without drusen."]))
    if findings.get("pigment"):
        lines.append("Hyperreflective foci and RPE irregularity indicate pigmentary abnormalities.")
    if findings.get("atrophy_um"):
        lines.append(f"RPE loss over about {findings['atrophy_um']} µm with choroidal hypertransmission and outer "
                     "retinal thinning (complete RPE and outer retinal atrophy).")
    fluid = [n for n, k in (("subretinal", "srf"), ("intraretinal", "irf")) if findings.get(k)]
    if fluid:
        lines.append(f"{' and '.join(fluid).capitalize()} fluid is present.")
        if findings.get("ped"):
            lines.append("There is a serous pigment epithelial detachment.")
    else:
        lines.append(_pick(rng, ["No intraretinal or subretinal fluid.", "Dry macula without fluid."]))
    why = {
        "healthy": "no AMD-defining biomarkers",
        "early": "medium drusen without pigmentary abnormalities",
        "intermediate": "large drusen and/or pigmentary abnormalities without atrophy or fluid",
        "late dry": "geographic atrophy without exudation",
        "late wet": "exudative fluid indicating neovascular activity",
    }[stage_name]
    return ("FINDINGS: " + " ".join(lines) + f"\nIMPRESSION: {stage_name.capitalize()} AMD stage ({why}). "
            + _REFERRAL_TEXT[referral]).replace("Healthy AMD stage", "Healthy retina, no AMD")
