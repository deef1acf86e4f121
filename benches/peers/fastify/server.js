'use strict';
// The Fastify integration guide's agent server, reduced to what the benchmark exercises,
// as the peer agentd is measured against (scripts/bench.sh).
//
// * POST /agent and POST /assist: the guide's route with agentd's request validation
//   (JSON schema compiled by Fastify's ajv), answered by the guide's echo agent
//   ("⚡ High-speed response to: <prompt>") as Sentient Agent Framework events over SSE,
//   one res.write per event as the SDK's DefaultServer does;
// * GET /health: the guide's shape (status, agent, uptime, memory, performance);
// * GET /health/live: {"status":"ok"}.
//
// By default the guide's plugins (helmet, cors, compress, rate-limit, under-pressure,
// metrics, websocket) and per-request logging are left out: each would only add cost to
// the peer, and agentd is compared with the fastest honest version of the guide.
//
// FULL=1 is the feature-equal variant, for comparing like with like: agentd serves every
// response with the same work on (security headers, CORS, metrics, load shedding,
// X-Response-Time). It registers the guide's plugins as the guide does (its
// registerPlugins, options verbatim):
// * @fastify/under-pressure with the guide's thresholds (event-loop delay 1 s, heap and
//   RSS 1 GiB, event-loop utilization 0.98, Retry-After 50);
// * @fastify/cors: origins from CORS_ORIGINS (a comma list; `*` when unset), credentials,
//   GET/POST/OPTIONS; the list is split once at start, not on every request as the
//   guide's callback does;
// * @fastify/helmet with the guide's options (CSP directives, crossOriginEmbedderPolicy
//   off): the 12 headers agentd sends;
// * fastify-metrics (Prometheus: Node's default metrics and a per-route histogram and
//   summary, status codes grouped), endpoint /metrics; always registered, where the
//   guide waits for PROMETHEUS_METRICS=true, because agentd always collects its metrics
//   (its setting only switches the endpoint);
// * the guide's X-Response-Time hooks (onRequest + onSend).
// The SSE route writes the head itself (reply.hijack()), so the headers the plugins put
// on the reply (CORS, X-Response-Time) are copied into that head, as agentd sends them
// on its streams too; helmet writes to the raw response and needs no copy.
// Still left out, as agentd's benchmark runs without them: compress (agentd compresses
// only when the client asks, and wrk does not), rate-limit (off by default in agentd),
// jwt (no JWT_SECRET) and websocket. The guide sets no X-Request-Id header, so neither
// does this (agentd does).
//
// Environment: PORT (3000), HOST (127.0.0.1), LOG_LEVEL (logging off when unset),
// CLUSTER=1 for Node's cluster with WORKERS (default: one per available core) workers,
// FULL=1 for the feature-equal variant (with or without CLUSTER), CORS_ORIGINS (FULL).

const cluster = require('node:cluster');
const os = require('node:os');

const PORT = parseInt(process.env.PORT || '3000', 10);
const HOST = process.env.HOST || '127.0.0.1';
const CLUSTER = ['1', 'true', 'yes'].includes(String(process.env.CLUSTER || process.env.CLUSTER_MODE || '').toLowerCase());
const WORKERS = parseInt(process.env.WORKERS || String(os.availableParallelism ? os.availableParallelism() : os.cpus().length), 10);
const AGENT_ID = process.env.AGENT_ID || 'agentd';
const FULL = ['1', 'true', 'yes'].includes(String(process.env.FULL || '').toLowerCase());

if (CLUSTER && cluster.isPrimary) {
  runPrimary();
} else {
  runServer().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

function runPrimary() {
  let stopping = false;
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    console.error(`worker ${worker.process.pid} died (${signal || code}); starting a new one`);
    cluster.fork();
  });
  const stop = () => {
    stopping = true;
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 2000).unref();
    let left = Object.keys(cluster.workers).length;
    if (left === 0) process.exit(0);
    cluster.on('exit', () => { if (--left === 0) process.exit(0); });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  console.log(`fastify peer${FULL ? ' (full)' : ''} (cluster) primary ${process.pid}: ${WORKERS} workers on http://${HOST}:${PORT}`);
}

