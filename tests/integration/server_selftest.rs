//! Self-tests for the integration-test HTTP server: wire protocol handling (keep-alive,
//! pipelining, chunked bodies, `Expect: 100-continue`, connection close, malformed input),
//! request bookkeeping (order, timing, in-flight counting), shutdown behaviour and every canned
//! handler, driven by a raw `TcpStream` client so the server is checked independently of any
//! HTTP client library.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::server::{
    REFUSAL, Request, Response, TestServer, custom_wire, delayed, judge, judge_verdict, openai_chat,
    openai_chat_with_key, scripted, session_poll,
};

/// Upper bound for any single client read; only reached if the server is broken.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not json ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A minimal HTTP/1.1 client over one TCP connection.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(server: &TestServer) -> Client {
        let stream = TcpStream::connect(server.addr()).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    fn send(&mut self, method: &str, path: &str, extra_headers: &[(&str, &str)], body: &[u8]) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in extra_headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes);
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    fn read_response(&mut self) -> RawResponse {
        let status_line = self.line();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line `{status_line}`");
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let len: usize = resp
            .header("content-length")
            .unwrap_or_else(|| panic!("response {status} lacks content-length"))
            .parse()
            .unwrap();
        resp.body = vec![0; len];
        self.reader.read_exact(&mut resp.body).unwrap();
        resp
    }

    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> RawResponse {
        self.send(method, path, &[], body);
        self.read_response()
    }

    fn post_json(&mut self, path: &str, body: &Value) -> RawResponse {
        self.request("POST", path, body.to_string().as_bytes())
    }

    /// True once the server has closed its side (EOF), false if more bytes arrive.
    fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }
}

fn one_shot(server: &TestServer, method: &str, path: &str, body: &Value) -> RawResponse {
    Client::connect(server).request(method, path, body.to_string().as_bytes())
}

fn chat_body(user: &str) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": user}
        ]
    })
}

