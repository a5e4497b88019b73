"""medvit's VOI windowing against pydicom's reference implementation (pydicom.pixels.apply_windowing)."""

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from medvit.io.display import window_linear


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("center,width", [(2000.0, 1500.0), (-150.0, 900.0), (40.0, 1.0), (0.5, 3.5)])
def test_window_linear_matches_pydicom(function, center, width):
    if function != "LINEAR" and width == 1.0:
        width = 2.0
    x = (np.random.default_rng(0).normal(size=(64, 64)) * 1500).astype(np.float32)
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 16, 0  # output 0..65535
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    with np.errstate(over="ignore"):
        ref = apply_windowing(x.astype(np.float64), ds) / 65535.0
    got = window_linear(x, center, width, function)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
