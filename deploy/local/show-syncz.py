"""Prints pilot's /debug/syncz (read from stdin) as one line per proxy and type."""

import json
import sys

for proxy in json.load(sys.stdin):
    print(f"  {proxy['proxy']} ({proxy['protocol']} xDS)")
    for url, state in sorted(proxy["types"].items()):
        kind = url.rsplit(".", 1)[-1]
        acked = "ACKed" if state["acked_version"] == state["sent_version"] else "awaiting ACK"
        nack = state["last_nack"]
        note = f", last NACK: {nack['error']}" if nack else ""
        print(f"    {kind:<22} {acked}{note}")
