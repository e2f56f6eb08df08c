"""The checked-in generated code must be what proto/generate.py produces from the .proto now."""

from __future__ import annotations

from pathlib import Path

from plexrec.proto.generate import PROTOS, REPO, generate, generated_files


def test_checked_in_code_is_fresh(tmp_path: Path) -> None:
    written = generate(out_root=tmp_path, src_root=REPO)
    assert len(written) == 3 * len(PROTOS)
    for proto in PROTOS:
        for rel in generated_files(proto):
            fresh = (tmp_path / rel).read_bytes()
            checked_in = REPO / rel
            assert checked_in.exists(), f"{rel} missing: run python -m plexrec.proto.generate"
            assert checked_in.read_bytes() == fresh, f"{rel} is stale: run python -m plexrec.proto.generate"


def test_generated_modules_import_from_repo_root() -> None:
    from plexrec.proto.plexrec.v1 import plexrec_pb2, plexrec_pb2_grpc

    assert plexrec_pb2.DESCRIPTOR.package == "plexrec.v1"
    assert hasattr(plexrec_pb2_grpc, "EmbeddingServiceStub")
    assert plexrec_pb2.Entity.Value("USER") == 1
