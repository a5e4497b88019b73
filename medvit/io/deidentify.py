"""De-identification of what medvit writes: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

Scope: the data sets medvit derives outputs from (the source headers copied into SR / Secondary Capture
objects) and the identifying columns of its tables. It does not rewrite the input files, and, as PS3.15
itself says, a profile alone does not guarantee de-identification (burned-in text is not cleaned: images
flagged ``BurnedInAnnotation=YES`` are reported in the notes).

Actions (Table E.1-1 codes): **X** remove, **Z** empty, **D** dummy value, **U** consistent new UID. UIDs are
replaced by ``2.25.<128-bit keyed hash>`` (HMAC-SHA256 with a per-run key), so the same source UID maps to
the same new UID throughout a run and across a resumed run that reuses the key; well-known DICOM UIDs
(SOP classes, transfer syntaxes, coding schemes: the ``1.2.840.10008.`` root) are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

logger = logging.getLogger(__name__)

#: CID 7050 code of the Basic Application Confidentiality Profile
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
METHOD_TEXT = "PS3.15 E.1 Basic Profile (medvit)"  # LO: at most 64 characters

#: keyword -> action for the Basic Profile attributes that occur in projection-radiography / general headers
BASIC_PROFILE: dict[str, str] = {
    # patient identity and demographics
    "PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z", "PatientBirthTime": "X", "PatientSex": "Z",
    "PatientAge": "X", "PatientSize": "X", "PatientWeight": "X", "PatientAddress": "X", "OtherPatientIDs": "X",
    "OtherPatientNames": "X", "OtherPatientIDsSequence": "X", "PatientMotherBirthName": "X",
    "PatientTelephoneNumbers": "X", "EthnicGroup": "X", "Occupation": "X", "AdditionalPatientHistory": "X",
    "PatientComments": "X", "MedicalRecordLocator": "X", "PatientBirthName": "X", "MilitaryRank": "X",
    "BranchOfService": "X", "PregnancyStatus": "X", "ResponsiblePerson": "X", "ResponsibleOrganization": "X",
    "PatientInsurancePlanCodeSequence": "X", "IssuerOfPatientID": "X", "PatientReligiousPreference": "X",
    # dates and times
    "StudyDate": "Z", "SeriesDate": "X", "AcquisitionDate": "X", "ContentDate": "Z", "StudyTime": "Z",
    "SeriesTime": "X", "AcquisitionTime": "X", "ContentTime": "Z", "AcquisitionDateTime": "X",
    "InstanceCreationDate": "X", "InstanceCreationTime": "X", "OverlayDate": "X", "OverlayTime": "X",
    "CurveDate": "X", "CurveTime": "X", "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X", "PerformedProcedureStepEndDate": "X",
    # study / visit identifiers and free text
    "AccessionNumber": "Z", "StudyID": "Z", "StudyDescription": "X", "SeriesDescription": "X",
    "AdmittingDiagnosesDescription": "X", "ImageComments": "X", "RequestAttributesSequence": "X",
    "PerformedProcedureStepID": "X", "PerformedProcedureStepDescription": "X", "AdmissionID": "X",
    "ReferencedPatientSequence": "X", "ReferencedStudySequence": "X", "ProtocolName": "X",
    "DerivationDescription": "X", "ContentSequence": "X", "IconImageSequence": "X",
    # responsible parties, personnel, organisations, devices
    "ReferringPhysicianName": "Z", "ReferringPhysicianAddress": "X", "ReferringPhysicianTelephoneNumbers": "X",
    "PerformingPhysicianName": "X", "NameOfPhysiciansReadingStudy": "X", "OperatorsName": "X",
    "PhysiciansOfRecord": "X", "RequestingPhysician": "X", "ScheduledPerformingPhysicianName": "X",
    "InstitutionName": "X", "InstitutionAddress": "X", "InstitutionalDepartmentName": "X",
    "StationName": "X", "DeviceSerialNumber": "X", "PlateID": "X", "DetectorID": "X", "CassetteID": "X",
    "GantryID": "X", "Manufacturer": "K", "ManufacturerModelName": "K",
    # UIDs (consistent replacement)
    "StudyInstanceUID": "U", "SeriesInstanceUID": "U", "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
    "MediaStorageSOPInstanceUID": "U", "ReferencedSOPInstanceUID": "U", "InstanceCreatorUID": "U",
    "IrradiationEventUID": "U", "SynchronizationFrameOfReferenceUID": "U", "StorageMediaFileSetUID": "U",
    "DeviceUID": "U",
}


class Deidentifier:
    """Applies the Basic Profile with a keyed, consistent UID and ID mapping.

    ``key``: secret bytes for the keyed hash (random when omitted; keep it to map consistently across runs).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)

    def _digest(self, value: str) -> bytes:
        return hmac.new(self.key, value.encode(), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """Consistent replacement UID ``2.25.<int>`` (≤ 64 chars); DICOM-registered UIDs are kept."""
        uid = str(uid)
        if not uid or uid.startswith("1.2.840.10008."):
            return uid
        return "2.25." + str(int.from_bytes(self._digest("uid:" + uid)[:16], "big"))

    def pseudonym(self, value: str, prefix: str = "ANON") -> str:
        """Consistent pseudonym for an identifier (e.g. PatientID), ``""`` stays ``""``."""
        return f"{prefix}-{self._digest('id:' + str(value)).hex()[:12].upper()}" if value else ""

    def record(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Basic Profile on a medvit table record: UIDs replaced, patient id pseudonymised, dates emptied."""
        out = dict(rec)
        for k in ("study_instance_uid", "series_instance_uid", "sop_instance_uid"):
            if out.get(k):
                out[k] = self.uid(out[k])
        if out.get("patient_id"):
            out["patient_id"] = self.pseudonym(out["patient_id"])
        for k in ("accession_number", "study_date"):
            if k in out:
                out[k] = ""
        out["deidentified"] = True
        return out

    def dataset(self, ds: Any) -> Any:
        """A de-identified deep copy of a pydicom Dataset (header only is typical; pixels untouched).

        Removes private tags, overlays (60xx), curves (50xx); applies :data:`BASIC_PROFILE` at every level
        of nesting; sets PatientIdentityRemoved=YES, DeidentificationMethod(+CodeSequence) and
        LongitudinalTemporalInformationModified=REMOVED. Patient ID becomes a consistent pseudonym (a
        D action) so objects of one patient stay together.
        """
        import copy

        from pydicom.dataset import Dataset

        out = copy.deepcopy(ds)
        pid = str(getattr(ds, "PatientID", "") or "")
        out.remove_private_tags()
        for tag in [t for t in out.keys() if (t.group & 0xFF00) in (0x6000, 0x5000)]:
            del out[tag]
        self._apply(out)
        if pid:
            out.PatientID = self.pseudonym(pid)
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = METHOD_TEXT
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
        out.DeidentificationMethodCodeSequence = [code]
        out.LongitudinalTemporalInformationModified = "REMOVED"
        if hasattr(out, "file_meta") and "MediaStorageSOPInstanceUID" in out.file_meta:
            out.file_meta.MediaStorageSOPInstanceUID = self.uid(out.file_meta.MediaStorageSOPInstanceUID)
        return out

    def _apply(self, ds: Any) -> None:
        for elem in list(ds):
            kw = elem.keyword
            action = BASIC_PROFILE.get(kw)
            if elem.VR == "SQ" and action != "X":
                for item in elem.value:
                    self._apply(item)
                continue
            if action == "X":
                del ds[elem.tag]
            elif action == "Z":
                elem.value = ""
            elif action == "U" or (elem.VR == "UI" and action is None and kw not in _KEEP_UIDS):
                if elem.VM > 1:
                    elem.value = [self.uid(v) for v in elem.value]
                elif elem.value:
                    elem.value = self.uid(elem.value)


#: UI attributes that hold well-known class/syntax UIDs, never instance identifiers
_KEEP_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID", "MediaStorageSOPClassUID",
              "ImplementationClassUID", "CodingSchemeUID", "RelatedGeneralSOPClassUID",
              "OriginalSpecializedSOPClassUID", "ContextGroupExtensionCreatorUID", "MappingResourceUID"}
