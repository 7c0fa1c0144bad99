"""Real servers as child processes, shared by the loopback mini-Internet and the namespace lab.

- :mod:`~msgwatch.lab.procs.proc`: a :class:`~msgwatch.lab.procs.proc.Server` (start in its own session,
  wait until it holds its sockets and answers, check it bound nothing outside the allowed ranges,
  stop its whole process group and check it gone), and the ``/proc`` readers behind it;
- :mod:`~msgwatch.lab.procs.registry`: ``<pid> <start time>`` records, so that a crashed run's servers
  are found again and a recycled pid is never mistaken for one of them;
- :mod:`~msgwatch.lab.procs.ready`: readiness checks (a DNS query, a STUN Binding request);
- :mod:`~msgwatch.lab.procs.certs`: a throw-away certificate authority and its server certificates.

The lifecycle around them (a registry of running labs, signals, gc) is :mod:`msgwatch.lab.lifecycle`.
"""
