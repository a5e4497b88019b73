"""Expert models a VLM can call (VILA-M3, Nath et al. 2024 §3; reference ``m3/demo/experts``), registry kind
``expert``.

An :class:`Expert` has a ``name``, a :class:`ModelCard` (modality, task, overview, accuracy, valid args) whose
line goes into the model-card block prepended to the first user turn (:func:`model_cards`), ``mentioned_by(text)``
(the reference's rule: the text holds exactly one ``<...>`` and it contains the expert's name) and
``run(images, args) -> ExpertResult(text, overlay)``.

Triggers: :func:`parse_trigger` reads a model reply. The grammar is ``<NAME(args)>``; ``<image>`` markers are not
triggers. Outcomes: no trigger; one valid call; or a :class:`TriggerError` message (two or more triggers, bad syntax,
unknown expert, args not in the card's valid args) that the agent loop puts into the conversation.

Result texts (exact strings of the reference):

- CXR: ``"The resulting predictions are:\\n" + "\\n".join(f"{cls.lower().replace('_', ' ')}: {yes|no}" for cls in
  sorted(classes)) + "\\n."`` (``expert_torchxrayvision.py``).
- segmentation: ``"The results are <image>. The colors in this image describe " + ", ".join(f"{color}: {label}")
  + ". "`` with the overlay image as that ``<image>`` (``expert_monai_vista3d.py``).
- feedback turn: ``"Use this result to respond to this prompt:\\n" + question``.

medvit addition: when a CXR checkpoint carries an out-of-distribution reference (``ood`` in its contract,
``ood.safetensors``; :mod:`medvit.eval.ood`, the score and threshold ``medvit infer`` reports), the result text of
an image at or above the threshold ends with :data:`OOD_NOTE` (:func:`ood_text`) — the reference format is
unchanged for in-distribution images — and ``values["ood"]`` holds every checkpoint's score, threshold and flag.
"""

from __future__ import annotations

import json
import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.nn.precision import DEFAULT_PRECISION, model_at_precision, resolve_precision
from medvit.registry import REGISTRY, register

logger = logging.getLogger(__name__)

MODEL_CARDS_HEAD = "Here is a list of available expert models:\n"
MODEL_CARDS_TAIL = "Give the model <NAME(args)> when selecting a suitable expert model.\n"
FEEDBACK_PREFIX = "Use this result to respond to this prompt:\n"
CXR_PREFIX = "The resulting predictions are:\n"
#: appended to the CXR result when the image is outside an expert checkpoint's training distribution (medvit)
#: the CXR expert's out-of-distribution caution (shown apart from the answer: ``ChatResponse.cautions``) ...
OOD_CAUTION = ("this image is outside the expert's training distribution (OOD score {score:.2f} >= threshold "
               "{threshold:.2f}{which}); these predictions may be unreliable.")
#: ... when a checkpoint's OOD score is not finite (NaN / inf features): the image is treated as out of distribution
OOD_UNSCORED_CAUTION = ("this image cannot be scored against the expert's training distribution (non-finite OOD "
                        "score{which}); it is treated as out of distribution and these predictions may be "
                        "unreliable.")
#: ... and as it ends the expert's result text
OOD_NOTE = " Caution: " + OOD_CAUTION
SEG_PREFIX = "The results are <image>. The colors in this image describe "
_TRIGGER = re.compile(r"<(.*?)>")
_CALL = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.S)

#: overlay colours for segmentation labels, in label order (name, RGB)
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255)), ("yellow", (255, 255, 0)),
    ("cyan", (0, 255, 255)), ("magenta", (255, 0, 255)), ("orange", (255, 165, 0)), ("purple", (128, 0, 128)),
    ("pink", (255, 192, 203)), ("brown", (165, 42, 42)),
)


