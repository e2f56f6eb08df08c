"""The one way to regenerate the checked-in gRPC code: `python -m plexrec.proto.generate`.

The folder `proto/` installs as `plexrec.proto`, so protos are compiled from a staging tree that
mirrors the installed layout (`plexrec/proto/plexrec/v1/...`): the generated modules then import
each other as `plexrec.proto.plexrec.v1.*`, and the files are copied back beside the .proto."""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from plexrec.features.errors import PlexrecError

REPO = Path(__file__).resolve().parents[1]
PROTOS = ("proto/plexrec/v1/plexrec.proto",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")
RUFF_OFF = "# ruff: noqa\n"
INSTALLED_PREFIX = "plexrec"


def generated_files(proto: str) -> list[str]:
    """Paths (relative to the root) that protoc writes for one .proto."""
    stem = proto[: -len(".proto")]
    return [stem + suffix for suffix in GENERATED_SUFFIXES]


def generate(out_root: Path = REPO, src_root: Path = REPO) -> list[Path]:
    """Compile PROTOS under `src_root` into `out_root`; returns the written files."""
    from grpc_tools import protoc

    out_root, src_root = Path(out_root), Path(src_root)
    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        for proto in PROTOS:
            dest = stage / INSTALLED_PREFIX / proto
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_root / proto, dest)
        args = ["grpc_tools.protoc", f"-I{stage}", f"-I{well_known}",
                f"--python_out={stage}", f"--grpc_python_out={stage}", f"--pyi_out={stage}",
                *(str(stage / INSTALLED_PREFIX / p) for p in PROTOS)]
        if protoc.main(args) != 0:
            raise PlexrecError(f"protoc failed on {', '.join(PROTOS)}")
        written = []
        for proto in PROTOS:
            for rel in generated_files(proto):
                text = (stage / INSTALLED_PREFIX / rel).read_text()
                if rel.endswith(".pyi"):
                    # pyproject's ruff exclude matches *_pb2*.py only; protoc's stubs use Optional
                    text = RUFF_OFF + text
                dest = out_root / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(text)
                written.append(dest)
    return written


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(REPO))
    sys.exit(0)
