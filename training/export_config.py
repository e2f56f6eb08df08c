"""The `[export]` table of a run config: how `plexrec export` stores the vectors. Kept apart
from training/export.py (torch, the towers) so the run config can own the section without
importing what it configures."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from plexrec.features.config import Section
from plexrec.models.vector_codecs import CODECS

ROTATIONS = ("itq", "none")
_CHOICES = {"vector_dtype": tuple(CODECS), "binary_rotation": ROTATIONS}


class ExportConfig(Section):
    """`vector_dtype`: float32, float16, int8 or binary (models.vector_codecs; `plexrec export
    --vector-dtype` overrides it). `binary_rotation`: for binary, "itq" learns an orthogonal
    rotation (ITQ, `itq_iterations` rounds, seeded) that lowers the sign quantisation error,
    "none" takes the signs of the vectors as they are. `item_catalog`: a CSV side table of every
    catalogue item (training/item_catalog.py); items no interaction mentions get their vector
    from the item tower on its features (`plexrec export --item-catalog` overrides it; empty:
    only the items of the data)."""

    vector_dtype: str = "float32"
    binary_rotation: str = "itq"
    itq_iterations: int = Field(50, ge=1, le=1000)
    item_catalog: str = ""

    @field_validator("vector_dtype", "binary_rotation")
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        choices = _CHOICES[str(info.field_name)]
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value