@dataclass(frozen=True)
class ModelCard:
    """What the VLM is told about an expert. ``valid_args``: None (the call takes no argument) or the allowed
    argument strings."""

    modality: str
    task: str
    overview: str
    accuracy: str
    valid_args: tuple[str, ...] | None = None

    def line(self, name: str) -> str:
        """``<NAME(args)> Modality: …, Task: …, Overview: …, Accuracy: …, Valid args are: …`` (reference format)."""
        va = "None" if not self.valid_args else (", ".join(f"'{a}'" for a in self.valid_args[:-1])
                                                 + (", or " if len(self.valid_args) > 1 else "")
                                                 + f"'{self.valid_args[-1]}'")
        return (f"<{name}(args)> Modality: {self.modality}, Task: {self.task}, Overview: {self.overview}, "
                f"Accuracy: {self.accuracy}, Valid args are: {va}")


@dataclass
class ExpertResult:
    """An expert's answer: ``text`` (exact reference format), ``overlay`` (H, W, 3) uint8 or None (the image the
    text's ``<image>`` refers to), ``values`` (machine-readable outputs, e.g. per-class probabilities), ``caution``
    (a warning the person must see whatever the language model then says, e.g. the OOD caution also ending
    ``text``; ``""`` for none)."""

    text: str
    overlay: np.ndarray | None = None
    name: str = ""
    args: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    caution: str = ""


class Expert(ABC):
    """An expert model (see module docstring). Subclasses set ``name`` and ``model_card`` and implement ``run``."""

    name: str = ""
    model_card: ModelCard

    def mentioned_by(self, text: str) -> bool:
        """True when ``text`` holds exactly one ``<...>`` and it contains this expert's name (the reference's rule;
        ``<image>`` markers are ignored)."""
        matches = [m for m in _TRIGGER.findall(str(text)) if m.strip() != "image"]
        return len(matches) == 1 and self.name in matches[0]

    def check_args(self, args: str) -> str:
        """Normalised args (quotes and whitespace stripped; ``None`` → ``""``); raises :class:`TriggerError` when
        they are not among the card's valid args."""
        a = args.strip().strip("'\"").strip()
        if a.lower() == "none":
            a = ""
        va = self.model_card.valid_args
        if not va:
            if a:
                raise TriggerError(f"The expert {self.name} takes no arguments, got '{a}'. Call it as <{self.name}()>.")
            return a
        if a not in va:
            raise TriggerError(f"The expert {self.name} does not accept '{a}'. Valid args are: "
                               + ", ".join(f"'{v}'" for v in va) + ".")
        return a

    @abstractmethod
    def run(self, images: Sequence[Any], args: str = "") -> ExpertResult:
        """Run on the conversation's images (file paths, ``MedicalImage`` or (H, W) arrays in [0, 1])."""

    #: (checkpoint, weight contract) whose scope (modalities / view positions / body parts) the input must fit
    scopes: Sequence[tuple[str, Any]] = ()

    def out_of_scope(self, image: Any) -> str | None:
        """Why ``image`` (a path or ``MedicalImage``) is outside the scope of this expert's checkpoints, or None.

        The decision is ``medvit infer``'s: :meth:`medvit.io.rules.SelectionRules.from_contract` matched on the
        image's own header (:func:`medvit.io.rules.header_of`; Modality must match, View Position / Body Part
        Examined when present). A multi-frame image is refused too (``medvit infer`` skips those). Arrays and
        tensors carry no header: the caller vouches for them (None). A checkpoint whose contract declares no
        scope accepts everything (a warning is logged when the expert is built)."""
        from medvit.io.rules import header_of

        hdr = header_of(image)
        if hdr is None:
            return None
        axes, px = str(getattr(image, "axes", "")), getattr(image, "pixels", None)
        if "F" in axes and px is not None and px.shape[axes.index("F")] > 1:
            return f"it is a multi-frame image ({px.shape[axes.index('F')]} frames); the expert reads single images"
        for (ck, contract), rules in zip(self.scopes, self._scope_rules, strict=True):
            selected, _why = rules.match(hdr)
            if selected is None:
                return f"it is {_describe(hdr)}, but the expert's checkpoint {ck} is for {_describe_scope(contract)}"
        return None

    def refusal(self, reason: str, args: str = "") -> ExpertResult:
        """The in-conversation answer for an image outside the expert's scope: a message, no findings
        (``values["out_of_scope"]`` = the reason)."""
        return ExpertResult(f"The {self.name} expert does not apply to this image: {reason}. It gave no result.",
                            None, self.name, args, {"out_of_scope": reason})

    def _scoped_contracts(self, items: Sequence[tuple[str, Any]]) -> None:
        from medvit.io.rules import SelectionRules

        self.scopes = [(ck, c) for ck, c in items if c is not None]
        self._scope_rules = [SelectionRules.from_contract(c) for _, c in self.scopes]  # built once, not per image
        for ck, c in self.scopes:
            if not (c.modalities or c.view_positions or c.body_parts):
                logger.warning("%s expert: checkpoint %s declares no scope (modalities, views, body parts): it will "
                               "answer on any image", self.name, ck)


