"""Run by OONI's own ``oonidata`` (in its separate environment, see the Makefile): read measurements
from a JSONL file given as argv[1] and print one JSON line per measurement with what OONI's reader
made of it. Not imported by the test suite; executed as a subprocess.

Each measurement is loaded twice: as itself (``load_measurement`` picks the model by ``test_name``;
msgwatch's own test name gets OONI's base model), and with ``test_name`` set to ``urlgetter``, whose
typed model holds exactly the standard keys (queries, tcp_connect, tls_handshakes, requests,
network_events), so that OONI's field types check every entry of those lists.
"""

import json
import sys

from oonidata.dataclient import load_measurement


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            raw = json.loads(line)
            report: dict[str, object] = {"line": number, "ok": False}
            try:
                base = load_measurement(msmt=raw)
                report["model"] = type(base).__name__
                report["input"] = base.input
                report["probe_asn"] = base.probe_asn
                report["measurement_start_time"] = str(base.measurement_start_time)
                as_getter = dict(raw, test_name="urlgetter")
                getter = load_measurement(msmt=as_getter)
                keys = getter.test_keys
                report["counts"] = {
                    name: len(getattr(keys, name) or [])
                    for name in (
                        "queries",
                        "tcp_connect",
                        "tls_handshakes",
                        "requests",
                        "network_events",
                    )
                }
                report["ok"] = True
            except Exception as exc:  # reported, not raised: the test says which line failed
                report["error"] = f"{type(exc).__name__}: {exc}"
            print(json.dumps(report))  # noqa: T201 (the subprocess's output)


if __name__ == "__main__":
    main()
