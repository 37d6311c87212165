// The tutorial's server, written from its description: browsers send movie
// rows as JSON over a WebSocket (`ws`), the server publishes each to Kafka
// topic movie-results (`kafkajs`). Nothing is acknowledged to the client.
//
//   node server.js --mode naive|careful --port PORT --kafka HOST:PORT
//
// naive:   as the tutorial writes it: `await producer.connect()` on every
//          message, then one `producer.send` per message, no key.
// careful: as a careful Node user would: one producer connected once,
//          rows keyed by actorId, sent in bounded batches (at most 1,000
//          rows each) with at most 4 requests in flight. Like the tutorial,
//          it has no backpressure: whatever arrives is queued in memory.
'use strict'
const { WebSocketServer } = require('ws')
const { Kafka, logLevel } = require('kafkajs')

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const mode = args.mode || 'careful'
const port = Number(args.port || 8080)
const topic = args.topic || 'movie-results'
const kafka = new Kafka({ clientId: `peer-${mode}`, brokers: [args.kafka || '127.0.0.1:9092'], logLevel: logLevel.ERROR })

function naive () {
  const producer = kafka.producer()
  return (data) => {
    const run = async () => {
      await producer.connect()
      await producer.send({ topic, messages: [{ value: data.toString() }] })
    }
    run().catch((e) => console.error('peer naive:', e.message))
  }
}

async function careful () {
  const producer = kafka.producer({ allowAutoTopicCreation: true })
  await producer.connect()
  const MAX_BATCH = 1000
  const MAX_IN_FLIGHT = 4
  const full = []          // batches waiting for a free request slot
  let current = []
  let inFlight = 0
  let scheduled = false

  function pump () {
    scheduled = false
    if (current.length && full.length === 0) { full.push(current); current = [] }
    while (inFlight < MAX_IN_FLIGHT && full.length) {
      const batch = full.shift()
      inFlight++
      producer.send({ topic, messages: batch })
        .catch((e) => console.error('peer careful:', e.message))
        .finally(() => { inFlight--; schedule() })
    }
  }
  function schedule () {
    if (!scheduled && (current.length || full.length)) { scheduled = true; setImmediate(pump) }
  }
  return (data) => {
    const text = data.toString()
    let key = null
    try { key = JSON.parse(text).actorId } catch (e) { return }
    current.push({ key, value: text })
    if (current.length >= MAX_BATCH) { full.push(current); current = [] }
    schedule()
  }
}

async function main () {
  const onMessage = mode === 'naive' ? naive() : await careful()
  const wss = new WebSocketServer({ port })
  wss.on('connection', (ws) => ws.on('message', onMessage))
  wss.on('listening', () => console.error(`peer ${mode}: listening on ${port}`))
}
main().catch((e) => { console.error(e); process.exit(1) })