def _describe(hdr: dict[str, Any]) -> str:
    parts = [f"{w} {hdr[k]}" for k, w in (("Modality", "Modality"), ("ViewPosition", "view"),
                                          ("BodyPartExamined", "body part")) if hdr.get(k)]
    return "an image with " + ", ".join(parts) if parts else "an image without a DICOM Modality"


def _describe_scope(contract: Any) -> str:
    parts = [f"{w} {' or '.join(str(v) for v in vals)}" for w, vals in
             (("Modality", contract.modalities), ("view", contract.view_positions),
              ("body part", contract.body_parts)) if vals]
    return ", ".join(parts) or "any image"


#: DICOM Modality → how the chat names the image (X-ray modalities of the chest: "CXR", the reference's word)
_MODALITY_WORDS = {"CT": "a CT", "MR": "an MR", "US": "an ultrasound", "MG": "a mammography", "PT": "a PET",
                   "NM": "a nuclear medicine", "OP": "an ophthalmic", "OPT": "an OCT", "XA": "an angiography",
                   "RF": "a fluoroscopy"}
_XRAY = ("CR", "DX", "RG")


def modality_sentence(header: dict[str, Any] | None) -> str:
    """``"This is a CXR image.\n"`` (VILA-M3's modality line) from an image's own header (Modality, Body Part
    Examined; :func:`medvit.io.rules.header_of`): CR/DX/RG of the chest → CXR, other X-rays → X-ray, CT, MR, …;
    ``""`` (no sentence) when the header is absent or names no known modality."""
    mod = str((header or {}).get("Modality", "")).strip().upper()
    if mod in _XRAY:
        chest = str(header.get("BodyPartExamined", "")).strip().upper() in ("CHEST", "THORAX")  # type: ignore[union-attr]
        words = "a CXR" if chest else "an X-ray"
    else:
        words = _MODALITY_WORDS.get(mod, "")
    return f"This is {words} image.\n" if words else ""


class TriggerError(ValueError):
    """A trigger that cannot be run; its message is written into the conversation for the model."""


@dataclass
class Trigger:
    """A parsed call: the expert and its normalised args."""

    expert: Expert
    args: str


def parse_trigger(text: str, experts: Sequence[Expert]) -> Trigger | None:
    """The expert call in a model reply: None (no trigger), a :class:`Trigger`, or raises :class:`TriggerError`
    (several triggers, bad syntax ``<NAME(args)>``, unknown expert name, invalid args)."""
    matches = [m for m in _TRIGGER.findall(str(text)) if m.strip() != "image"]
    if not matches:
        return None
    names = ", ".join(f"<{e.name}()>" for e in experts) or "(none available)"
    if len(matches) > 1:
        raise TriggerError(f"Found {len(matches)} expert calls ({', '.join('<' + m + '>' for m in matches)}); "
                           "call exactly one expert at a time.")
    m = _CALL.match(matches[0])
    if not m:
        raise TriggerError(f"'<{matches[0]}>' is not an expert call; use <NAME(args)>, e.g. {names}.")
    name, args = m.group(1), m.group(2)
    by_name = {e.name: e for e in experts}
    if name not in by_name:
        raise TriggerError(f"There is no expert named {name}. Available experts: {names}.")
    ex = by_name[name]
    return Trigger(ex, ex.check_args(args))


