"""Embedded dev stack (PostgreSQL 18 + pgvector, Tansu broker), the ``vectorizer`` CLI, URL helpers.

Modules: ``postgres`` and ``broker`` (one service each, start/stop/restart), ``stack`` (both,
recorded in a state file), ``cli`` (``vectorizer dev ...``), ``pgadmin`` (databases and
replication slots), ``urls`` (``sqlalchemy_url``), ``ports``, ``errors``.
"""
