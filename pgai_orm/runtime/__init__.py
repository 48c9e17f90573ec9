"""What a running service needs from its surroundings, with no dev stack involved.

The connector, the worker supervisor and its faust children, the operator commands, the dev
stack and the benchmarks all use these, so each is written once:

* :mod:`.logs`: the one logging setup (text or JSON lines, secrets scrubbed);
* :mod:`.processes`: stopping a process (or its whole group): SIGTERM, a deadline, SIGKILL;
* :mod:`.waiting`: polling a condition until it holds or a deadline passes;
* :mod:`.urls`: ``DATABASE_URL`` in libpq's or SQLAlchemy's form, to one libpq conninfo;
* :mod:`.backoff`: exponential backoff with a cap, for every retry loop;
* :mod:`.failures`: one line per failure to reach the database or the broker, naming the fix;
* :mod:`.options`: the command-line naming scheme, as shared click options.
"""