def model_cards(experts: Sequence[Expert]) -> str:
    """The block prepended to the first user turn (reference ``MODEL_CARDS``): head, one card line per expert,
    tail."""
    return MODEL_CARDS_HEAD + "".join(e.model_card.line(e.name) + "\n" for e in experts) + MODEL_CARDS_TAIL


def cxr_line(label: str, present: bool) -> str:
    """One line of the CXR expert's result: ``"{class}: yes|no"`` (class lower-case, ``_`` → space)."""
    return f"{label.lower().replace('_', ' ')}: {'yes' if present else 'no'}"


def cxr_text(predictions: dict[str, bool]) -> str:
    """The CXR expert's result text (exact reference format; classes sorted by name)."""
    return CXR_PREFIX + "\n".join(cxr_line(c, predictions[c]) for c in sorted(predictions)) + "\n."


def ood_caution(ood: Sequence[dict[str, Any] | None]) -> str:
    """:data:`OOD_CAUTION` for the flagged checkpoints of an ensemble (``[{"score", "threshold", "flag"}, …]``, None
    for a checkpoint without a reference), quoting the one furthest above its threshold; ``""`` when none is
    flagged. A non-finite score counts as flagged (:data:`OOD_UNSCORED_CAUTION`: fail closed)."""
    flagged = [o for o in ood if o and (o["flag"] or not math.isfinite(o["score"]))]
    if not flagged:
        return ""
    scored = sum(o is not None for o in ood)
    which = f"; {len(flagged)} of {scored} models" if scored > 1 else ""
    if any(not math.isfinite(o["score"]) for o in flagged):  # non-finite features: cannot be scored, fail closed
        return OOD_UNSCORED_CAUTION.format(which=which)
    worst = max(flagged, key=lambda o: o["score"] / max(o["threshold"], 1e-12))
    return OOD_CAUTION.format(score=worst["score"], threshold=worst["threshold"], which=which)


def ood_text(ood: Sequence[dict[str, Any] | None]) -> str:
    """:data:`OOD_NOTE` (what ends the CXR result text) for :func:`ood_caution`; ``""`` when none is flagged."""
    caution = ood_caution(ood)
    return " Caution: " + caution if caution else ""


def segmentation_text(color_labels: Sequence[tuple[str, str]]) -> str:
    """The segmentation expert's result text: ``"The results are <image>. The colors in this image describe
    red: heart, green: lung. "`` (exact reference format)."""
    return SEG_PREFIX + ", ".join(f"{c}: {lab}" for c, lab in color_labels) + ". "


def _read(img: Any) -> Any:
    """Path → MedicalImage (all frames); MedicalImage and arrays pass through."""
    if isinstance(img, str | Path):
        from medvit.io import read_image

        p = Path(img)
        if not p.is_file():
            raise FileNotFoundError(f"expert input image not found: {p}")
        return read_image(p)
    return img


def _unit_image(img: Any) -> Any:
    """Path → 2D MedicalImage (frame 0 / middle slice); MedicalImage → its 2D image; arrays pass through."""
    img = _read(img)
    if isinstance(img, np.ndarray) or not hasattr(img, "axes"):
        return img
    from medvit.io.display import slice_for_display

    return slice_for_display(img)


def _model_input(pre: Any, img: Any) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) model input and (h, w) grey [0, 1] image through the model contract's preprocessing."""
    img = _unit_image(img)
    from medvit.data.imageload import nonfinite_problem

    if why := nonfinite_problem(img if isinstance(img, np.ndarray) else getattr(img, "pixels", img)):
        where = getattr(img, "path", None) or "the image"
        raise ValueError(f"{where}: {why}")
    if isinstance(img, np.ndarray):
        x, grey = pre.from_unit(np.asarray(img, dtype=np.float32))
        return x, grey
    x, _notes, grey = pre(img)
    return x, grey


