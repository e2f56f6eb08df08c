"""The `[export]` table of a run config: how `plexrec export` stores the vectors. Kept apart
from training/export.py (torch, the towers) so the run config can own the section without
importing what it configures."""

from __future__ import annotations

from pydantic import Field, field_validator

from plexrec.features.config import Section
from plexrec.models.vector_codecs import CODECS

ROTATIONS = ("itq", "none")


class ExportConfig(Section):
    """`vector_dtype`: float32, float16, int8 or binary (models.vector_codecs; `plexrec export
    --vector-dtype` overrides it). `binary_rotation`: for binary, "itq" learns an orthogonal
    rotation (ITQ, `itq_iterations` rounds, seeded) that lowers the sign quantisation error,
    "none" takes the signs of the vectors as they are."""

    vector_dtype: str = "float32"
    binary_rotation: str = "itq"
    itq_iterations: int = Field(50, ge=1, le=1000)

    @field_validator("vector_dtype")
    @classmethod
    def _known_dtype(cls, dtype: str) -> str:
        if dtype not in CODECS:
            raise ValueError(f"expected one of {', '.join(CODECS)}")
        return dtype

    @field_validator("binary_rotation")
    @classmethod
    def _known_rotation(cls, rotation: str) -> str:
        if rotation not in ROTATIONS:
            raise ValueError(f"expected one of {', '.join(ROTATIONS)}")
        return rotation
