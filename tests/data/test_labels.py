import numpy as np
import pytest
import torch

from medvit.data.labels import CHEXPERT5_LABELS, NIH14_LABELS, LabelVocabulary, canonical_label


def test_canonical_synonyms():
    assert canonical_label("Pleural Effusion") == "Effusion"
    assert canonical_label("  pleural   thickening ") == "Pleural_Thickening"
    assert canonical_label("Infiltrate") == "Infiltration"
    assert canonical_label("Some New Label") == "Some New Label"


def test_map_masks_missing_labels_not_negative():
    vocab = LabelVocabulary(("Cardiomegaly", "Effusion", "Hernia"))
    src = list(CHEXPERT5_LABELS)  # has Cardiomegaly and "Pleural Effusion", lacks Hernia
    y = np.array([[1, 0, 0, 1, 1], [0, 1, 1, 0, 0]], np.float32)
    m = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    out, mask = vocab.map(y, m, src)
    np.testing.assert_array_equal(out, [[1, 1, 0], [0, 0, 0]])  # masked entries keep their value
    np.testing.assert_array_equal(mask, [[True, False, False], [True, True, False]])
    assert vocab.missing(src) == ["Hernia"]


def test_map_torch_matches_numpy():
    vocab = LabelVocabulary(tuple(reversed(NIH14_LABELS[:5])) + ("Lung Opacity",))
    y = torch.randint(0, 2, (4, 14)).float()
    out_t, m_t = vocab.map(y, None, NIH14_LABELS)
    out_n, m_n = vocab.map(y.numpy(), None, NIH14_LABELS)
    np.testing.assert_array_equal(out_t.numpy(), out_n)
    np.testing.assert_array_equal(m_t.numpy(), m_n)
    assert m_t[:, -1].sum() == 0 and m_t[:, :5].all()
    np.testing.assert_array_equal(out_t[:, 0].numpy(), y[:, 4].numpy())


def test_duplicate_and_shape_errors():
    with pytest.raises(ValueError, match="twice"):
        LabelVocabulary(("Effusion", "Pleural Effusion"))
    with pytest.raises(ValueError, match="columns"):
        LabelVocabulary(("Effusion",)).map(np.zeros((2, 3)), None, ["a", "b"])


def test_wrap_dataset():
    from medvit.data import build_dataset

    ds = build_dataset("cxr_phantom", "val", n=40, seed=1, image_size=64)
    vocab = LabelVocabulary(("Pleural Effusion", "Edema", "Nodule"))
    wrapped = vocab.wrap(ds)
    item, raw = wrapped[0], ds[0]
    assert wrapped.label_names == ["Pleural Effusion", "Edema", "Nodule"]
    assert item["label"][0] == raw["label"][ds.label_names.index("Effusion")]
    assert item["label_mask"].tolist() == [True, False, True]
