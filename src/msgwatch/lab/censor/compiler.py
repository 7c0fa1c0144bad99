"""Compile a censor's rules into one nftables script plus iptables/tc argv, resolver lines, helpers.

The nft script replaces the censor's table in one transaction: it declares the table (a no-op if
it exists), deletes it, and declares it again with every set and chain, so ``nft -f`` swaps the old
ruleset for the new one atomically — a phased scenario never runs with half a ruleset, and applying
the same rules twice leaves exactly one copy.

Chains: ``censor_forward`` (filter, forward hook, priority filter + 10 — after iptables-nft's
FORWARD at priority filter, so a conntrack mark set there by a string match is visible to nft on
the same packet) and, when a rule needs it, ``censor_dstnat`` (nat, prerouting, priority dstnat).
"""

from __future__ import annotations

from collections.abc import Sequence

from msgwatch.lab.censor.base import Emitter, Output, Rule
from msgwatch.lab.censor.context import TABLE, CensorContext, Compiled


def compile_rules(rules: Sequence[Rule], ctx: CensorContext) -> Compiled:
    """Compile ``rules`` for the censor ``ctx`` (pure: nothing is touched)."""
    out = Output()
    labels = []
    for index, rule in enumerate(rules):
        rule.emit(Emitter(ctx, index, rule, out))
        labels.append(f"r{index} {rule.type}" + (f" {rule.label}" if rule.label else ""))
    names = [p.name for p in out.processes]
    if len(set(names)) != len(names):
        raise ValueError(f"helper processes would share a name: {names}")
    return Compiled(
        nft=render_nft(out, ctx, labels),
        iptables=out.iptables,
        tc=out.tc,
        resolver_lines=out.resolver,
        processes=out.processes,
        labels=labels,
    )


def render_nft(out: Output, ctx: CensorContext, labels: list[str]) -> str:
    lines = [f"# msgwatch censor for namespace {ctx.netns}: {len(labels)} rule(s)"]
    lines += [f"#   {label}" for label in labels]
    lines += [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    lines += [f"    {decl}" for decl in out.sets]
    lines += ["    chain censor_forward {",
              "        type filter hook forward priority filter + 10; policy accept;"]  # fmt: skip
    lines += [f"        {rule}" for rule in out.forward]
    lines.append("    }")
    if out.nat:
        lines += ["    chain censor_dstnat {",
                  "        type nat hook prerouting priority dstnat; policy accept;"]  # fmt: skip
        lines += [f"        {rule}" for rule in out.nat]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"
