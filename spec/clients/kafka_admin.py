"""kafka-python's admin client as an independent view of topics.

    python kafka_admin.py --brokers B --topic T [--topic T2 ...]

Prints one JSON line: {"T": {"error": CODE, "partitions": [{"partition",
"leader", "replicas", "isr"}], "configs": {NAME: {"value", "source"}}}}
(configs: every config of the topic, kafka-python's filter "all"; a
missing topic has error 3 and no partitions or configs).
"""
import argparse
import json

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", action="append", required=True)
    a = p.parse_args()
    admin = KafkaAdminClient(bootstrap_servers=a.brokers.split(","), client_id="sluice-spec-admin")
    out = {}
    for t in admin.describe_topics(a.topic):
        parts = [{"partition": q["partition_index"], "leader": q["leader_id"],
                  "replicas": q["replica_nodes"], "isr": q["isr_nodes"]}
                 for q in t.get("partitions") or []]
        parts.sort(key=lambda q: q["partition"])
        out[t["name"]] = {"error": t["error_code"], "partitions": parts}
    for name, info in out.items():
        if info["error"] == 0:
            got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)],
                                         config_filter="all")
            configs = got["topic"][name]
            info["configs"] = {k: {"value": v.get("value"), "source": v.get("config_source")}
                               for k, v in configs.items()}
    admin.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
