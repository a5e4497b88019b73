"""De-identification of what medvit writes: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

**The table.** The attributes and actions of PS3.15 Table E.1-1 are not retyped here: they come from the
maintained ``dicom-anonymizer`` package (KitwareMedical, BSD-3-Clause), whose
``dicom_anonymization_databases/dicomfields_2026c.py`` is generated from the standard's 2026c edition
(:data:`TABLE_SOURCE`). medvit uses that table as data and applies its own actions, because it needs keyed,
consistent UIDs and pseudonyms, an option to retain dates, and default-deny for identifying groups.

**Actions** (Table E.1-1 codes). **X** remove; **Z** empty; **D** a dummy value of the element's VR;
**U** a consistent new UID; combined codes (``X/Z``, ``X/D``, ``X/Z/D``, ``Z/D``, ``X/Z/U*``) take the
strongest action the object's IOD allows: medvit removes (X) where the combination allows it, empties (Z)
for ``Z/D`` (``Patient ID`` is replaced by a keyed pseudonym, a D action, so one patient's objects stay
together; ``Content Date/Time`` get dummy values, being Type 1 in SR), and for ``X/Z/U*`` keeps the
sequence with its UIDs replaced. Beyond the table:

* **default deny** for the patient (0010), clinical-trial (0012), study (0032), visit (0038) and results
  (4008) groups: anything left there after the table that is not in :data:`PATIENT_KEEP` is removed;
* private elements, curves (50xx) and overlay groups (60xx) are removed;
* every other UI element that is not a well-known class/syntax UID is replaced consistently;
* dates and times (DA/DT/TM) are handled per the table unless ``keep_dates`` (the Retain Longitudinal
  Temporal Information with Full Dates Option, CID 7050 code 113106), which keeps them and records the
  option in Deidentification Method Code Sequence and Longitudinal Temporal Information Modified.

**Finished objects.** :meth:`Deidentifier.finish` is applied to the SR and Secondary Capture datasets after
they are built, so nothing copied by highdicom or added later escapes the profile. Elements medvit wrote
itself (Series Description, Image Comments with the research-use note; the SR content tree of model
findings) are named by the caller and kept; the content tree is still cleaned item by item (UIDs replaced,
person names and dates per the table), the Clean Structured Content Option (113104).

UIDs are replaced by UIDs made (:func:`medvit.io.uids.make_uid`) from their HMAC-SHA256 under a secret key; the
key is never stored beside the data
(see :func:`load_or_create_key`). As PS3.15 itself says, a profile alone does not guarantee
de-identification: burned-in text in pixels is not cleaned.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from medvit.io.safe_write import resolved_inside
from medvit.io.uids import make_uid

logger = logging.getLogger(__name__)

TABLE_VERSION = "dicomfields_2026c"
TABLE_SOURCE = ("DICOM PS3.15 2026c Table E.1-1, as data from dicom-anonymizer 2.1.0 "
                "(dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py)")

#: CID 7050 codes
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
CLEAN_STRUCTURED_CONTENT_CODE = ("113104", "DCM", "Clean Structured Content Option")
RETAIN_DATES_CODE = ("113106", "DCM", "Retain Longitudinal Temporal Information Full Dates Option")
METHOD_TEXT = "PS3.15 E.1 Basic Profile (medvit)"  # LO: at most 64 characters

#: groups whose remaining elements are removed unless listed in PATIENT_KEEP (default deny)
DENY_GROUPS = frozenset({0x0010, 0x0012, 0x0032, 0x0038, 0x4008})
#: Type 1/2 elements of the Patient module the profile empties or replaces but does not remove
PATIENT_KEEP = frozenset({"PatientName", "PatientID", "PatientBirthDate", "PatientSex"})
#: UI attributes that hold well-known class/syntax UIDs, never instance identifiers
KEEP_UIDS = frozenset({"SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID", "MediaStorageSOPClassUID",
                       "ImplementationClassUID", "CodingSchemeUID", "RelatedGeneralSOPClassUID",
                       "OriginalSpecializedSOPClassUID", "ContextGroupExtensionCreatorUID",
                       "MappingResourceUID", "ReferencedTransferSyntaxUIDInFile"})
_CATEGORIES = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
               "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}
_DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "PN": "ANONYMOUS", "AS": "000Y",
          "UI": None, "CS": "ANONYMOUS", "AE": "ANONYMOUS", "SH": "ANONYMOUS", "LO": "ANONYMOUS",
          "ST": "ANONYMOUS", "LT": "ANONYMOUS", "UT": "ANONYMOUS", "UC": "ANONYMOUS", "UR": "",
          "DS": "0", "IS": "0"}
_TEMPORAL = ("DA", "DT", "TM")


@lru_cache(maxsize=1)
def profile_table() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """(tag → action, masked rules) of Table E.1-1; masked rules are (group, element, group mask, element
    mask, action), e.g. every 50xx element."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    db = dicom_anonymization_database_selector(TABLE_VERSION)
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for cat, code in _CATEGORIES.items():
        for t in db[cat]:
            if len(t) == 2:
                exact[(t[0] << 16) | t[1]] = code
            else:
                masked.append((t[0], t[1], t[2], t[3], code))
    return exact, tuple(masked)


