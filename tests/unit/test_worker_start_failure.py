"""The one line a worker records when it cannot start: the cause, the fix, never a secret."""

from __future__ import annotations

import pytest

from pgai_orm.configuration import ConfigurationError, EmbeddingOpenaiConfig, VectorizerConfig
from pgai_orm.embedders import create_embedder
from pgai_orm.embedders.errors import MissingApiKeyError, MissingExtraError
from processors.engine import start_failure_message
from tests.support.configs import local_config

SECRET = "sk-live-0123456789abcdef"


def test_a_missing_api_key_names_the_variable_and_who_needs_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_OPENAI_KEY", raising=False)
    config = local_config()
    config["embedding"] = EmbeddingOpenaiConfig(model="text-embedding-3-small",
                                                api_key_name="MY_OPENAI_KEY").to_dict()
    with pytest.raises(MissingApiKeyError) as caught:
        create_embedder(VectorizerConfig.from_dict(config).embedding)
    assert start_failure_message(caught.value, config) == (
        "the openai embedder needs an API key: set the environment variable MY_OPENAI_KEY"
        " for `vectorizer worker` and restart it")


def test_our_errors_keep_their_message_and_others_say_where_the_traceback_is() -> None:
    extra = MissingExtraError("the litellm and voyageai embedders need the 'litellm' extra")
    assert start_failure_message(extra) == str(extra)
    bad = ConfigurationError("EmbeddingOpenaiConfig.dimensions: must be a positive integer")
    assert start_failure_message(bad) == (
        "its stored config does not load: EmbeddingOpenaiConfig.dimensions: must be a positive"
        " integer; change it with op.alter_vectorizer")
    assert start_failure_message(RuntimeError("boom\n  on two lines")) == (
        "RuntimeError: boom on two lines (traceback in the worker's log)")


def test_no_secret_from_the_environment_or_a_url_gets_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", SECRET)
    message = start_failure_message(
        OSError(f"refused key {SECRET} at postgresql://app:hunter2-pass@db/app"))
    assert SECRET not in message and "hunter2-pass" not in message
    assert "refused key ***" in message
