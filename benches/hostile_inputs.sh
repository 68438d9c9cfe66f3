#!/usr/bin/env bash
# Memory and time lfeval spends on hostile input, measured on the release binary: 100 MB HTTP
# responses (over the default `max_response_bytes`, with and without Content-Length, and
# accepted under a raised limit, three at once), a 50 MB snippet return value, 10 MB of
# prints, a 1 KB YAML alias bomb and a 200,000-key mapping. Prints peak RSS (from
# /usr/bin/time) and what the run wrote.
#
#   benches/hostile_inputs.sh            (builds target/release/lfeval first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
lfeval="$PWD/target/release/lfeval"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# An endpoint answering every POST with a chat completion of $2 bytes of content; $3 = "length"
# sends Content-Length, "close" ends the body by closing the connection instead.
serve() {
    python3 - "$1" "$2" "$3" <<'PY' &
import http.server, json, sys
port, size, framing = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "x" * size}}]}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1" if framing == "length" else "HTTP/1.0"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if framing == "length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
    # Building a 100 MB body takes the server a while: wait until it listens.
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.1
    done
    echo "the test server on port $1 did not start" >&2
    exit 1
}

# A project in $1 whose model `m` is $2 (YAML), over $3 samples.
project() {
    local dir="$1" model="$2" n="$3"
    mkdir -p "$dir/models" "$dir/snippets"
    printf '%s\n' "$model" > "$dir/models/m.yaml"
    : > "$dir/rows.jsonl"
    for i in $(seq 1 "$n"); do echo "{\"id\": \"s$i\", \"q\": \"q$i\"}" >> "$dir/rows.jsonl"; done
    cat > "$dir/run.yaml" <<'YAML'
datasets:
  - key: rows
    source: {type: local, file_path: rows.jsonl}
    id_column: id
tasks:
  - key: t
    display_name: T
    definition:
      dataset: {key: rows}
      solver:
        type: single_turn_solver
        input_builder:
          type: chat_completion
          input_messages:
            - {role: user, content: "{{ sample.q }}"}
      scorers:
        - type: string_equals
          key: exact
          ground_truth: "never"
          metrics:
            - {type: mean, field: is_correct}
evaluation:
  key: hostile
  cache_policy: no-cache
  task_specifications:
    - {key: s, task_key: t, model_key: m}
YAML
}

# Runs lfeval in $1 with the remaining arguments; prints peak RSS, wall time and exit code.
measure() {
    local dir="$1"
    shift
    (cd "$dir" && /usr/bin/time -f "%M %e %x" -o "$work/time" "$lfeval" "$@" >/dev/null 2>"$work/stderr") || true
    # GNU time puts "Command exited with non-zero status N" first when lfeval fails samples.
    read -r rss wall code < <(tail -n 1 "$work/time")
    printf '%8.1f MB peak RSS  %6.2f s  exit %s' "$(echo "$rss / 1024" | bc -l)" "$wall" "$code"
}

http_model() {
    printf 'key: m\ndisplay_name: M\nmax_concurrent_requests: 3\nretry: {max_attempts: 1}\n%s\nconfig:\n  connection_type: custom_connection\n  url: http://127.0.0.1:%s/v1/chat/completions\n  adapter: {key: "latticeflow$openai_chat_completion"}\n  timeout: 120\n' "$2" "$1"
}

classes() {
    grep -o '"class":"[a-z_]*"' "$1/out/samples.jsonl" 2>/dev/null | sort | uniq -c | tr -s ' ' | tr '\n' ' '
}

echo "== HTTP responses of 100 MB"
serve 18931 100000000 length
serve 18932 100000000 close
for case in "length 18931 " "close 18932 " "raised 18931 max_response_bytes: 134217728"; do
    read -r label port extra <<< "$case"
    dir="$work/http-$label"
    samples=1
    [ "$label" = raised ] && samples=3
    project "$dir" "$(http_model "$port" "$extra")" "$samples"
    printf '  %-44s' "$samples × 100 MB, $( [ "$label" = raised ] && echo "limit 128 MiB" || echo "default limit, framing: $label")"
    measure "$dir" run -f run.yaml -o out --no-progress
    printf '  samples.jsonl %s bytes  %s\n' "$(stat -c %s "$dir/out/samples.jsonl" 2>/dev/null || echo 0)" "$(classes "$dir")"
done

echo "== snippet return values and prints"
snippet_model() {
    printf 'key: m\ndisplay_name: M\nretry: {max_attempts: 1}\n%s\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include "../snippets/m.py"\n  environment: {}\n  timeout: 120\n' "$1"
}
for case in "50mb-default|return 'x' * 50_000_000|" "50mb-raised|return json.dumps({'choices': [{'message': {'role': 'assistant', 'content': 'x' * 50_000_000}}]})|max_response_bytes: 67108864" "prints|print(('y' * 99 + chr(10)) * 100_000); return json.dumps({'choices': [{'message': {'role': 'assistant', 'content': 'ok'}}]})|"; do
    IFS='|' read -r label body extra <<< "$case"
    dir="$work/snippet-$label"
    project "$dir" "$(snippet_model "$extra")" 1
    printf 'import json\n\ndef run_inference(body, environment):\n    %s\n' "$body" > "$dir/snippets/m.py"
    printf '  %-44s' "$label"
    measure "$dir" run -f run.yaml -o out --no-progress
    printf '  samples.jsonl %s bytes  %s\n' "$(stat -c %s "$dir/out/samples.jsonl" 2>/dev/null || echo 0)" "$(classes "$dir")"
done

echo "== YAML"
dir="$work/bomb"
mkdir -p "$dir/models"
{
    printf 'key: m\ndisplay_name: M\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n'
    for i in $(seq 1 8); do
        p="*l$((i - 1))"
        printf 'lol%s: &l%s [%s, %s, %s, %s, %s, %s, %s, %s, %s, %s]\n' "$i" "$i" "$p" "$p" "$p" "$p" "$p" "$p" "$p" "$p" "$p" "$p"
    done
    printf 'config: {connection_type: custom_connection, url: "http://127.0.0.1:1/"}\n'
} > "$dir/models/m.yaml"
printf '  %-44s' "alias bomb ($(stat -c %s "$dir/models/m.yaml") bytes, 10^9 nodes expanded)"
measure "$dir" validate
echo "  $(grep -o 'alias `[^`]*` expands[^\n]*' "$work/stderr" | head -1)"

dir="$work/keys"
mkdir -p "$dir/models"
python3 -c "
print('key: m\ndisplay_name: M\nconfig:\n  connection_type: custom_connection\n  url: http://127.0.0.1:1/\n  custom_headers:')
for i in range(200000): print(f'    X-K{i}: v{i}')
" > "$dir/models/m.yaml"
printf '  %-44s' "200,000-key mapping ($(($(stat -c %s "$dir/models/m.yaml") / 1024)) KiB)"
measure "$dir" validate
echo