def profile_action(tag: int) -> str | None:
    """The Table E.1-1 action for ``tag`` (``"X"``, ``"Z"``, ``"D"``, ``"U"``, ``"X/Z"``, ...) or None."""
    exact, masked = profile_table()
    a = exact.get(int(tag))
    if a is not None:
        return a
    g, e = int(tag) >> 16, int(tag) & 0xFFFF
    for mg, me, gm, em, code in masked:
        if (g & gm) == mg and (e & em) == me:
            return code
    return None


def is_identifying(tag: int, keyword: str = "") -> bool:
    """True when the profile removes, empties or replaces the element (or default-deny / private / 50xx-60xx
    removes it): the rule the viewer uses to hide values until the user reveals them."""
    g = int(tag) >> 16
    if g % 2 == 1 or (g & 0xFF00) in (0x5000, 0x6000):
        return True
    if g in DENY_GROUPS and keyword not in ("PatientIdentityRemoved", "DeidentificationMethod",
                                              "DeidentificationMethodCodeSequence"):
        return True
    return profile_action(tag) not in (None, "U", "X/Z/U*")  # reference sequences: their items are judged


@lru_cache(maxsize=1)
def basic_profile() -> dict[str, str]:
    """Keyword → Table E.1-1 action, for the elements pydicom's dictionary names."""
    from pydicom.datadict import keyword_for_tag

    exact, _ = profile_table()
    return {kw: a for t, a in exact.items() if (kw := keyword_for_tag(t))}


def load_or_create_key(key_file: str | Path, forbidden: Iterable[str | Path] = (),
                       what: str = "de-identification key") -> bytes:
    """The pseudonymisation key in ``key_file`` (hex), created (0600, folder 0700) when absent.

    ``what`` names the key in messages (the runner adds where it came from, e.g. ``--deid-key``).

    Raises ``ValueError`` naming ``what`` and the file when ``key_file`` lies inside one of ``forbidden`` (OUTPUT,
    INPUT): whoever holds the key and the outputs can re-identify patients by trying candidate identifiers; when it
    or a forbidden folder cannot be resolved (a symbolic-link loop, a NUL byte: the message says which); when
    something that is not a regular file is there (a directory, FIFO, device, loop, dangling link:
    :func:`medvit.io.errors.file_problem`); when it is absent and cannot be created (a part of its path is a file,
    not a folder — named —, no permission); or when the file is not hex text of at least 16 bytes.
    """
    from medvit.io.errors import file_problem, printable_path

    p = Path(key_file).expanduser()
    name = f"{what} {printable_path(p)}"
    for f in forbidden:
        if resolved_inside(f, p, shown=name)[1]:
            raise ValueError(f"{name} lies inside {printable_path(f)}: keep keys outside the data (anyone "
                             "given the folder could re-identify patients). Name a key file elsewhere with "
                             "--deid-key or set MEDVIT_DEID_KEY_DIR.")
    why = file_problem(p)
    if why is None:
        text = p.read_text().strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{name} is not hex text") from None
        if len(key) < 16:
            raise ValueError(f"{name} is too short ({len(key)} bytes; at least 16)")
        return key
    if why != "not found":
        raise ValueError(f"{name} {why}, not a key file: name a regular file (hex text), or a path where one can "
                         "be created")
    key = secrets.token_bytes(32)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:  # a part of the path is a file (FileExistsError / NotADirectoryError), no permission, ...
        raise ValueError(f"{name} cannot be created: {_folder_problem(p.parent, e)}; name a key file in a folder "
                         "that exists or can be created (--deid-key, MEDVIT_DEID_KEY_DIR)") from None
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:  # created concurrently by another run: use that one (refused if not a regular file)
        return load_or_create_key(p, forbidden, what)
    except OSError as e:
        raise ValueError(f"{name} cannot be created ({e.strerror or e}); name a key file in a folder you may "
                         "write (--deid-key, MEDVIT_DEID_KEY_DIR)") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    logger.info("created de-identification key %s (keep it; it maps identifiers consistently)", p)
    return key


