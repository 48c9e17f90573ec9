"""The Alembic project that ``vectorizer demo`` applies: a ``blog_posts`` table and its vectorizer.

It is a real Alembic project (``env.py``, ``versions/``), shipped as package data so the demo
needs nothing but the installed package, and laid out the way the README tells users to lay out
theirs: ``env.py`` calls ``register_operations()`` and the migration calls
``op.create_vectorizer``. ``models`` holds the ORM class the demo searches through.
"""

from pathlib import Path

#: ``script_location`` for an ``alembic.config.Config``.
SCRIPT_LOCATION = Path(__file__).resolve().parent
