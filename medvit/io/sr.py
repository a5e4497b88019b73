"""DICOM Comprehensive 3D SR (TID 1500 Measurement Report) holding a classifier's findings, via highdicom.

One SR per study: same Study Instance UID as its sources (it lands in the patient's study on a PACS), new
Series and SOP Instance UIDs, evidence and per-group references to every source instance. For every image
and every label of the model there is one measurement group (TID 1501):

* tracking identifier ``"<label> / <SOP Instance UID>"`` (+ a UID),
* finding type = the label's code (SNOMED CT where pydicom's dictionary knows the term, else a private
  ``99MEDVIT`` code whose meaning is the label),
* measurement "Certainty of Finding" (DCM 111012) = probability in percent (UCUM ``%``),
* qualitative evaluation: the finding code → Present / Absent (SCT) at the model's operating threshold,
* algorithm identification (name, version, parameters: weights SHA-256, threshold, research-only note),
* the source image reference.

The observer is the device (model name, medvit, architecture); the series description and the algorithm
parameters carry the research-only note. :func:`read_findings` reads a written SR back to plain dicts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvit.io.uids import make_uid

logger = logging.getLogger(__name__)

PRIVATE_SCHEME = "99MEDVIT"
CERTAINTY = ("111012", "DCM", "Certainty of Finding")
PERCENT = ("%", "UCUM", "Percent")
#: private codes of the out-of-distribution result (one measurement group per image when the model has a reference)
OOD_FINDING = ("ood", "99MEDVIT", "Input outside the model's training distribution")
OOD_SCORE = ("ood_score", "99MEDVIT", "Out-of-distribution score (scaled Mahalanobis distance)")
NO_UNITS = ("1", "UCUM", "no units")


@dataclass
class Finding:
    """One label's result on one image."""

    label: str  # model label name
    probability: float  # in [0, 1]
    threshold: float  # operating threshold for the label
    positive: bool  # probability >= threshold


@dataclass
class ImageFindings:
    """All findings of one source image; ``source`` is its header (pydicom Dataset, pixel data not needed)."""

    source: Any
    findings: list[Finding] = field(default_factory=list)
    ood: tuple[float, float, bool] | None = None  # (OOD score, threshold, flagged) when the model has a reference


@dataclass
class AlgorithmInfo:
    """Identifies the model in the SR (device observer and algorithm identification)."""

    name: str  # model name (weight tag / checkpoint folder)
    version: str  # model version
    sha256: str  # weights checksum
    architecture: str = ""  # backbone name
    manufacturer: str = "medvit"
    research_only: bool = True
    software_version: str = ""  # medvit version


def fit_long_string(text: str, short: str, note: str) -> str:
    """``text (note)`` within LO's 64 characters (PS3.5 6.2): falls back to ``short (note)``, then truncates."""
    for head in (text, short):
        full = f"{head} ({note})" if note else head
        if len(full) <= 64:
            return full
    return full[:64]


