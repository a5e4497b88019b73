"""A tiny randomly initialised causal LM + tokenizer written to a directory, offline (for tests and CPU smoke
runs; other test suites, e.g. RetinaVLM's, use it too).

``build_tiny_lm(dir, family="llama"|"qwen2")`` trains a byte-level BPE tokenizer with the ``tokenizers`` library
on a small built-in corpus (radiology words, the expert model cards, chat markers; byte-level, so any text
encodes), adds the family's chat special tokens, and saves a 2-layer ``LlamaForCausalLM`` / ``Qwen2ForCausalLM``
from a config with ``torch.manual_seed(seed)``. The directory loads with ``AutoModelForCausalLM`` /
``AutoTokenizer.from_pretrained``. Deterministic for a given seed; ~100 ms.
"""

from __future__ import annotations

from pathlib import Path

FAMILY_SPECIALS = {
    "llama": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
              "extra": ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"]},
    "qwen2": {"bos": None, "eos": "<|im_end|>", "extra": ["<|im_start|>", "<|endoftext|>"]},
}

_CORPUS = [
    "The lungs are clear. No pleural effusion or pneumothorax. The heart size is normal.",
    "There is a small left pleural effusion with blunting of the costophrenic angle.",
    "Cardiomegaly. A nodule in the right upper zone. Consolidation in the left lower zone with air bronchograms.",
    "A mass in the right mid zone. Plate-like atelectasis at the left base. Findings: impression: yes no",
    "Here is a list of available expert models: Modality: chest x-ray (CXR), Task: classification, Overview:",
    "Give the model <NAME(args)> when selecting a suitable expert model. Valid args are: None",
    "This looks like an chest x-ray. Let me first trigger <CXR()>. The resulting predictions are:",
    "atelectasis: yes cardiomegaly: no consolidation: no effusion: yes mass: no nodule: no pneumothorax: no",
    "The results are <image>. The colors in this image describe red: heart, green: lung right, blue: lung left.",
    "Use this result to respond to this prompt: Is there an effusion? Describe the image in detail. What is",
    "Which finding is present? Where is the nodule? Is this a CXR image? USER: ASSISTANT: system user assistant",
    "0 1 2 3 4 5 6 7 8 9 . , : ; ( ) < > ' \" ? ! - the a an of in on with and is are there this",
]


def build_tiny_lm(path: str | Path, family: str = "llama", seed: int = 0, hidden_size: int = 32,
                  num_layers: int = 2, vocab_size: int = 512) -> Path:
    """Write a tiny random LM + tokenizer to ``path`` (created); returns the path.

    Raises ``ValueError`` for an unknown ``family`` (llama | qwen2).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

    if family not in FAMILY_SPECIALS:
        raise ValueError(f"tiny LM family must be one of {sorted(FAMILY_SPECIALS)}, got {family!r}")
    sp = FAMILY_SPECIALS[family]
    specials = [t for t in [sp["bos"], sp["eos"], *sp["extra"], "<pad>"] if t]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=sp["bos"], eos_token=sp["eos"], pad_token="<pad>",
                                   additional_special_tokens=[t for t in sp["extra"]])
    fast.save_pretrained(path)

    n_vocab = len(fast)
    common = dict(vocab_size=n_vocab, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=1,
                  max_position_embeddings=2048, tie_word_embeddings=False,
                  eos_token_id=fast.convert_tokens_to_ids(sp["eos"]), pad_token_id=fast.pad_token_id,
                  bos_token_id=fast.convert_tokens_to_ids(sp["bos"]) if sp["bos"] else None)
    cfg = LlamaConfig(**common) if family == "llama" else Qwen2Config(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    return path
