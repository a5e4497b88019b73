"""The agent loop (VILA-M3 ``gradio_m3.py``): generate → if the reply calls one expert, run it, add its result as a
user turn (``"<result> Use this result to respond to this prompt:\\n<question>"``) and generate again; bounded
number of expert calls. A trigger that cannot be run (several calls, bad syntax, unknown name, invalid args, an
expert failing on the image) becomes a user turn with the reason; it never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.vlm.experts import (
    FEEDBACK_PREFIX,
    Expert,
    ExpertResult,
    TriggerError,
    modality_sentence,
    model_cards,
    parse_trigger,
)
from medvit.vlm.templates import IMAGE_TOKEN

logger = logging.getLogger(__name__)


@dataclass
class ChatTurn:
    """One step of a conversation shown to a person: role (user | assistant | expert | error), text, and for
    expert steps the expert name, args, overlay image ((H, W, 3) uint8 or None) and caution (the expert's warning,
    e.g. its OOD caution; ``""`` for none)."""

    role: str
    text: str
    expert: str | None = None
    args: str | None = None
    overlay: np.ndarray | None = None
    caution: str = ""


@dataclass
class ChatResponse:
    """``answer`` (the final reply), ``turns`` (everything shown), ``messages`` (the LM conversation),
    ``expert_calls`` (number run)."""

    answer: str
    turns: list[ChatTurn] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    expert_calls: int = 0

    @property
    def cautions(self) -> list[str]:
        """The experts' cautions of this exchange (``"Caution from the <expert> expert: <caution>"``, e.g. its OOD
        flag), to show the person next to the answer whatever the language model made of them."""
        return [f"Caution from the {t.expert} expert: {t.caution}" for t in self.turns if t.caution]


class VLMChat:
    """Chat with a :class:`~medvit.vlm.model.VisionLanguageModel` and a set of experts.

    Args: model; experts (their model cards are prepended to the first user turn when any); max_expert_calls
    (bound on expert runs per question); modality_hint: ``"auto"`` (default) = the reference's modality line
    (``"This is a CXR image.\\n"`` before the question) written from the first image's own header
    (:func:`medvit.vlm.experts.modality_sentence`: DICOM Modality / Body Part Examined; no line when the image
    has no header or names no known modality), a word such as ``"CXR"`` to state it, None for no line;
    generation settings (reference: temperature 0, top_p 0.9).
    """

    def __init__(self, model: Any, experts: Sequence[Expert] = (), max_expert_calls: int = 2,
                 modality_hint: str | None = "auto", max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 0.9):
        from medvit.vlm.data import VLMProcessor

        self.model, self.experts = model, list(experts)
        self.max_expert_calls = int(max_expert_calls)
        self.modality_hint = modality_hint
        self.gen = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        self.processor = VLMProcessor.for_model(model)

    def first_user_turn(self, prompt: str, n_images: int = 1, image: Any = None) -> str:
        """``MODEL_CARDS + <image> + "This is a {modality} image.\\n" + prompt`` (reference layout); with
        ``modality_hint="auto"`` the modality line comes from ``image``'s header (none without one)."""
        cards = model_cards(self.experts) if self.experts else ""
        if self.modality_hint == "auto":
            from medvit.io.rules import header_of

            hint = modality_sentence(None if image is None else header_of(image))
        else:
            hint = f"This is a {self.modality_hint} image.\n" if self.modality_hint else ""
        return cards + IMAGE_TOKEN * n_images + hint + prompt

    def _pixels(self, images: Sequence[Any]) -> torch.Tensor:
        out = []
        for im in images:
            if isinstance(im, torch.Tensor):
                out.append(im)
            elif isinstance(im, np.ndarray):
                out.append(self.processor.from_array(im.astype(np.float32) / (255.0 if im.dtype == np.uint8 else 1.0)))
            elif isinstance(im, str | Path):
                out.append(self.processor.load_image(im))
            else:  # a medvit.io.MedicalImage (read by respond, or the viewer's open image): pixels only
                out.append(self.processor.from_image(im))
        return torch.stack(out)

    def respond(self, images: Sequence[Any], prompt: str, experts: Sequence[Expert] | None = None) -> ChatResponse:
        """Answer ``prompt`` about ``images`` (paths, ``MedicalImage``, (H, W) arrays in [0, 1] or (H, W, 3) uint8,
        or preprocessed (C, S, S) tensors), consulting ``experts`` (default: the chat's). Never raises for expert
        problems."""
        from medvit.data.imageload import read_checked

        if experts is not None:
            self.experts = list(experts)
        # a file is read once: its header (the modality line), the VLM's pixels and the experts all use that read
        images = [read_checked(im) if isinstance(im, str | Path) else im for im in images]
        msgs = [{"role": "user", "content": self.first_user_turn(prompt, len(images), images[0] if images else None)}]
        turns = [ChatTurn("user", prompt)]
        pix = self._pixels(images)
        calls = 0
        while True:
            reply = self.model.generate(msgs, pix, **self.gen)
            msgs.append({"role": "assistant", "content": reply})
            turns.append(ChatTurn("assistant", reply))
            if not self.experts:
                break
            try:
                trig = parse_trigger(reply, self.experts)
            except TriggerError as e:
                trig, err = None, str(e)
            else:
                err = None
            if trig is None and err is None:
                break
            if calls >= self.max_expert_calls:
                logger.info("expert call limit (%d) reached; returning the last reply", self.max_expert_calls)
                break
            calls += 1
            result: ExpertResult | None = None
            if trig is not None:
                try:
                    result = trig.expert.run(images, trig.args)
                except (ValueError, OSError, RuntimeError) as e:  # an expert failing on this image
                    err = f"The expert {trig.expert.name} could not run on this image: {e}"
            if result is not None and result.values.get("out_of_scope"):  # the expert declined: no findings
                turns.append(ChatTurn("error", result.text, result.name, result.args))
                text = result.text
            elif result is not None:
                turns.append(ChatTurn("expert", result.text, trig.expert.name, trig.args, result.overlay,
                                      result.caution))
                text = result.text
                if result.overlay is not None and IMAGE_TOKEN in text:
                    pix = torch.cat([pix, self._pixels([result.overlay])])
                else:
                    text = text.replace(IMAGE_TOKEN, "")
            else:
                turns.append(ChatTurn("error", err or ""))
                text = err or ""
            msgs.append({"role": "user", "content": f"{text} {FEEDBACK_PREFIX}{prompt}"})
        return ChatResponse(reply, turns, msgs, calls)


