-- wrk script for scripts/soak.sh: a weighted mix of requests, each checked against the
-- answer it must get, paced by a think time per connection.
--
--   SOAK_MIX    "echo" (default) or "llm": which mix (see MIXES below)
--   SOAK_DELAY  milliseconds each connection waits between its requests (default 10)
--
-- Every request carries `x-request-id: soak.<kind>`; agentd echoes it on every response
-- it writes, so each response is judged against its own kind's expectation (wrk runs
-- several requests per thread at once and does not say which one a response answers).
-- A response with another status, an SSE body without `done` or with an error event,
-- or without the id counts as unexpected. The bad requests are expected to fail: their
-- 4xx is what they must get. At the end one line
--   SOAKJSON {"mix":…,"requests":…,"kinds":{kind:{"ok":n,"bad":n}},"socket_errors":{…},…}
-- is printed; scripts/soak/report.py reads it. It must never print anything else on a
-- line starting with SOAKJSON.

local ULID = "01JDX3ABCDEFGHJKMNPQRSTVWX"
local JSON = { ["Content-Type"] = "application/json" }

local function agent_body(prompt)
  return '{"query":{"id":"' .. ULID .. '","prompt":"' .. prompt .. '"}}'
end

-- Oversized: past the BODY_LIMIT soak.sh gives the echo server (4096 bytes).
local OVERSIZED = agent_body(string.rep("x", 6000))

-- kind = { weight, method, path, headers, body, expected status, body must hold `done` }
local MIXES = {
  echo = {
    { "health",       25, "GET",  "/health",            nil,  nil, 200 },
    { "live",          5, "GET",  "/health/live",       nil,  nil, 200 },
    { "echo",         40, "POST", "/agent",             JSON, agent_body("soak"), 200, true },
    { "stream",        5, "GET",  "/stream?prompt=soak", nil, nil, 200, true },
    { "close",         5, "GET",  "/health/live",       { Connection = "close" }, nil, 200 },
    { "bad_json",      5, "POST", "/agent",             JSON, '{"query":', 400 },
    { "bad_field",     5, "POST", "/agent",             JSON, '{"query":{"id":"nope","prompt":""}}', 400 },
    { "oversized",     5, "POST", "/agent",             JSON, OVERSIZED, 413 },
    { "unknown_route", 5, "GET",  "/no/such/route",     nil,  nil, 404 },
  },
  llm = {
    { "llm",    90, "POST", "/agent",  JSON, '{"query":{"id":"' .. ULID .. '","prompt":"soak",' ..
                                             '"context":{"preferences":{"maxTokens":100}}}}', 200, true },
    { "health", 10, "GET",  "/health", nil,  nil, 200 },
  },
}

local mix_name = os.getenv("SOAK_MIX") or "echo"
local mix = assert(MIXES[mix_name], "SOAK_MIX must be echo or llm")
local think_ms = tonumber(os.getenv("SOAK_DELAY") or "10")

-- Per thread: the requests, formatted once, in a shuffled deck that repeats. The counts
-- are plain globals (ok_<kind>, bad_<kind>, unidentified): wrk's thread:get copies
-- numbers between Lua states, not nested tables.
local deck, by_kind = {}, {}
unidentified = 0

function init(args)
  for _, k in ipairs(mix) do
    local name, weight, method, path, headers, body = k[1], k[2], k[3], k[4], k[5], k[6]
    local h = { ["x-request-id"] = "soak." .. name }
    for key, v in pairs(headers or {}) do h[key] = v end
    local req = wrk.format(method, path, h, body)
    by_kind[name] = { status = k[7], sse = k[8] or false }
    _G["ok_" .. name], _G["bad_" .. name] = 0, 0
    for _ = 1, weight do deck[#deck + 1] = req end
  end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
  for i = #deck, 2, -1 do
    local j = math.random(i)
    deck[i], deck[j] = deck[j], deck[i]
  end
end

local next_req = 0
function request()
  next_req = next_req % #deck + 1
  return deck[next_req]
end

function delay()
  return think_ms
end

function response(status, headers, body)
  local id = headers["x-request-id"] or headers["X-Request-Id"]
  local name = id and id:match("^soak%.(.+)$")
  local want = name and by_kind[name]
  if not want then
    unidentified = unidentified + 1
    return
  end
  local ok = status == want.status
  if ok and want.sse then
    -- Both framings (`event:` lines on /agent, `data:` only on /stream) carry these.
    ok = body ~= nil and body:find('"content_type":"atomic.done"', 1, true) ~= nil
        and body:find('"content_type":"atomic.error"', 1, true) == nil
  end
  local key = (ok and "ok_" or "bad_") .. name
  _G[key] = _G[key] + 1
end

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local kinds, lost = {}, 0
  for _, k in ipairs(mix) do
    local ok, bad = 0, 0
    for _, t in ipairs(threads) do
      ok = ok + t:get("ok_" .. k[1])
      bad = bad + t:get("bad_" .. k[1])
    end
    kinds[#kinds + 1] = string.format('"%s":{"ok":%d,"bad":%d}', k[1], ok, bad)
  end
  for _, t in ipairs(threads) do lost = lost + t:get("unidentified") end
  kinds[#kinds + 1] = string.format('"unidentified":{"ok":0,"bad":%d}', lost)
  local e = summary.errors
  io.write(string.format(
    'SOAKJSON {"mix":"%s","requests":%d,"duration_us":%d,"kinds":{%s},' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"status_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    mix_name, summary.requests, summary.duration, table.concat(kinds, ","),
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
