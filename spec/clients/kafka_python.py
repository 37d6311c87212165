"""kafka-python as an independent reader of a topic.

    python kafka_python.py --brokers B --topic T --consume N [--timeout S]

Joins a fresh consumer group, reads from the earliest offset until N
records arrived (then one more second for any extra) and prints one JSON
line: {"records": [{"partition", "offset", "key", "value"}], "group": G}.
"""
import argparse
import json
import os
import sys
import time

from kafka import KafkaConsumer


def text(b):
    return None if b is None else b.decode("utf-8")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--consume", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    group = "sluice-spec-python-%d-%d" % (os.getpid(), int(time.time()))
    consumer = KafkaConsumer(a.topic, bootstrap_servers=a.brokers.split(","), group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=True,
                             client_id="sluice-spec-kafka-python")
    records = []
    deadline = time.time() + a.timeout
    settle = None
    while time.time() < deadline and (settle is None or time.time() < settle):
        for tp, msgs in consumer.poll(timeout_ms=200).items():
            for m in msgs:
                records.append({"partition": tp.partition, "offset": m.offset,
                                "key": text(m.key), "value": text(m.value)})
        if settle is None and len(records) >= a.consume:
            settle = time.time() + 1
    consumer.close()
    sys.stdout.write(json.dumps({"records": records, "group": group}) + "\n")
    if len(records) < a.consume:
        sys.stderr.write("kafka-python: %d of %d records within %g s (group %s, assignment %s)\n"
                         % (len(records), a.consume, a.timeout, group, consumer.assignment()))
        sys.exit(2)


if __name__ == "__main__":
    main()