async function runServer() {
  const Fastify = require('fastify');
  const { monotonicFactory } = require('ulid');

  // One monotonic generator per process: within one millisecond it increments the last
  // id (the fast path) instead of drawing 16 fresh random characters.
  const ulid = monotonicFactory();

  // ---------------------------------------------------------------- the echo agent
  class FastifyAgent {
    constructor() {
      this.name = 'Fastify AI Agent';
      this.requestCounter = 0;
      this.totalResponseMs = 0;
    }

    async assist(session, query, responseHandler) {
      const stream = responseHandler.createTextStream('RESPONSE');
      await stream.emitChunk(`⚡ High-speed response to: ${query.prompt}`);
      await stream.complete();
      await responseHandler.complete();
    }

    getPerformanceStats() {
      return {
        requestCount: this.requestCounter,
        averageResponseTime: this.requestCounter ? this.totalResponseMs / this.requestCounter : 0,
      };
    }
  }

  // --------------------------------------------- the SDK's response handler, over SSE
  const STREAM_ID_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';
  function streamId() {
    let s = '';
    for (let i = 0; i < 10; i++) s += STREAM_ID_CHARS[(Math.random() * 36) | 0];
    return s;
  }

  // Same escaping rule as agentd: U+2028, U+2029 and U+0085 never go out raw.
  const LINE_BREAKS = /[\u2028\u2029\u0085]/;
  const LINE_BREAKS_G = /[\u2028\u2029\u0085]/g;
  function compact(obj) {
    const s = JSON.stringify(obj);
    if (!LINE_BREAKS.test(s)) return s;
    return s.replace(LINE_BREAKS_G, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  }

  const SSE_HEADERS = {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  };

  class ResponseHandler {
    constructor(res, source, headers) {
      this.res = res;
      this.source = source;
      this.streams = [];
      this.done = false;
      res.writeHead(200, headers);
    }

    emit(event) {
      return this.res.write(`event: ${event.event_name}\ndata: ${compact(event)}\n\n`);
    }

    createTextStream(eventName) {
      const handler = this;
      const id = streamId();
      const stream = {
        completed: false,
        async emitChunk(content) {
          handler.emit({
            content_type: 'chunked.text', event_name: eventName, schema_version: '1.0',
            id: ulid(), source: handler.source, metadata: null,
            stream_id: id, is_complete: false, content,
          });
        },
        async complete() {
          if (stream.completed) return;
          stream.completed = true;
          handler.emit({
            content_type: 'chunked.text', event_name: eventName, schema_version: '1.0',
            id: ulid(), source: handler.source, metadata: null,
            stream_id: id, is_complete: true, content: ' ',
          });
        },
      };
      this.streams.push(stream);
      return stream;
    }

    async complete() {
      if (this.done) return;
      for (const s of this.streams) await s.complete();
      this.done = true;
      this.emit({
        content_type: 'atomic.done', event_name: 'done', schema_version: '1.0',
        id: ulid(), source: this.source, metadata: null,
      });
      this.res.end();
    }
  }

  // ------------------------------------------------------------------------ schema
  const ULID = { type: 'string', pattern: '^[0-7][0-9A-HJKMNP-TV-Z]{25}$' };
  const bodySchema = {
    type: 'object',
    required: ['query'],
    properties: {
      query: {
        type: 'object',
        required: ['id', 'prompt'],
        properties: {
          id: ULID,
          prompt: { type: 'string', minLength: 1, maxLength: 10000 },
          context: {
            type: 'object',
            properties: {
              sessionId: { type: 'string' },
              userId: { type: 'string' },
              preferences: {
                type: 'object',
                properties: {
                  temperature: { type: 'number', minimum: 0, maximum: 2 },
                  maxTokens: { type: 'integer', minimum: 1, maximum: 4000 },
                },
              },
            },
          },
        },
      },
      session: {
        type: 'object',
        required: ['processor_id', 'activity_id', 'request_id', 'interactions'],
        properties: {
          processor_id: { type: 'string' },
          activity_id: ULID,
          request_id: ULID,
          interactions: { type: 'array' },
        },
      },
    },
  };

  const healthSchema = {
    response: {
      200: {
        type: 'object',
        properties: {
          status: { type: 'string' },
          agent: { type: 'string' },
          uptime: { type: 'number' },
          memory: {
            type: 'object',
            properties: { heapUsed: { type: 'string' }, heapTotal: { type: 'string' } },
          },
          performance: {
            type: 'object',
            properties: {
              requestCount: { type: 'integer' },
              averageResponseTime: { type: 'number' },
            },
          },
        },
      },
    },
  };

  // ------------------------------------------------------------------------ server
  const fastify = Fastify({
    logger: process.env.LOG_LEVEL ? { level: process.env.LOG_LEVEL } : false,
    trustProxy: true,
    keepAliveTimeout: parseInt(process.env.KEEP_ALIVE_TIMEOUT || '72000', 10),
    connectionTimeout: parseInt(process.env.CONNECTION_TIMEOUT || '60000', 10),
    bodyLimit: parseInt(process.env.BODY_LIMIT || '10485760', 10),
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true },
    // No coercion: 123 is not a valid query.id, as in agentd.
    ajv: { customOptions: { coerceTypes: false, allErrors: false } },
  });

  // As in agentd: text/plain is not accepted (415), application/*+json is JSON too.
  fastify.removeContentTypeParser('text/plain');
  fastify.addContentTypeParser(/^application\/[^;\s]+\+json/i, { parseAs: 'string' },
    fastify.getDefaultJsonParser('error', 'error'));

  fastify.setErrorHandler((error, request, reply) => {
    if (error.validation) {
      reply.code(400).send({
        error: 'Validation failed',
        code: 'validation_failed',
        details: error.validation.map((v) => ({ path: v.instancePath || '/', message: v.message })),
        requestId: request.id,
      });
      return;
    }
    const status = error.statusCode && error.statusCode >= 400 ? error.statusCode : 500;
    reply.code(status).send({
      error: status === 500 ? 'Internal server error' : error.message,
      code: status === 500 ? 'internal' : String(error.code || 'bad_request').toLowerCase(),
      requestId: request.id,
    });
  });

  fastify.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ error: 'Not Found', code: 'not_found', requestId: request.id });
  });

  if (FULL) await registerGuidePlugins(fastify);

  const agent = new FastifyAgent();

  // FULL: the head of a hijacked SSE reply is the SSE headers plus what the plugins'
  // hooks put on the reply (CORS, the guide's X-Response-Time as its onSend hook would
  // set it), which Fastify itself sends only for replies it sends.
  function streamHead(request, reply) {
    reply.header('X-Response-Time', `${Date.now() - (request.startTime || Date.now())}ms`);
    return { ...reply.getHeaders(), ...SSE_HEADERS };
  }

  async function handleAgent(request, reply) {
    const started = performance.now();
    const { query, session } = request.body;
    reply.hijack();
    const handler = new ResponseHandler(reply.raw, session ? session.processor_id : AGENT_ID,
      FULL ? streamHead(request, reply) : SSE_HEADERS);
    await agent.assist(session, query, handler);
    agent.requestCounter++;
    agent.totalResponseMs += performance.now() - started;
  }

  fastify.post('/agent', { schema: { body: bodySchema } }, handleAgent);
  fastify.post('/assist', { schema: { body: bodySchema } }, handleAgent);

  fastify.get('/health', { schema: healthSchema }, async () => {
    const mem = process.memoryUsage();
    return {
      status: 'healthy',
      agent: agent.name,
      uptime: process.uptime(),
      memory: {
        heapUsed: Math.round(mem.heapUsed / 1024 / 1024) + 'MB',
        heapTotal: Math.round(mem.heapTotal / 1024 / 1024) + 'MB',
      },
      performance: agent.getPerformanceStats(),
    };
  });

  fastify.get('/health/live', async () => ({ status: 'ok' }));

  const stop = async () => {
    await fastify.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  await fastify.listen({ port: PORT, host: HOST });
  if (!cluster.isWorker) console.log(`fastify peer${FULL ? ' (full)' : ''} ${process.pid} on http://${HOST}:${PORT}`);
}

