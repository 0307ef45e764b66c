'use strict';
// Adds N ask jobs to the reference's queue, as the API in front of it
// would: the same data bench/pool's enqueue puts in ragnx's stream (fresh
// job and chat ids, the question's digest for the cache key).
//
//   REF_REDIS=/path/redis.sock node enqueue.js N [tag]

const crypto = require('crypto');
const IORedis = require('ioredis');
const { Queue } = require('bullmq');

const n = parseInt(process.argv[2] || '1000', 10);
const tag = process.argv[3] || 'r';
const CHUNK = 1000;

const connection = new IORedis({
  path: process.env.REF_REDIS,
  maxRetriesPerRequest: null,
});
const queue = new Queue(process.env.REF_QUEUE || 'ask', {
  connection,
  defaultJobOptions: {
    // as ragnx-worker: max_attempts 3, backoff from retry_base 1 s
    attempts: 3,
    backoff: { type: 'exponential', delay: 1000 },
    // ragnx keeps a finished job's hash (status, answer) for job_retention
    // (1 h) for clients polling it, and up to dead_max (10,000) dead
    // letters: the same retention here, so completed jobs stay readable
    // and are trimmed by age as the worker finishes others
    removeOnComplete: { age: 3600 },
    removeOnFail: { count: 10000 },
  },
});

async function main() {
  const now = Date.now();
  for (let i = 1; i <= n; i += CHUNK) {
    const jobs = [];
    for (let j = i; j < i + CHUNK && j <= n; j++) {
      const id = crypto.randomUUID();
      const query =
        `How does topic ${j} of run ${tag} use the cache and workers?`;
      jobs.push({
        name: 'ask',
        data: {
          id, owner: `user${j % 100}`, chatId: crypto.randomUUID(), query,
          digest: crypto.createHash('sha256').update(query.toLowerCase())
            .digest('hex'),
          createdAt: now,
        },
        // the job id is ours, as ragnx's: an enqueue retried adds nothing
        opts: { jobId: id },
      });
    }
    await queue.addBulk(jobs);
  }
  await queue.close();
  await connection.quit();
}

main().catch((e) => {
  console.error(`enqueue: ${e.message}`);
  process.exit(1);
});
