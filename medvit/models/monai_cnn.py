"""``monai_cnn``: a MONAI CNN (``monai.networks.nets``) as a registered medvit model, so a CNN trains, saves and loads
through the same task/checkpoint path as a ViT — the CNN teacher of DeiT-LT (Rangwani et al., CVPR 2024, §4).

``net`` names the MONAI class (``DenseNet``, ``DenseNet121``, ``ResNet``, ``EfficientNetBN``, ...) and
``net_args`` its own arguments; medvit's ``in_chans`` / ``num_classes`` / ``spatial_dims`` are passed under the
class's names (``in_channels``/``out_channels`` or ``n_input_channels``/``num_classes``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from medvit.models.factory import register_backbone

_IN = ("in_channels", "n_input_channels")
_OUT = ("out_channels", "num_classes")


class MonaiCNN(nn.Module):
    """A ``monai.networks.nets`` classifier: (B, C, *S) -> logits (B, K).

    Args:
        net: class name in ``monai.networks.nets``.
        net_args: that class's other arguments (e.g. ``{init_features: 16, growth_rate: 8, block_config: [2, 2,
            2]}``).
        img_size: training size (recorded for the contract; CNNs take any size).
        patch_size: 1 (any image size is divisible; kept so task checks on the patch grid pass).
        in_chans, num_classes, spatial_dims: passed under the class's argument names.
        global_pool, drop_path_rate: accepted for the fine-tuning task's uniform call and ignored (CNN pooling and
            no stochastic depth).
    Raises:
        ValueError: an unknown class name or a class without channel/class arguments.
    """

    def __init__(self, net: str = "DenseNet121", net_args: dict[str, Any] | None = None, img_size: int = 224,
                 patch_size: int = 1, in_chans: int = 1, num_classes: int = 2, spatial_dims: int = 2,
                 global_pool: str = "avg", drop_path_rate: float = 0.0):
        super().__init__()
        from monai.networks import nets

        cls = getattr(nets, net, None)
        if not isinstance(cls, type) or not issubclass(cls, nn.Module):
            raise ValueError(f"monai_cnn: net {net!r} is not a class in monai.networks.nets (e.g. DenseNet121, "
                             "DenseNet, ResNet, EfficientNetBN)")
        params = inspect.signature(cls.__init__).parameters
        in_key = next((k for k in _IN if k in params), None)
        out_key = next((k for k in _OUT if k in params), None)
        if in_key is None or out_key is None:
            raise ValueError(f"monai_cnn: {net} takes no input-channel / class-count argument")
        args = {**dict(net_args or {}), in_key: in_chans, out_key: max(num_classes, 1)}
        if "spatial_dims" in params:
            args["spatial_dims"] = spatial_dims
        self.net = cls(**args)
        self.num_classes, self.in_chans, self.spatial_dims = num_classes, in_chans, spatial_dims
        self.img_size, self.patch_size = img_size, patch_size
        if num_classes == 0:
            self.reset_classifier(0)

    def _last_linear(self) -> tuple[nn.Module, str, nn.Linear]:
        found = [(n, m) for n, m in self.net.named_modules() if isinstance(m, nn.Linear)]
        if not found:
            raise ValueError("monai_cnn: the network has no final nn.Linear to replace")
        name, lin = found[-1]
        parent = self.net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else self.net
        return parent, name.rsplit(".", 1)[-1], lin

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        """A fresh final linear layer with ``num_classes`` outputs (0: identity, features out)."""
        parent, attr, lin = self._last_linear()
        new: nn.Module = nn.Linear(lin.in_features, num_classes, device=lin.weight.device) if num_classes > 0 \
            else nn.Identity()
        if isinstance(new, nn.Linear):
            nn.init.trunc_normal_(new.weight, std=2e-5)
            nn.init.zeros_(new.bias)
        else:  # keep the feature width discoverable
            new.in_features = lin.in_features  # type: ignore[attr-defined]
        setattr(parent, attr, new)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


register_backbone("monai_cnn", MonaiCNN, description="a MONAI CNN classifier (monai.networks.nets; net=, net_args=)",
                  interface="classifier", net="DenseNet121", patch_size=1)
