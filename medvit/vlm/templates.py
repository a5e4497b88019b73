"""Chat templates as text segments, so the loss can be masked to assistant turns exactly.

A conversation is a list of ``{"role": "system"|"user"|"assistant", "content": str}`` messages (LLaVA/VILA's
``from: human|gpt`` and an ``expert`` role are mapped by :func:`normalize_messages`; consecutive messages of
one role are merged, which is how VILA-M3's ``squash_expert_messages_into_user`` turns an expert result into
one user turn). :meth:`ChatTemplate.segments` returns ``[(text, is_assistant)]`` pieces whose concatenation is
the model's prompt in its family's format; ``is_assistant`` pieces (the reply plus its end-of-turn marker) are
the ones trained on.

Formats (as in the model families' own ``chat_template``):

- ``llama3``: ``<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`` …
- ``chatml`` (Qwen2, SmolLM2): ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` …
- ``plain``: ``{system}\\n\\nUSER: {content}\\nASSISTANT: {content}{eos}\\n`` (Vicuna-style fallback).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IMAGE_TOKEN = "<image>"  # marks where an image goes in a message
IGNORE_INDEX = -100  # label of tokens without loss (transformers/PyTorch CE ignore_index)

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "system": "system", "expert": "user"}


def normalize_messages(messages: Sequence[dict[str, Any]], where: str = "conversation") -> list[dict[str, str]]:
    """Map ``from``/``value`` (LLaVA) or ``role``/``content`` messages to ``role``/``content``, roles to
    system/user/assistant (``expert`` → user), merging consecutive messages of one role with a newline.

    Raises ``ValueError`` naming ``where`` and the message index for an unknown role or a non-string text.
    """
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"{where}: message {i} is not an object")
        role = m.get("role", m.get("from"))
        text = m.get("content", m.get("value"))
        if role not in ROLE_ALIASES:
            raise ValueError(f"{where}: message {i} has unknown role {role!r}; expected one of {sorted(ROLE_ALIASES)}")
        if not isinstance(text, str):
            raise ValueError(f"{where}: message {i} ('{role}') has no text (key 'value' or 'content')")
        role = ROLE_ALIASES[role]
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n" + text
        else:
            out.append({"role": role, "content": text})
    if any(m["role"] == "system" for m in out[1:]):
        raise ValueError(f"{where}: a system message may only come first")
    return out


@dataclass(frozen=True)
class ChatTemplate:
    """One chat format. ``name``: llama3 | chatml | plain; ``eos``: the end-of-turn string of the format
    (also the generation stop string); ``default_system``: system text used when a conversation has none."""

    name: str
    eos: str
    default_system: str | None = None

    def _turn(self, role: str, content: str) -> tuple[str, str]:
        """(header, content + end) of one turn."""
        if self.name == "llama3":
            return f"<|start_header_id|>{role}<|end_header_id|>\n\n", content + "<|eot_id|>"
        if self.name == "chatml":
            return f"<|im_start|>{role}\n", content + "<|im_end|>\n"
        if role == "system":
            return "", content + "\n\n"
        if role == "user":
            return "USER: ", content + "\n"
        return "ASSISTANT: ", content + self.eos + "\n"

    def segments(self, messages: Sequence[dict[str, Any]],
                 add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
        """``[(text, is_assistant)]`` for the conversation; with ``add_generation_prompt`` the assistant header
        is appended (the prompt for :meth:`VisionLanguageModel.generate`)."""
        msgs = normalize_messages(messages)
        if self.default_system and (not msgs or msgs[0]["role"] != "system"):
            msgs = [{"role": "system", "content": self.default_system}, *msgs]
        segs: list[tuple[str, bool]] = [("<|begin_of_text|>", False)] if self.name == "llama3" else []
        for m in msgs:
            head, body = self._turn(m["role"], m["content"])
            is_asst = m["role"] == "assistant"
            if is_asst and self.name == "chatml":  # the newline after <|im_end|> is not predicted
                segs += [(head, False), (body[:-1], True), ("\n", False)]
            elif is_asst and self.name == "plain":
                segs += [(head, False), (body[:-1], True), ("\n", False)]
            else:
                segs += [(head, False), (body, is_asst)]
        if add_generation_prompt:
            segs.append((self._turn("assistant", "")[0], False))
        return [(t, a) for t, a in segs if t]

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        """The whole prompt as one string."""
        return "".join(t for t, _ in self.segments(messages, add_generation_prompt))


TEMPLATES = {
    "llama3": ChatTemplate("llama3", "<|eot_id|>"),
    "chatml": ChatTemplate("chatml", "<|im_end|>"),
    "qwen2": ChatTemplate("chatml", "<|im_end|>"),
    "plain": ChatTemplate("plain", "</s>"),
}


def template_for(tokenizer: Any, name: str | None = None) -> ChatTemplate:
    """The template ``name`` (llama3 | chatml | qwen2 | plain), or detected from the tokenizer's vocabulary
    (``<|start_header_id|>`` → llama3, ``<|im_start|>`` → chatml, else plain with the tokenizer's EOS)."""
    if name:
        if name not in TEMPLATES:
            raise ValueError(f"unknown chat template {name!r}; known: {', '.join(TEMPLATES)}")
        t = TEMPLATES[name]
    else:
        vocab = tokenizer.get_vocab()
        t = (TEMPLATES["llama3"] if "<|start_header_id|>" in vocab else TEMPLATES["chatml"] if "<|im_start|>" in vocab
             else TEMPLATES["plain"])
    if t.name == "plain" and getattr(tokenizer, "eos_token", None):
        t = ChatTemplate("plain", tokenizer.eos_token)
    return t


def encode_conversation(tokenizer: Any, template: ChatTemplate, messages: Sequence[dict[str, Any]],
                        num_image_tokens: int, add_generation_prompt: bool = False,
                        max_length: int | None = None) -> dict[str, Any]:
    """Tokenise a conversation with image placeholders and assistant-only labels.

    Returns ``input_ids`` (list[int], placeholder positions hold the pad id), ``labels`` (-100 outside assistant
    text), ``image_mask`` (list[bool]), ``n_images`` (images whose block survived truncation), ``truncated``.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids: list[int] = []
    labels: list[int] = []
    img: list[bool] = []
    for text, is_asst in template.segments(messages, add_generation_prompt):
        parts = text.split(IMAGE_TOKEN)
        for j, part in enumerate(parts):
            if j:
                ids += [pad] * num_image_tokens
                labels += [IGNORE_INDEX] * num_image_tokens
                img += [True] * num_image_tokens
            if part:
                t = tokenizer(part, add_special_tokens=False)["input_ids"]
                ids += t
                labels += t if is_asst else [IGNORE_INDEX] * len(t)
                img += [False] * len(t)
    truncated = False
    if max_length is not None and len(ids) > max_length:
        truncated = True
        cut = max_length
        # never cut through an image block: cut before the block's first token
        if img[cut - 1] and cut < len(img) and img[cut]:
            while cut > 0 and img[cut - 1]:
                cut -= 1
        ids, labels, img = ids[:cut], labels[:cut], img[:cut]
    return {"input_ids": ids, "labels": labels, "image_mask": img,
            "n_images": sum(img) // max(num_image_tokens, 1), "truncated": truncated}
