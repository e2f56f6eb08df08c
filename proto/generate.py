"""The one way to regenerate the checked-in gRPC code: `python -m proto.generate`.

Protos are compiled with the repo root as include path, so their import path is
`proto/plexrec/v1/...` and the generated modules import each other as `proto.plexrec.v1.*`,
which is how the rest of the repo (an installed package root) imports them."""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from features.errors import PlexrecError

REPO = Path(__file__).resolve().parents[1]
PROTOS = ("proto/plexrec/v1/plexrec.proto",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")
RUFF_OFF = "# ruff: noqa\n"


def generated_files(proto: str) -> list[str]:
    """Paths (relative to the root) that protoc writes for one .proto."""
    stem = proto[: -len(".proto")]
    return [stem + suffix for suffix in GENERATED_SUFFIXES]


def generate(out_root: Path = REPO, src_root: Path = REPO) -> list[Path]:
    """Compile PROTOS under `src_root` into `out_root`; returns the written files."""
    from grpc_tools import protoc

    out_root, src_root = Path(out_root), Path(src_root)
    if out_root != src_root:
        for proto in PROTOS:
            dest = out_root / proto
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_root / proto, dest)
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = ["grpc_tools.protoc", f"-I{out_root}", f"-I{well_known}",
            f"--python_out={out_root}", f"--grpc_python_out={out_root}",
            f"--pyi_out={out_root}", *(str(out_root / p) for p in PROTOS)]
    if protoc.main(args) != 0:
        raise PlexrecError(f"protoc failed on {', '.join(PROTOS)}")
    written = [out_root / f for proto in PROTOS for f in generated_files(proto)]
    for path in written:
        if path.suffix == ".pyi":
            # pyproject's ruff exclude matches *_pb2*.py only; protoc's stubs use typing.Optional
            path.write_text(RUFF_OFF + path.read_text())
    return written


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(REPO))
    sys.exit(0)
