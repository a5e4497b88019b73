"""Execution paths of `medvit infer`: precision auto choice, bf16 weights, Inductor compile cache, PT2E int8.

Drift tolerances against fp32 (probabilities, sigmoid outputs of a small random ViT on chest phantoms):
compiled fp32 ≤ 1e-4, bf16 weights ≤ 0.03, int8 static ≤ 0.05 (the contract thresholds sit 0.1 apart).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medvit
from medvit.infer import fastpath
from medvit.infer.predictor import Predictor

TOL = {"compiled_fp32": 1e-4, "bf16": 0.03, "int8": 0.05}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=64, patch_size=16, embed_dim=64, depth=2,
                            num_heads=4, in_chans=1, num_classes=5).eval()
    torch.nn.init.normal_(m.head.weight, std=0.5)
    return m


@pytest.fixture(scope="module")
def phantoms():
    """16 chest phantoms (16, 1, 64, 64), normalised like a contract (mean 0.5, std 0.25)."""
    from medvit.data.phantom_cxr import ChestPhantomGenerator

    gen = ChestPhantomGenerator(image_size=64, seed=3, with_masks=False)
    x = np.stack([gen.sample(i, i).image for i in range(16)])[:, None]
    return ((x - 0.5) / 0.25).astype(np.float32)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """One compile cache for the module: the fp32 package compiled once is reused by the later tests."""
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def reference(model, phantoms):
    return Predictor(model, "fp32").predict(phantoms)


def _with_ood_reference(model, seed, blocks):
    """A copy of ``model`` with a random (valid) Mahalanobis OOD reference on the head and ``blocks``."""
    import copy

    from medvit.eval.ood import OODReference

    m = copy.deepcopy(model)
    rng = np.random.default_rng(seed)

    def layer(d):
        a = rng.normal(size=(d, d))
        return rng.normal(size=d), a @ a.T / d + np.eye(d), 2.0

    m.ood_reference = OODReference({"head": layer(64), **{f"block{b}": layer(128) for b in blocks}}, 3.0, {})
    return m


@pytest.mark.parametrize(("bf16", "amx", "device", "want"), [
    (True, False, "cpu", "bf16"), (False, True, "cpu", "bf16"), (True, True, "cpu", "bf16"),
    (False, False, "cpu", "fp32"), (False, False, "cuda", "bf16"), (False, False, "cuda:1", "bf16"),
])
def test_auto_precision_follows_cpu_flags(monkeypatch, bf16, amx, device, want):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    prec, reason = fastpath.resolve_precision("auto", device)
    assert prec == want and reason.startswith("auto:")
    assert fastpath.resolve_precision("int8", device) == ("int8", "requested")
    with pytest.raises(ValueError, match="precision must be one of"):
        fastpath.resolve_precision("fp16", device)


def test_auto_precision_in_predictor(monkeypatch, model):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    p = Predictor(model, "auto")
    assert p.precision == "fp32" and p.describe()["precision_requested"] == "auto"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    p = Predictor(model, "auto")
    assert p.precision == "bf16" and next(p.model.parameters()).dtype == torch.bfloat16
    assert next(p.fp32_model.parameters()).dtype == torch.float32  # explanations keep the fp32 weights


def test_default_workers_from_cores():
    assert [fastpath.default_workers("cpu", n) for n in (1, 2, 4, 16)] == [1, 1, 1, 4]
    assert [fastpath.default_workers("cuda", n) for n in (1, 2, 16, 64)] == [1, 1, 15, 16]


def test_bf16_weights_within_tolerance(model, phantoms, reference):
    p = Predictor(model, "bf16")
    got = p.predict(phantoms)
    assert np.abs(got - reference).max() <= TOL["bf16"]
    assert not np.array_equal(got, reference)  # it did run in bf16


def test_compile_cache_reused_and_invalidated(model, phantoms, reference, cache_root, monkeypatch):
    x = torch.as_tensor(phantoms[:4])
    compiles = []
    real = torch._inductor.aoti_compile_and_package
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda *a, **k: compiles.append(1) or real(*a, **k))
    f1, first = fastpath.compile_cached(model, x, "fp32", "model-a", cache_root)
    assert not first.reused and compiles == [1] and (cache_root / first.key / fastpath.PACKAGE).is_file()
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(f1(x)).numpy(), reference[:4], atol=TOL["compiled_fp32"])

    f2, second = fastpath.compile_cached(model, x, "fp32", "model-a", cache_root)  # a second run: loads it
    assert second.key == first.key and second.reused and compiles == [1]
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(f2(x)).numpy(), reference[:4], atol=TOL["compiled_fp32"])

    class Compiling(Exception):
        pass

    def refuse(*a, **k):
        raise Compiling

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", refuse)
    with pytest.raises(Compiling):  # another model (its own hash) is compiled afresh, not served from a's entry
        fastpath.compile_cached(model, x, "fp32", "model-b", cache_root)
    with pytest.raises(Compiling):  # another batch shape likewise
        fastpath.compile_cached(model, torch.as_tensor(phantoms[:2]), "fp32", "model-a", cache_root)


def test_state_dict_hash_changes_with_weights(model):
    import copy

    m2 = copy.deepcopy(model)
    with torch.no_grad():
        m2.head.bias[0] += 1e-3
    assert fastpath.state_dict_sha256(m2) != fastpath.state_dict_sha256(model)
    assert fastpath.cache_key("a", (4, 1, 64, 64), torch.float32, "fp32", "cpu") != \
        fastpath.cache_key("a", (8, 1, 64, 64), torch.float32, "fp32", "cpu")


def test_compiled_predictor_pads_partial_batches(model, phantoms, reference, cache_root):
    p = Predictor(model, "fp32", compile="inductor", cache_root=cache_root)
    got = np.concatenate([p.predict(phantoms[:4]), p.predict(phantoms[4:7]), p.predict(phantoms[7:])])  # 4, 3, 9
    np.testing.assert_allclose(got, reference, atol=TOL["compiled_fp32"])
    d = p.describe()
    assert d["compile"] == "inductor" and d["compile_cache"]["shape"] == [4, 1, 64, 64]


def test_int8_pt2e_within_tolerance(model, phantoms, reference, cache_root, monkeypatch):
    """... and a later run that loads the cached package neither quantises nor hashes its own first batch (closing
    32: the calibration batch was hashed on every cache hit): it reports the calibration stored beside the package."""
    import medvit.infer.predictor as predictor_mod

    pytest.importorskip("torchao")
    p = Predictor(model, "int8", cache_root=cache_root)
    calibrated = p.predict(phantoms[:8])  # the first batch calibrates the activation ranges
    held_out = p.predict(phantoms[8:])  # images the calibration never saw
    assert p.compile_mode == "inductor" and p.describe()["int8_calibration_images"] == 8
    got = np.concatenate([calibrated, held_out])
    assert np.abs(got - reference).max() <= TOL["int8"]
    assert not np.allclose(got, reference, atol=1e-5)  # it did quantise

    def refuse(*a, **k):
        raise AssertionError("quantised again although the package is cached")

    monkeypatch.setattr(fastpath, "quantize_int8_pt2e", refuse)  # a later run, same first batch: loads the package
    def no_hash(*a, **k):
        raise AssertionError("hashed the first batch although the package (and its calibration record) is cached")

    monkeypatch.setattr(predictor_mod, "_tensor_sha256", no_hash)  # ... and does not hash it either
    again = Predictor(model, "int8", cache_root=cache_root)
    np.testing.assert_allclose(again.predict(phantoms[:8]), calibrated, atol=1e-6)
    assert again.describe()["compile_cache"]["reused"]
    assert again.describe()["int8_calibration"]["input_sha256"] == p.describe()["int8_calibration"]["input_sha256"]


@pytest.mark.parametrize("rest", ["fp32", "bf16"])
def test_int8_rest_dtype_within_tolerance(model, phantoms, reference, cache_root, rest):
    """int8 GEMMs with fp32 or bf16 between them (int8-mixed-bf16: the autocast region survives torch.export, so
    the compiled graph computes the norms/GELU/attention in bf16); each within the int8 tolerance of fp32, each
    its own cache entry, the choice in describe()."""
    pytest.importorskip("torchao")
    p = Predictor(model, "int8", cache_root=cache_root, int8_rest=rest)
    got = np.concatenate([p.predict(phantoms[:8]), p.predict(phantoms[8:])])
    d = p.describe()
    assert d["int8_rest"] == rest and d["int8_rest_reason"] == "requested"
    assert np.abs(got - reference).max() <= TOL["int8"]
    assert not np.allclose(got, reference, atol=1e-5)
    other = Predictor(model, "int8", cache_root=cache_root, int8_rest={"fp32": "bf16", "bf16": "fp32"}[rest])
    other.predict(phantoms[:8])
    assert other.describe()["compile_cache"]["key"] != d["compile_cache"]["key"]


def test_int8_rest_auto_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: True)
    assert fastpath.resolve_int8_rest(None)[0] == "bf16"
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: False)
    assert fastpath.resolve_int8_rest(None)[0] == "fp32"
    assert fastpath.resolve_int8_rest("fp32") == ("fp32", "requested")
    with pytest.raises(ValueError, match="int8_rest"):
        fastpath.resolve_int8_rest("fp16")


def test_int8_refused_on_cuda(model):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Predictor(model, "int8", "cuda")
    else:
        with pytest.raises(ValueError, match="CPU only"):
            Predictor(model, "int8", "cuda")


def test_compiled_predictor_returns_ood_features(model, phantoms, cache_root):
    """A compiled graph runs no hooks: with an OOD reference it returns the head input and block statistics."""
    m = _with_ood_reference(model, 0, (0, 1))
    eager_p, eager_s = Predictor(m, "fp32").predict_with_ood(phantoms[:4])
    p = Predictor(m, "fp32", compile="inductor", cache_root=cache_root)
    got_p, got_s = p.predict_with_ood(phantoms[:4])
    np.testing.assert_allclose(got_p, eager_p, atol=TOL["compiled_fp32"])
    np.testing.assert_allclose(got_s, eager_s, rtol=1e-4)


def test_int8_predictor_returns_ood_features(model, phantoms, cache_root):
    """int8 quantises the features wrapper too, so a model with an OOD reference gets its scores (it crashed)."""
    pytest.importorskip("torchao")
    m = _with_ood_reference(model, 1, (1,))
    _, eager_s = Predictor(m, "fp32").predict_with_ood(phantoms[:8])
    got_p, got_s = Predictor(m, "int8", cache_root=cache_root).predict_with_ood(phantoms[:8])
    assert got_p.shape == (8, 5) and got_s.shape == (8,)
    np.testing.assert_allclose(got_s, eager_s, rtol=0.1)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_auto_bf16_within_tolerance(model, phantoms, reference):
    p = Predictor(model, "auto", "cuda")
    assert p.precision == "bf16" and next(p.model.parameters()).is_cuda
    assert np.abs(p.predict(phantoms) - reference).max() <= TOL["bf16"]


@cuda
def test_cuda_compiled_within_tolerance(model, phantoms, reference, cache_root):
    p = Predictor(model, "fp32", "cuda", compile="inductor", cache_root=cache_root)
    got = np.concatenate([p.predict(phantoms[:8]), p.predict(phantoms[8:13]), p.predict(phantoms[13:])])
    np.testing.assert_allclose(got, reference, atol=1e-3)  # TF32/cuBLAS reductions differ from the CPU's
    q = Predictor(model, "bf16", "cuda", compile="inductor", cache_root=cache_root)
    assert np.abs(q.predict(phantoms) - reference).max() <= TOL["bf16"]
    assert q.describe()["compile_cache"]["key"] != p.describe()["compile_cache"]["key"]


def test_openvino_backend_within_tolerance_and_cached(model, phantoms, reference, cache_root, monkeypatch):
    """The optional OpenVINO backend: fp32 within 1e-4 and bf16 within the bf16 tolerance of eager fp32; the IR is
    converted once per model and precision and read back by a later predictor (no conversion: counted)."""
    ov = pytest.importorskip("openvino")
    converts = []
    real = ov.convert_model
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: converts.append(1) or real(*a, **k))
    p32 = Predictor(model, "fp32", compile="openvino", cache_root=cache_root)
    got = np.concatenate([p32.predict(phantoms[:4]), p32.predict(phantoms[4:7]), p32.predict(phantoms[7:])])
    np.testing.assert_allclose(got, reference, atol=TOL["compiled_fp32"])
    d = p32.describe()
    assert d["compile"] == "openvino" and not d["compile_cache"]["reused"] and converts == [1]
    p16 = Predictor(model, "bf16", compile="openvino", cache_root=cache_root)
    got16 = p16.predict(phantoms[:4])
    assert np.abs(got16 - reference[:4]).max() <= TOL["bf16"] and converts == [1, 1]
    assert p16.describe()["compile_cache"]["key"] != d["compile_cache"]["key"]
    again = Predictor(model, "fp32", compile="openvino", cache_root=cache_root)
    np.testing.assert_allclose(again.predict(phantoms[:4]), got[:4], atol=1e-6)
    assert again.describe()["compile_cache"]["reused"] and converts == [1, 1]  # read back, not converted
    with pytest.raises(ValueError, match="openvino"):
        Predictor(model, "int8", compile="openvino")


def test_openvino_predictor_returns_ood_features(model, phantoms, cache_root):
    """With an OOD reference the converted graph returns the head input and block statistics beside the logits."""
    pytest.importorskip("openvino")
    m = _with_ood_reference(model, 2, (1,))
    eager_p, eager_s = Predictor(m, "fp32").predict_with_ood(phantoms[:4])
    got_p, got_s = Predictor(m, "fp32", compile="openvino", cache_root=cache_root).predict_with_ood(phantoms[:4])
    np.testing.assert_allclose(got_p, eager_p, atol=TOL["compiled_fp32"])
    np.testing.assert_allclose(got_s, eager_s, rtol=1e-4)
