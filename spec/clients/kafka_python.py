"""kafka-python as an independent reader of a topic.

    python kafka_python.py --brokers B --topic T --consume N [--timeout S]
                           [--settle S] [--read-committed]

Assigns itself every partition of the topic (no consumer group), reads
from the earliest offset until N records arrived (then --settle more
seconds, default 1, for any extra) and prints one JSON line:
{"records": [{"partition", "offset", "key", "value"}]}. With
--read-committed it reads as isolation_level read_committed: records of
aborted or still open transactions are not returned.
"""
import argparse
import json
import os
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def text(b):
    return None if b is None else b.decode("utf-8")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--consume", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--settle", type=float, default=1)
    p.add_argument("--read-committed", action="store_true")
    a = p.parse_args()
    # No consumer group: every partition assigned by hand and read from the
    # start, so the read does not wait on a group join (which a loaded
    # broker made take minutes); kafkajs is the group member of the spec.
    consumer = KafkaConsumer(bootstrap_servers=a.brokers.split(","), enable_auto_commit=False,
                             client_id="sluice-spec-kafka-python",
                             isolation_level="read_committed" if a.read_committed else "read_uncommitted")
    deadline = time.time() + a.timeout
    parts = None
    while parts is None and time.time() < deadline:
        parts = consumer.partitions_for_topic(a.topic)
        if parts is None:
            time.sleep(0.2)
    if parts is None:
        sys.stderr.write("kafka-python: no metadata for %s within %g s\n" % (a.topic, a.timeout))
        sys.exit(2)
    tps = [TopicPartition(a.topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records = []
    settle = None
    while time.time() < deadline and (settle is None or time.time() < settle):
        for tp, msgs in consumer.poll(timeout_ms=200).items():
            for m in msgs:
                records.append({"partition": tp.partition, "offset": m.offset,
                                "key": text(m.key), "value": text(m.value)})
        if settle is None and len(records) >= a.consume:
            settle = time.time() + a.settle
    consumer.close()
    sys.stdout.write(json.dumps({"records": records}) + "\n")
    if len(records) < a.consume:
        sys.stderr.write("kafka-python: %d of %d records within %g s\n"
                         % (len(records), a.consume, a.timeout))
        sys.exit(2)


if __name__ == "__main__":
    main()