def finding_code(label: str) -> Any:
    """SNOMED CT code for ``label`` when pydicom's dictionary has the term (CamelCase), else a private code."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    camel = "".join(w[:1].upper() + w[1:] for w in re.split(r"[^0-9A-Za-z]+", label) if w)
    try:
        return getattr(codes.SCT, camel)
    except AttributeError:
        slug = re.sub(r"[^0-9A-Za-z_.-]+", "_", label)[:16] or "finding"
        return Code(slug, PRIVATE_SCHEME, label[:64])


#: Type 2 attributes of the Patient and General Study modules that highdicom copies from the first source
#: (PS3.3 C.7.1.1, C.7.2.1); a source without them gets them empty in the SR's copy
SR_TYPE2_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "StudyID", "AccessionNumber", "ReferringPhysicianName")
_VALIDATED_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI"}


def sr_source(ds: Any) -> Any:
    """A copy of a source header fit to be the SR's patient/study source and evidence.

    Per PS3.5 6.2 every top-level value of a checked VR (DA, TM, DT, AS, CS, DS, IS, UI, ...) that is not valid
    becomes empty (a Type 2 attribute may be empty; the SR must not carry a malformed date), missing Type 2
    attributes of :data:`SR_TYPE2_SOURCE` are added empty, and Patient's Sex outside its enumerated values
    ``M``/``F``/``O`` (PS3.3 C.7.1.1) becomes empty. Values never appear in logs: pydicom's validation
    warnings are suppressed while checking.
    """
    import copy
    import warnings

    from pydicom import config
    from pydicom.valuerep import DA, DT, TM, validate_value

    src = copy.deepcopy(ds)
    plog = logging.getLogger("pydicom")
    was_disabled, plog.disabled = plog.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for tag in list(src.keys()):
                try:
                    elem = src[tag]
                except Exception:  # a value pydicom cannot even convert: drop it
                    del src[tag]
                    continue
                if elem.VR not in _VALIDATED_VRS or elem.value in (None, ""):
                    continue
                values = elem.value if isinstance(elem.value, list | tuple) or hasattr(elem.value, "_list") \
                    else [elem.value]
                try:
                    for v in values:
                        validate_value(elem.VR, v, config.RAISE)
                        if elem.VR in ("DA", "TM", "DT") and isinstance(v, str):
                            {"DA": DA, "TM": TM, "DT": DT}[elem.VR](v)  # range checks (month 13, hour 25)
                except Exception:
                    elem.value = None
            for kw in SR_TYPE2_SOURCE:
                if kw not in src:
                    setattr(src, kw, None)
            if str(src.PatientSex or "") not in ("M", "F", "O", ""):
                src.PatientSex = None
    finally:
        plog.disabled = was_disabled
    return src


def build_findings_sr(images: list[ImageFindings], algorithm: AlgorithmInfo, series_number: int = 7701,
                      deidentified: bool = False, deidentifier: Any = None) -> Any:
    """A ``highdicom.sr.Comprehensive3DSR`` for one study (all ``images`` must share a Study Instance UID).

    UIDs are derived deterministically from the sources and the weights checksum, so re-running the same
    model on the same images gives the same SR identity. ``deidentifier``
    (:class:`medvit.io.deidentify.Deidentifier`): applied to the finished SR (PS3.15 basic profile; the
    content tree medvit wrote is kept and cleaned item by item).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code


    if not images:
        raise ValueError("build_findings_sr: no images given")
    images = [ImageFindings(sr_source(im.source), im.findings, im.ood) for im in images]
    if any(not str(getattr(im.source, "StudyInstanceUID", "") or "") for im in images):
        raise ValueError("the source images have no Study Instance UID; an SR belongs to one study "
                         "(PS3.3 C.7.2.1), so none is written for them")
    studies = {str(im.source.StudyInstanceUID) for im in images}
    if len(studies) != 1:
        raise ValueError(f"build_findings_sr: images come from {len(studies)} studies; write one SR per study")
    note = "research use only - not for diagnosis" if algorithm.research_only else ""
    sops = sorted(str(im.source.SOPInstanceUID) for im in images)
    device_uid = make_uid("medvit-device", algorithm.sha256)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name=algorithm.name[:64], manufacturer_name=algorithm.manufacturer,
            model_name=(algorithm.architecture or algorithm.name)[:64]),
    )
    params = [f"weights sha256 {algorithm.sha256[:56]}"] + ([note] if note else [])
    measure_name = Code(*CERTAINTY)
    unit = Code(*PERCENT)
    groups = []
    for im in images:
        ds = im.source
        src = hd.sr.SourceImageForMeasurementGroup(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        for f in im.findings:
            code = finding_code(f.label)
            algo = hd.sr.AlgorithmIdentification(name=algorithm.name[:64], version=algorithm.version[:64] or "0",
                                                 parameters=[*params, f"threshold {f.threshold:.4f}"])
            tracking = hd.sr.TrackingIdentifier(
                uid=make_uid("medvit-track", ds.SOPInstanceUID, f.label, algorithm.sha256),
                identifier=f"{f.label} / {ds.SOPInstanceUID}"[:64])
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, finding_type=code, algorithm_id=algo,
                measurements=[hd.sr.Measurement(name=measure_name, value=round(100.0 * f.probability, 4),
                                                unit=unit, algorithm_id=algo)],
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                    name=code, value=codes.SCT.Present if f.positive else codes.SCT.Absent)],
                source_images=[src]))
        if im.ood is not None:
            score, thr, flagged = im.ood
            ood_code = Code(*OOD_FINDING)
            algo = hd.sr.AlgorithmIdentification(name=algorithm.name[:64], version=algorithm.version[:64] or "0",
                                                 parameters=[*params, f"ood threshold {thr:.4f}"])
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=make_uid("medvit-track", ds.SOPInstanceUID, "ood", algorithm.sha256),
                    identifier=f"ood / {ds.SOPInstanceUID}"[:64]),
                finding_type=ood_code, algorithm_id=algo,
                measurements=[hd.sr.Measurement(name=Code(*OOD_SCORE), value=round(float(score), 4),
                                                unit=Code(*NO_UNITS), algorithm_id=algo)],
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                    name=ood_code, value=codes.SCT.Present if flagged else codes.SCT.Absent)],
                source_images=[src]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[im.source for im in images], content=report,
        series_instance_uid=make_uid("medvit-sr-series", algorithm.sha256, *studies),
        series_number=series_number,
        sop_instance_uid=make_uid("medvit-sr", algorithm.sha256, *sops),
        instance_number=1, manufacturer=algorithm.manufacturer, is_complete=True,
        series_description=fit_long_string(f"medvit {algorithm.name} findings", "medvit findings", note),
        software_versions=algorithm.software_version or None,
        manufacturer_model_name=algorithm.name[:64],
    )
    if any(finding_code(f.label).scheme_designator == PRIVATE_SCHEME for im in images for f in im.findings) or \
            any(im.ood is not None for im in images):
        from pydicom.dataset import Dataset

        scheme = Dataset()  # declare the private coding scheme of labels without a SNOMED CT code
        scheme.CodingSchemeDesignator = PRIVATE_SCHEME
        scheme.CodingSchemeName = "medvit model label names"
        scheme.CodingSchemeResponsibleOrganization = "medvit"
        sr.CodingSchemeIdentificationSequence = [scheme]
    if deidentifier is not None:
        return deidentifier.finish(sr, authored=SR_AUTHORED)
    if deidentified:
        _mark_deidentified(sr)
    return sr