// ------------------------------------------------------------ FULL: the guide's plugins
// The guide's registerPlugins without compress, rate-limit, jwt and websocket (see the
// header). Registered before the routes, so that every route gets their hooks.
async function registerGuidePlugins(fastify) {
  await fastify.register(require('@fastify/under-pressure'), {
    maxEventLoopDelay: 1000,
    maxHeapUsedBytes: 1073741824, // 1GB
    maxRssBytes: 1073741824,
    maxEventLoopUtilization: 0.98,
    message: 'Under pressure!',
    retryAfter: 50,
  });

  const allowedOrigins = process.env.CORS_ORIGINS?.split(',') || ['*'];
  await fastify.register(require('@fastify/cors'), {
    origin: (origin, callback) => {
      if (!origin || allowedOrigins.includes('*') || allowedOrigins.includes(origin)) {
        callback(null, true);
      } else {
        callback(new Error('Not allowed by CORS'), false);
      }
    },
    credentials: true,
    methods: ['GET', 'POST', 'OPTIONS'],
  });

  await fastify.register(require('@fastify/helmet'), {
    crossOriginEmbedderPolicy: false,
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'", "'unsafe-inline'"],
      },
    },
  });

  await fastify.register(require('fastify-metrics'), {
    endpoint: '/metrics',
    name: 'sentient_fastify_agent',
    routeMetrics: {
      enabled: true,
      registrationDelay: 0, // an option of older fastify-metrics; ignored by this one
      groupStatusCodes: true,
    },
  });

  fastify.addHook('onRequest', async (request) => {
    request.startTime = Date.now();
  });
  fastify.addHook('onSend', async (request, reply, payload) => {
    const responseTime = Date.now() - (request.startTime || Date.now());
    reply.header('X-Response-Time', `${responseTime}ms`);
    reply.responseTime = responseTime;
    return payload;
  });
}
