"""Vision-language models on medvit backbones (VILA-M3 core: issue 16): :class:`VisionLanguageModel` (backbone →
projector → any local Hugging Face causal LM), chat templates, the conversation schema and dataset, and expert models
the VLM can call. Registers kinds ``projector`` and ``expert``. Curricula: RetinaVLM in ``medvit.vlm.retina``.
"""

from __future__ import annotations

from medvit.vlm.chat import ChatResponse, ChatTurn, VLMChat
from medvit.vlm.data import (
    ConversationDataset,
    ConversationError,
    PackedConversationDataset,
    VLMProcessor,
    collate_conversations,
    collate_packed,
    pack_by_length,
    read_conversations,
    validate_record,
)
from medvit.vlm.experts import Expert, ExpertResult, ModelCard, TriggerError, build_expert, model_cards, parse_trigger
from medvit.vlm.model import VisionLanguageModel, VLMConfig, lm_sha256, load_lm
from medvit.vlm.projectors import build_projector
from medvit.vlm.templates import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    TEMPLATES,
    ChatTemplate,
    encode_conversation,
    normalize_messages,
    template_for,
)

__all__ = ["ChatResponse", "ChatTemplate", "ChatTurn", "ConversationDataset", "ConversationError", "Expert",
           "ExpertResult", "IGNORE_INDEX", "IMAGE_TOKEN", "ModelCard", "PackedConversationDataset", "TEMPLATES",
           "TriggerError", "VLMChat", "VLMConfig", "VLMProcessor", "VisionLanguageModel", "build_expert",
           "build_projector", "collate_conversations", "collate_packed", "encode_conversation", "lm_sha256",
           "load_lm", "model_cards", "normalize_messages", "pack_by_length", "parse_trigger", "read_conversations",
           "template_for", "validate_record"]