# ---------------------------------------------------------------------------------------------------- CXR
class CXRExpert(Expert):
    """Chest X-ray classifier ensemble over medvit multi-label checkpoints (reference: 8 TorchXRayVision models).

    Per class, the score is the mean sigmoid probability over the models that predict it, or over the subset
    named in ``class_models`` (reference: Pneumothorax from one model, Lung Opacity from all 8, …); the call is
    ``yes`` when the score ≥ the threshold: ``threshold="contract"`` (default) = the mean of the subset models'
    operating thresholds from their contracts (0.5 where a contract has none), or a number (the reference uses
    0.5 on TorchXRayVision's calibrated outputs).

    Each checkpoint runs at ``precision`` as ``medvit infer`` runs it (:mod:`medvit.nn.precision`; default
    :data:`~medvit.nn.precision.DEFAULT_PRECISION`, ``auto``: bf16 on a CPU with native bf16, else fp32), so the
    expert's probabilities and OOD scores are the ones ``medvit infer`` and the viewer report for the image; the
    precision used is in ``self.precision`` and in every result's ``values["precision"]``.

    Args: checkpoints: medvit checkpoint directories (multi-label contracts with label names); class_models:
    label → list of checkpoint indices; name: the trigger name (default ``CXR``); precision: ``auto``, ``fp32`` or
    ``bf16`` (``ValueError`` otherwise).
    """

    def __init__(self, checkpoints: Sequence[str | Path], class_models: dict[str, list[int]] | None = None,
                 threshold: str | float = "contract", name: str = "CXR", card: ModelCard | None = None,
                 precision: str = DEFAULT_PRECISION):
        from medvit.data.preprocess import Preprocessor
        from medvit.models import load_model

        if not checkpoints:
            raise ValueError("CXR expert needs at least one medvit multi-label checkpoint")
        if empty := [i for i, ck in enumerate(checkpoints) if not str(ck).strip()]:  # '' would read as the CWD
            raise ValueError(f"CXR expert checkpoints[{empty[0]}] is an empty path: name each checkpoint directory")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"CXR expert precision must be auto, fp32 or bf16, got {precision!r}")
        self.name = name
        self.precision, self.precision_reason = resolve_precision(precision, "cpu")
        self.models, self.pres, self.labels = [], [], []
        self._runs: list[tuple[torch.nn.Module, torch.dtype]] = []  # per checkpoint: (module at precision, input)
        self.oods: list[Any] = []  # per checkpoint: its OOD reference (medvit.eval.ood.OODReference) or None
        for ck in checkpoints:
            m = load_model(ck).eval()
            c = getattr(m, "contract", None)
            if c is None or not c.label_names:
                raise ValueError(f"{ck}: the CXR expert needs a checkpoint whose contract names its labels")
            self.models.append(m)
            self._runs.append(model_at_precision(m, self.precision))
            self.oods.append(_ood_reference(ck, c))
            self.pres.append(Preprocessor.from_contract(c))
            self.labels.append(list(c.label_names))
        self._scoped_contracts([(str(ck), m.contract) for ck, m in zip(checkpoints, self.models)])
        all_labels = sorted({lab for labs in self.labels for lab in labs})
        self.class_models = {lab: [i for i, labs in enumerate(self.labels) if lab in labs] for lab in all_labels}
        for lab, idx in (class_models or {}).items():
            if lab not in self.class_models:
                raise ValueError(f"CXR expert class_models: unknown class {lab!r}; classes: {', '.join(all_labels)}")
            bad = [i for i in idx if not 0 <= i < len(self.models) or lab not in self.labels[i]]
            if bad:
                raise ValueError(f"CXR expert class_models[{lab!r}]: models {bad} do not predict {lab!r}")
            self.class_models[lab] = list(idx)
        self.thresholds: dict[str, float] = {}
        for lab, idx in self.class_models.items():
            if threshold == "contract":
                ts = []
                for i in idx:
                    th = self.models[i].contract.thresholds
                    ts.append(float(th[self.labels[i].index(lab)]) if th else 0.5)
                self.thresholds[lab] = float(np.mean(ts))
            else:
                self.thresholds[lab] = float(threshold)
        self.model_card = card or ModelCard(
            "chest x-ray (CXR)", "classification",
            f"an ensemble of {len(self.models)} medvit classifier(s) for {', '.join(c.lower() for c in all_labels)}",
            "see the checkpoints' validation results")

    def probabilities(self, image: Any) -> dict[str, float]:
        """Class → ensemble probability for one image."""
        return self.assess(image)[0]

    @torch.no_grad()
    def assess(self, image: Any) -> tuple[dict[str, float], list[dict[str, Any] | None]]:
        """(class → ensemble probability, per checkpoint ``{"score", "threshold", "flag"}`` or None without an OOD
        reference) for one image. The OOD score is :meth:`medvit.eval.ood.OODReference.score` of the checkpoint's
        features of this input (1 = a typical training image); flag = score ≥ the contract's threshold. Computed at
        ``self.precision`` (as ``medvit infer``)."""
        per_model, ood = [], []
        for (m, dtype), pre, ref in zip(self._runs, self.pres, self.oods):
            x, _ = _model_input(pre, image)
            t = torch.from_numpy(x)[None].to(dtype)
            if ref is None:
                z, o = m(t).float(), None
            else:
                z, scores = ref.score_call(m, lambda m=m, t=t: m(t).float())
                sc = float(scores[0])
                o = {"score": sc, "threshold": float(ref.threshold),
                     "flag": bool(ref.flag(sc))}  # unscorable: out of distribution
            per_model.append(torch.sigmoid(z)[0].numpy())
            ood.append(o)
        probs = {lab: float(np.mean([per_model[i][self.labels[i].index(lab)] for i in idx]))
                 for lab, idx in self.class_models.items()}
        return probs, ood

    def run(self, images: Sequence[Any], args: str = "") -> ExpertResult:
        self.check_args(args)
        if not images:
            raise ValueError("the CXR expert needs an image")
        image = _read(images[0])
        why = self.out_of_scope(image)
        if why:
            return self.refusal(why, args)
        probs, ood = self.assess(image)
        calls = {lab: p >= self.thresholds[lab] for lab, p in probs.items()}
        flag = None if all(o is None for o in ood) else any(o["flag"] for o in ood if o)
        return ExpertResult(cxr_text(calls) + ood_text(ood), None, self.name, args,
                            {"probabilities": probs, "predictions": calls, "ood": ood, "ood_flag": flag,
                             "precision": self.precision}, ood_caution(ood))