def load_chat(model_dir: str | Path, experts: Sequence[dict[str, Any]] | None = None,
              lm_path: str | Path | None = None, **chat_kw: Any) -> VLMChat:
    """A :class:`VLMChat` for a saved VLM (``VisionLanguageModel.load``; ``lm_path`` overrides the recorded LM
    directory, same weights) with the experts recorded in its ``vlm_config.json`` (key ``experts``:
    ``[{"kind": "cxr", "checkpoints": [...]}]``, written by the ``vila_m3`` task; paths relative to the model
    directory and kept inside it: :func:`medvit.vlm.paths.recorded_expert_specs`), or ``experts`` given here
    (same form, paths as given; ``[]`` = none). Each expert is built through the registry (kind ``expert``), so
    its checkpoints are verified as every medvit checkpoint is."""
    from medvit.vlm.experts import build_expert
    from medvit.vlm.model import VisionLanguageModel
    from medvit.vlm.paths import recorded_expert_specs

    vlm = VisionLanguageModel.load(model_dir, lm_path=lm_path)
    specs = experts if experts is not None else recorded_expert_specs(vlm.checkpoint_meta.get("experts") or [],
                                                                      Path(model_dir))
    built = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "kind" not in spec:
            raise ValueError(f"{model_dir}: experts[{i}] must be an object with a 'kind'")
        kw = {k: v for k, v in spec.items() if k != "kind"}
        built.append(build_expert(spec["kind"], **kw))
    return VLMChat(vlm, built, **chat_kw)
