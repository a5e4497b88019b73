"""README "Train your own": an NIH ChestX-ray14-layout folder -> `medvit finetune` -> `medvit eval` -> `medvit infer`
with the fine-tuned model (tiny sizes; phantoms written in NIH's layout)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from medvit.cli.main import main

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


def nih_layout(out: Path, n: int = 60) -> Path:
    """Chest phantoms re-laid out as NIH ChestX-ray14 (Data_Entry_2017.csv, split lists, images/)."""
    from medvit.data.phantom_cxr import CXR_LABELS
    from medvit.data.synth import write_synth

    tmp = out.with_name(out.name + "_src")
    write_synth("cxr", n, tmp, fmt="png", seed=0, image_size=48, masks=False)
    (out / "images").mkdir(parents=True)
    lines, train, test = [HEADER], [], []
    with open(tmp / "labels.csv") as f:
        for k, r in enumerate(csv.DictReader(f)):
            name = f"{k:08d}_000.png"
            shutil.copy(tmp / r["file"], out / "images" / name)
            found = "|".join(lab for lab in CXR_LABELS if r[lab] == "1") or "No Finding"
            lines.append(f"{name},{found},0,{k // 2},50,M,{r['view']},48,48,0.14,0.14,")
            (test if r["split"] == "test" else train).append(name)
    (out / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (out / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (out / "test_list.txt").write_text("\n".join(test) + "\n")
    return out


def test_nih_folder_to_finetuned_model_used_by_infer(tmp_path, capsys):
    from medvit.data.synth import write_synth

    data = nih_layout(tmp_path / "nih")
    run = tmp_path / "runs" / "my_cxr"
    tiny = ["image_size=32", "backbone_args={patch_size: 16, embed_dim: 32, depth: 1, num_heads: 2}",
            "dataset_args.val_fraction=0.3", "ood_fpr=0", "train.progress=false"]
    assert main(["finetune", "--preset", "mae_thorax/finetune_tiny_cpu", "--dataset", "nih_chestxray14", "--data",
                 str(data), "--epochs", "1", "--batch-size", "8", "--output", str(run), *tiny]) == 0
    contract = json.loads((run / "model" / "config.json").read_text())["contract"]
    assert len(contract["label_names"]) == 14 and contract["modalities"] == ["CR", "DX"]
    assert main(["eval", "--model", str(run / "model"), "--dataset", "nih_chestxray14", "--data", str(data),
                 "--split", "test", "--output", str(run / "eval")]) == 0
    assert (run / "eval" / "report.md").is_file()
    capsys.readouterr()
    write_synth("cxr", 3, tmp_path / "inbox", fmt="dicom", seed=5, image_size=40, masks=False)
    assert main(["infer", "-m", str(run / "model"), "-i", str(tmp_path / "inbox"), "-o", str(tmp_path / "res"),
                 "--workers", "0"]) == 0
    with open(tmp_path / "res" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(f"p_{contract['label_names'][0]}" in r for r in rows)
