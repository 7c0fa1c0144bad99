"""The lab's censor: named censor behaviours, compiled for one censoring router and applied to it.

::

    rule = build_rule({"type": "drop_udp", "to": ["198.18.16.0/24"], "ports": [3478]})
    compiled = compile_rules([rule, ...], ctx)   # pure
    apply(compiled, ctx)                         # idempotent: replaces a previous apply
    remove(ctx)                                  # everything apply() made, also after a crash

Each rule type is a small pydantic model (:data:`RULE_TYPES`); ``docs/lab.md`` documents what each
emulates and compiles to. Module map: :mod:`.base` (fields, the emitter), :mod:`.addresses`
(address/port/payload rules, native nft), :mod:`.keywords` (SNI/Host keyword rules, iptables string
match), :mod:`.dns` (resolver lies, injection), :mod:`.rates` (police, shape), :mod:`.compiler`,
:mod:`.runner` (apply/remove), :mod:`.injector` and :mod:`.packets` (the injector process).
"""

from msgwatch.lab.censor.base import Rule
from msgwatch.lab.censor.compiler import compile_rules
from msgwatch.lab.censor.context import CensorContext, CensorProcess, Compiled
from msgwatch.lab.censor.registry import RULE_TYPES, build_rule
from msgwatch.lab.censor.runner import CensorError, Installed, apply, installed, remove

__all__ = [
    "RULE_TYPES",
    "CensorContext",
    "CensorError",
    "CensorProcess",
    "Compiled",
    "Installed",
    "Rule",
    "apply",
    "build_rule",
    "compile_rules",
    "installed",
    "remove",
]
