"""``medvit chat -m VLM_DIR IMAGE "question"``: ask a trained VLM about an image; expert calls are shown."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="ask a vision-language model (VILA-M3 style, with expert models) about an image",
                       description="Answer a question about one image (DICOM, PNG/JPEG, NIfTI, .npy) with a VLM "
                       "saved by the vila_m3 task. When the model calls an expert (<CXR()>), the expert runs, its "
                       "result is shown and fed back, and the model answers with it; an expert's caution (its "
                       "out-of-distribution flag) is printed after the answer. Only pixels go to the model "
                       "(no header text, no PHI). Research use only - not for diagnosis.")
    p.add_argument("-m", "--model", required=True, help="VLM checkpoint directory (vlm_config.json)")
    p.add_argument("image", help="image file")
    p.add_argument("question", help="the question")
    p.add_argument("--expert", action="append", default=None, metavar="KIND=DIR[,DIR]",
                   help="expert to offer instead of those recorded in the checkpoint (e.g. cxr=pipelines/demo/model); "
                   "repeatable")
    p.add_argument("--no-experts", action="store_true", help="offer no expert (the model answers alone)")
    p.add_argument("--lm", default=None, metavar="DIR",
                   help="the language model directory, when it is no longer where the checkpoint recorded it "
                   "(same weights: its SHA-256 is checked)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="generation bound per reply")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (reference)")
    p.add_argument("--max-expert-calls", type=int, default=2, help="bound on expert runs")
    p.add_argument("--overlay", default=None, help="write an expert's overlay image (PNG) here")
    p.add_argument("--json", action="store_true", help="print the whole exchange as JSON")
    p.set_defaults(func=run)


def _expert_specs(items: list[str]) -> list[dict]:
    from medvit.vlm.paths import EXPERT_PATH_KEYS, spec_with_paths

    specs = []
    for it in items:
        kind, sep, dirs = it.partition("=")
        if not sep or not dirs:
            raise SystemExit(f"--expert {it!r}: expected KIND=DIR[,DIR] (e.g. cxr=pipelines/demo/model)")
        key = EXPERT_PATH_KEYS.get(kind)
        if key is None:
            raise SystemExit(f"--expert {it!r}: unknown kind {kind!r}; kinds: {', '.join(EXPERT_PATH_KEYS)}")
        try:
            specs.append(spec_with_paths({"kind": kind}, key, dirs.split(",")))
        except ValueError as e:
            hint = "" if "empty path" in str(e) else " (several DIRs only for an ensemble: cxr=DIR,DIR)"
            raise SystemExit(f"--expert {it!r}: {e}{hint}") from None
    return specs


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from medvit.io.text import escape_text
    from medvit.vlm.chat import load_chat

    if not Path(args.image).is_file():
        raise SystemExit(f"image not found: {args.image}")
    experts = [] if args.no_experts else (_expert_specs(args.expert) if args.expert else None)
    chat = load_chat(args.model, experts, lm_path=args.lm, max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, max_expert_calls=args.max_expert_calls)
    resp = chat.respond([args.image], args.question)
    overlay_written = None
    for t in resp.turns:
        if t.overlay is not None and args.overlay:
            from PIL import Image

            Image.fromarray(t.overlay).save(args.overlay)
            overlay_written = args.overlay
    if args.json:
        print(json.dumps({"answer": resp.answer, "cautions": resp.cautions, "expert_calls": resp.expert_calls,  # noqa: T201
                          "overlay": overlay_written,
                          "turns": [{"role": t.role, "text": t.text, "expert": t.expert, "args": t.args}
                                    for t in resp.turns]}, indent=2))
        return 0
    lines = ["Research use only - not for diagnosis."]
    for t in resp.turns:
        if t.role == "expert":
            lines.append(f"[expert {t.expert}({t.args or ''})] {escape_text(t.text, keep_newlines=True)}")
        elif t.role == "error":
            lines.append(f"[expert call refused] {escape_text(t.text)}")
        else:
            lines.append(f"{t.role}: {escape_text(t.text)}")
    # an expert's caution (e.g. the image is outside its training distribution) stands beside the answer, whatever
    # the model wrote
    lines.extend(f"!! {escape_text(c)}" for c in resp.cautions)
    if overlay_written:
        lines.append(f"overlay: {overlay_written}")
    print("\n".join(lines))  # noqa: T201
    return 0
