"""``transtic`` command line: encode, decode, inspect streams, manage weights."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .bitstream import AlignMode, BitstreamError, EntropyParamMode, peek_header
from .dependency_warnings import quiet_dependency_warnings
from .precision import PRECISIONS
from .weights.shipped import DEFAULT_QUALITY

if TYPE_CHECKING:
    from .codec import ImageCodec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
STREAM_SUFFIX = ".ttic"
ENTROPY_MODES = {"fixed": EntropyParamMode.FIXED_POINT, "float": EntropyParamMode.FLOAT}
# shipped inside the package, so encoding works offline without naming a codec; at the
# quality the services default to as well
DEFAULT_CHECKPOINT = f"transtic_small_cls_q{DEFAULT_QUALITY}"


def _writes_a_folder(paths: Sequence[Path]) -> bool:
    """Whether the output is a folder: decided by the command line (a folder among the
    inputs, or several inputs), never by how many files a folder happens to hold."""
    return len(paths) > 1 or any(path.is_dir() for path in paths)


def _inputs(paths: Sequence[Path], suffixes: set[str]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"error: {path} does not exist")
    if not files:
        raise SystemExit("error: no input files")
    return files


def _output_for(src: Path, out: Path | None, suffix: str, folder: bool) -> Path:
    if out is None:
        return src.with_suffix(suffix)
    if folder or out.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        return out / (src.stem + suffix)
    return out


def _load_codec(args: argparse.Namespace, checkpoint: str | None = None) -> ImageCodec:
    from .codec import ImageCodec
    from .models import CheckpointError
    from .weights import WeightsError, default_cache_dir, load_codec

    try:
        loaded = load_codec(
            checkpoint or args.checkpoint,
            cache_dir=args.cache_dir or default_cache_dir(),
            device=args.device,
        )
    except (WeightsError, CheckpointError) as exc:
        raise SystemExit(f"error: {exc}") from None
    model = loaded.model
    return ImageCodec(
        model,
        # a catalog codec records its own task and quality unless told otherwise
        quality=getattr(args, "quality", 0) or loaded.quality or 0,
        task=getattr(args, "task", None) or loaded.task,
        align_mode=AlignMode[getattr(args, "align", "pad").upper()],
        entropy_mode=ENTROPY_MODES[getattr(args, "entropy_mode", "fixed")],
        precision=args.precision,
        device=args.device,
    )


def _local_catalog_codecs(args: argparse.Namespace) -> list[str]:
    """Catalog codecs whose files are on this machine (shipped or in the cache)."""
    from .weights import default_cache_dir, local_weights

    present = local_weights(cache_dir=args.cache_dir or default_cache_dir())
    return [entry.name for entry, path in present if entry.kind == "codec" and path is not None]


class _Decoders:
    """The codec for each stream: --checkpoint's, else the local catalog codec whose
    weights the stream's header names (each candidate loaded at most once)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.chosen: ImageCodec | None = None  # --checkpoint's, loaded on first use
        self.by_fingerprint: dict[bytes, ImageCodec] = {}
        self.unloaded: list[str] | None = None  # catalog codecs not yet looked at

    def for_stream(self, data: bytes) -> ImageCodec:
        if self.args.checkpoint:
            if self.chosen is None:
                self.chosen = _load_codec(self.args)
            return self.chosen
        wanted = peek_header(data).weights_fingerprint
        if self.unloaded is None:
            self.unloaded = _local_catalog_codecs(self.args)
        while wanted not in self.by_fingerprint and self.unloaded:
            codec = _load_codec(self.args, self.unloaded.pop(0))
            self.by_fingerprint.setdefault(codec.fingerprint, codec)
        if wanted not in self.by_fingerprint:
            raise SystemExit(
                f"error: no codec on this machine holds the weights {wanted.hex()} this stream "
                "was coded with; give --checkpoint ('transtic weights list' shows the catalog)"
            )
        return self.by_fingerprint[wanted]


def _progress(items: list[Path], label: str):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="img", disable=len(items) < 2, file=sys.stderr)


