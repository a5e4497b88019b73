"""Experts: trigger parsing table, exact result formats, model cards, CXR ensemble, MONAI-bundle segmentation
expert, and the agent loop (VLMChat.respond) with scripted replies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medvit.vlm.chat import VLMChat
from medvit.vlm.experts import (
    CXRExpert,
    Expert,
    ExpertResult,
    ModelCard,
    SegmentationExpert,
    TriggerError,
    build_expert,
    cxr_text,
    model_cards,
    ood_text,
    parse_trigger,
    segmentation_text,
)

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "demo" / "model"


class Echo(Expert):
    def __init__(self, name, valid=None):
        self.name = name
        self.model_card = ModelCard("CT", "segmentation", "test expert", "n/a", valid)
        self.calls = []

    def run(self, images, args=""):
        self.calls.append(args)
        return ExpertResult(f"{self.name} says {args or 'ok'}", None, self.name, args)


EXPERTS = [Echo("CXR"), Echo("VISTA3D", ("everything", "hepatic tumor"))]


@pytest.mark.parametrize("text,expect", [
    ("The lungs are clear.", None),
    ("This looks like an chest x-ray. Let me first trigger <CXR()>.", ("CXR", "")),
    ("<VISTA3D(hepatic tumor)>", ("VISTA3D", "hepatic tumor")),
    ("<VISTA3D('everything')>", ("VISTA3D", "everything")),
    ("<image> then <CXR()>", ("CXR", "")),
    ("<CXR(None)>", ("CXR", "")),
    ("<CXR()> and <VISTA3D(everything)>", "Found 2 expert calls"),
    ("<BRATS()>", "There is no expert named BRATS"),
    ("<CXR>", "is not an expert call"),
    ("<CXR(left lung)>", "takes no arguments"),
    ("<VISTA3D(liver)>", "does not accept 'liver'"),
])
def test_trigger_parsing_table(text, expect):
    if expect is None:
        assert parse_trigger(text, EXPERTS) is None
    elif isinstance(expect, tuple):
        t = parse_trigger(text, EXPERTS)
        assert (t.expert.name, t.args) == expect
    else:
        with pytest.raises(TriggerError, match=expect):
            parse_trigger(text, EXPERTS)


def test_mentioned_by_reference_rule():
    cxr = EXPERTS[0]
    assert cxr.mentioned_by("Let me trigger <CXR()>.")
    assert not cxr.mentioned_by("<CXR()> <CXR()>")  # exactly one match
    assert not cxr.mentioned_by("<VISTA3D(everything)>")
    assert not cxr.mentioned_by("no trigger")


def test_result_formats_exact():
    assert cxr_text({"Effusion": True, "Atelectasis": False, "Lung_Opacity": True}) == (
        "The resulting predictions are:\natelectasis: no\neffusion: yes\nlung opacity: yes\n.")
    assert segmentation_text([("red", "heart"), ("green", "lung right")]) == (
        "The results are <image>. The colors in this image describe red: heart, green: lung right. ")
    assert model_cards(EXPERTS) == (
        "Here is a list of available expert models:\n"
        "<CXR(args)> Modality: CT, Task: segmentation, Overview: test expert, Accuracy: n/a, Valid args are: None\n"
        "<VISTA3D(args)> Modality: CT, Task: segmentation, Overview: test expert, Accuracy: n/a, Valid args are: "
        "'everything', or 'hepatic tumor'\n"
        "Give the model <NAME(args)> when selecting a suitable expert model.\n")


def test_cxr_expert_ensemble_on_demo_model():
    from medvit.data.phantom_cxr import ChestPhantomGenerator

    ex = build_expert("cxr", checkpoints=[DEMO, DEMO], class_models={"Pneumothorax": [1]})
    assert ex.class_models["Pneumothorax"] == [1] and ex.class_models["Effusion"] == [0, 1]
    ph = ChestPhantomGenerator(image_size=128, seed=3).sample(5)
    res = ex.run([ph.image])
    single = CXRExpert([DEMO]).run([ph.image])
    assert res.values["probabilities"] == pytest.approx(single.values["probabilities"], abs=1e-6)
    assert res.text == cxr_text(res.values["predictions"]) + ood_text(res.values["ood"])
    lines = cxr_text(res.values["predictions"]).split("\n")
    assert lines[0] == "The resulting predictions are:" and lines[-1] == "."
    assert lines[1:-1] == [f"{c.lower()}: {'yes' if res.values['predictions'][c] else 'no'}"
                           for c in sorted(res.values["predictions"])]
    with pytest.raises(ValueError, match="unknown class 'Hernia'"):
        CXRExpert([DEMO], class_models={"Hernia": [0]})


def test_cxr_expert_reports_the_checkpoints_ood_flag():
    """The CXR result carries the demo checkpoint's OOD score/flag, equal to what `medvit infer`'s Predictor computes
    for the same input; a flagged image's text ends with the caution, an in-distribution phantom keeps the exact
    reference text. Breaks if the expert drops the reference, scores other features or ignores the threshold."""
    from pydicom.data import get_testdata_file

    from medvit.cli import demo_cmd
    from medvit.data.phantom_datasets import PhantomDataset
    from medvit.infer.predictor import Predictor, load_for_inference
    from medvit.io import read_image
    from medvit.nn.precision import DEFAULT_PRECISION
    from medvit.vlm.experts import OOD_NOTE

    ex = CXRExpert([DEMO, DEMO])
    model, contract, _ = load_for_inference(DEMO)
    pred = Predictor(model, DEFAULT_PRECISION)  # as `medvit infer` runs it by default (and the expert does)
    thr = contract.ood["threshold"]
    ct = read_image(get_testdata_file("CT_small.dcm")).pixels.astype(np.float32).squeeze()
    ct = (ct - ct.min()) / (ct.max() - ct.min())  # an array: no header, so no scope refusal, only the OOD check
    ds = PhantomDataset("cxr", split="all", n=6, seed=11, image_size=demo_cmd.pipeline_draw_size(),
                        **demo_cmd.pipeline_knobs())  # the expert's training distribution
    seen = {True: 0, False: 0}
    for img in [ct] + [ds.phantom(i).image for i in range(6)]:
        res = ex.run([img])
        x, _ = ex.pres[0].from_unit(np.asarray(img, dtype=np.float32))
        _, want = pred.predict_with_ood(x[None])
        for o in res.values["ood"]:
            assert o["score"] == pytest.approx(float(want[0]), rel=1e-4) and o["threshold"] == pytest.approx(thr)
            assert o["flag"] == (o["score"] >= thr)
        flag = res.values["ood_flag"]
        seen[flag] += 1
        if flag:
            assert res.text.startswith(cxr_text(res.values["predictions"]) + " Caution: this image is outside")
            assert res.text.endswith(OOD_NOTE.format(score=res.values["ood"][0]["score"], threshold=thr,
                                                     which="; 2 of 2 models"))
        else:
            assert res.text == cxr_text(res.values["predictions"])
    assert seen[True] >= 1 and seen[False] >= 3  # the CT slice is flagged; most fresh phantoms are not
    assert ex.run([ct]).values["ood_flag"] is True
    two = [None, {"score": 3.0, "threshold": 1.5, "flag": True}, {"score": 1.0, "threshold": 1.5, "flag": False}]
    assert ood_text([None, None]) == "" and "(OOD score 3.00 >= threshold 1.50; 1 of 2 models)" in ood_text(two)


def test_cxr_expert_predicts_as_medvit_infer_at_its_default_precision(tmp_path, monkeypatch):
    """One DICOM: CXRExpert.run gives the probabilities and OOD score/flag `medvit infer` writes at its default
    precision (auto, bf16 here: the CPU is made to report native bf16), and records that precision. Before, the
    expert ran fp32 while infer and the viewer ran bf16 (breaker B11: |dp| up to 1.5e-3, OOD score off by 0.2)."""
    from medvit.cli import demo_cmd
    from medvit.data.phantom_datasets import PhantomDataset
    from medvit.infer import InferConfig, run_inference
    from medvit.io.writers import write_dicom_dx
    from medvit.nn import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    ph = PhantomDataset("cxr", split="all", n=1, seed=11, image_size=demo_cmd.pipeline_draw_size(),
                        **demo_cmd.pipeline_knobs()).phantom(0)
    dcm = write_dicom_dx(tmp_path / "in" / "img.dcm", np.round(ph.image * 4095).astype(np.uint16), dict(ph.meta),
                         window=(2048.0, 4096.0))
    out = tmp_path / "out"
    run_inference(InferConfig(model=str(DEMO), input=str(dcm), output=str(out), workers=0, batch_size=1,
                              progress=False))
    (rec,) = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    run = json.loads((out / "run.json").read_text())
    ex = CXRExpert([DEMO])
    res = ex.run([dcm])
    assert ex.precision == res.values["precision"] == run["execution"]["precision"] == "bf16"
    assert res.values["probabilities"] == pytest.approx(rec["probabilities"], abs=1e-6)
    (o,) = res.values["ood"]
    assert o["score"] == pytest.approx(rec["ood_score"], abs=1e-4) and o["flag"] == rec["ood_flag"]
    assert res.values["predictions"] == {k: k in rec["positive_findings"] for k in rec["probabilities"]}
    with pytest.raises(ValueError, match="precision must be auto, fp32 or bf16"):
        CXRExpert([DEMO], precision="int8")


def _write_bundle(d: Path) -> Path:
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 4, 4, 4, 4, 4))
    (d / "configs").mkdir(parents=True)
    (d / "models").mkdir()
    torch.save(net.state_dict(), d / "models" / "model.pt")
    (d / "configs" / "inference.json").write_text(json.dumps({"network_def": {
        "_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3,
        "features": [4, 4, 4, 4, 4, 4]}}))
    (d / "configs" / "metadata.json").write_text(json.dumps({"network_data_format": {
        "inputs": {"image": {"num_channels": 1, "spatial_shape": [32, 32]}},
        "outputs": {"pred": {"channel_def": {"0": "background", "1": "heart", "2": "lung_right"}}}}}))
    return d


def test_monai_bundle_segmentation_expert(tmp_path):
    b = _write_bundle(tmp_path / "bundle")
    ex = build_expert("monai_bundle", bundle_dir=b, name="SEG")
    img = np.random.default_rng(0).random((48, 40)).astype(np.float32)
    res = ex.run([img])
    masks, _ = ex.masks(img)
    # palette by channel index (0 = background: red unused)
    assert res.text == "The results are <image>. The colors in this image describe green: heart, blue: lung right. "
    assert res.overlay.shape == (32, 32, 3) and res.overlay.dtype == np.uint8
    assert res.values["pixels"] == {k: int(v.sum()) for k, v in masks.items()}
    assert set(masks) == {"heart", "lung_right"}
    # the overlay is tinted exactly where a mask is set
    grey = np.repeat(res.overlay[..., :1], 3, axis=2)
    assert (res.overlay != grey).any(axis=2).sum() <= sum(int(v.sum()) for v in masks.values())
    # a bundle that asks to run code is refused
    inf = json.loads((b / "configs" / "inference.json").read_text())
    inf["network_def"]["features"] = "$__import__('os').system('true')"
    (b / "configs" / "inference.json").write_text(json.dumps(inf))
    with pytest.raises(ValueError, match="expressions/references"):
        SegmentationExpert.from_monai_bundle(b)
    # a target that only starts with the allowed prefix: MONAI's locator would walk to os.system
    pwned = tmp_path / "PWNED"
    for target in ("os.system", "monai.networks.nets.hovernet.os.system", "monai.networks.nets.os",
                   "monai.networks.nets.", "monai.networks.nets.UNet.__init__", "monai.networks.nets.one_hot"):
        inf["network_def"] = {"_target_": target, "command": f"touch {pwned}"}
        (b / "configs" / "inference.json").write_text(json.dumps(inf))
        with pytest.raises(ValueError, match="network_def._target_"):
            SegmentationExpert.from_monai_bundle(b)
    assert not pwned.exists()


class Scripted:
    """A stand-in for VisionLanguageModel.generate: replies from a script, records the conversations."""

    def __init__(self, replies):
        from medvit.vlm.model import VLMConfig

        self.replies, self.seen = list(replies), []
        self.cfg = VLMConfig(image_size=32, in_chans=1, mean=[0.5], std=[0.25])

    def generate(self, msgs, pix, **kw):
        self.seen.append(([dict(m) for m in msgs], pix.shape[0]))
        return self.replies.pop(0)


def test_agent_loop_runs_one_expert_and_answers():
    ex = Echo("CXR")
    m = Scripted(["Let me first trigger <CXR()>.", "There is an effusion."])
    r = VLMChat(m, [ex], modality_hint="CXR").respond([np.zeros((40, 40), np.float32)], "Is there an effusion?")
    assert r.answer == "There is an effusion." and r.expert_calls == 1 and ex.calls == [""]
    first = m.seen[0][0][0]["content"]
    assert first.startswith("Here is a list of available expert models:\n<CXR(args)>")
    assert first.endswith("<image>This is a CXR image.\nIs there an effusion?")
    assert m.seen[1][0][-1] == {"role": "user", "content": "CXR says ok Use this result to respond to this prompt:\n"
                                                            "Is there an effusion?"}
    assert [t.role for t in r.turns] == ["user", "assistant", "expert", "assistant"]


def test_agent_loop_errors_go_into_the_conversation_and_calls_are_bounded():
    m = Scripted(["<BRATS()>", "<CXR()> <CXR()>", "<CXR()>", "done"])
    r = VLMChat(m, [Echo("CXR")], max_expert_calls=2).respond([np.zeros((8, 8), np.float32)], "q")
    assert r.expert_calls == 2 and r.answer == "<CXR()>"  # the bound stops the loop
    assert "There is no expert named BRATS" in r.messages[2]["content"]
    assert "Found 2 expert calls" in r.messages[4]["content"]
    assert [t.role for t in r.turns].count("error") == 2


def test_segmentation_expert_on_a_medvit_segmentation_checkpoint(tmp_path):
    from medvit.models import create_model, save_checkpoint
    from medvit.models.contract import WeightContract
    from medvit.models.seg_contract import SegmentationContract, phantom_segment_labels

    torch.manual_seed(0)
    m = create_model("vit_linear_seg", backbone_args={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                                                      "num_heads": 2, "in_chans": 1}, num_labels=2)
    names = ["heart", "lung_right"]
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.5,), std=(0.25,), label_names=names,
                       thresholds=[0.5, 0.5],
                       segmentation=SegmentationContract(labels=phantom_segment_labels(names)).to_dict())
    save_checkpoint(m, tmp_path / "seg", contract=c)
    ex = build_expert("segmentation", checkpoint=tmp_path / "seg", name="SEG")
    img = np.random.default_rng(1).random((40, 40)).astype(np.float32)
    res = ex.run([img])
    # sigmoid outputs: palette by label index (red, green), background-free
    assert res.text == "The results are <image>. The colors in this image describe red: heart, green: lung right. "
    masks, _ = ex.masks(img)
    assert res.values["pixels"] == {k: int(v.sum()) for k, v in masks.items()}
    assert res.overlay.shape == (32, 32, 3)


def test_non_finite_images_are_refused_and_a_non_finite_ood_score_cautions(tmp_path):
    """breaker33 B11: an all-NaN .npy was read and the CXR expert answered it with findings and no caution (the
    preprocessing zeroes NaN); a NaN OOD score (non-finite features) gave no caution either. Fail closed."""
    from medvit.data.imageload import read_checked
    from medvit.vlm.experts import OOD_UNSCORED_CAUTION, ood_caution

    rng = np.random.default_rng(0)
    ok = rng.random((64, 64)).astype(np.float32)
    for name, bad, why in [("nanall", np.full((64, 64), np.nan, np.float32), "all 4,096 of its pixel values are"),
                           ("nan1", np.where(np.arange(64 * 64).reshape(64, 64) == 7, np.nan, ok), "1 of its 4,096"),
                           ("inf1", np.where(np.arange(64 * 64).reshape(64, 64) == 9, np.inf, ok), "1 of its 4,096")]:
        f = tmp_path / f"{name}.npy"
        np.save(f, bad.astype(np.float32))
        with pytest.raises(ValueError, match=rf"{name}.npy: {why} .*not finite"):
            read_checked(f)
        with pytest.raises(ValueError, match=r"not finite \(NaN or ±inf\)"):
            CXRExpert([DEMO]).run([bad])
    np.save(tmp_path / "ok.npy", ok)
    assert read_checked(tmp_path / "ok.npy").pixels.shape == (64, 64)
    nan = {"score": float("nan"), "threshold": 1.0, "flag": False}  # as written before the flag rule changed
    assert ood_caution([nan]) == OOD_UNSCORED_CAUTION.format(which="")
    assert ood_caution([nan, {"score": 3.0, "threshold": 1.0, "flag": True}]) == OOD_UNSCORED_CAUTION.format(
        which="; 2 of 2 models")
    assert ood_text([{"score": 0.5, "threshold": 1.0, "flag": False}]) == ""
