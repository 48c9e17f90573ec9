"""The document configs (LoadingUriConfig, Parsing*Config): pgai's names and defaults, the same
round trips as every config, and the refusals that must happen at migration time."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pgai_orm import configuration as cfg
from pgai_orm.alembic.autogenerate import render_create_vectorizer
from pgai_orm.alembic.operations import AlterVectorizerOp, CreateVectorizerOp
from pgai_orm.configuration import (
    ChunkingNoneConfig,
    ConfigurationError,
    LoadingColumnConfig,
    LoadingUriConfig,
    ParsingAutoConfig,
    ParsingDoclingConfig,
    ParsingNoneConfig,
    ParsingPymupdfConfig,
    VectorizerConfig,
    config_from_dict,
)

SAMPLES: list[tuple[str, Any]] = [
    ("loading", LoadingUriConfig("uri")),
    ("loading", LoadingUriConfig(column_name="url", retries=0,
                                 aws_role_arn="arn:aws:iam::123456789012:role/S3Access")),
    ("parsing", ParsingAutoConfig()),
    ("parsing", ParsingNoneConfig()),
    ("parsing", ParsingPymupdfConfig()),
]


def test_pgai_names_and_defaults() -> None:
    assert LoadingUriConfig("uri").to_dict() == {"implementation": "uri", "column_name": "uri",
                                                 "retries": 6, "aws_role_arn": None}
    assert [s.to_dict()["implementation"] for k, s in SAMPLES if k == "parsing"] == [
        "auto", "none", "pymupdf"]
    assert ParsingDoclingConfig.implementation == "docling"
    assert VectorizerConfig(loading=LoadingUriConfig("uri")).parsing == ParsingAutoConfig()


@pytest.mark.parametrize("kind, config", SAMPLES, ids=lambda v: repr(v))
def test_round_trips(kind: str, config: Any) -> None:
    data = orjson.loads(orjson.dumps(config.to_dict()))
    assert config_from_dict(data, kind) == config
    again = eval(repr(config), vars(cfg))
    assert again == config and hash(again) == hash(config)


def test_vectorizer_round_trip_and_old_rows() -> None:
    vc = VectorizerConfig(loading=LoadingUriConfig("uri", retries=2), chunking=ChunkingNoneConfig(),
                          parsing=ParsingNoneConfig())
    assert VectorizerConfig.from_dict(orjson.loads(orjson.dumps(vc.to_dict()))) == vc
    assert eval(repr(vc), vars(cfg)) == vc
    old = vc.to_dict()
    del old["parsing"]  # a catalog row from before parsing existed
    assert VectorizerConfig.from_dict(old).parsing == ParsingAutoConfig()


def test_docling_is_refused_naming_what_to_use() -> None:
    with pytest.raises(ConfigurationError, match=r"^ParsingDoclingConfig: not supported: .*model "
                                                  r"files.*ParsingAutoConfig\(\).*'documents' extra"
                                                  r".*'pymupdf' extra"):
        ParsingDoclingConfig()
    with pytest.raises(ConfigurationError, match="^ParsingDoclingConfig"):
        config_from_dict({"implementation": "docling"}, "parsing")


def test_bad_values_name_their_field() -> None:
    with pytest.raises(ConfigurationError, match=r"^LoadingUriConfig\.aws_role_arn: must match"):
        LoadingUriConfig("uri", aws_role_arn="arn:aws:s3:::bucket")
    with pytest.raises(ConfigurationError, match=r"^LoadingUriConfig\.retries: must be >= 0"):
        LoadingUriConfig("uri", retries=-1)
    with pytest.raises(ConfigurationError, match=r"^VectorizerConfig\.parsing: ParsingPymupdf"):
        VectorizerConfig(chunking=cfg.ChunkingRecursiveCharacterTextSplitterConfig("body"),
                         parsing=ParsingPymupdfConfig())
    with pytest.raises(ConfigurationError, match=r"^VectorizerConfig\.parsing: must be one of"):
        VectorizerConfig(loading=LoadingColumnConfig("f"), parsing=LoadingColumnConfig("f"))  # type: ignore[arg-type]


def test_operations_take_parsing_and_render_it_only_when_not_the_default() -> None:
    op = CreateVectorizerOp("docs", loading=LoadingUriConfig("uri"), parsing=ParsingAutoConfig())
    assert op.config.parsing == ParsingAutoConfig()

    class Context:
        imports: set[str] = set()
    rendered = render_create_vectorizer(Context(), op)  # type: ignore[arg-type]
    assert "loading=LoadingUriConfig(column_name='uri')" in rendered and "parsing" not in rendered
    op = CreateVectorizerOp("docs", loading=LoadingColumnConfig("file"),
                            parsing=ParsingPymupdfConfig())
    assert "parsing=ParsingPymupdfConfig()" in render_create_vectorizer(Context(), op)  # type: ignore[arg-type]
    alter = AlterVectorizerOp("docs", parsing=ParsingNoneConfig())
    assert orjson.loads(alter.statements()[0].compile().params["patch"]) == {
        "parsing": {"implementation": "none"}}