def _folder_problem(folder: Path, error: OSError) -> str:
    """Why ``folder`` could not be made, for a message: the nearest existing part of it that is not a folder (a
    regular file, a FIFO, ...), else the error's reason."""
    from medvit.io.errors import printable_path

    for part in (folder, *folder.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                return f"{printable_path(part)} is not a folder"
            break
    return f"its folder {printable_path(folder)} cannot be made ({error.strerror or error})"


def default_key_file() -> Path:
    """The per-site key: ``$MEDVIT_DEID_KEY_DIR/site.key`` (default ``~/.config/medvit/deid-keys/site.key``)."""
    d = os.environ.get("MEDVIT_DEID_KEY_DIR") or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") \
        / "medvit" / "deid-keys"
    return Path(d) / "site.key"


class Deidentifier:
    """Applies the Basic Profile with a keyed, consistent UID and ID mapping.

    ``key``: secret bytes for the keyed hash (random when omitted; keep it to map consistently across runs).
    ``keep_dates``: the Retain Longitudinal Temporal Information with Full Dates Option.
    """

    def __init__(self, key: bytes | None = None, keep_dates: bool = False) -> None:
        self.key = key or secrets.token_bytes(32)
        self.keep_dates = keep_dates
        self._issued: set[str] = set()  # values this object produced: applying the profile twice is a no-op

    def key_id(self) -> str:
        """A non-secret identifier of the key (to refuse resuming with another key)."""
        return self._digest("medvit-key-id").hex()[:16]

    def _digest(self, value: str) -> bytes:
        return hmac.new(self.key, value.encode(), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """Consistent replacement UID (:func:`medvit.io.uids.make_uid` of the keyed digest, ≤ 64 chars);
        DICOM-registered UIDs are kept."""
        from medvit.io.text import header_text

        uid = header_text(uid)  # a multi-valued (invalid) UID is one text, hashed like any other value
        if not uid or uid.startswith("1.2.840.10008.") or uid in self._issued:
            return uid
        new = make_uid("deidentified", self._digest("uid:" + uid).hex())
        self._issued.add(new)
        return new

    def pseudonym(self, value: str, prefix: str = "ANON") -> str:
        """Consistent pseudonym for an identifier (e.g. PatientID), ``""`` stays ``""``."""
        from medvit.io.text import header_text

        value = header_text(value)
        if not value or value in self._issued:
            return value or ""
        new = f"{prefix}-{self._digest('id:' + str(value)).hex()[:12].upper()}"
        self._issued.add(new)
        return new

    def record(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Basic Profile on a medvit table record: UIDs replaced, patient id pseudonymised, dates emptied
        (kept with ``keep_dates``), accession number emptied."""
        out = dict(rec)
        for k in ("study_instance_uid", "series_instance_uid", "sop_instance_uid"):
            if out.get(k):
                out[k] = self.uid(out[k])
        if out.get("patient_id"):
            out["patient_id"] = self.pseudonym(out["patient_id"])
        for k in ("accession_number",) + (() if self.keep_dates else ("study_date",)):
            if k in out:
                out[k] = ""
        out["deidentified"] = True
        return out

    def dataset(self, ds: Any, authored: Iterable[str] = ()) -> Any:
        """A de-identified deep copy of a pydicom Dataset (pixels untouched; burned-in text is not cleaned).

        ``authored``: keywords of elements medvit wrote itself (not copied from a source), kept as they are
        (a sequence among them is still cleaned item by item). Marks the result: Patient Identity Removed
        YES, Deidentification Method (+ Code Sequence: 113100, and 113104 / 113106 where they apply),
        Longitudinal Temporal Information Modified REMOVED or UNMODIFIED.
        """
        import copy

        from pydicom.dataset import Dataset

        out = copy.deepcopy(ds)
        authored = frozenset(authored)
        pid = str(getattr(ds, "PatientID", "") or "")
        out.remove_private_tags()
        self._apply(out, authored, top=True)
        if pid:
            out.PatientID = self.pseudonym(pid)
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = METHOD_TEXT
        codes = [BASIC_PROFILE_CODE]
        if "ContentSequence" in authored and "ContentSequence" in out:
            codes.append(CLEAN_STRUCTURED_CONTENT_CODE)
        if self.keep_dates:
            codes.append(RETAIN_DATES_CODE)
        items = []
        for c in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = c
            items.append(item)
        out.DeidentificationMethodCodeSequence = items
        out.LongitudinalTemporalInformationModified = "UNMODIFIED" if self.keep_dates else "REMOVED"
        if getattr(out, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in out.file_meta:
            out.file_meta.MediaStorageSOPInstanceUID = self.uid(out.file_meta.MediaStorageSOPInstanceUID)
        return out

    def finish(self, ds: Any, authored: Iterable[str] = ()) -> Any:
        """:meth:`dataset` for a finished output object (SR, Secondary Capture) before it is written."""
        return self.dataset(ds, authored)

    # ------------------------------------------------------------------ the rules
    def _apply(self, ds: Any, authored: frozenset[str], top: bool) -> None:
        for elem in list(ds):
            tag, kw, vr = int(elem.tag), elem.keyword, elem.VR
            group = tag >> 16
            if elem.tag.is_private or (group & 0xFF00) in (0x5000, 0x6000):
                del ds[elem.tag]
                continue
            if top and kw in authored:
                if vr == "SQ":
                    for item in elem.value:
                        self._apply(item, frozenset(), top=False)
                continue
            if group in DENY_GROUPS and kw not in PATIENT_KEEP:  # default deny, whatever the table says
                del ds[elem.tag]
                continue
            action = profile_action(tag)
            if self.keep_dates and vr in _TEMPORAL and action is not None and group not in DENY_GROUPS:
                continue  # Retain Longitudinal Temporal Information Full Dates Option
            if action is None:
                if vr == "SQ":
                    for item in elem.value:
                        self._apply(item, frozenset(), top=False)
                elif vr == "UI" and kw not in KEEP_UIDS:
                    self._map_uid(elem)
                continue
            if action in ("X", "X/Z", "X/D", "X/Z/D"):
                del ds[elem.tag]
            elif action == "X/Z/U*":  # a reference sequence: keep it, its UIDs replaced
                for item in elem.value:
                    self._apply(item, frozenset(), top=False)
            elif action == "U":
                if vr == "SQ":
                    for item in elem.value:
                        self._apply(item, frozenset(), top=False)
                else:
                    self._map_uid(elem)
            elif action == "Z" or (action == "Z/D" and kw != "ContentDate" and kw != "ContentTime"):
                if vr == "SQ":
                    elem.value = []
                elif kw != "PatientID":  # PatientID: a keyed pseudonym is set by dataset()
                    elem.value = ""
            else:  # D, and Z/D for Content Date/Time (Type 1 in SR): a dummy value of the VR
                self._dummy(elem)

    def _map_uid(self, elem: Any) -> None:
        if elem.VM > 1 and _single_valued(elem.tag):  # e.g. a SOP Instance UID "..\\..\\win": one invalid value
            elem.value = self.uid(elem.value)
        elif elem.VM > 1:
            elem.value = [self.uid(v) for v in elem.value]
        elif elem.value:
            elem.value = self.uid(elem.value)

    def _dummy(self, elem: Any) -> None:
        vr = elem.VR
        if vr == "SQ":  # e.g. a content tree: keep the structure, clean every item
            for item in elem.value:
                self._apply(item, frozenset(), top=False)
        elif vr == "UI":
            self._map_uid(elem)
        elif vr in _DUMMY:
            elem.value = _DUMMY[vr]
        elif vr in ("US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"):
            elem.value = 0
        else:  # binary (OB/OW/UN...): no safe dummy content
            elem.value = b""


def _single_valued(tag: Any) -> bool:
    """True when the data dictionary gives ``tag`` a value multiplicity of exactly 1 (PS3.6)."""
    from pydicom.datadict import dictionary_VM

    try:
        return dictionary_VM(tag) == "1"
    except KeyError:  # private or unknown: keep the values apart
        return False
