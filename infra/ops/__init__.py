"""Operator commands: ``vectorizer status``, ``errors``, ``replay``, ``pause`` and ``resume``.

They work against any deployment (a database URL, optionally a broker), the embedded dev stack
being only the fallback when no URL is given. Modules:

* :mod:`.report`: the whole status report, the catalog's read model
  (:mod:`pgai_orm.catalog.report`) plus the connector's phase per table and consumer lag;
* :mod:`.replay`: re-embedding a vectorizer from its topic into a fresh config version;
* :mod:`.render`: the plain-text tables and the JSON form;
* :mod:`.commands`: the click commands that ``infra.cli`` registers.
"""