#: elements of the SR that medvit writes itself (kept by the de-identifier; the content tree is cleaned)
SR_AUTHORED = ("ContentSequence", "SeriesDescription", "SoftwareVersions", "ManufacturerModelName",
               "CodingSchemeIdentificationSequence")


def _mark_deidentified(ds: Any) -> None:
    from pydicom.dataset import Dataset

    from medvit.io.deidentify import BASIC_PROFILE_CODE, METHOD_TEXT

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD_TEXT
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = [code]


def write_findings_sr(path: str | Path, images: list[ImageFindings], algorithm: AlgorithmInfo,
                      deidentified: bool = False, root: str | Path | None = None,
                      deidentifier: Any = None) -> Path:
    """Build the SR (see :func:`build_findings_sr`) and write it atomically to ``path``; returns ``path``.

    ``root``: when given, ``path`` must stay inside it (:class:`medvit.io.safe_write.UnsafePathError`).
    """
    from medvit.io.safe_write import make_dirs, save_dataset

    sr = build_findings_sr(images, algorithm, deidentified=deidentified, deidentifier=deidentifier)
    p = Path(path)
    if root is not None:
        make_dirs(root, p.parent)  # owner-only folders inside OUTPUT (SECURITY.md §7)
    else:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return save_dataset(p, sr, root)


def read_findings(path: str | Path) -> list[dict[str, Any]]:
    """Findings of an SR written by :func:`write_findings_sr`: one dict per measurement group with
    ``label`` (code meaning), ``code`` (value, scheme), ``probability``, ``present``, ``sop_instance_uid``."""
    import pydicom

    sr = pydicom.dcmread(path)
    out = []
    for item in sr.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue != "126010":  # Imaging Measurements
            continue
        for grp in item.ContentSequence:
            out.append(_read_group(grp))
    return out


def _read_group(grp: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for it in grp.ContentSequence:
        name = it.ConceptNameCodeSequence[0]
        if it.ValueType == "CODE" and name.CodeValue == "121071":  # Finding
            c = it.ConceptCodeSequence[0]
            res["label"], res["code"] = c.CodeMeaning, (c.CodeValue, c.CodingSchemeDesignator)
        elif it.ValueType == "NUM" and name.CodeValue == OOD_SCORE[0]:
            res["ood_score"] = float(it.MeasuredValueSequence[0].NumericValue)
        elif it.ValueType == "NUM" and name.CodeValue == CERTAINTY[0]:
            res["probability"] = float(it.MeasuredValueSequence[0].NumericValue) / 100.0
        elif it.ValueType == "CODE" and "code" in res and name.CodeValue == res["code"][0]:
            res["present"] = it.ConceptCodeSequence[0].CodeMeaning == "Present"
        elif it.ValueType == "IMAGE":
            res["sop_instance_uid"] = str(it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return res
