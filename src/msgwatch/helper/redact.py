"""What ``/v1/measure`` returns never shows the helper's own network: private DNS answers redacted.

The helper's resolver is the operator's (``--resolver``, or the system's). On a network with
split-horizon DNS it answers some names with addresses of the inside (10.x, 192.168.x, fd00::/8,
...), and a client that asks for a ``dns`` step — or for any step by name — would read them in the
result and in the trace: a map of the helper's network for anyone on the Internet. The policy
already refuses such addresses as *targets* (:mod:`msgwatch.helper.policy`); here they are refused
as *answers* too, by the same rule: an address the policy would refuse (production: anything but
global unicast; lab: anything outside the lab's prefixes, so the lab's own answers are returned)
becomes :data:`REDACTED`, wherever the answer shows:

- a step's ``addresses`` and ``answers_seen``; the step then says how many it redacted
  (``redacted``): that the name resolved to a non-public address is itself the evidence (a
  rebinding name, an operator's split horizon), and a client may still compare the counts;
- the trace's DNS records (``queries``): ``ipv4``/``ipv6`` of each answer; in a record that had
  one, the ``hostname`` of its CNAMEs too (a public name pointing into a private zone names it);
- their ``raw_response``, which holds the same addresses as bytes: dropped (null) from a record
  whose bytes hold a redacted address in any section, or cannot be checked (bytes that do not
  parse, or were cut at the trace's bound);
- ``resolver_address`` when the resolver itself is an address the policy refuses (the operator's
  internal resolver).

Nothing else in the answer can hold one: the steps connect only to allowed addresses (checked
before anything is sent), and failure texts are scrubbed of addresses (:mod:`msgwatch.failures`).
Pure: the measure's answer in, the same answer (changed in place) out.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import dns.exception
import dns.message
import dns.rdatatype

from msgwatch.helper.policy import Policy
from msgwatch.wire.helper_api import MeasureAnswer

REDACTED = "[redacted]"


def redact(answer: MeasureAnswer, policy: Policy) -> MeasureAnswer:
    """``answer`` with refused addresses redacted (in place)."""
    for result in answer["results"]:
        count = 0
        addresses = result.get("addresses")
        if isinstance(addresses, list):
            result["addresses"], count = _redact_list(addresses, policy)
        seen = result.get("answers_seen")
        if isinstance(seen, list):
            result["answers_seen"] = [_redact_list(s, policy)[0] for s in seen]
        if count:
            result["redacted"] = count
    for record in answer["trace"].get("queries") or []:
        _redact_query(record, policy)
    return answer


def _redact_list(addresses: list[Any], policy: Policy) -> tuple[list[Any], int]:
    out = [a if _allowed(a, policy) else REDACTED for a in addresses]
    return out, sum(1 for a in out if a == REDACTED)


def _allowed(address: Any, policy: Policy) -> bool:
    return isinstance(address, str) and policy.allows(address)


def _redact_query(record: dict[str, Any], policy: Policy) -> None:
    changed = False
    answers = record.get("answers") or []
    for entry in answers:
        for key in ("ipv4", "ipv6"):
            if key in entry and not _allowed(entry[key], policy):
                entry[key], changed = REDACTED, True
    if changed:
        for entry in answers:
            if "hostname" in entry:
                entry["hostname"] = REDACTED
    raw = record.get("raw_response")
    if raw is not None and (changed or not _raw_clean(raw, policy)):
        record["raw_response"] = None
    resolver = record.get("resolver_address")
    if isinstance(resolver, str) and resolver:
        host = resolver.rsplit(":", 1)[0].strip("[]")
        if not _allowed(host, policy):
            record["resolver_address"] = REDACTED


def _raw_clean(raw: Any, policy: Policy) -> bool:
    """Whether the base64 DNS message ``raw`` parses and holds no refused A/AAAA address."""
    try:
        message = dns.message.from_wire(base64.b64decode(str(raw), validate=True))
    except (binascii.Error, ValueError, dns.exception.DNSException, UnicodeError, IndexError,
            KeyError):  # fmt: skip
        return False
    for section in (message.answer, message.authority, message.additional):
        for rrset in section:
            addresses = rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
            if addresses and not all(policy.allows(r.to_text()) for r in rrset):
                return False
    return True
