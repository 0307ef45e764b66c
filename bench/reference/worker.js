'use strict';
// bench/pool's reference: the job ragnx-worker does, written as a Node
// developer would write the service with BullMQ and node-postgres.  Per
// job: the retrieval query, the LLM call, the two messages in one
// transaction, the cache SET; BullMQ stores the returned answer.
//
// One process is one "worker process" (bench/pool runs two, as it runs
// ragnx-worker with workers = 2).  Environment:
//   REF_REDIS        Redis unix socket path
//   REF_PG_HOST      PostgreSQL socket directory; REF_PG_PORT its port
//   REF_LLM_URL      OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1
//   REF_CONCURRENCY  jobs at once in this process (32)
//   REF_PG_MAX       PostgreSQL connections of this process (4)
//   REF_QUEUE        queue name ("ask"); REF_MODEL model name ("mock")
//   REF_START        "signal": connect, print "ready", and take jobs only
//                    on SIGUSR2 (SIGUSR1 is Node's inspector), so the
//                    bench times the drain alone

const http = require('http');
const IORedis = require('ioredis');
const { Pool } = require('pg');
const { Worker } = require('bullmq');

const env = process.env;
const QUEUE = env.REF_QUEUE || 'ask';
const CONCURRENCY = parseInt(env.REF_CONCURRENCY || '32', 10);
const MODEL = env.REF_MODEL || 'mock';
// ragnx-worker's defaults (workers/ragnx_config.c): top_k, rank_candidates
const TOP_K = 5;
const RANK_CANDIDATES = 20;
const MAX_TOKENS = 1024;
const CACHE_TTL = 3600;

// ragnx-worker's "ragnx_retrieve" (workers/ragnx_store.c) as of commit
// 9c1dde4, copied as it was: $1 query text, $2 top_k, $3 rank_candidates.
// Since 7096759 the pool's statement returns the candidates and the pool
// ranks them itself (workers/ragnx_rank.c, ts_rank_cd's order without its
// cost); ranking in SQL, as here, is what a Node service would do
const RETRIEVE =
  'WITH q AS MATERIALIZED (SELECT ' +
  "NULLIF(replace(a::text, ' & ', ' | '), '')::tsquery AS any, " +
  "tsvector_to_array(to_tsvector('english', $1)) AS lex " +
  "FROM websearch_to_tsquery('english', $1) a) " +
  'SELECT x.path, x.title, x.heading, x.body, ' +
  'ts_rank_cd(x.tsv, x.any) AS rank, x.cover ' +
  'FROM (SELECT c.id, c.path, c.title, c.heading, c.body, c.tsv, ' +
  'q.any, length(c.tsv) - length(ts_delete(c.tsv, q.lex)) AS cover ' +
  'FROM q, chunks c WHERE c.tsv @@ q.any ' +
  'ORDER BY cover DESC, ts_rank(c.tsv, q.any) DESC, c.id ' +
  'LIMIT greatest($2::integer, $3::integer)) x ' +
  'ORDER BY x.cover DESC, rank DESC, x.id LIMIT $2';

const CHAT =
  'INSERT INTO chats (id, owner, title) VALUES ($1, $2, $3) ' +
  'ON CONFLICT (id) DO NOTHING';

// both messages in one statement; a retried job adds no duplicates
const MESSAGES =
  'INSERT INTO messages (chat_id, job_id, role, content, sources, model, ' +
  'input_tokens, output_tokens) VALUES ' +
  "($1, $2, 'user', $3, NULL, NULL, NULL, NULL), " +
  "($1, $2, 'assistant', $4, $5::jsonb, $6, $7, $8) " +
  'ON CONFLICT (job_id, role) DO NOTHING';

const SYSTEM =
  "You answer questions about the user's documents. Use only the " +
  'numbered context passages; when they do not contain the answer, say ' +
  'so. Be concise and name the sources you used.';

const db = new Pool({
  host: env.REF_PG_HOST,
  port: parseInt(env.REF_PG_PORT || '5432', 10),
  user: 'ragnx',
  database: 'ragnx',
  max: parseInt(env.REF_PG_MAX || '4', 10),
});

