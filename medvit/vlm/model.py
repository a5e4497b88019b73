"""``VisionLanguageModel``: a medvit backbone → a registered projector → a Hugging Face causal LM.

Image tokens: the backbone's tokens ``(N, P + G, D_v)`` (P prefix tokens, G = grid patches) are selected
(``select``: ``patch`` = the G patch tokens, ``cls_patch`` = prefix + patch tokens, as VILA's
``mm_vision_select_feature``), optionally from an earlier block (``vision_layer``: -1 = the final normalised
tokens, -2 = the output of the penultimate block, VILA's ``mm_vision_select_layer``), optionally spatially
downsampled (``downsample`` = k: each k×k neighbourhood of patch tokens is concatenated into one token of
k²·D_v features, VILA's ``mlp_downsample``), then projected to the LM width. Each ``<image>`` in a user turn
becomes ``num_image_tokens`` placeholder positions whose input embeddings are replaced by the projected
image tokens (LLaVA's splice), images in the order they appear; a conversation may hold several images.

Checkpoints (:meth:`save` / :meth:`load`): ``vlm_config.json`` (format ``medvit-vlm/1``: the
:class:`VLMConfig`, the LM directory and the SHA-256 of its weight files, what was trained),
``trainable.safetensors`` (projector; vision encoder unless it is a frozen verified checkpoint; the LM's
weights when the LM was fully tuned) and ``lm_adapter/`` (a ``peft`` LoRA adapter, adapter weights only).
A vision checkpoint (and any expert checkpoints named in ``extra["experts"]``) is copied into the model directory
(``vision/``, ``experts/…``) and recorded relative to it, so the directory can be moved or copied anywhere; the LM
is recorded by absolute path and SHA-256 (``load(lm_path=…)`` / ``medvit chat --lm DIR`` points at a moved copy).
Paths read from ``vlm_config.json`` must stay inside the model directory (:func:`medvit.vlm.paths.inside_model_dir`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvit.config import option
from medvit.io.hashing import cached_sha256_file
from medvit.io.jsonfile import json_type_name, read_json
from medvit.models import create_model, load_model
from medvit.models.checkpoint import read_safetensors, write_safetensors
from medvit.vlm.paths import CONFIG_NAME, VISION_DIR, bundle_checkpoint, bundle_expert_specs, inside_model_dir
from medvit.vlm.projectors import build_projector
from medvit.vlm.templates import ChatTemplate, encode_conversation, template_for

logger = logging.getLogger(__name__)

FORMAT = "medvit-vlm/1"
WEIGHTS_NAME = "trainable.safetensors"
ADAPTER_DIR = "lm_adapter"
SELECT_MODES = ("patch", "cls_patch")


@dataclass
class VLMConfig:
    """How to build a :class:`VisionLanguageModel` (all fields go into ``vlm_config.json``).

    lm_path: local Hugging Face causal-LM directory (``config.json`` + weights + tokenizer), or a folder
        holding ``gguf_file``. gguf_file: a GGUF file name inside ``lm_path`` (dequantised by transformers).
    backbone / backbone_args: a registered medvit backbone and its constructor overrides; or
        vision_checkpoint: a medvit checkpoint directory (architecture, weights and contract from there).
    select, vision_layer, downsample: image-token selection (module docstring).
    projector / projector_args: a registered projector (``linear``, ``mlp2x_gelu``, ``resampler``).
    image_size (pixels, square), in_chans, mean, std: image preprocessing (from the checkpoint's contract
        when ``vision_checkpoint`` is given and these are left None).
    template: chat template name (None = detected from the tokenizer).
    max_length: tokens per training sequence (longer ones are truncated by the dataset).
    """

    lm_path: str = option("", "local Hugging Face causal-LM directory (the vila_m3 task fills it from lm)")
    gguf_file: str | None = option(None, "GGUF file name inside lm_path")
    backbone: str = option("vit_tiny_patch16_224", "registered medvit backbone (when vision_checkpoint is None)")
    backbone_args: dict[str, Any] = option(default_factory=dict, help="backbone constructor overrides")
    vision_checkpoint: str | None = option(None, "medvit checkpoint directory used as the vision encoder")
    select: str = option("patch", '"patch" (patch tokens) or "cls_patch" (prefix + patch tokens)')
    vision_layer: int = option(-1, "-1 = final normalised tokens, -2 = output of the penultimate block")
    downsample: int = option(1, "k: concatenate k x k neighbouring patch tokens into one (VILA mlp_downsample)")
    projector: str = option("mlp2x_gelu", "registered projector: linear | mlp2x_gelu | resampler")
    projector_args: dict[str, Any] = option(default_factory=dict, help="projector arguments (resampler: "
                                            "num_queries, depth, num_heads, mlp_ratio)")
    image_size: int | None = option(None, "square input size in pixels (None = checkpoint contract / backbone)")
    in_chans: int | None = option(None, "input channels (None = checkpoint contract / backbone)")
    mean: list[float] | None = option(None, "normalisation mean (None = contract, else 0.5)")
    std: list[float] | None = option(None, "normalisation std (None = contract, else 0.25)")
    template: str | None = option(None, "chat template: llama3 | chatml | qwen2 | plain (None = from the tokenizer)")
    max_length: int = option(1024, "tokens per training sequence (longer ones are truncated)")




def gguf_name(gguf_file: Any, where: str = "gguf_file") -> str:
    """``gguf_file`` when it is a plain file name (the GGUF file inside ``lm_path``); ValueError naming ``where``
    for a path with a directory part, an absolute path or ``..`` (a value read from ``vlm_config.json`` never
    becomes a path outside the LM directory)."""
    if (not isinstance(gguf_file, str) or not gguf_file or gguf_file in (".", "..") or "\\" in gguf_file
            or Path(gguf_file).name != gguf_file):
        raise ValueError(f"{where}: must be a GGUF file name inside lm_path (no directory part), got "
                         f"{gguf_file!r:.80}")
    return gguf_file


def lm_files(lm_path: str | Path, gguf_file: str | None = None) -> list[Path]:
    """The files that define an LM's weights: the GGUF file, or ``config.json`` + ``*.safetensors`` / ``*.bin``.
    Raises ValueError for a ``gguf_file`` that is not a plain file name (:func:`gguf_name`)."""
    p = Path(lm_path)
    if gguf_file:
        return [p / gguf_name(gguf_file)]
    files = sorted([*p.glob("*.safetensors"), *p.glob("*.bin")])
    return [p / "config.json", *files]


def lm_sha256(lm_path: str | Path, gguf_file: str | None = None) -> str:
    """SHA-256 over the LM's weight-defining files (name + bytes, in sorted order); cached per (file, size,
    mtime) within the process. Raises ``FileNotFoundError`` naming a missing file."""
    h = hashlib.sha256()
    for f in lm_files(lm_path, gguf_file):
        if not f.is_file():
            raise FileNotFoundError(f"language model file not found: {f}")
        h.update(f.name.encode() + b"\0" + cached_sha256_file(f).encode())
    return h.hexdigest()


def load_lm(lm_path: str | Path, gguf_file: str | None = None, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(AutoModelForCausalLM, AutoTokenizer)`` from a local directory (never the hub: ``local_files_only``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(lm_path)
    if not p.is_dir():
        raise FileNotFoundError(f"language model directory not found: {p}")
    kw: dict[str, Any] = {"local_files_only": True}
    if gguf_file:
        kw["gguf_file"] = gguf_name(gguf_file)
    tok = AutoTokenizer.from_pretrained(p, **kw)
    lm = AutoModelForCausalLM.from_pretrained(p, dtype=dtype, **kw)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return lm, tok


def packed_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32,
                          boolean: bool = False) -> torch.Tensor:
    """Block-diagonal causal mask of packed rows: query i may attend key j iff j ≤ i and both belong to the same
    conversation (``segment_ids`` equal and > 0). Padding (segment 0) attends only to itself, so no attention
    row is empty. segment_ids: (B, L) long. Returns (B, 1, L, L): bool (True = attend; for SDPA) or ``dtype``
    additive (0 / dtype min; for eager attention), the 4D form transformers passes through unchanged."""
    seg = segment_ids
    n = seg.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=seg.device).tril()
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    allow = (same & causal) | torch.eye(n, dtype=torch.bool, device=seg.device)
    allow = allow[:, None]
    if boolean:
        return allow
    return torch.zeros(allow.shape, dtype=dtype, device=seg.device).masked_fill(~allow, torch.finfo(dtype).min)


class VisionLanguageModel(nn.Module):
    """medvit backbone → projector → causal LM (see module docstring).

    Attributes: ``vision`` (backbone), ``projector``, ``lm`` (transformers model, or a peft ``PeftModel``
    after :meth:`enable_lora`), ``tokenizer``, ``template`` (:class:`ChatTemplate`), ``num_image_tokens``.
    """

    def __init__(self, cfg: VLMConfig, lm: Any = None, tokenizer: Any = None):
        super().__init__()
        if cfg.select not in SELECT_MODES:
            raise ValueError(f"select must be one of {SELECT_MODES}, got {cfg.select!r}")
        if cfg.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {cfg.downsample}")
        self.cfg = cfg
        self.vision_from_checkpoint = False
        if cfg.vision_checkpoint:
            self.vision = load_model(cfg.vision_checkpoint)
            self.vision_from_checkpoint = True
            c = getattr(self.vision, "contract", None)
            if c is not None:
                cfg.image_size = cfg.image_size or int(c.input_size[0])
                cfg.in_chans = cfg.in_chans or int(c.in_chans)
                cfg.mean = cfg.mean or list(c.mean)
                cfg.std = cfg.std or list(c.std)
        else:
            self.vision = create_model(cfg.backbone, **cfg.backbone_args)
        args = getattr(self.vision, "model_args", {})
        cfg.image_size = int(cfg.image_size or args.get("img_size", 224))
        cfg.in_chans = int(cfg.in_chans or args.get("in_chans", 3))
        cfg.mean = list(cfg.mean or [0.5] * cfg.in_chans)
        cfg.std = list(cfg.std or [0.25] * cfg.in_chans)
        if lm is None:
            if not cfg.lm_path:
                raise ValueError("VLMConfig.lm_path is empty: name a local Hugging Face causal-LM directory")
            lm, tokenizer = load_lm(cfg.lm_path, cfg.gguf_file)
        self.lm = lm
        self.tokenizer = tokenizer
        self.template: ChatTemplate = template_for(tokenizer, cfg.template)
        grid = tuple(self.vision.patch_embed.grid_size)
        if len(grid) != 2:
            raise ValueError(f"the VLM takes 2D backbones; {cfg.backbone} has a token grid {grid}")
        if cfg.downsample > 1 and (grid[0] % cfg.downsample or grid[1] % cfg.downsample):
            raise ValueError(f"downsample={cfg.downsample} must divide the token grid {grid}")
        self.grid = grid
        n_prefix = int(getattr(self.vision, "num_prefix_tokens", 0))
        self.n_prefix = n_prefix if cfg.select == "cls_patch" else 0
        if self.n_prefix and cfg.downsample > 1:
            raise ValueError("select='cls_patch' cannot be combined with downsample > 1 (prefix tokens have no grid)")
        d_v = int(self.vision.embed_dim) * cfg.downsample**2
        d_lm = int(self.lm.config.get_text_config().hidden_size)
        self.projector = build_projector(cfg.projector, d_v, d_lm, **cfg.projector_args)
        n_vis = self.n_prefix + (grid[0] // cfg.downsample) * (grid[1] // cfg.downsample)
        self.num_image_tokens = int(self.projector.out_tokens(n_vis))
        self.lm_mode: str = "full"  # "full" | "lora"

    # ------------------------------------------------------------------ images
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised images → (N, num_image_tokens, D_lm) LM input embeddings."""
        v = self.vision
        if self.cfg.vision_layer == -1:
            t = v.forward_features(pixel_values)
        else:
            k = len(v.blocks) + 1 + self.cfg.vision_layer
            t = v.forward_until(pixel_values, k)
        prefix, patches = t[:, : v.num_prefix_tokens], t[:, v.num_prefix_tokens:]
        n_grid = self.grid[0] * self.grid[1]
        if patches.shape[1] != n_grid:
            raise ValueError(
                f"vision backbone {type(v).__name__} returned {patches.shape[1]} patch tokens at vision_layer="
                f"{self.cfg.vision_layer}, expected the {self.grid[0]}x{self.grid[1]} = {n_grid} patch grid: "
                "token-changing backbones (EViT keep rate < 1, LookupViT, ...) cannot feed a VLM projector")
        k = self.cfg.downsample
        if k > 1:
            n, _, d = patches.shape
            gh, gw = self.grid
            patches = patches.reshape(n, gh // k, k, gw // k, k, d).permute(0, 1, 3, 2, 4, 5)
            patches = patches.reshape(n, (gh // k) * (gw // k), k * k * d)
        tokens = torch.cat([prefix, patches], 1) if self.n_prefix else patches
        return self.projector(tokens)

    # ------------------------------------------------------------------ text + images
    def embed(self, input_ids: torch.Tensor, image_mask: torch.Tensor,
              pixel_values: torch.Tensor | None) -> torch.Tensor:
        """LM input embeddings with image tokens spliced in.

        input_ids: (B, L) long (values at image positions are ignored); image_mask: (B, L) bool, True at the
        ``num_image_tokens`` placeholder positions of each image; pixel_values: (N, C, H, W), the images of
        the batch in order of appearance (row-major over batch, then position). Returns (B, L, D_lm).
        Raises ``ValueError`` when the placeholder count differs from N × num_image_tokens.
        """
        emb_layer = self.lm.get_input_embeddings()
        emb = emb_layer(input_ids.masked_fill(image_mask, 0))
        n_slots = int(image_mask.sum())
        n_img = 0 if pixel_values is None else int(pixel_values.shape[0])
        if n_slots != n_img * self.num_image_tokens:
            raise ValueError(f"{n_slots} image placeholder tokens for {n_img} images x {self.num_image_tokens} "
                             "tokens each: every <image> needs exactly one image")
        if n_img:
            feats = self.encode_images(pixel_values.to(emb.dtype) if pixel_values.is_floating_point() else
                                       pixel_values).to(emb.dtype)
            emb = emb.masked_scatter(image_mask.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]))
        return emb

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_mask: torch.Tensor,
                pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None) -> Any:
        """Training/scoring forward. labels: (B, L) with -100 where no loss (non-assistant and image tokens).

        Packed rows (``medvit.vlm.data.collate_packed``): ``segment_ids`` (B, L) long, k ≥ 1 for the tokens of
        the k-th conversation of a row, 0 on padding, and ``position_ids`` (B, L) restarting per conversation;
        the LM then gets a block-diagonal causal 4D mask (:func:`packed_attention_mask`) instead of
        ``attention_mask``, so no token attends across a conversation boundary.
        Returns the transformers ``CausalLMOutputWithPast`` (``.loss`` = mean next-token CE over labelled
        tokens, ``.logits`` (B, L, V))."""
        emb = self.embed(input_ids, image_mask, pixel_values)
        if segment_ids is None:
            return self.lm(inputs_embeds=emb, attention_mask=attention_mask, labels=labels, position_ids=position_ids)
        impl = getattr(self.lm.config, "_attn_implementation", None) or "eager"
        mask = packed_attention_mask(segment_ids, emb.dtype, boolean=impl == "sdpa")
        return self.lm(inputs_embeds=emb, attention_mask=mask, labels=labels, position_ids=position_ids,
                       use_cache=False)

    # ------------------------------------------------------------------ generation
    def generate(self, messages: list[dict[str, Any]], images: torch.Tensor | None = None, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> str:
        """Reply to a conversation (its last turn is the user's).

        messages: role/content (or from/value) dicts, ``<image>`` marking where each image goes; images:
        (N, C, H, W) normalised (``medvit.vlm.data.VLMProcessor.load_image``), N = number of ``<image>``.
        temperature 0 = greedy; otherwise sampling with ``temperature`` and nucleus ``top_p`` (``seed`` makes
        it repeatable); at most ``max_new_tokens`` tokens (≥ 1). Returns the decoded reply without the
        end-of-turn marker.
        """
        ids = self.generate_ids(messages, images, max_new_tokens, temperature, top_p, seed)
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        for stop in {self.template.eos, self.tokenizer.eos_token or self.template.eos}:
            text = text.split(stop)[0]
        return text.strip()

    @torch.no_grad()
    def generate_ids(self, messages: list[dict[str, Any]], images: torch.Tensor | None = None,
                     max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                     seed: int | None = None) -> list[int]:
        """As :meth:`generate`, returning the new token ids (end-of-turn included when produced)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        enc = encode_conversation(self.tokenizer, self.template, messages, self.num_image_tokens,
                                  add_generation_prompt=True)
        ids = torch.tensor([enc["input_ids"]])
        mask = torch.tensor([enc["image_mask"]])
        was_training = self.training
        self.eval()
        try:
            emb = self.embed(ids, mask, images)
            eos = [self.tokenizer.convert_tokens_to_ids(self.template.eos)]
            if self.tokenizer.eos_token_id is not None:
                eos.append(self.tokenizer.eos_token_id)
            gen_kw: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": int(max_new_tokens),
                                      "eos_token_id": sorted(set(e for e in eos if e is not None and e >= 0)),
                                      "pad_token_id": self.tokenizer.pad_token_id}
            if temperature > 0:
                gen_kw.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
                if seed is not None:
                    torch.manual_seed(seed)
            else:
                gen_kw.update(temperature=None, top_p=None, top_k=None)
            out = self.lm.generate(inputs_embeds=emb, attention_mask=torch.ones_like(ids), **gen_kw)
        finally:
            self.train(was_training)
        return [int(t) for t in out[0]]

    # ------------------------------------------------------------------ trainable parts
    def enable_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                    target_modules: list[str] | None = None) -> None:
        """Wrap the LM in a ``peft`` LoRA (Hu et al. 2021): base LM weights frozen, adapters trainable.
        target_modules default: the attention and MLP projections of Llama/Qwen2 blocks."""
        from peft import LoraConfig, get_peft_model

        if self.lm_mode == "lora":
            return
        tm = target_modules or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        self.lm = get_peft_model(self.lm, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                                     target_modules=tm, task_type="CAUSAL_LM"))
        self.lm_mode = "lora"

    def set_trainable(self, vision: bool, projector: bool, lm: bool) -> None:
        """Freeze/unfreeze the three parts. With LoRA enabled, ``lm=True`` trains only the adapters."""
        self.vision.requires_grad_(vision)
        self.projector.requires_grad_(projector)
        if self.lm_mode == "lora":
            for n, p in self.lm.named_parameters():
                p.requires_grad_(lm and "lora_" in n)
        else:
            self.lm.requires_grad_(lm)

    def trainable_parts(self) -> dict[str, bool]:
        """Which parts have trainable parameters now."""
        return {name: any(p.requires_grad for p in getattr(self, name).parameters())
                for name in ("vision", "projector", "lm")}

    # ------------------------------------------------------------------ checkpoints
    def save(self, out_dir: str | Path, trained: dict[str, bool] | None = None, extra: dict[str, Any] | None = None
             ) -> Path:
        """Write ``vlm_config.json`` + ``trainable.safetensors`` (+ ``lm_adapter/``) to ``out_dir``.

        trained: which parts were trained so far (default: those trainable now); the vision encoder is saved
        unless it is a frozen, untrained verified checkpoint; the full LM only when it was tuned without LoRA.
        Raises ``ValueError`` when ``out_dir`` is or lies inside the vision checkpoint or an expert checkpoint
        (:func:`medvit.vlm.paths.refuse_output_inside`; nothing is written then).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cfg_d = asdict(self.cfg)
        extra = dict(extra or {})
        # the checkpoints travel with the model (relocatable); copied first, so an output folder inside one of
        # them is refused (paths.refuse_output_inside) before anything is written
        if self.cfg.vision_checkpoint:
            cfg_d["vision_checkpoint"] = bundle_checkpoint(self.cfg.vision_checkpoint, out, VISION_DIR,
                                                           "vision_checkpoint")
        if extra.get("experts"):
            extra["experts"] = bundle_expert_specs(extra["experts"], out)
        trained = dict(trained or self.trainable_parts())
        sd: dict[str, torch.Tensor] = {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        save_vision = trained.get("vision", False) or not self.vision_from_checkpoint
        if save_vision:
            sd.update({f"vision.{k}": v for k, v in self.vision.state_dict().items()})
        if self.lm_mode == "full" and trained.get("lm", False):
            sd.update({f"lm.{k}": v for k, v in self.lm.state_dict().items()})
        write_safetensors(out / WEIGHTS_NAME, {k: v.detach().contiguous().cpu() for k, v in sd.items()})
        if self.lm_mode == "lora":
            self.lm.save_pretrained(out / ADAPTER_DIR)
        meta = {
            "format": FORMAT,
            "config": cfg_d,
            "lm": {"path": str(Path(self.cfg.lm_path).resolve()), "gguf_file": self.cfg.gguf_file,
                   "sha256": lm_sha256(self.cfg.lm_path, self.cfg.gguf_file),
                   "model_type": getattr(self.lm.config, "model_type", None)},
            "lm_mode": self.lm_mode,
            "trained": trained,
            "saved": {"vision": save_vision, "lm_full": self.lm_mode == "full" and bool(trained.get("lm"))},
            "num_image_tokens": self.num_image_tokens,
            "template": self.template.name,
            **extra,
        }
        (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path, lm_path: str | Path | None = None, lora_trainable: bool = False,
             check_lm_hash: bool = True, vision_checkpoint: str | Path | None = None) -> VisionLanguageModel:
        """Rebuild a saved VLM from wherever its directory now is.

        ``lm_path`` overrides the recorded LM directory (key ``lm.path``; the same weights are expected: its
        SHA-256 is checked). The vision checkpoint recorded relative to the model directory is read from there
        (:func:`medvit.vlm.paths.inside_model_dir`); ``vision_checkpoint`` names one explicitly (checkpoints
        saved before the vision encoder was bundled recorded a path outside the directory).

        Raises ``FileNotFoundError`` (missing files; a missing LM names ``--lm`` / ``lm_path``), ``ValueError``
        naming ``vlm_config.json`` and the key for a wrong format, a path outside the model directory or an LM
        whose SHA-256 differs from the recorded one (``check_lm_hash=False`` to allow).
        """
        p = Path(path)
        cf = p / CONFIG_NAME
        meta = read_json(cf, format_id=FORMAT, missing="not a medvit VLM checkpoint")
        if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("lm") or {}, dict):
            bad = "config" if not isinstance(meta.get("config"), dict) else "lm"
            raise ValueError(f"{cf}: key {bad!r} must be an object, got {json_type_name(meta.get(bad))}")
        cfg_d = dict(meta["config"])
        lm_meta = meta.get("lm") or {}
        override = ("pass the same language model with `medvit chat --lm DIR` "
                    "(VisionLanguageModel.load(..., lm_path=DIR))")
        if lm_path is not None:
            cfg_d["lm_path"] = str(lm_path)
        else:
            cfg_d["lm_path"] = str(lm_meta.get("path") or cfg_d.get("lm_path") or "")
            if not Path(cfg_d["lm_path"]).is_dir():
                raise FileNotFoundError(f"{cf}: the language model recorded in key 'lm.path' ({cfg_d['lm_path']}) "
                                        f"is not there (moved or on another machine); {override}, SHA-256 "
                                        f"{str(lm_meta.get('sha256', '?'))[:12]}…")
        if cfg_d.get("gguf_file") is not None:
            gguf_name(cfg_d["gguf_file"], f"{cf}: key 'config.gguf_file'")
        if vision_checkpoint is not None:
            cfg_d["vision_checkpoint"] = str(vision_checkpoint)
        elif cfg_d.get("vision_checkpoint"):
            vc = inside_model_dir(p, cfg_d["vision_checkpoint"], "config.vision_checkpoint")
            if not vc.is_dir():
                raise FileNotFoundError(f"{cf}: key 'config.vision_checkpoint': {vc} not found; pass the vision "
                                        "checkpoint with VisionLanguageModel.load(..., vision_checkpoint=DIR)")
            cfg_d["vision_checkpoint"] = str(vc)
        cfg = VLMConfig(**cfg_d)
        if check_lm_hash:
            got = lm_sha256(cfg.lm_path, cfg.gguf_file)
            if got != lm_meta.get("sha256"):
                raise ValueError(f"{cf}: key 'lm.sha256' records {str(lm_meta.get('sha256'))[:12]}…, but the "
                                 f"language model at {cfg.lm_path} hashes to {got[:12]}… (a different LM); {override}")
        model = cls(cfg)
        sd = read_safetensors(p / WEIGHTS_NAME)
        parts: dict[str, dict[str, torch.Tensor]] = {"projector": {}, "vision": {}, "lm": {}}
        for k, v in sd.items():
            head, _, rest = k.partition(".")
            if head not in parts:
                raise ValueError(f"{p / WEIGHTS_NAME}: unexpected tensor {k!r}")
            parts[head][rest] = v
        model.projector.load_state_dict(parts["projector"], strict=True)
        if parts["vision"]:
            model.vision.load_state_dict(parts["vision"], strict=True)
        if parts["lm"]:
            model.lm.load_state_dict(parts["lm"], strict=True)
        if meta.get("lm_mode") == "lora":
            from peft import PeftModel

            model.lm = PeftModel.from_pretrained(model.lm, p / ADAPTER_DIR, is_trainable=lora_trainable)
            model.lm_mode = "lora"
        model.checkpoint_meta = meta
        return model


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (of those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


