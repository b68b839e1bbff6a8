"""``python -m models``: list, fetch and import weights; analyse images and videos.

Nothing here touches the label store: storing analyses and fine-tuning on a study's corrections are
``python -m affectlab analyze`` and ``python -m affectlab finetune`` (``affectlab/cli.py``).

Exit codes: 0 success; 1 some input file failed (the others were analysed); 2 a setup problem (unknown model,
missing weights, bad arguments, download or hash failure) or an export whose file failed its check (not kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import DEFAULT_MODEL, Settings
from models.errors import AffectLabError, BadInputError
from models.registry import app_models
from models.weight_paths import resolve_weights_dir

if TYPE_CHECKING:
    from models.recognizer import Backend


def _print_err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_list(args: argparse.Namespace) -> int:
    """Prints every registered model and whether its weights are present."""
    from models import weights

    wdir = args.weights_dir
    rows = weights.list_models(wdir)
    if args.json:
        print(json.dumps({"weights_dir": str(wdir), "models": rows}, indent=2, default=str))
        return 0
    print(f"weights folder: {wdir}")
    print(f"{'name':28} {'format':12} {'arch':22} {'input':>5} {'classes':>7} {'V/A':>4}  present")
    for r in rows:
        present = "yes" if r["present"] else ("-" if r.get("runnable", True) else "n/a")
        print(
            f"{r['name']:28} {r['fmt']:12} {r['arch']:22} {r['input_size']:>5} {r['classes']:>7} "
            f"{'yes' if r['has_va'] else 'no':>4}  {present}"
        )
    from models.versions import list_versions

    versions = list_versions(wdir)
    if versions:
        print("fine-tuned versions:")
        for v in versions:
            print(f"  {v.name}  (base {v.base}, target {v.target}, {v.created_at[:19]}, weights {v.weights_hash})")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Downloads, verifies and converts registered checkpoints."""
    from models import weights

    wdir = args.weights_dir
    names = list(args.names)
    if args.defaults:
        names += [n for n in app_models(args.settings.model) if n not in names]
    if not names:
        raise AffectLabError("name a model to fetch, or pass --defaults (the models the web app uses)")
    for name in names:
        path = weights.fetch(name, wdir, progress=not args.quiet, mirror=args.settings.weights_mirror)
        print(f"{name}: verified and stored at {path}")
    _export_for_onnx_runtime(names, wdir)
    return 0


def _export_for_onnx_runtime(names: Sequence[str], wdir: Path) -> None:
    """Exports the detector's nets and the fetched emotion models to ONNX now, so that analyses never need torch."""
    from models.mtcnn_export import export_mtcnn
    from models.recognizer import EmotionRecognizer
    from models.registry import get_spec

    print(f"face detector: ONNX nets in {export_mtcnn(wdir)}")
    for name in names:
        spec = get_spec(name)
        if spec.is_emotion_model and spec.stores_safetensors and spec.runnable:
            EmotionRecognizer.load(name, wdir, backend="onnx")
            print(f"{name}: ONNX Runtime export ready")


def cmd_import(args: argparse.Namespace) -> int:
    """Imports a local checkpoint file under a registry name."""
    from models.convert import import_checkpoint

    path = import_checkpoint(Path(args.file), args.name, args.weights_dir, trust_unverified=args.trust_unverified)
    print(f"{args.name}: stored at {path}")
    return 0