// BullMQ's connection must retry forever (maxRetriesPerRequest: null); it
// duplicates it for its blocking reads.  The cache gets a client of its own.
const connection = new IORedis({
  path: env.REF_REDIS,
  maxRetriesPerRequest: null,
});
const cache = new IORedis({ path: env.REF_REDIS });

// keep-alive: one connection per concurrent job, reused job after job
const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
const llmUrl = new URL(
  `${env.REF_LLM_URL.replace(/\/$/, '')}/chat/completions`);

function chat(body) {
  return new Promise((resolve, reject) => {
    const req = http.request(llmUrl, {
      method: 'POST',
      agent,
      timeout: 30000,
      headers: {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        if (res.statusCode !== 200) {
          reject(new Error(`LLM answered HTTP ${res.statusCode}`));
          return;
        }
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (e) {
          reject(new Error(`LLM answer is not JSON: ${e.message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('LLM timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

async function ask(job) {
  const { id, owner, chatId, query, digest } = job.data;

  // (1) retrieval, a named statement: prepared once per connection
  const { rows } = await db.query({
    name: 'ragnx_retrieve', text: RETRIEVE,
    values: [query, TOP_K, RANK_CANDIDATES],
  });
  const context = rows.map((p, i) =>
    `[${i + 1}] ${p.path}${p.heading ? ' - ' + p.heading : ''}\n${p.body}`);
  const sources = [...new Set(rows.map((p) => p.path))];

  // (2) the LLM, no database connection held meanwhile
  const res = await chat(JSON.stringify({
    model: MODEL,
    max_tokens: MAX_TOKENS,
    messages: [
      {
        role: 'system',
        content: `${SYSTEM}\n\nContext:\n\n${context.join('\n\n')}`,
      },
      { role: 'user', content: query },
    ],
  }));
  const answer = res.choices && res.choices[0] && res.choices[0].message
    && res.choices[0].message.content;
  if (typeof answer !== 'string' || answer === '') {
    throw new Error('LLM returned a malformed response');
  }
  const usage = res.usage || {};

  // (3) the chat and both messages in one transaction
  const client = await db.connect();
  let broken;
  try {
    await client.query('BEGIN');
    await client.query({
      name: 'ragnx_chat', text: CHAT,
      values: [chatId, owner, query.slice(0, 80)],
    });
    await client.query({
      name: 'ragnx_messages', text: MESSAGES,
      values: [chatId, id, query, answer, JSON.stringify(sources), MODEL,
        usage.prompt_tokens ?? null, usage.completion_tokens ?? null],
    });
    await client.query('COMMIT');
  } catch (e) {
    // a connection that cannot even roll back is dropped, not pooled
    await client.query('ROLLBACK').catch((r) => { broken = r; });
    throw e;
  } finally {
    client.release(broken);
  }

  // (4) the cache, and the answer BullMQ keeps as the job's return value
  const result = { answer, sources };
  await cache.set(`ref:cache:${digest}`, JSON.stringify(result),
    'EX', CACHE_TTL);
  return result;
}

const worker = new Worker(QUEUE, ask, {
  connection,
  concurrency: CONCURRENCY,
  autorun: env.REF_START !== 'signal',
});

let completed = 0;
let failed = 0;
worker.on('completed', () => { completed++; });
worker.on('failed', (job, err) => {
  // one line per failed attempt, the first few only
  if (failed++ < 20) {
    console.error(`job ${job && job.id} failed (attempt `
      + `${job && job.attemptsMade}): ${err.message}`);
  }
});
worker.on('error', (err) => console.error(`worker error: ${err.message}`));

async function shutdown() {
  // close() waits for the jobs in progress
  await worker.close();
  await Promise.allSettled([db.end(), cache.quit(), connection.quit()]);
  console.log(`worker ${process.pid}: completed ${completed}, `
    + `failed attempts ${failed}`);
  process.exit(0);
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);

if (env.REF_START === 'signal') {
  process.once('SIGUSR2', () => {
    worker.run().catch((e) => console.error(`worker run: ${e.message}`));
  });
}

worker.waitUntilReady().then(() => console.log(`ready ${process.pid}`),
  (e) => { console.error(`not ready: ${e.message}`); process.exit(1); });