def _report(line: str) -> None:
    """A per-file line on stdout, through tqdm: it clears the progress bar first and draws it
    again below, where a plain print would land in the middle of the bar on a terminal."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)


def _image_format(dst: Path) -> str:
    """The Pillow format a decoded image is written in: the one its extension names, PNG
    when it has none."""
    from PIL import Image

    if not dst.suffix:
        return "PNG"
    Image.init()
    image_format = Image.registered_extensions().get(dst.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise SystemExit(
            f"error: cannot write images as {dst.suffix!r} ({dst}); use .png (lossless), "
            "or .bmp, .tif, .webp, .jpg"
        )
    return image_format


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.strerror or exc}") from None


def cmd_encode(args: argparse.Namespace) -> int:
    from .images import ImageError, decode_image_bytes

    codec = _load_codec(args, args.checkpoint or DEFAULT_CHECKPOINT)
    files = _inputs(args.inputs, IMAGE_SUFFIXES)
    folder = _writes_a_folder(args.inputs)
    total_bits = total_pixels = 0
    for src in _progress(files, "encode"):
        try:
            # the size budget is checked from the file's header before any pixel is decoded
            image = decode_image_bytes(
                _read(src),
                max_pixels=codec.max_pixels,
                max_aspect_ratio=codec.max_aspect_ratio,
                alignment=codec.divisor,
            )
        except ImageError as exc:
            print(f"{src}: {exc}", file=sys.stderr)
            return 2
        result = codec.encode(image)
        dst = _output_for(src, args.output, STREAM_SUFFIX, folder)
        dst.write_bytes(result.data)
        h, w = result.header.original_size
        total_bits += len(result.data) * 8
        total_pixels += h * w
        _report(f"{src} -> {dst}: {len(result.data)} bytes, {result.bpp:.4f} bpp")
    if len(files) > 1:
        print(f"{len(files)} images, {total_bits / total_pixels:.4f} bpp overall")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from PIL import Image

    from .images import to_uint8

    decoders = _Decoders(args)
    files = _inputs(args.inputs, {STREAM_SUFFIX})
    folder = _writes_a_folder(args.inputs)
    if not folder and args.output is not None and not args.output.is_dir():
        _image_format(args.output)  # an unwritable format stops before any decoding
    for src in _progress(files, "decode"):
        data = _read(src)
        try:
            result = decoders.for_stream(data).decode(data)
        except BitstreamError as exc:
            print(f"{src}: {exc}", file=sys.stderr)
            return 2
        dst = _output_for(src, args.output, ".png", folder)
        Image.fromarray(to_uint8(result.image)).save(dst, format=_image_format(dst))
        _report(f"{src} -> {dst}")
    return 0


def psnr(a, b) -> float:  # type: ignore[no-untyped-def]
    """PSNR in dB between two images in [0, 1] (after 8-bit rounding, as files store them)."""
    mse = float(((a * 255).round() - (b * 255).round()).pow(2).mean()) / 255**2
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _size_text(height_width: Sequence[int]) -> str:
    height, width = height_width
    return f"{width}x{height}"


def cmd_info(args: argparse.Namespace) -> int:
    data = _read(args.stream)
    try:
        header = peek_header(data)
    except BitstreamError as exc:
        print(f"{args.stream}: {exc}", file=sys.stderr)
        return 2
    h, w = header.original_size
    info = {
        "file": str(args.stream),
        "bytes": len(data),
        "bits_per_pixel": len(data) * 8 / (h * w),
        "codec": header.codec,
        "task": header.task,
        "quality": header.quality,
        "weights_fingerprint": header.weights_fingerprint.hex(),
        # Width x height, as image tools and the rest of this program say it (the header
        # stores height first).
        "original_size": _size_text(header.original_size),
        "coded_size": _size_text(header.coded_size),
        "align_mode": header.align_mode.name.lower(),
        "entropy_mode": header.entropy_mode.name.lower(),
        "y_shape": list(header.y_shape),
        "z_shape": list(header.z_shape),
    }
    if args.original is not None:
        from PIL import Image

        from .images import to_tensor

        decoded = _Decoders(args).for_stream(data).decode(data)
        with Image.open(args.original) as img:
            original = to_tensor(img)
        if tuple(original.shape[-2:]) != header.original_size:
            raise SystemExit(
                f"error: --original is {_size_text(original.shape[-2:])}, the coded image "
                f"{_size_text(header.original_size)}"
            )
        info["psnr_db"] = psnr(decoded.image, original)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>20}: {value:.4f}" if isinstance(value, float) else f"{key:>20}: {value}")
    return 0


def _codec_options(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file or a weights registry name ('transtic weights list'); "
        + default_help,
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="weights cache directory")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="auto",
        help="auto: bf16 where the CPU/GPU has native bf16, else float32; int8: lossy, CPU "
        "(entropy parameters stay exact)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transtic", description=__doc__)
    parser.add_argument("--version", action="version", version=f"transtic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    enc = sub.add_parser("encode", help="images (files or folders) -> .ttic streams")
    enc.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    enc.add_argument("-o", "--output", type=Path, default=None, help="file or directory")
    enc.add_argument("--quality", type=int, default=0, help="quality index recorded in the stream")
    enc.add_argument("--task", default=None, help="task recorded in the stream")
    enc.add_argument(
        "--align",
        choices=["pad", "resize"],
        default="pad",
        help="fit images to multiples of 256 by padding (fewer bits) or resizing (as the paper)",
    )
    enc.add_argument(
        "--entropy-mode",
        choices=["fixed", "float"],
        default="fixed",
        help="entropy parameters in exact fixed point (machine-independent) or float",
    )
    _codec_options(enc, f"default: {DEFAULT_CHECKPOINT}, shipped in the package")
    enc.set_defaults(func=cmd_encode)

    dec = sub.add_parser("decode", help=".ttic streams -> PNG images")
    dec.add_argument("inputs", nargs="+", type=Path, help=".ttic files or folders of them")
    dec.add_argument("-o", "--output", type=Path, default=None, help="output file or directory")
    _codec_options(dec, "default: the local catalog codec whose weights the stream names")
    dec.set_defaults(func=cmd_decode)

    info = sub.add_parser("info", help="header fields, bits per pixel, PSNR against an original")
    info.add_argument("stream", type=Path, help="the .ttic file")
    info.add_argument(
        "--original", type=Path, default=None, help="the original image, to report PSNR against it"
    )
    info.add_argument("--json", action="store_true", help="machine-readable output")
    _codec_options(info, "for --original; default: as for decode")
    info.set_defaults(func=cmd_info)

    weights = sub.add_parser("weights", help="list or pull model weights", add_help=False)
    weights.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        help="the weights command and its flags (see transtic weights --help)",
    )
    weights.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_dependency_warnings()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["weights"]:
        from .weights import weights_main

        return weights_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
