//! One inference, end to end: `process_input` → the model's gate (permit, `Retry-After` pause,
//! rate limiter) → the endpoint, retried with jittered exponential backoff on 429, 5xx,
//! timeouts and connection errors → `process_output` → the task's output shape. Every step is
//! recorded in a [`Trace`] so `model test` and result files can show it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;
use crate::error_class::ErrorClass;
use crate::millis;
use crate::model::adapter::{CompiledAdapter, ModelInfo};
use crate::model::cache::{CacheHandle, CachedResponse, Lookup, ResponseCache};
use crate::model::connection::http::HttpEndpoint;
use crate::model::connection::snippet::SnippetEndpoint;
use crate::model::connection::{AttemptError, RawResponse};
use crate::model::gate::{Gate, TokenTicket};
use crate::model::io::{self, ModelOutput, OutputError};
use crate::model::retry::backoff;
use crate::model::token_rate;
use crate::model::trace::{Attempt, Failure, Step, Trace};
use crate::model::{Connection, Model};
use crate::python::PythonRuntime;
use crate::secrets::Secrets;

pub enum Endpoint {
    Http(HttpEndpoint),
    Snippet(SnippetEndpoint),
}

/// Everything needed to call one model, built once per model key and shared.
pub struct ModelRuntime {
    /// The response cache, when the run uses one.
    pub cache: Option<CacheHandle>,
    pub model: Arc<Model>,
    pub adapter: CompiledAdapter,
    pub endpoint: Endpoint,
    pub gate: Arc<Gate>,
    pub info: ModelInfo,
}

impl ModelRuntime {
    /// Builds the runtime: resolves secrets, compiles the adapter and (for snippets) the Python.
    pub fn new(
        model: Arc<Model>,
        adapter: Arc<crate::model::adapter::Adapter>,
        python: Option<&PythonRuntime>,
        secrets: &Secrets,
    ) -> Result<ModelRuntime, Diagnostic> {
        let compiled = CompiledAdapter::compile(adapter)?;
        let gate =
            Arc::new(Gate::new(model.concurrency(), model.rate_limit).with_tokens_per_minute(model.tokens_per_minute));
        let endpoint = match &model.connection {
            Connection::CustomConnection(c) => {
                Endpoint::Http(HttpEndpoint::new(&model.key, c, model.max_response_bytes, secrets)?)
            }
            Connection::CustomInference(c) => {
                let python =
                    python.ok_or_else(|| Diagnostic::new("internal error: the python runtime is not started"))?;
                Endpoint::Snippet(SnippetEndpoint::new(&model, c, python, secrets, &gate)?)
            }
        };
        let info = ModelInfo {
            model_key: model
                .model_key(secrets)
                .map_err(|d| Diagnostic::new(format!("model `{}`: {}", model.key, d.message)))?,
            task: model.task,
        };
        Ok(ModelRuntime {
            cache: None,
            model,
            adapter: compiled,
            endpoint,
            gate,
            info,
        })
    }

    pub fn render_input(&self, input: &Value, kwargs: &Map<String, Value>) -> Result<String, Diagnostic> {
        self.adapter.render_input(input, &self.info, kwargs)
    }

    /// Runs the whole chain. The trace is filled in as far as the chain got.
    pub async fn infer(
        &self,
        input: &Value,
        kwargs: &Map<String, Value>,
        sample: Option<&Value>,
    ) -> (Trace, Result<ModelOutput, Failure>) {
        self.infer_salted(input, kwargs, sample, None).await
    }

    /// [`infer`](Self::infer) for a repeated call of the same request (a trial, a repeated run):
    /// `salt` keeps its cached response apart from the other repetitions', so each one asks the
    /// model, and a re-run reuses each repetition's own answer.
    pub async fn infer_salted(
        &self,
        input: &Value,
        kwargs: &Map<String, Value>,
        sample: Option<&Value>,
        salt: Option<&str>,
    ) -> (Trace, Result<ModelOutput, Failure>) {
        let mut trace = Trace::default();
        let start = Instant::now();
        let result = self.infer_inner(input, kwargs, sample, salt, &mut trace).await;
        trace.timings.total_ms = millis::of(start.elapsed());
        (trace, result)
    }