fn reply_content(resp: &RawResponse) -> Value {
    resp.json()["choices"][0]["message"]["content"].clone()
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = TestServer::start(openai_chat());
    let mut client = Client::connect(&server);

    let first = client.post_json("/v1/chat/completions", &chat_body("hello there world"));
    let second = client.post_json("/v1/chat/completions", &chat_body("again"));

    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), None);
    let body = first.json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hello there world");
    assert_eq!(body["choices"][0]["message"]["refusal"], Value::Null);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // 3 system words + 3 user words; "echo: hello there world" is 4 words.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10})
    );
    assert_eq!(reply_content(&second), "echo: again");

    let log = server.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(server.connections(), 1);
    assert_eq!(log[0].connection, log[1].connection);
    assert_eq!((log[0].seq, log[1].seq), (0, 1));
    assert_eq!(log[1].request.json().unwrap()["messages"][1]["content"], "again");
    assert!(log.iter().all(|r| r.status == Some(200) && r.finished >= r.started));
    assert_eq!(server.max_in_flight(), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start(openai_chat());
    let mut client = Client::connect(&server);
    let mut bytes = Vec::new();
    for text in ["one", "two"] {
        let body = chat_body(text).to_string();
        bytes.extend_from_slice(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    client.send_raw(&bytes);
    assert_eq!(reply_content(&client.read_response()), "echo: one");
    assert_eq!(reply_content(&client.read_response()), "echo: two");
}

#[test]
fn chunked_request_body_is_reassembled() {
    let server = TestServer::start(openai_chat());
    let body = chat_body("chunked hello").to_string();
    let (a, b) = body.as_bytes().split_at(10);
    let mut raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(format!("{:x};ext=1\r\n", a.len()).as_bytes());
    raw.extend_from_slice(a);
    raw.extend_from_slice(format!("\r\n{:X}\r\n", b.len()).as_bytes());
    raw.extend_from_slice(b);
    raw.extend_from_slice(b"\r\n0\r\nX-Trailer: yes\r\n\r\n");

    let mut client = Client::connect(&server);
    client.send_raw(&raw);
    let resp = client.read_response();
    assert_eq!(resp.status, 200);
    assert_eq!(reply_content(&resp), "echo: chunked hello");
    assert_eq!(server.requests()[0].request.body, body.as_bytes());
    // The connection stays usable after a chunked body.
    let again = client.post_json("/v1/chat/completions", &chat_body("after"));
    assert_eq!(reply_content(&again), "echo: after");
}

#[test]
fn expect_continue_gets_interim_response_before_body() {
    let server = TestServer::start(openai_chat());
    let body = chat_body("patience").to_string();
    let mut client = Client::connect(&server);
    client.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(client.line(), "HTTP/1.1 100 Continue");
    assert_eq!(client.line(), "");
    client.send_raw(body.as_bytes());
    assert_eq!(reply_content(&client.read_response()), "echo: patience");
}

#[test]
fn connection_close_and_http10_end_the_connection() {
    let server = TestServer::start(openai_chat());

    let mut client = Client::connect(&server);
    client.send(
        "POST",
        "/v1/chat/completions",
        &[("Connection", "close")],
        chat_body("bye").to_string().as_bytes(),
    );
    let resp = client.read_response();
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(client.closed_by_server());

    let body = chat_body("old").to_string();
    let mut client = Client::connect(&server);
    client.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(reply_content(&client.read_response()), "echo: old");
    assert!(client.closed_by_server());

    // HTTP/1.0 with explicit keep-alive keeps the connection and says so.
    let mut client = Client::connect(&server);
    for text in ["k1", "k2"] {
        let body = chat_body(text).to_string();
        client.send_raw(
            format!(
                "POST /v1/chat/completions HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let resp = client.read_response();
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        assert_eq!(reply_content(&resp), format!("echo: {text}"));
    }

    // A handler can ask for the connection to be closed.
    let closing = TestServer::start(|_req: &Request| -> Response {
        Response::text(200, "done").with_header("Connection", "close")
    });
    let mut client = Client::connect(&closing);
    let resp = client.request("GET", "/", b"");
    assert_eq!(resp.body, b"done");
    assert!(client.closed_by_server());
}

#[test]
fn malformed_requests_get_400_and_are_not_recorded() {
    let server = TestServer::start(openai_chat());
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST / HTTP/2.0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut client = Client::connect(&server);
        client.send_raw(garbage);
        let resp = client.read_response();
        assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(garbage));
        assert!(client.closed_by_server());
    }
    assert_eq!(server.count(), 0);
}

#[test]
fn query_headers_and_absolute_targets_are_recorded() {
    let server = TestServer::start(openai_chat());
    let mut client = Client::connect(&server);
    let body = chat_body("q").to_string();
    client.send(
        "POST",
        "/openai/deployments/x/chat/completions?api-version=2024-06-01",
        &[("X-Api-Key", "k1"), ("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(client.read_response().status, 200);
    client.send("POST", "http://127.0.0.1/v1/chat/completions?a=b", &[], body.as_bytes());
    assert_eq!(client.read_response().status, 200);

    let log = server.requests();
    let first = &log[0].request;
    assert_eq!(first.path, "/openai/deployments/x/chat/completions");
    assert_eq!(first.query, "api-version=2024-06-01");
    assert_eq!(first.header("x-api-key"), Some("k1"));
    assert_eq!(first.header("CONTENT-TYPE"), Some("application/json"));
    assert_eq!(first.body_str(), body);
    assert_eq!(
        (log[1].request.path.as_str(), log[1].request.query.as_str()),
        ("/v1/chat/completions", "a=b")
    );
}

#[test]
fn delayed_requests_overlap_and_take_at_least_the_delay() {
    let delay = Duration::from_millis(300);
    let server = Arc::new(TestServer::start(delayed(openai_chat(), delay)));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let server = Arc::clone(&server);
            thread::spawn(move || {
                let t0 = Instant::now();
                let resp = one_shot(&server, "POST", "/v1/chat/completions", &chat_body(&format!("n{i}")));
                (resp.status, reply_content(&resp), t0.elapsed())
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (status, content, elapsed) = t.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(content, format!("echo: n{i}"));
        assert!(elapsed >= delay, "answered after {elapsed:?}");
    }
    assert_eq!(server.count(), 4);
    assert_eq!(server.in_flight(), 0);
    // Lower bound only: the exact value depends on how fast the client threads start.
    assert!(
        (2..=4).contains(&server.max_in_flight()),
        "max_in_flight {}",
        server.max_in_flight()
    );
    assert!(server.requests().iter().all(|r| r.finished - r.started >= delay));
}

#[test]
fn max_in_flight_counts_exact_concurrency() {
    // Each request waits until all three are inside the handler, so the gauge must reach 3.
    const N: usize = 3;
    let gate = Arc::new((Mutex::new(0usize), Condvar::new()));
    let server = Arc::new(TestServer::start({
        let gate = Arc::clone(&gate);
        move |_req: &Request| -> Response {
            let (arrived, cv) = &*gate;
            let mut n = arrived.lock().unwrap();
            *n += 1;
            cv.notify_all();
            let (n, timeout) = cv.wait_timeout_while(n, CLIENT_TIMEOUT, |n| *n < N).unwrap();
            if timeout.timed_out() {
                Response::text(500, &format!("only {} arrived", *n))
            } else {
                Response::text(200, "met")
            }
        }
    }));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let server = Arc::clone(&server);
            thread::spawn(move || Client::connect(&server).request("GET", "/gate", b"").status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(server.max_in_flight(), N);
}

#[test]
fn sequential_requests_never_overlap() {
    let server = TestServer::start(openai_chat());
    for i in 0..5 {
        // A fresh connection each time: the worst case for the in-flight bookkeeping.
        let resp = one_shot(&server, "POST", "/v1/chat/completions", &chat_body(&format!("s{i}")));
        assert_eq!(resp.status, 200);
    }
    assert_eq!(server.max_in_flight(), 1);
    assert_eq!(server.connections(), 5);
    let log = server.requests();
    for pair in log.windows(2) {
        assert!(pair[1].started >= pair[0].finished);
    }
}

#[test]
fn scripted_responses_come_in_order_then_fallback() {
    let server = TestServer::start(scripted(
        vec![
            Response::json(429, &json!({"error": {"message": "slow down"}})).with_header("Retry-After", "1"),
            Response::text(503, "unavailable"),
            Response::json(400, &json!({"error": {"message": "bad"}})),
        ],
        Response::json(200, &json!({"ok": true})),
    ));
    let mut client = Client::connect(&server);
    let statuses: Vec<_> = (0..5)
        .map(|_| {
            let resp = client.request("POST", "/anything", b"{}");
            (resp.status, resp.header("retry-after").map(str::to_owned))
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (429, Some("1".to_owned())),
            (503, None),
            (400, None),
            (200, None),
            (200, None)
        ]
    );
    let recorded: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(recorded, [Some(429), Some(503), Some(400), Some(200), Some(200)]);
}

#[test]
fn session_poll_full_flow() {
    let server = TestServer::start(session_poll());
    let mut client = Client::connect(&server);

    let created = client.request("POST", "/sessions", b"");
    assert_eq!(created.status, 201);
    assert_eq!(created.json(), json!({"session_id": "s-1"}));

    let job = client.post_json("/sessions/s-1/messages", &json!({"text": "what is up"}));
    assert_eq!(job.status, 202);
    assert_eq!(job.json(), json!({"job_id": "j-1"}));

    for _ in 0..2 {
        let poll = client.request("GET", "/jobs/j-1", b"");
        assert_eq!((poll.status, poll.json()), (200, json!({"state": "running"})));
    }
    let done = json!({"state": "done", "answer": "echo: what is up"});
    assert_eq!(client.request("GET", "/jobs/j-1", b"").json(), done);
    assert_eq!(client.request("GET", "/jobs/j-1", b"").json(), done);

    assert_eq!(client.request("GET", "/jobs/j-9", b"").status, 404);
    assert_eq!(
        client.post_json("/sessions/s-9/messages", &json!({"text": "x"})).status,
        404
    );
    assert_eq!(
        client.post_json("/sessions/s-1/messages", &json!({"txt": "x"})).status,
        400
    );
    assert_eq!(client.request("DELETE", "/sessions", b"").status, 404);
    assert_eq!(client.request("POST", "/sessions", b"").json()["session_id"], "s-2");
    assert_eq!(server.count_path("/jobs/j-1"), 4);
}

#[test]
fn openai_chat_error_paths_and_refusal() {
    let server = TestServer::start(openai_chat());
    let mut client = Client::connect(&server);
    let not_found = client.post_json("/v1/completions", &chat_body("x"));
    assert_eq!(
        (not_found.status, not_found.json()),
        (404, json!({"error": {"message": "not found"}}))
    );
    assert_eq!(client.request("GET", "/v1/chat/completions", b"").status, 405);
    let invalid = client.request("POST", "/v1/chat/completions", b"{not json");
    assert_eq!(invalid.status, 400);
    assert!(invalid.json()["error"]["message"].is_string());
    assert_eq!(client.request("POST", "/v1/chat/completions", b"").status, 400);
    assert_eq!(
        client.post_json("/v1/chat/completions", &json!({"model": "m"})).status,
        400
    );
    assert_eq!(
        client
            .post_json("/v1/chat/completions", &json!({"messages": [{"content": "no role"}]}))
            .status,
        400
    );
    let streaming = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(client.post_json("/v1/chat/completions", &streaming).status, 400);

    let refused = client.post_json("/v1/chat/completions", &chat_body("please [[refuse]] this"));
    assert_eq!(refused.status, 200);
    let message = &refused.json()["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["refusal"], REFUSAL);
    assert_eq!(refused.json()["usage"]["completion_tokens"], 5);

    // Content parts are read as text, and the last *user* message is the one echoed.
    let parts = json!({"model": null, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "first part"}, {"type": "text", "text": "second"}]},
        {"role": "assistant", "content": "ignored reply"}
    ]});
    let resp = client.post_json("/openai/chat/completions", &parts);
    assert_eq!(resp.json()["model"], Value::Null);
    assert_eq!(reply_content(&resp), "echo: first part second");
    assert_eq!(resp.json()["usage"]["prompt_tokens"], 5);
}

#[test]
fn openai_chat_with_key_checks_bearer_token() {
    let server = TestServer::start(openai_chat_with_key("sk-test"));
    let mut client = Client::connect(&server);
    let body = chat_body("secret").to_string();
    for auth in [None, Some("Bearer sk-wrong"), Some("sk-test"), Some("Basic sk-test")] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        client.send("POST", "/v1/chat/completions", &headers, body.as_bytes());
        let resp = client.read_response();
        assert_eq!(
            (resp.status, resp.json()),
            (401, json!({"error": {"message": "invalid api key"}})),
            "auth {auth:?}"
        );
    }
    client.send(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-test")],
        body.as_bytes(),
    );
    assert_eq!(reply_content(&client.read_response()), "echo: secret");
}

#[test]
fn custom_wire_answers_and_rejects_malformed_bodies() {
    let server = TestServer::start(custom_wire());
    let mut client = Client::connect(&server);
    let ok = client.post_json(
        "/generate",
        &json!({
            "prompt": {"system": "be brief", "turns": [
                {"speaker": "human", "text": "hi there"},
                {"speaker": "bot", "text": "hello"},
                {"speaker": "human", "text": "how are you"}
            ]},
            "params": {"temperature": 0}
        }),
    );
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json(),
        json!({
            "result": {"completion": {"text": "echo: how are you"}, "tokens": {"in": 8, "out": 4}},
            "status": "ok"
        })
    );

    let turns = json!([{"speaker": "human", "text": "x"}]);
    for bad in [
        json!({"params": {}}),
        json!({"prompt": {"turns": turns}}),
        json!({"prompt": {"system": 3, "turns": turns}, "params": {}}),
        json!({"prompt": {"turns": [{"speaker": "user", "text": "x"}]}, "params": {}}),
        json!({"prompt": {"turns": [{"speaker": "human"}]}, "params": {}}),
        json!({"prompt": {"turns": [{"speaker": "bot", "text": "x"}]}, "params": {}}),
    ] {
        let resp = client.post_json("/generate", &bad);
        assert_eq!(resp.status, 422, "{bad}");
        assert_eq!(resp.json()["status"], "error");
        assert!(resp.json()["reason"].is_string());
    }
    assert_eq!(client.request("POST", "/generate", b"not json").status, 422);
    assert_eq!(client.post_json("/v1/chat/completions", &chat_body("x")).status, 404);
    // `system` may be null or absent.
    let minimal = json!({"prompt": {"system": null, "turns": turns}, "params": {}});
    assert_eq!(
        client.post_json("/generate", &minimal).json()["result"]["tokens"],
        json!({"in": 1, "out": 2})
    );
}

#[test]
fn judge_returns_verdict_json_in_content() {
    let server = TestServer::start(judge());
    let mut client = Client::connect(&server);
    let mut verdict = |prompt: &str| -> Value {
        let resp = client.post_json("/v1/chat/completions", &chat_body(prompt));
        assert_eq!(resp.status, 200);
        let content = reply_content(&resp);
        serde_json::from_str(content.as_str().unwrap()).unwrap()
    };
    let correct = verdict("Grade this.\nexpected: Paris\nanswer:  paris ");
    assert_eq!(correct["prediction"], "CORRECT");
    assert_eq!(correct["confidence"], 0.9);
    assert!(correct["reasoning"].is_string());
    assert_eq!(verdict("Expected: 4 Answer: 5")["prediction"], "INCORRECT");
    assert_eq!(verdict("no markers at all")["prediction"], "INCORRECT");
}

#[test]
fn judge_verdict_rule() {
    assert!(judge_verdict("expected: Paris\nanswer: PARIS").0);
    assert!(judge_verdict("EXPECTED: 4 answer: 4").0);
    assert!(judge_verdict("answer: blue\nexpected: Blue\n").0);
    assert!(!judge_verdict("expected: 4\nanswer: 42").0);
    assert!(!judge_verdict("expected:\nanswer:").0);
    assert!(!judge_verdict("expected: x").0);
    assert!(!judge_verdict("").0);
}

#[test]
fn handlers_can_be_called_without_a_socket() {
    let handler = openai_chat();
    let resp = handler(&Request::post_json("/v1/chat/completions", &chat_body("direct")));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.json_body().unwrap()["choices"][0]["message"]["content"],
        "echo: direct"
    );
}

#[test]
fn handler_panic_becomes_500_and_server_keeps_serving() {
    let server = TestServer::start(|req: &Request| -> Response {
        if req.path == "/boom" {
            panic!("deliberate test panic");
        }
        Response::text(200, "fine")
    });
    let mut client = Client::connect(&server);
    let resp = client.request("GET", "/boom", b"");
    assert_eq!(resp.status, 500);
    assert!(String::from_utf8_lossy(&resp.body).contains("deliberate test panic"));
    assert_eq!(client.request("GET", "/ok", b"").body, b"fine");
    assert_eq!(server.in_flight(), 0);
}

#[test]
fn drop_is_prompt_with_idle_and_busy_connections() {
    let server = TestServer::start(delayed(openai_chat(), Duration::from_secs(30)));
    let mut idle = Client::connect(&server);
    let mut busy = Client::connect(&server);
    busy.send(
        "POST",
        "/v1/chat/completions",
        &[],
        chat_body("never answered").to_string().as_bytes(),
    );
    assert!(server.wait_for_count(1, CLIENT_TIMEOUT));
    assert_eq!(server.in_flight(), 1);

    let t0 = Instant::now();
    drop(server);
    // Generous: the server needs tens of milliseconds; a hang would show up as ~30 s.
    assert!(t0.elapsed() < Duration::from_secs(5), "drop took {:?}", t0.elapsed());
    assert!(idle.closed_by_server());
    assert!(busy.closed_by_server());
}