def _ood_reference(ck: str | Path, contract: Any) -> Any:
    """The checkpoint's OOD reference (:func:`medvit.eval.ood.load_reference`, as ``medvit infer`` loads it), or
    None when its contract declares none. Raises ``ValueError`` naming the file when it is missing or changed."""
    info = getattr(contract, "ood", None)
    if not info:
        return None
    from medvit.eval.ood import load_reference

    return load_reference(Path(ck), info)


# ---------------------------------------------------------------------------------------------------- segmentation
class SegmentationExpert(Expert):
    """A 2D segmentation model as an expert: per label a mask (sigmoid ≥ threshold for multi-label outputs,
    argmax for softmax outputs with a background channel), drawn in :data:`PALETTE` colours over the grey image.

    Build with :meth:`from_checkpoint` (a medvit checkpoint whose model returns (B, K, H, W) logits and whose
    contract names the K labels) or :meth:`from_monai_bundle` (a MONAI bundle directory). ``label_groups``: args →
    the labels to show (VISTA3D's ``label_groups_dict.json`` idea); args default to all labels.
    """

    def __init__(self, net: torch.nn.Module, labels: Sequence[str], preprocess: Any, name: str = "SEG",
                 thresholds: Sequence[float] | None = None, softmax: bool = False,
                 label_groups: dict[str, list[str]] | None = None, card: ModelCard | None = None):
        self.net, self.labels, self.pre, self.name = net.eval(), list(labels), preprocess, name
        self.softmax = softmax
        self.thresholds = list(thresholds) if thresholds else [0.5] * len(self.labels)
        self.label_groups = dict(label_groups or {})
        for g, labs in self.label_groups.items():
            bad = [lab for lab in labs if lab not in self.labels]
            if bad:
                raise ValueError(f"segmentation expert label group {g!r}: unknown labels {bad}; labels: {self.labels}")
        shown = [lab for lab in self.labels if lab != "background"]
        self.model_card = card or ModelCard(
            "chest x-ray (CXR)", "segmentation", f"segments {', '.join(s.replace('_', ' ') for s in shown)}",
            "see the model's validation Dice", tuple(self.label_groups) or None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kw: Any) -> SegmentationExpert:
        """A medvit checkpoint (``medvit.models.load_model``): labels and per-pixel thresholds from its contract."""
        from medvit.data.preprocess import Preprocessor
        from medvit.models import load_model

        m = load_model(path)
        c = getattr(m, "contract", None)
        if c is None or not c.label_names:
            raise ValueError(f"{path}: the segmentation expert needs a contract naming the labels")
        ex = cls(m, c.label_names, Preprocessor.from_contract(c), thresholds=c.thresholds or None, **kw)
        ex._scoped_contracts([(str(path), c)])
        return ex

    @classmethod
    def from_monai_bundle(cls, bundle_dir: str | Path, **kw: Any) -> SegmentationExpert:
        """A MONAI bundle: ``configs/metadata.json`` (``network_data_format``: input ``spatial_shape`` and
        ``num_channels``, output ``channel_def`` index → label), ``configs/inference.json`` (``network_def``),
        ``models/model.pt`` (state dict). Parsed with ``monai.bundle.ConfigParser``; ``network_def`` may only
        instantiate ``monai.networks.nets`` classes (a bundle file never runs other code). Outputs are read as
        softmax over channels (channel 0 = background) when ``channel_def`` has a ``background``.
        Raises ``ValueError`` naming the file and key."""
        from monai.bundle import ConfigParser

        from medvit.data.preprocess import Preprocessor
        from medvit.models.checkpoint import read_pickled_weights

        b = Path(bundle_dir)
        meta_f, inf_f = b / "configs" / "metadata.json", b / "configs" / "inference.json"
        w_f = b / "models" / "model.pt"
        for f in (meta_f, inf_f, w_f):
            if not f.is_file():
                raise FileNotFoundError(f"MONAI bundle file not found: {f}")
        meta = json.loads(meta_f.read_text())
        inf = json.loads(inf_f.read_text())
        nd = inf.get("network_def")
        target = nd.get("_target_") if isinstance(nd, dict) else None
        _check_network_target(target, inf_f)
        _check_plain(nd, f"{inf_f}: key 'network_def'")
        try:
            fmt = meta["network_data_format"]
            shape = fmt["inputs"]["image"]["spatial_shape"]
            chans = int(fmt["inputs"]["image"]["num_channels"])
            cdef = fmt["outputs"]["pred"]["channel_def"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{meta_f}: key network_data_format.{e} missing (inputs.image.spatial_shape/num_channels, "
                             "outputs.pred.channel_def)") from e
        labels = [str(cdef[k]) for k in sorted(cdef, key=int)]
        parser = ConfigParser({"network_def": nd})
        net = parser.get_parsed_content("network_def")
        sd = read_pickled_weights(w_f)
        sd = sd.get("model", sd) if isinstance(sd, dict) else sd
        net.load_state_dict(sd)
        pre = Preprocessor(chans, (int(shape[0]), int(shape[1])), (0.0,) * chans, (1.0,) * chans, geometry="squash")
        kw.setdefault("softmax", "background" in labels)
        return cls(net, labels, pre, **kw)

    @torch.no_grad()
    def masks(self, image: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(label → (h, w) bool mask at the model input's resolution, (h, w) grey image at that resolution)."""
        x, _ = _model_input(self.pre, image)
        logits = self.net(torch.from_numpy(x)[None].float())[0]
        if self.softmax:
            arg = logits.argmax(0).numpy()
            out = {lab: arg == i for i, lab in enumerate(self.labels) if lab != "background"}
        else:
            p = torch.sigmoid(logits).numpy()
            out = {lab: p[i] >= self.thresholds[i] for i, lab in enumerate(self.labels) if lab != "background"}
        m = np.asarray(self.pre.mean, dtype=np.float32)[:, None, None]
        s = np.asarray(self.pre.std, dtype=np.float32)[:, None, None]
        grey = np.clip((x * s + m).mean(0), 0, 1)
        return out, grey

    def run(self, images: Sequence[Any], args: str = "") -> ExpertResult:
        a = self.check_args(args)
        if not images:
            raise ValueError(f"the {self.name} expert needs an image")
        image = _read(images[0])
        why = self.out_of_scope(image)
        if why:
            return self.refusal(why, a)
        masks, grey = self.masks(image)
        show = self.label_groups.get(a, list(masks)) if a else list(masks)
        over = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
        pairs = []
        for i, lab in enumerate(self.labels):
            if lab not in show or lab not in masks:
                continue
            cname, rgb = PALETTE[i % len(PALETTE)]
            mk = masks[lab]
            over[mk] = (0.5 * over[mk] + 0.5 * np.array(rgb)).astype(np.uint8)
            pairs.append((cname, lab.replace("_", " ")))
        areas = {lab: int(masks[lab].sum()) for lab in show if lab in masks}
        return ExpertResult(segmentation_text(pairs), over, self.name, a, {"pixels": areas})


def _check_network_target(target: Any, inf_f: Path) -> None:
    """``network_def._target_`` must name a class exported by ``monai.networks.nets`` itself
    (``monai.networks.nets.<Name>``, one identifier, an ``nn.Module`` subclass). MONAI's locator walks
    attributes, so a prefix check alone would let ``monai.networks.nets.<module>.os.system`` through.
    Raises ``ValueError`` naming the file and key before anything is instantiated."""
    import monai.networks.nets as nets

    prefix = "monai.networks.nets."
    name = target[len(prefix):] if isinstance(target, str) and target.startswith(prefix) else ""
    obj = getattr(nets, name, None) if name.isidentifier() else None
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise ValueError(f"{inf_f}: key 'network_def._target_' must name a network class of monai.networks.nets "
                         f"(monai.networks.nets.<Name>), got {str(target)[:80]!r}")


def _check_plain(obj: Any, where: str) -> None:
    """Refuse MONAI config expressions (``$``), references (``@``, ``%``) and nested ``_target_`` in a bundle's
    network definition: only plain values reach the network class."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "_target_" and obj is not None and where.endswith("'network_def'"):
                continue
            if k in ("_target_", "_requires_", "_disabled_", "_desc_", "_mode_"):
                raise ValueError(f"{where}.{k}: nested MONAI config keys are not accepted")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(obj, str) and obj[:1] in ("$", "@", "%"):
        raise ValueError(f"{where}: MONAI expressions/references ({obj[:20]!r}) are not accepted")


# ---------------------------------------------------------------------------------------------------- registry
@register("expert", "cxr", description="chest X-ray classifier ensemble over medvit multi-label checkpoints")
def cxr(checkpoints: Sequence[str | Path], **kw: Any) -> CXRExpert:
    return CXRExpert(checkpoints, **kw)


@register("expert", "segmentation", description="2D segmentation model (medvit checkpoint) as an expert")
def segmentation(checkpoint: str | Path, **kw: Any) -> SegmentationExpert:
    return SegmentationExpert.from_checkpoint(checkpoint, **kw)


@register("expert", "monai_bundle", description="2D segmentation MONAI bundle directory as an expert")
def monai_bundle(bundle_dir: str | Path, **kw: Any) -> SegmentationExpert:
    return SegmentationExpert.from_monai_bundle(bundle_dir, **kw)


def build_expert(kind: str, **kwargs: Any) -> Expert:
    """Build the registered expert ``kind`` (``cxr``, ``segmentation``, ``monai_bundle``)."""
    return REGISTRY.get("expert", kind)(**kwargs)
