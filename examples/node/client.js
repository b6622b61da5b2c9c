#!/usr/bin/env node
// Call warren from Node: publish one task to RabbitMQ and wait for its reply.
//
//   npm install            (amqplib)
//   node client.js "The capital of France is" [--max-tokens 16] [--queue warren.requests]
//
// Follows warren's wire contract v1: JSON body, content_type application/json, persistent,
// reply_to + correlation_id, publisher confirms (a full queue nacks the publish), mandatory
// (a task no queue takes is returned, not dropped). Exit code 0 on an ok reply (its JSON on
// stdout), 1 on an error reply, a refused or a returned publish, 2 when no reply came in time.
"use strict";

const amqp = require("amqplib");
const { randomUUID } = require("crypto");

function parseArgs(argv) {
  const options = { maxTokens: 16, queue: "warren.requests", url: "amqp://guest:guest@127.0.0.1:5672", wait: 120 };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--max-tokens") options.maxTokens = Number(argv[++i]);
    else if (argv[i] === "--queue") options.queue = argv[++i];
    else if (argv[i] === "--url") options.url = argv[++i];
    else if (argv[i] === "--wait") options.wait = Number(argv[++i]);
    else rest.push(argv[i]);
  }
  options.prompt = rest.join(" ");
  return options;
}

async function callWarren({ url, queue, task, waitSeconds }) {
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createConfirmChannel();
    const { queue: replyQueue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
    const correlationId = randomUUID();
    const reply = new Promise((resolve) => {
      channel.consume(replyQueue, (message) => {
        if (message && message.properties.correlationId === correlationId) {
          const body = JSON.parse(message.content.toString());
          // Chunks (stream) and `started` (progress) come before the final reply.
          if (body.status !== "chunk" && body.status !== "started") resolve(body);
        }
      }, { noAck: true });
    });
    // `mandatory`: a task no queue takes (no worker has declared it yet) comes back as a
    // basic.return before its confirm; the confirm alone would say it was taken.
    const returned = new Promise((resolve, reject) => {
      channel.on("return", (message) => {
        if (message.properties.correlationId === correlationId) {
          reject(new Error(`the broker returned the task: no queue ${queue} (has a worker declared it?)`));
        }
      });
    });
    returned.catch(() => {}); // raced below
    // The callback reports the broker's confirm: an error means it refused the task (nack),
    // for instance because the requests queue is full.
    await new Promise((resolve, reject) => {
      channel.sendToQueue(queue, Buffer.from(JSON.stringify(task)), {
        contentType: "application/json", persistent: true, replyTo: replyQueue, correlationId,
        messageId: correlationId, mandatory: true,
      }, (err) => (err ? reject(new Error(`the broker refused the task: ${err.message || err}`)) : resolve()));
    });
    const timeout = new Promise((resolve) => setTimeout(() => resolve(null), waitSeconds * 1000));
    return await Promise.race([reply, timeout, returned]);
  } finally {
    await connection.close();
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (!options.prompt) {
    // warren refuses an empty prompt (and dead-letters the task): say so before sending it.
    console.error('usage: node client.js "<prompt>" [--max-tokens N] [--queue NAME] [--url URL] [--wait SECONDS]');
    return 1;
  }
  const task = { prompt: options.prompt, max_tokens: options.maxTokens };
  let reply;
  try {
    reply = await callWarren({ url: options.url, queue: options.queue, task, waitSeconds: options.wait });
  } catch (err) {
    console.error(err.message);
    return 1;
  }
  if (reply === null) {
    console.error(`no reply within ${options.wait} s`);
    return 2;
  }
  if (reply.status === "error") {
    console.error(`${reply.error.code}: ${reply.error.message}`);
    return 1;
  }
  console.log(JSON.stringify(reply));
  return 0;
}

main().then((code) => process.exit(code));
