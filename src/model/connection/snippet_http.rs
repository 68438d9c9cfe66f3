//! The backend of a snippet's `lfeval.http`: a pooled reqwest client per model, built like
//! `custom_connection`'s (same TLS setup, same connect timing), held to the model's
//! `max_response_bytes`, and tied to the model's gate so that a 429 or 5xx with `Retry-After`
//! pauses every call of the model, as it does for `custom_connection`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::connect_clock;
use super::http::{client_builder, error_chain};
use crate::model::gate::Gate;
use crate::model::retry::RetryPolicy;
use crate::python::{
    BoxFuture, ChunkFuture, HttpBackend, HttpBody, HttpError, HttpExchange, HttpHead, HttpRequest, Sent,
};

pub struct SnippetHttp {
    /// Built on the first request: building one loads the system's root certificates
    /// (milliseconds), and most snippets never use `lfeval.http`.
    client: OnceLock<Result<reqwest::Client, String>>,
    max_response_bytes: u64,
    gate: Option<(Arc<Gate>, RetryPolicy)>,
}

impl SnippetHttp {
    /// A backend on its own (in a worker process, or for snippets that belong to no model).
    pub fn new(max_response_bytes: u64) -> SnippetHttp {
        SnippetHttp {
            client: OnceLock::new(),
            max_response_bytes,
            gate: None,
        }
    }

    /// A model's backend: `Retry-After` pauses `gate`, held to the policy's `max_retry_after`.
    pub fn for_model(max_response_bytes: u64, gate: Arc<Gate>, policy: RetryPolicy) -> SnippetHttp {
        SnippetHttp {
            gate: Some((gate, policy)),
            ..SnippetHttp::new(max_response_bytes)
        }
    }

    fn client(&self) -> Result<reqwest::Client, HttpError> {
        self.client
            .get_or_init(|| {
                client_builder()
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))
            })
            .clone()
            .map_err(HttpError::Other)
    }
}

fn classify(e: &reqwest::Error, timeout: Option<Duration>) -> HttpError {
    if e.is_timeout() {
        return HttpError::Timeout(timeout.unwrap_or_default());
    }
    if e.is_builder() {
        return HttpError::Other(format!("cannot build the request: {}", error_chain(e)));
    }
    HttpError::Connect(error_chain(e))
}

impl HttpBackend for SnippetHttp {
    fn send(&self, request: HttpRequest) -> BoxFuture<Sent> {
        let client = self.client();
        Box::pin(async move {
            let client = client?;
            let method = reqwest::Method::from_bytes(request.method.as_bytes())
                .map_err(|_| HttpError::Other(format!("invalid method `{}`", request.method)))?;
            let mut builder = client.request(method, &request.url);
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if !request.body.is_empty() {
                builder = builder.body(request.body);
            }
            if let Some(timeout) = request.timeout {
                builder = builder.timeout(timeout);
            }
            let started = Instant::now();
            let (sent, connect) = connect_clock::timed(builder.send()).await;
            let response = sent.map_err(|e| classify(&e, request.timeout))?;
            let status = response.status();
            let head = HttpHead {
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or_default().to_owned(),
                headers: response
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                content_length: response.content_length(),
                connect,
                first_byte: started.elapsed(),
            };
            let body: Box<dyn HttpBody> = Box::new(Body {
                response,
                timeout: request.timeout,
            });
            Ok((head, body))
        })
    }

    fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes
    }

    fn observe(&self, exchange: &HttpExchange) {
        if let (Some((gate, policy)), Some(ms)) = (&self.gate, exchange.retry_after_ms) {
            let asked = Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default();
            gate.pause_for(policy.cap_retry_after(asked));
        }
    }
}

struct Body {
    response: reqwest::Response,
    timeout: Option<Duration>,
}

impl HttpBody for Body {
    fn chunk(&mut self) -> ChunkFuture<'_> {
        Box::pin(async move {
            match self.response.chunk().await {
                Ok(chunk) => Ok(chunk.map(|c| c.to_vec())),
                Err(e) => Err(classify(&e, self.timeout)),
            }
        })
    }
}
