//! `custom_connection`: POST the rendered body to the model's URL with reqwest. One pooled
//! client per model, with its TLS options and timeout.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::connect_clock::{ConnectClockLayer, timed};
use super::{AttemptError, Evidence, RawResponse};
use crate::diagnostic::Diagnostic;
use crate::model::CustomConnection;
use crate::secrets::Secrets;

pub struct HttpEndpoint {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    timeout: Duration,
    /// Bodies longer than this fail the attempt while they are read.
    max_response_bytes: u64,
}

/// Installs the TLS crypto provider once per process (reqwest is built without a default).
fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The client every model's HTTP starts from: TLS set up, new connections timed.
pub(super) fn client_builder() -> reqwest::ClientBuilder {
    init_tls();
    reqwest::Client::builder().connector_layer(ConnectClockLayer)
}

impl HttpEndpoint {
    pub fn new(
        model_key: &str,
        config: &CustomConnection,
        max_response_bytes: u64,
        secrets: &Secrets,
    ) -> Result<HttpEndpoint, Diagnostic> {
        let context = |d: Diagnostic| Diagnostic {
            message: format!("model `{model_key}`: {}", d.message),
            ..d
        };
        let url = config.url.resolve(secrets, false).map_err(context)?;
        let url = url
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Diagnostic::new(format!("model `{model_key}`: `url` must be a string")))?;
        reqwest::Url::parse(&url).map_err(|e| {
            Diagnostic::new(format!("model `{model_key}`: invalid `url` `{url}`: {e}"))
                .at_location(config.url.location.clone())
        })?;

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(api_key) = &config.api_key {
            let key = api_key.resolve(secrets, true).map_err(context)?;
            let key = match key {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            if !key.is_empty() {
                let value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    Diagnostic::new(format!(
                        "model `{model_key}`: `api_key` contains characters not allowed in a header"
                    ))
                })?;
                headers.insert(AUTHORIZATION, sensitive(value));
            }
        }
        for (name, value) in &config.custom_headers {
            let resolved = value.resolve(secrets, true).map_err(context)?;
            let text = match resolved {
                serde_json::Value::String(s) => s,
                serde_json::Value::Bool(b) => if b { "True" } else { "False" }.to_owned(),
                other => other.to_string(),
            };
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Diagnostic::new(format!("model `{model_key}`: invalid header name `{name}`"))
                    .at_location(value.location.clone())
            })?;
            let value = HeaderValue::from_str(&text).map_err(|_| {
                Diagnostic::new(format!("model `{model_key}`: header `{name}` must be printable ASCII"))
                    .at_location(value.location.clone())
            })?;
            headers.insert(header, sensitive(value));
        }

        let mut builder = client_builder().timeout(config.timeout).pool_max_idle_per_host(64);
        if let Some(ca) = &config.trusted_ca {
            let resolved = ca.resolve(secrets, true).map_err(context)?;
            let encoded = resolved.as_str().unwrap_or_default().trim().to_owned();
            let pem = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| {
                    Diagnostic::new(format!("model `{model_key}`: `trusted_ca` is not base64: {e}"))
                        .with_hint("encode the PEM file with `base64 -w 0 cert.pem`")
                })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Diagnostic::new(format!(
                    "model `{model_key}`: `trusted_ca` is not a PEM certificate: {e}"
                ))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if config.accept_untrusted {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| Diagnostic::new(format!("model `{model_key}`: cannot build the HTTP client: {e}")))?;
        Ok(HttpEndpoint {
            client,
            url,
            headers,
            timeout: config.timeout,
            max_response_bytes,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Request headers as sent, with credentials masked.
    pub fn masked_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                let shown = if v.is_sensitive() {
                    "<masked>".to_owned()
                } else {
                    v.to_str().unwrap_or("<binary>").to_owned()
                };
                (k.as_str().to_owned(), shown)
            })
            .collect()
    }

    pub async fn send(&self, body: String) -> (Result<RawResponse, AttemptError>, Evidence) {
        let start = Instant::now();
        let (sent, connect) = timed(
            self.client
                .post(&self.url)
                .headers(self.headers.clone())
                .body(body)
                .send(),
        )
        .await;
        let mut evidence = Evidence {
            connect,
            ..Evidence::default()
        };
        let response = match sent {
            Ok(response) => response,
            Err(e) => return (Err(self.classify(&e)), evidence),
        };
        evidence.first_byte = Some(start.elapsed());
        (self.receive(response, start).await, evidence)
    }

    async fn receive(&self, response: reqwest::Response, start: Instant) -> Result<RawResponse, AttemptError> {
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::retry_after::parse);
        let body = self.read_body(response).await?;
        let raw = RawResponse {
            status_code: status,
            headers,
            body,
            captured: String::new(),
            elapsed: start.elapsed(),
        };
        if status == 429 || (500..600).contains(&status) {
            return Err(AttemptError::Status {
                response: raw,
                retry_after,
            });
        }
        Ok(raw)
    }

    /// Reads the body chunk by chunk, giving up as soon as it outgrows `max_response_bytes`
    /// (before reading anything when `Content-Length` already says so), then decodes it with the
    /// charset the response declares, as `Response::text` would.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<String, AttemptError> {
        let limit = self.max_response_bytes;
        let too_large = |size| AttemptError::TooLarge {
            size,
            limit,
            captured: String::new(),
        };
        if let Some(len) = response.content_length()
            && len > limit
        {
            return Err(too_large(Some(len)));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(&e))? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large(None));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(crate::charset::decode(bytes, content_type.as_deref()))
    }

    fn classify(&self, e: &reqwest::Error) -> AttemptError {
        if e.is_timeout() {
            return AttemptError::Timeout {
                after: self.timeout,
                detail: String::new(),
                captured: String::new(),
                location: None,
            };
        }
        if e.is_builder() {
            return AttemptError::Fatal(format!("cannot build the request: {}", error_chain(e)));
        }
        AttemptError::Transport(error_chain(e))
    }
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// reqwest's message plus its causes (it keeps the useful part in `source`).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
