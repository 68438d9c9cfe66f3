//! Bounded everything: `max_response_bytes` on HTTP bodies (with or without `Content-Length`)
//! and on a snippet's return value, captured output kept as head and tail, and each body
//! stored once per record.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use serde_json::{Value, json};

use super::isolation::{first_error, records, snippet_run};
use super::server::{Response, TestServer};
use super::test::Test;

const MIB: usize = 1024 * 1024;

/// A run over two questions through an HTTP model at `url`.
fn http_run(url: &str, model_extra: &str) -> Test {
    let model = format!(
        "key: m\ndisplay_name: M\nretry:\n  max_attempts: 1\n{model_extra}\nconfig:\n  connection_type: custom_connection\n  url: \"{url}\"\n  adapter:\n    key: \"latticeflow$openai_chat_completion\"\n"
    );
    snippet_run("", 5, "", &["alpha"]).write("models/m.yaml", &model).args([
        "run",
        "-f",
        "run.yaml",
        "-o",
        "out",
        "--no-progress",
    ])
}

fn chat(content: &str) -> Value {
    json!({"choices": [{"message": {"role": "assistant", "content": content}}]})
}

#[test]
fn an_http_body_over_the_default_limit_fails_before_it_is_read() {
    let body = chat(&"x".repeat(40 * MIB));
    let server = TestServer::start(move |_| Response::json(200, &body));
    let test = http_run(&server.url(), "");
    test.failure();
    let (class, message) = first_error(&records(&test)["alpha"]);
    assert_eq!(class, "too_large");
    assert_eq!(
        message,
        "model `m`: response too large (40.0 MiB > 32 MiB); hint: raise the model's `max_response_bytes` if answers this large are expected"
    );
}

#[test]
fn a_streamed_body_is_cut_off_at_the_model_limit() {
    // Chunked, so no length is known in advance: the limit applies while reading.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1/chat/completions", listener.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let mut stream = stream;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        // Up to 256 MiB; lfeval hangs up after 1 MiB (socket buffers take a few more).
        while sent < 256 * MIB {
            let head = format!("{:x}\r\n", chunk.len());
            if stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&chunk))
                .and_then(|()| stream.write_all(b"\r\n"))
                .is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let test = http_run(&url, "max_response_bytes: 1048576");
    test.failure();
    let sent = server.join().expect("server thread");
    let (class, message) = first_error(&records(&test)["alpha"]);
    assert_eq!(class, "too_large");
    assert_eq!(
        message,
        "model `m`: response too large (over 1 MiB); hint: raise the model's `max_response_bytes` if answers this large are expected"
    );
    assert!(sent < 64 * MIB, "lfeval kept reading: {sent} bytes sent");
}

#[test]
fn a_snippet_returning_more_than_the_limit_fails_the_attempt() {
    let snippet = "def run_inference(body, environment):\n    return \"é\" * (1024 * 1024)\n";
    let test = snippet_run("max_response_bytes: 1048576", 5, snippet, &["alpha"]);
    test.failure();
    let (class, message) = first_error(&records(&test)["alpha"]);
    assert_eq!(class, "too_large");
    assert_eq!(
        message,
        "model `m`: run_inference returned a response too large (2 MiB > 1 MiB); hint: raise the model's `max_response_bytes` if answers this large are expected"
    );
    // The same bound holds in a worker process.
    let test = snippet_run(
        "max_response_bytes: 1048576\nisolation: process",
        5,
        snippet,
        &["alpha"],
    );
    test.failure();
    assert_eq!(first_error(&records(&test)["alpha"]).0, "too_large");
}

#[test]
fn ten_megabytes_of_prints_keep_their_head_and_tail() {
    let snippet = r#"import json

def run_inference(body, environment):
    print("first line")
    for i in range(100_000):
        print(f"line {i:06d} " + "y" * 90)
    print("last line")
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok alpha"}}]})
"#;
    let test = snippet_run("", 30, snippet, &["alpha"]);
    test.success();
    let record = &records(&test)["alpha"];
    let captured = record["calls"][0]["response"]["captured"].as_str().expect("captured");
    assert!(captured.len() < 200 * 1024, "{} bytes kept", captured.len());
    assert!(captured.starts_with("first line\nline 000000 "), "{}", &captured[..100]);
    assert!(
        captured.ends_with("last line\n"),
        "{}",
        &captured[captured.len() - 100..]
    );
    assert!(
        captured.contains(" characters of output omitted]\n…"),
        "the cut says how much it left out"
    );
}

#[test]
fn each_body_is_stored_once_per_record() {
    let marker = format!("unique-{}", "z".repeat(100_000));
    let body = chat(&marker);
    let server = TestServer::start(move |_| Response::json(200, &body));
    let test = http_run(&server.url(), "");
    test.success();
    let line = std::fs::read_to_string(test.path().join("out/samples.jsonl")).expect("samples.jsonl");
    // The raw response body and its parsed output; nothing else repeats it.
    assert_eq!(line.matches(&marker).count(), 2, "{} bytes", line.len());
    // Read back through lfeval's record type, the solver output is whole.
    let record = &records(&test)["alpha"];
    let so = &record["solver_output"];
    assert!(so["text"] == marker.as_str(), "the text is restored");
    assert!(
        so["output"]["choices"][0]["message"]["content"] == marker.as_str(),
        "the output is restored"
    );
    assert!(so["messages"][1]["content"] == marker.as_str(), "the reply is restored");
}
