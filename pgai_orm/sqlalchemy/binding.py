"""What one ``vectorizer_relationship`` on one mapped class binds: owner, attribute, store table.

Its own module because the catalog lookup, search and the generated embedding class all need
it, and it needs none of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["VectorizerBinding"]


@dataclass(frozen=True, eq=False)
class VectorizerBinding:
    """One ``vectorizer_relationship`` attached to one mapped class: everything both sides need."""

    owner: type
    attribute: str
    dimensions: int
    table_name: str
    schema: str | None
    relationship_kwargs: dict[str, Any] = field(default_factory=dict)
    parent_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def relationship_key(self) -> str:
        """The owner's real relationship attribute, for loader options (``selectinload``)."""
        return f"{self.attribute}_relationship"

    @property
    def class_name(self) -> str:
        """``BlogPost`` + ``content_embeddings`` -> ``BlogPostContentEmbeddings``."""
        words = re.split(r"[^0-9A-Za-z]+", self.attribute)
        return self.owner.__name__ + "".join(w[:1].upper() + w[1:] for w in words if w)

    @property
    def table_fullname(self) -> str:
        """``schema.table`` when schema-qualified, as ``Table.fullname`` spells it."""
        return f"{self.schema}.{self.table_name}" if self.schema else self.table_name

    def describe(self) -> str:
        """How error messages name the model: the user's own spelling."""
        return f"{self.owner.__name__}.{self.attribute}"
