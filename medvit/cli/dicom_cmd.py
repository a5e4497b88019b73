"""``medvit dicom index|render|info``: index a DICOM tree, render the displayed 8-bit image, show a header summary."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dicom", help="index DICOM folders, render DICOM/NIfTI/PNG images to 8-bit PNG",
                       description="DICOM utilities (headers only for index; the viewer's display code for render).")
    dsub = p.add_subparsers(dest="dicom_command", metavar="SUBCOMMAND", required=True)

    pi = dsub.add_parser("index", help="walk a folder (and DICOMDIR), group into patients/studies/series",
                         description="Read headers only; write one row per series (.csv, plus <stem>.skipped.csv) "
                                     "or the full patient/study/series tree (.json). Skipped files are listed with "
                                     "their reason.")
    pi.add_argument("root", help="folder, DICOMDIR or file")
    pi.add_argument("--out", required=True, help="output FILE.csv or FILE.json")
    pi.add_argument("--workers", type=int, default=None,
                    help="header-reading processes (default 1; more helps only on idle multi-core machines)")
    pi.set_defaults(func=run_index)

    pr = dsub.add_parser("render", help="write the displayed 8-bit image of a file as PNG",
                         description="VOI window (explicit, preset, or the file's first window / VOI LUT / "
                                     "min-max), MONOCHROME1 inverted. Same code as the viewer.")
    pr.add_argument("file", help="DICOM, NIfTI, PNG/JPEG or .npy file")
    pr.add_argument("--out", required=True, help="output .png")
    g = pr.add_mutually_exclusive_group()
    g.add_argument("--window", help="center,width in modality units, e.g. --window=-600,1500 (use '=' when the "
                                    "center is negative)")
    g.add_argument("--preset", help="lung, mediastinum, soft_tissue, abdomen, liver, bone, brain, subdural, "
                                    "stroke, file, file:N, lut:N, minmax, full, or a window explanation in the file")
    pr.add_argument("--frame", type=int, default=None, help="frame (0-based) of a multi-frame file, or axial "
                                                            "slice of a NIfTI volume")
    pr.set_defaults(func=run_render)

    pn = dsub.add_parser("info", help="print geometry, windows, UIDs and metadata of an image as JSON")
    pn.add_argument("file")
    pn.add_argument("--frame", type=int, default=None)
    pn.set_defaults(func=run_info)


def _quiet_pydicom(args: argparse.Namespace) -> None:
    """pydicom logs every header quirk at WARNING; medvit reports problems itself (shown again with -vv)."""
    import logging

    import pydicom  # noqa: F401  (its import sets the "pydicom" logger level; override after)

    if getattr(args, "verbose", 0) < 2:
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        c, w = (float(v) for v in text.split(","))
    except ValueError as e:
        raise ValueError(f"--window must be 'center,width' (two numbers), got {text!r}") from e
    return c, w


def run_index(args: argparse.Namespace) -> int:
    _quiet_pydicom(args)
    from medvit.io.index import index_tree

    res = index_tree(args.root, workers=args.workers)
    written = res.write(args.out)
    s = res.summary()
    print(f"indexed {s['files']} DICOM files: {s['patients']} patients, {s['studies']} studies, "  # noqa: T201
          f"{s['series']} series; {s['skipped']} skipped; {s['dicomdirs']} DICOMDIR -> "
          f"{', '.join(str(w) for w in written)}")
    return 0


def run_render(args: argparse.Namespace) -> int:
    _quiet_pydicom(args)
    from PIL import Image

    from medvit.io import read_image, render

    window = _window(args.window)
    img = read_image(args.file, frame=args.frame)
    frame = args.frame if ("F" in img.axes or img.axes.startswith("XYZ")) else None
    out = render(img, window=window, preset=args.preset, frame=frame)
    Image.fromarray(out).save(args.out)
    print(f"wrote {args.out} ({out.shape[1]}x{out.shape[0]}{' RGB' if out.ndim == 3 else ''})")  # noqa: T201
    return 0


def run_info(args: argparse.Namespace) -> int:
    _quiet_pydicom(args)
    from medvit.io import read_image
    from medvit.io.display import finite_range

    img = read_image(args.file, frame=args.frame)
    doc = {"path": img.path, "axes": img.axes, "shape": list(img.pixels.shape), "spacing": img.spacing,
           "photometric": img.photometric, "invert": img.invert, "modality": img.modality,
           "origin": img.origin, "affine_ras": img.affine.round(6).tolist(),
           "windows": [w.__dict__ for w in img.windows],
           "voi_luts": [{"first_mapped": v.first_mapped, "entries": int(v.lut.size), "bits": v.bits,
                         "explanation": v.explanation} for v in img.voi_luts],
           "value_range": img.value_range, "pixel_min": finite_range(img.pixels)[0],
           "pixel_max": finite_range(img.pixels)[1], "uids": img.uids, "meta": img.meta}
    print(json.dumps(doc, indent=2, default=str))  # noqa: T201
    return 0
