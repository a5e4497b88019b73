"""Parameter-efficient tuning: one interface (config dataclass + ``inject``) for every method.

Registered methods (registry kind ``"peft"``, ``medvit list peft``): ``full``, ``linear``,
``vpt_shallow``, ``vpt_deep``, ``dvpt``, and through huggingface ``peft`` (imported lazily):
``lora``, ``loha``, ``lokr``, ``ia3``, ``adalora``, ``oft``, ``vera``, and ``spt`` (sensitivity-aware
allocation of LoRA + sparse tuning, :func:`medvit.peft.spt.apply_spt`), ``hst`` (hierarchical side-tuning),
``vivit`` (frozen spatial ViT + temporal transformer for 2D+t clips), ``still_moving`` (spatial LoRA trained on
still images + a train-time motion LoRA on a frozen temporal model).

    model = create_model("vit_base_patch16_224", pretrained=..., num_classes=5)
    model = apply_peft(model, "dvpt", {"rank": 20, "num_prompts": 50})
    ...train the parameters with requires_grad...
    save_adapter(model, "runs/x/adapter")              # only the trained tensors
    tuned = load_adapter("runs/x/adapter")             # base rebuilt, checksum checked
"""

from medvit.peft import (  # noqa: F401  (importing a method module registers it)
    adalora,
    dvpt,
    full,
    hst,
    ia3,
    linear,
    loha,
    lokr,
    lora,
    oft,
    spt,
    still_moving,
    vera,
    vivit,
    vpt,
)
from medvit.peft.base import (
    MethodConfig,
    PeftInfo,
    PeftMethod,
    apply_peft,
    get_method,
    list_methods,
    make_config,
    register_method,
    trainable_report,
)
from medvit.peft.checkpoint import AdapterError, adapter_state, load_adapter, save_adapter
from medvit.peft.hf import merge_adapter
from medvit.peft.targets import TARGET_GROUPS, resolve_targets

__all__ = [
    "TARGET_GROUPS",
    "AdapterError",
    "MethodConfig",
    "PeftInfo",
    "PeftMethod",
    "adapter_state",
    "apply_peft",
    "get_method",
    "list_methods",
    "load_adapter",
    "make_config",
    "merge_adapter",
    "register_method",
    "resolve_targets",
    "save_adapter",
    "trainable_report",
]
