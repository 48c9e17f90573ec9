"""What a running service needs from its surroundings, with no dev stack involved.

The connector, the worker supervisor and its faust children, the operator commands, the dev
stack and the benchmarks all use these, so each is written once:

* :mod:`.logs`: the one logging setup (text or JSON lines, secrets scrubbed);
* :mod:`.processes`: stopping a process (or its whole group): SIGTERM, a deadline, SIGKILL;
* :mod:`.waiting`: polling a condition until it holds or a deadline passes.
"""