    async fn infer_inner(
        &self,
        input: &Value,
        kwargs: &Map<String, Value>,
        sample: Option<&Value>,
        salt: Option<&str>,
        trace: &mut Trace,
    ) -> Result<ModelOutput, Failure> {
        io::validate_input(self.info.task, input).map_err(|e| {
            Failure::new(
                Step::TransformInput,
                ErrorClass::InvalidInput,
                format!("invalid model input for task `{}`: {e}", self.info.task.as_str()),
            )
        })?;
        let t = Instant::now();
        let body = self
            .render_input(input, kwargs)
            .map_err(|d| Failure::from_diagnostic(Step::TransformInput, d))?;
        trace.timings.render_input_ms = millis::of(t.elapsed());
        trace.request_body = Some(body.clone());

        let key = self.cache.as_ref().map(|c| {
            // A snippet that takes `sample` may answer differently per sample for the same body.
            let keyed = match (&self.endpoint, sample) {
                (Endpoint::Snippet(s), Some(sample)) if s.snippet().arity() >= 3 => format!("{body}\n{sample}"),
                _ => body.clone(),
            };
            match salt {
                Some(salt) => ResponseCache::key(&c.fingerprint, &format!("{keyed}\n{salt}")),
                None => ResponseCache::key(&c.fingerprint, &keyed),
            }
        });
        // Held until the answer is stored: identical requests in flight wait for it.
        let claim = match (&self.cache, &key) {
            (Some(handle), Some(key)) if handle.policy.reads() => match handle.lookup_or_claim(key).await {
                Lookup::Hit(hit) => {
                    let response = RawResponse {
                        status_code: hit.status_code,
                        headers: hit.headers,
                        body: hit.body,
                        captured: hit.captured,
                        elapsed: Duration::ZERO,
                    };
                    trace.cached = true;
                    trace.response = Some(response.clone());
                    return self.finish(&response, trace);
                }
                Lookup::Miss(claim) => claim,
            },
            _ => None,
        };
        let (response, tokens) = self.call_with_retries(body, sample, trace).await?;
        trace.response = Some(response.clone());
        let output = self.finish(&response, trace)?;
        // Without a reported usage the estimate stands: too high rather than too low.
        if let Some(usage) = output.usage {
            tokens.settle(usage.num_prompt_tokens + usage.num_completion_tokens);
        }
        // Only answers that made it through the whole chain are worth replaying.
        if let (Some(handle), Some(key)) = (&self.cache, &key)
            && handle.policy.writes()
            && (200..300).contains(&response.status_code)
        {
            let cached = CachedResponse {
                status_code: response.status_code,
                headers: response.headers.clone(),
                body: response.body.clone(),
                captured: response.captured.clone(),
            };
            handle.store(key, &self.model.key, &cached).await;
        }
        drop(claim);
        Ok(output)
    }

    /// `process_output` and shape validation for a response (also used for cached responses).
    pub fn finish(&self, response: &RawResponse, trace: &mut Trace) -> Result<ModelOutput, Failure> {
        let t = Instant::now();
        let rendered = self
            .adapter
            .render_output(
                &response.body,
                response.status_code,
                &response.headers_map(),
                &self.info,
            )
            .map_err(|d| Failure::from_diagnostic(Step::TransformOutput, d))?;
        trace.timings.render_output_ms = millis::of(t.elapsed());
        match io::parse_output(self.info.task, &rendered) {
            Ok(output) => {
                // The parsed output is the evidence; the text it was parsed from would be a
                // second copy of the same body.
                trace.output = Some(output.value.clone());
                Ok(output)
            }
            Err(OutputError::Reported(message)) => {
                trace.rendered_output = Some(rendered);
                // Masked before it goes into a longer message: an adapter may have cut a
                // secret short (`body[:500]`), and here its remains still end the text.
                Err(Failure::new(
                    Step::TransformOutput,
                    ErrorClass::ModelError,
                    format!(
                        "model `{}` returned an error: {}",
                        self.model.key,
                        crate::redact::redact(&message)
                    ),
                ))
            }
            Err(OutputError::Malformed { problem, rendered }) => Err(Failure {
                detail: Some(rendered),
                ..Failure::new(
                    Step::TransformOutput,
                    ErrorClass::InvalidOutput,
                    format!(
                        "adapter `{}` produced an invalid {} output: {problem}",
                        self.adapter.adapter.key,
                        self.info.task.as_str()
                    ),
                )
            }),
        }
    }

