"""The catalog in schema ``vectorizer``: its one install (:mod:`.schema`) and every query of it.

Modules, one per part of the catalog:

* :mod:`.schema`: the versioned install of every table and function;
* :mod:`.vectorizers`: which vectorizers exist (``vectorizer.vectorizers``);
* :mod:`.versions`: config versions (``vectorizer.config_versions``): what a worker serves,
  replay targets, activation;
* :mod:`.errors`: per-row errors (``vectorizer.errors``);
* :mod:`.report`: the read model behind ``vectorizer status`` and ``vectorizer errors``.

The connector's own state (``connector_state``, ``connector_tables``) is read and written by
:mod:`connector.state`, and the store with its ``applied_state`` by :mod:`processors.store`:
each table has one writer, and their DDL is here with the rest.
"""

from pgai_orm.catalog.schema import (
    CATALOG_SCHEMA,
    CATALOG_VERSION,
    CatalogPrivilegeError,
    catalog_sql,
    ensure_catalog,
    install_statements,
    installed_version,
)
from pgai_orm.catalog.vectorizers import (
    PrimaryKeyColumn,
    VectorizerRecord,
    catalog_exists,
    load_vectorizers,
)

__all__ = [
    "CATALOG_SCHEMA",
    "CATALOG_VERSION",
    "CatalogPrivilegeError",
    "PrimaryKeyColumn",
    "VectorizerRecord",
    "catalog_exists",
    "catalog_sql",
    "ensure_catalog",
    "install_statements",
    "installed_version",
    "load_vectorizers",
]
