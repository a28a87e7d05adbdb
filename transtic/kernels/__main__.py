"""Build the native kernels ahead of time, e.g. into a container image:

    python -m transtic.kernels build --cache-dir /opt/transtic/kernels --isa AVX512 AVX2 DEFAULT

and point the services' ``kernel_cache_dir`` setting at that directory. Without ``--isa``
it builds for this machine's CPU only.
"""

from __future__ import annotations

import argparse
import sys

from . import build

KERNELS = ("window_attention", "winograd_conv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transtic.kernels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="compile the kernels into the cache directory")
    make.add_argument("--cache-dir", default=None, help="default: ~/.cache/transtic/kernels")
    make.add_argument(
        "--isa",
        nargs="+",
        choices=["AVX512", "AVX2", "DEFAULT"],
        default=None,
        help="instruction sets to build for (default: this CPU's)",
    )
    args = parser.parse_args(argv)
    build.set_cache_dir(args.cache_dir)
    try:
        for capability in args.isa or [build.cpu_capability()]:
            for name in KERNELS:
                print(build.build(name, capability))
    except build.KernelBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
