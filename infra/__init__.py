"""Embedded dev stack (PostgreSQL 18 + pgvector, Tansu broker), the ``vectorizer`` CLI, the demo
and the operator commands.

Stack: ``postgres`` and ``broker`` (one service each, start/stop/restart), ``stack`` (both,
recorded in a state file), ``cli`` (``vectorizer dev ...`` and every package's commands),
``pgadmin`` (databases and replication slots), ``urls`` (``sqlalchemy_url``), ``ports``,
``errors``, ``config_file`` (``--config FILE``).

Beside it: ``services`` (the connector and workers as subprocesses, for the demo and the
benchmarks), ``demo`` (``vectorizer demo``), ``faults`` (fault injection) and ``ops``
(``vectorizer status|errors|replay``, against any deployment).
"""
