// One case of tests/integration/test_openai_sdk.py: the official OpenAI
// client (the npm package "openai", pinned in openai_sdk/package-lock.json)
// against api-together behind lighttpd, used as an application would use it.
//
//     node openai_sdk.mjs '{"case": "chat", "baseURL": "http://127.0.0.1:PORT/v1",
//                           "apiKey": "sk-...", "model": "..."}'
//
// The test copies this file next to the installed package (the build's
// tests/.cache/openai), so "openai" resolves as in any application. Each
// case checks what the SDK hands back with node:assert and prints one JSON
// line of what it saw; any failure prints the reason on stderr and exits 1.

import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import OpenAI from 'openai';

const args = JSON.parse(process.argv[2] ?? '{}');

// A fetch that notes when each attempt left and what came back, so that the
// delay the SDK waits between two attempts can be measured from outside it.
function recordingFetch(attempts) {
  return async (url, init) => {
    const a = { start: performance.now(), status: null, retryAfter: null, headersAt: null };
    attempts.push(a);
    const res = await fetch(url, init);
    a.headersAt = performance.now();
    a.status = res.status;
    a.retryAfter = res.headers.get('retry-after');
    return res;
  };
}

function client(extra = {}) {
  return new OpenAI({ baseURL: args.baseURL, apiKey: args.apiKey, timeout: 30000, ...extra });
}

const messages = [{ role: 'user', content: 'Say hello' }];

// The header of an APIError: a fetch Headers in SDK 5, a plain object in 4.
function header(err, name) {
  const h = err.headers;
  if (h && typeof h.get === 'function') return h.get(name);
  return h ? h[name] : undefined;
}

// Runs fn, which must throw an APIError of class cls; returns it.
async function expectError(fn, cls, status) {
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ${cls.name}, the call succeeded`);
  assert.ok(err instanceof cls,
            `expected ${cls.name}, got ${err?.constructor?.name}: ${err?.message}`);
  assert.equal(err.status, status);
  return err;
}

function errorInfo(err) {
  return { class: err.constructor.name, status: err.status, code: err.code, type: err.type,
           message: err.message, retryAfter: header(err, 'retry-after') ?? null };
}

const cases = {
  async chat() {
    const r = await client().chat.completions.create({ model: args.model, messages });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.choices[0].message.content, args.content);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.deepEqual(r.usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
    return { id: r.id, model: r.model, content: r.choices[0].message.content, usage: r.usage };
  },

  async stream() {
    const s = await client().chat.completions.create({
      model: args.model, messages, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let finish = null;
    let usage = null;
    const times = [];
    for await (const chunk of s) {
      times.push(performance.now());
      assert.equal(chunk.object, 'chat.completion.chunk');
      for (const c of chunk.choices) {
        if (c.delta?.content) text += c.delta.content;
        if (c.finish_reason) finish = c.finish_reason;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    // The loop ended by itself: the SDK saw "data: [DONE]" and the end of the body.
    assert.equal(text, args.expectText);
    assert.equal(finish, 'stop');
    assert.deepEqual(usage, { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
    return { text, chunks: times.length, spreadMs: times[times.length - 1] - times[0] };
  },

  async embeddings() {
    const c = client();
    // Without encoding_format the SDK asks for base64 and decodes it itself.
    const b = await c.embeddings.create({ model: args.model, input: 'The quick brown fox' });
    assert.equal(b.object, 'list');
    assert.equal(b.data.length, 1);
    const expected = [0.0, 0.1, -0.2];
    assert.equal(b.data[0].embedding.length, expected.length);
    b.data[0].embedding.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6,
      `base64 vector ${JSON.stringify(b.data[0].embedding)}`));
    assert.equal(b.usage.prompt_tokens, 4);
    const f = await c.embeddings.create({ model: args.model, input: ['a', 'b'],
                                          encoding_format: 'float' });
    assert.deepEqual(f.data[0].embedding, expected);
    return { base64: b.data[0].embedding, float: f.data[0].embedding, usage: b.usage };
  },

  async models() {
    const ids = [];
    for await (const m of client().models.list()) {
      assert.equal(m.object, 'model');
      assert.equal(typeof m.created, 'number');
      assert.equal(typeof m.owned_by, 'string');
      ids.push(m.id);
    }
    const one = await client().models.retrieve(args.model);
    assert.equal(one.id, args.model);
    return { ids, retrieved: one.id };
  },

  async wrong_key() {
    const err = await expectError(
      () => client({ apiKey: args.wrongKey, maxRetries: 0 }).models.list(),
      OpenAI.AuthenticationError, 401);
    assert.equal(err.code, 'invalid_api_key');
    assert.equal(err.type, 'authentication_error');
    return errorInfo(err);
  },

  async unknown_model() {
    const err = await expectError(
      () => client({ maxRetries: 0 }).chat.completions.create({ model: args.model, messages }),
      OpenAI.NotFoundError, 404);
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.type, 'invalid_request_error');
    return errorInfo(err);
  },

  // rpm 1: the first call passes, the second gets the gateway's own 429.
  async rate_limit() {
    const c = client({ maxRetries: 0 });
    await c.chat.completions.create({ model: args.model, messages });
    const err = await expectError(() => c.chat.completions.create({ model: args.model, messages }),
                                  OpenAI.RateLimitError, 429);
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.equal(err.type, 'rate_limit_error');
    const ra = header(err, 'retry-after');
    assert.match(String(ra), /^[1-9][0-9]*$/, `Retry-After ${ra}`);
    return errorInfo(err);
  },

  // One call with maxRetries 1 while the endpoint is at its limit: the SDK
  // waits and tries again. Reports each attempt and the wait between them.
  // With prime, a first call here uses up an rpm of 1 just before (so the
  // Retry-After is a whole minute, whatever Node's start-up took).
  async retry() {
    if (args.prime) {
      await client({ maxRetries: 0 }).chat.completions.create({ model: args.model, messages });
    }
    const attempts = [];
    const c = client({ maxRetries: 1, fetch: recordingFetch(attempts) });
    let result = null;
    let error = null;
    const t0 = performance.now();
    try {
      const r = await c.chat.completions.create({ model: args.model, messages });
      result = r.choices[0].message.content;
    } catch (e) {
      if (!(e instanceof OpenAI.APIError)) throw e;
      error = errorInfo(e);
    }
    assert.equal(attempts.length, 2, `attempts ${JSON.stringify(attempts)}`);
    return {
      result, error, totalMs: performance.now() - t0,
      statuses: attempts.map((a) => a.status),
      retryAfter: attempts.map((a) => a.retryAfter),
      // From the first answer's headers to the second attempt leaving.
      waitMs: attempts[1].start - attempts[0].headersAt,
    };
  },
};

try {
  const fn = cases[args.case];
  if (!fn) throw new Error(`unknown case ${args.case}`);
  const out = await fn();
  process.stdout.write(JSON.stringify({ ok: true, ...out }) + '\n');
  process.exit(0);
} catch (e) {
  process.stderr.write(`openai_sdk.mjs ${args.case}: ${e?.stack ?? e}\n`);
  process.exit(1);
}
