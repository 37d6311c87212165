"""Scrapes a Prometheus endpoint and parses it with prometheus_client's
parser (the text format 0.0.4, independent of sluice). Prints one JSON
line: status, content_type, families {name: {type, help, samples:
[[name, labels, value]]}}, or error (a parse failure names the line).
    python scrape.py URL
"""
import json
import math
import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    url = sys.argv[1]
    out = {}
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            out["status"] = r.status
            out["content_type"] = r.headers.get("Content-Type")
            text = r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        out["status"] = e.code
        print(json.dumps(out))
        return
    families = {}
    try:
        for f in text_string_to_metric_families(text):
            if f.name in families:
                raise ValueError("family %s appears twice" % f.name)
            families[f.name] = {
                "type": f.type, "help": f.documentation,
                "samples": [[s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)]
                            for s in f.samples],
            }
    except Exception as e:  # the parser's own message says what is wrong
        out["error"] = "%s: %s" % (type(e).__name__, e)
    out["families"] = families
    print(json.dumps(out))


main()
