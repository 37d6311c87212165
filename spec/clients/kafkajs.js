'use strict';
// kafkajs 2.2.4 (the tutorial's Kafka client) as an independent reader
// and writer of a topic.
//   node kafkajs.js --brokers B --topic T --consume N [--group G] [--timeout S]
//     joins consumer group G (default: a fresh one) from the earliest
//     offset and reads until N records arrived, then waits --settle S
//     (default 1) more seconds for any extra; prints one JSON line:
//     {records: [{partition, offset, key, value}], joined: true}
//   node kafkajs.js --brokers B --topic T --produce N [--prefix P]
//     sends N records (key "kN", value "P-N") idempotently and prints
//     {produced: N, partitions: {p: count}}
//   node kafkajs.js --brokers B --topic T --create P [--replicas R] [--compact]
//     creates the topic (comma-separated: topics) with P partitions
//     (admin API), compacted with --compact, and waits (--timeout S,
//     default 60) until every partition has a leader; prints {created: bool}
//   node kafkajs.js --brokers B --topic T --grow P
//     raises the topic's partition count to P (admin API); prints {grown: P}
//   node kafkajs.js --brokers B --groups
//     lists the cluster's consumer groups (admin API); prints {groups: [ids]}
//   node kafkajs.js --brokers B --topic T --committed G
//     the offsets group G has committed on T (admin API); prints
//     {committed: {partition: offset}} (-1: nothing committed)
const { Kafka, logLevel } = require('kafkajs');
const parse = require('./args');

const o = parse(process.argv.slice(2), { flags: ['compact', 'groups'] });
const kafka = new Kafka({
  clientId: 'sluice-spec-kafkajs',
  brokers: o.brokers.split(','),
  logLevel: logLevel.ERROR,
  retry: { retries: 10 },
});

function done(result, code) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code || 0);
}

async function produce() {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const n = Number(o.produce);
  const messages = [];
  for (let i = 1; i <= n; i++) messages.push({ key: `k${i}`, value: `${o.prefix || 'v'}-${i}` });
  const meta = await producer.send({ topic: o.topic, acks: -1, messages });
  await producer.disconnect();
  const partitions = {};
  for (const m of meta) partitions[m.partition] = (partitions[m.partition] || 0) + 1;
  done({ produced: n, partitions });
}

async function consume() {
  const want = Number(o.consume);
  const group = o.group || `sluice-spec-${process.pid}-${Date.now()}`;
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000 });
  const records = [];
  let joined = false;
  consumer.on(consumer.events.GROUP_JOIN, () => { joined = true; });
  await consumer.connect();
  await consumer.subscribe({ topic: o.topic, fromBeginning: true });
  let settle = null;
  const finish = async () => {
    await consumer.disconnect().catch(() => {});
    done({ records, joined });
  };
  setTimeout(() => { finish(); }, Number(o.timeout || 60) * 1000);
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      records.push({
        partition,
        offset: Number(message.offset),
        key: message.key === null ? null : message.key.toString(),
        value: message.value === null ? null : message.value.toString(),
      });
      if (records.length >= want && !settle) {
        settle = setTimeout(finish, Number(o.settle === undefined ? 1 : o.settle) * 1000);
      }
    },
  });
}

async function create() {
  const admin = kafka.admin();
  await admin.connect();
  const topics = o.topic.split(',');
  const partitions = Number(o.create);
  const created = await admin.createTopics({
    waitForLeaders: false,
    topics: topics.map((topic) => ({
      topic,
      numPartitions: partitions,
      replicationFactor: Number(o.replicas || 1),
      configEntries: o.compact ? [{ name: 'cleanup.policy', value: 'compact' }] : [],
    })),
  });
  // Every partition led before we return: a loaded broker takes its time,
  // and metadata asked meanwhile says "does not host this topic-partition".
  const deadline = Date.now() + Number(o.timeout || 60) * 1000;
  for (;;) {
    let ready = false;
    try {
      const md = await admin.fetchTopicMetadata({ topics });
      ready = md.topics.every((t) => t.partitions.length === partitions &&
                                     t.partitions.every((p) => p.leader >= 0));
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
    if (ready) break;
    if (Date.now() > deadline) throw new Error(`${topics}: partitions without a leader after ${o.timeout || 60} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
  await admin.disconnect();
  done({ created });
}

async function grow() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createPartitions({ topicPartitions: [{ topic: o.topic, count: Number(o.grow) }] });
  await admin.disconnect();
  done({ grown: Number(o.grow) });
}

async function groups() {
  const admin = kafka.admin();
  await admin.connect();
  const listed = await admin.listGroups();
  await admin.disconnect();
  done({ groups: listed.groups.map((g) => g.groupId) });
}

async function committed() {
  const admin = kafka.admin();
  await admin.connect();
  const [entry] = await admin.fetchOffsets({ groupId: o.committed, topics: [o.topic] });
  await admin.disconnect();
  const offsets = {};
  for (const p of entry.partitions) offsets[p.partition] = Number(p.offset);
  done({ committed: offsets });
}

const mode = o.create !== undefined ? create : o.grow !== undefined ? grow
  : o.committed !== undefined ? committed : o.groups !== undefined ? groups : o.produce !== undefined ? produce : consume;
mode().catch((e) => {
  done({ error: `${e.name}: ${e.message}` }, 1);
});
