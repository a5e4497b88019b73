"""Test material for segmentation/reading: a tiny random segmentation checkpoint with a segmentation contract."""

from __future__ import annotations

from pathlib import Path

SEG_LABELS = ["lung_right", "lung_left", "heart"]


def make_seg_model(out: Path, seg_type: str = "BINARY", size: int = 32, seed: int = 0) -> Path:
    """Save a tiny random ``vit_linear_seg`` checkpoint whose contract names 3 chest labels (CR/DX scope)."""
    import torch

    import medvit
    from medvit.models import WeightContract, save_checkpoint
    from medvit.models.segmentation import SegmentationContract, phantom_segment_labels

    torch.manual_seed(seed)
    m = medvit.create_model("vit_linear_seg", num_labels=len(SEG_LABELS),
                            backbone_args=dict(img_size=size, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                                               in_chans=1))
    torch.nn.init.normal_(m.decoder.weight, std=0.3)
    seg = SegmentationContract(phantom_segment_labels(SEG_LABELS), seg_type=seg_type)
    contract = WeightContract(in_chans=1, input_size=(size, size), mean=(0.5,), std=(0.25,),
                              segmentation=seg.to_dict(), thresholds=[0.5, 0.45, 0.55], modalities=["CR", "DX"],
                              version="test-1", source="tests/reading random weights")
    return save_checkpoint(m, out, contract=contract)
