"""What the tests build again and again, written once.

* :mod:`.configs`: vectorizer configs in the catalog's form (the offline model, a fake OpenAI);
* :mod:`.vectorizers`: the catalog install and ``create_vectorizer`` (Alembic's real operation);
* :mod:`.events`: change events as the connector publishes them, made by the real encoder;
* :mod:`.orm`: engines and store rows for the ORM tests (the processors' part, played by hand);
* :mod:`.worker`: a source table with a producer speaking the contract, and `vectorizer worker`;
* :mod:`.polling`: waiting for a condition with a deadline.

The fake provider servers live in ``tests/fake_providers``; the pipeline as processes, the
seeded load and the faults injected into it in ``infra/faults.py`` (the benchmarks use them too,
and benchmarks import nothing from ``tests``).
"""