    async fn call_with_retries(
        &self,
        body: String,
        sample: Option<&Value>,
        trace: &mut Trace,
    ) -> Result<(RawResponse, TokenTicket), Failure> {
        let policy = &self.model.retry;
        let max_attempts = policy.max_attempts.max(1);
        let estimate = self.gate.tokens_per_minute.map_or(0, |_| token_rate::estimate(&body));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let admission = self
                .gate
                .admit_call(estimate)
                .await
                .map_err(|e| Failure::new(Step::RunInference, ErrorClass::Connection, e.to_string()))?;
            let started = admission.started;
            millis::add(&mut trace.timings.permit_wait_ms, admission.wait.permit);
            millis::add(&mut trace.timings.limiter_wait_ms, admission.wait.limiter);
            let t = Instant::now();
            let (result, evidence) = match &self.endpoint {
                Endpoint::Http(http) => http.send(body.clone()).await,
                Endpoint::Snippet(snippet) => snippet.call(body.clone(), sample).await,
            };
            let tokens = admission.finish();
            let elapsed = t.elapsed();
            millis::add(&mut trace.timings.inference_ms, elapsed);
            trace.timings.add(&evidence);
            trace.http.extend(evidence.http);
            let error = match result {
                Ok(response) => {
                    self.gate.succeeded();
                    // The place just given back wakes a call waiting for it, whose request is
                    // ready to go. Stepping aside lets it go out now, before this answer is
                    // processed, scored and recorded: otherwise, when a burst of answers comes
                    // back, each next request waits behind the whole burst's processing. (A
                    // failed call does not step aside: a 429 must shrink the window first.)
                    tokio::task::yield_now().await;
                    trace.attempts.push(Attempt {
                        error: None,
                        retryable: false,
                        elapsed_ms: millis::of(elapsed),
                    });
                    return Ok((response, tokens));
                }
                Err(e) => e,
            };
            let retryable = error.retryable();
            // Held to the model's `max_retry_after`, so one answer cannot stall the run for hours.
            let retry_after = error.retry_after().map(|r| policy.cap_retry_after(r));
            match &error {
                // Too many requests: the endpoint did not process the call, so its tokens are
                // given back, and the model slows down.
                AttemptError::Status { response, .. } if response.status_code == 429 => {
                    tokens.settle(0);
                    if retry_after.is_none() {
                        self.gate.throttled(started, None);
                    }
                }
                // A snippet's `lfeval.RateLimited` is its way of saying 429.
                AttemptError::RateLimited { .. } => {
                    tokens.settle(0);
                    if retry_after.is_none() {
                        self.gate.throttled(started, None);
                    }
                }
                AttemptError::Transport(_) => tokens.settle(0),
                _ => {}
            }
            // Pause the whole model even when this call gives up: the calls queued behind it
            // must not hit an endpoint that asked for a break.
            if let Some(retry_after) = retry_after {
                self.gate.pause_for(retry_after);
            }
            trace.attempts.push(Attempt {
                error: Some(error.to_string()),
                retryable,
                elapsed_ms: millis::of(elapsed),
            });
            if !retryable || attempt >= max_attempts {
                return match error {
                    // Out of retries on a 429/5xx: the adapter turns the response into an error.
                    AttemptError::Status { response, .. } => Ok((response, TokenTicket::default())),
                    other => Err(self.attempt_failure(other, attempt)),
                };
            }
            let delay = backoff(policy, attempt, retry_after);
            millis::add(&mut trace.timings.backoff_ms, delay);
            tokio::time::sleep(delay).await;
        }
    }

    fn attempt_failure(&self, error: AttemptError, attempts: u32) -> Failure {
        let retryable = error.retryable();
        let mut message = match &error {
            AttemptError::Snippet { message, .. }
            | AttemptError::RateLimited { message, .. }
            | AttemptError::WorkerExited { message, .. } => message.clone(),
            AttemptError::TooLarge { size: None, .. } => format!(
                "model `{}`: {error}; hint: raise the model's `max_response_bytes` if answers this large are expected",
                self.model.key
            ),
            AttemptError::TooLarge { .. } if matches!(self.endpoint, Endpoint::Snippet(_)) => format!(
                "model `{}`: run_inference returned a {error}; hint: raise the model's `max_response_bytes` if answers this large are expected",
                self.model.key
            ),
            AttemptError::TooLarge { .. } => format!(
                "model `{}`: {error}; hint: raise the model's `max_response_bytes` if answers this large are expected",
                self.model.key
            ),
            AttemptError::Timeout { after, .. } if matches!(self.endpoint, Endpoint::Snippet(_)) => {
                error.detail().map_or_else(
                    || {
                        format!(
                            "model `{}`: run_inference timed out after {}",
                            self.model.key,
                            crate::diagnostic::format_duration(*after)
                        )
                    },
                    str::to_owned,
                )
            }
            other => format!("model `{}`: {other}", self.model.key),
        };
        if attempts > 1 {
            message.push_str(&format!(" (after {attempts} attempts)"));
        }
        let mut detail = error.detail().map(str::to_owned);
        let captured = error.captured().to_owned();
        if !captured.is_empty() {
            let text = format!("captured output:\n{}", captured.trim_end());
            detail = Some(match detail {
                Some(d) => format!("{d}\n{text}"),
                None => text,
            });
        }
        Failure {
            detail,
            location: error.location().map(str::to_owned),
            retryable,
            captured,
            ..Failure::new(Step::RunInference, error.class(), message)
        }
    }
}
