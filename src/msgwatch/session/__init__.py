"""A measuring session: what ``msgwatch run`` does, as a library the command line, the benchmarks
and the lab's observatory share.

- :mod:`~msgwatch.session.options`: :class:`RunOptions`, the run's parameters and their defaults;
- :mod:`~msgwatch.session.run`: :func:`run_once` → :class:`RunReport` (measure, spool, write,
  submit), and :class:`Session`, the same prepared once and repeated by ``--every``;
- :mod:`~msgwatch.session.schedule`: the ``--every`` loop, ``run.lock``, the stop signals;
- :mod:`~msgwatch.session.consent`: consent to call tests;
- :mod:`~msgwatch.session.output`: the ``--output`` rule and the words for a failed write;
- :mod:`~msgwatch.session.errors`: :class:`SessionError`, each carrying its exit status.

Nothing here prints: progress, questions and notices go through callbacks the caller passes.
This package imports nothing at import time (``msgwatch --help`` loads it).
"""