def cmd_remove_version(args: argparse.Namespace) -> int:
    """Removes a fine-tuned version."""
    from models.versions import remove_version

    remove_version(args.name, args.weights_dir)
    print(f"removed {args.name}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Exports a model (ONNX, TorchScript, LiteRT, ExecuTorch; int8 for ONNX and LiteRT) and checks the file."""
    from models import export, mobile_export, onnx_int8

    if args.calibration and not args.int8:
        raise export.ExportError("--calibration is for --int8 exports")
    calibration = mobile_export.load_calibration(args.calibration) if args.calibration else None
    if args.int8 or args.format in mobile_export.MOBILE_FORMATS:
        if args.int8 and args.format not in ("onnx", "litert"):
            raise export.ExportError(f"--int8 is offered for onnx and litert, not {args.format}")
        if args.int8 and calibration is None:
            print("note: no --calibration folder: int8 calibrated on the check crops; pass the study's face crops")
        if args.format == "onnx":
            mrep = onnx_int8.export_onnx_int8(
                args.name,
                args.out,
                args.weights_dir,
                check_images=args.check_images,
                calibration=calibration,
                opset=args.opset or export.DEFAULT_OPSET,
            )
        else:
            mrep = mobile_export.export_mobile(
                args.name,
                args.format,
                args.out,
                args.weights_dir,
                check_images=args.check_images,
                quantize="int8" if args.int8 else "none",
                calibration=calibration,
                python=args.settings.mobile_python,
            )
        print(f"{args.name}: " + "\n".join(mrep.lines()))
        return 0
    rep = export.export_model(
        args.name,
        args.format,
        args.out,
        args.weights_dir,
        check_images=args.check_images,
        opset=args.opset or export.DEFAULT_OPSET,
        mobile=not args.no_mobile_optimize,
    )
    print(f"{args.name}: {rep.format} written to {rep.path}")
    print(f"size: {rep.size_bytes} bytes ({rep.size_bytes / 2**20:.1f} MiB)")
    print(f"parity on {rep.n_crops} face crops: max |diff| {rep.max_abs_diff:.3g} (tolerance {export.TOLERANCE:g})")
    if rep.note:
        print(f"note: {rep.note}")
    return 0  # a file that disagrees is never kept: ExportCheckError, exit 2 (export.publish_checked)


def _image_table(doc: dict[str, Any]) -> str:
    lines = [f"{'file':32} {'#':>2} {'box (x1,y1,x2,y2)':>24} {'det':>5} {'label':10} {'prob':>5} {'V':>6} {'A':>6}"]
    for f in doc["faces"]:
        box = ",".join(f"{v:.0f}" for v in f["box"])
        v = "-" if f["valence"] is None else f"{f['valence']:+.2f}"
        a = "-" if f["arousal"] is None else f"{f['arousal']:+.2f}"
        where = f["file"] if f["frame"] is None else f"{f['file']}@{f['time_s']:.2f}s t{f['track']}"
        lines.append(
            f"{where[-32:]:32} {f['index']:>2} {box:>24} {f['det_score']:5.3f} {f['label']:10} "
            f"{f['probs'][f['label']]:5.3f} {v:>6} {a:>6}"
        )
    for item in doc["files"]:
        if item["error"] is None and item["n_faces"] == 0:
            lines.append(f"{item['file'][-32:]:32}  no face")
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyses images (and videos): one line on stderr per bad file, the others go on."""
    from models import analysis, runtime

    settings: Settings = args.settings
    runtime.tune_malloc(settings.malloc_tune)
    chosen = "torch" if args.exact else (args.backend or settings.backend)
    backend: Backend = "onnx" if chosen == "onnx" else "torch"  # Settings and the parser allow only these two
    detect_every = 1 if args.exact else (args.detect_every or settings.detect_every)
    session = analysis.AnalysisSession.open(
        model=args.model,
        weights_dir=args.weights_dir,
        device=args.device,
        backend=backend,
        precision=args.precision,
        detect_max_side=None if args.exact else args.detect_max_side,
        detect_every=detect_every,
        classify_every=1 if args.exact else args.classify_every,
        min_face_size=args.min_face_size,
        workers=1 if args.exact else args.workers,
    )
    paths = [Path(p) for p in args.files]
    if args.json:  # streamed: a long recording's faces are never all held (see AnalysisSession.write_document)
        failed = session.write_document(
            paths, sys.stdout, fps=args.fps, on_error=_print_err, on_warning=lambda msg: _print_err(f"warning: {msg}")
        )
        sys.stdout.write("\n")
        sys.stdout.flush()
        return 1 if failed else 0
    doc, failed = session.analyze_paths(
        paths, fps=args.fps, on_error=_print_err, on_warning=lambda msg: _print_err(f"warning: {msg}")
    )
    print(_image_table(doc))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m models`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m models",
        description=__doc__.splitlines()[0],
        epilog="Storing analyses and fine-tuning on a study's corrections: python -m affectlab analyze|finetune.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered models and whether their weights are present")
    _weights_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("fetch", help="download, verify and convert checkpoints")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument(
        "--defaults",
        action="store_true",
        help="also every model the web app uses: $AFFECTLAB_MODEL and the engagement model",
    )
    _weights_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("import-checkpoint", help="verify and convert a local checkpoint file")
    p.add_argument("file")
    p.add_argument("--name", required=True)
    _weights_flag(p)
    p.add_argument(
        "--trust-unverified",
        action="store_true",
        help="skip the hash check only: accept a file whose hash differs from the registry's. "
        "It is still read through the allowlist of tensor and model classes and never runs code "
        "from the file (a file asking for anything else is refused)",
    )
    p.set_defaults(func=cmd_import)

    _add_analyze(sub.add_parser("analyze", help="detect faces and recognise emotions in images and videos"))

    p = sub.add_parser("remove-version", help="delete a fine-tuned version")
    p.add_argument("name")
    _weights_flag(p)
    p.set_defaults(func=cmd_remove_version)

    _add_export(
        sub.add_parser(
            "export", help="export a model or fine-tuned version to ONNX, TorchScript, LiteRT or ExecuTorch (checked)"
        )
    )
    return parser


def _weights_flag(p: argparse.ArgumentParser) -> None:
    """``--weights-dir``."""
    p.add_argument("--weights-dir", help="weights folder (default: $AFFECTLAB_WEIGHTS_DIR or the user cache)")


def _add_analyze(p: argparse.ArgumentParser) -> None:
    """The arguments of ``analyze``."""
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", default=DEFAULT_MODEL)
    _weights_flag(p)
    p.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default=None,
        help="default: $AFFECTLAB_BACKEND or onnx (ONNX Runtime, no torch import on the CPU)",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="the reference path: torch backend, detection on every sampled frame at full resolution",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16 is faster on CPUs with bf16 support but not reference-exact",
    )
    p.add_argument("--fps", type=float, default=5.0, help="video sampling rate; 0 = every frame")
    p.add_argument(
        "--detect-max-side",
        type=int,
        default=None,
        help="downscale frames whose longer side exceeds this for detection only",
    )
    p.add_argument(
        "--min-face-size",
        type=int,
        default=40,
        help="smallest face side in pixels looked for (gallery views of 5x5 tiles at 720p: 24; keep "
        "--detect-max-side unset there, downscaling loses small faces)",
    )
    p.add_argument(
        "--detect-every",
        type=int,
        default=None,
        help="videos: detect on every k-th sampled frame and follow the tracks between "
        "(default: $AFFECTLAB_DETECT_EVERY or the measured default)",
    )
    p.add_argument(
        "--classify-every",
        type=int,
        default=None,
        help="videos: classify every face of every n-th sampled frame; between, a face that barely changed reuses "
        "the prediction of the face it follows, marked reused (default: the measured default with --detect-every > 1; "
        "1: every face, as --exact)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="videos: processes one recording is cut over, in time ranges (default: one per core; 1: this one)",
    )
    p.set_defaults(func=cmd_analyze)


def _add_export(p: argparse.ArgumentParser) -> None:
    """The arguments of ``export``."""
    p.add_argument("name", metavar="NAME", help="registry name or fine-tuned version (base@...)")
    p.add_argument("--format", choices=("onnx", "torchscript", "litert", "executorch"), default="onnx")
    p.add_argument("--out", help="output file (default: NAME.onnx, .torchscript.pt, .tflite or .pte here)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="onnx / litert: post-training int8, calibrated on --calibration; size, speed, agreement printed",
    )
    p.add_argument("--calibration", metavar="DIR", help="folder of the study's face crops (its ImageFolder export)")
    _weights_flag(p)
    p.add_argument(
        "--check-images",
        nargs="+",
        metavar="IMAGE",
        help="photos whose faces the parity check runs on (default: a built-in sample face)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (>= 11; default 17)")
    p.add_argument(
        "--no-mobile-optimize",
        action="store_true",
        help="TorchScript: skip torch.utils.mobile_optimizer (applied when this torch build has it)",
    )
    p.set_defaults(func=cmd_export)


def settle(args: argparse.Namespace, print_err: Callable[[str], None]) -> Settings | None:
    """Reads the settings once, at the top of a command-line run, into ``args.settings`` and ``args.weights_dir``.

    Every command below gets its values from ``args`` (``models/`` and ``db/`` never read the environment).

    Returns:
        The settings, or None after printing a bad setting's named error (the caller exits 2).
    """
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a setting that is no number, an unknown backend: named, no traceback
        print_err(f"error: {exc}")
        return None
    args.settings = settings
    if hasattr(args, "weights_dir"):
        args.weights_dir = resolve_weights_dir(args.weights_dir, settings.weights_dir)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns its exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if settle(args, _print_err) is None:
        return 2
    try:
        return int(args.func(args))
    except BadInputError as exc:
        _print_err(f"error: {exc}")
        return 1
    except AffectLabError as exc:
        _print_err(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _print_err("interrupted")
        return 130
