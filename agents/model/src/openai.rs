//! [`OpenAiModel`]: a [`ModelService`] over async-openai against any OpenAI-compatible server
//! (OpenAI, vLLM, Ollama, llama.cpp), with troupe's own tolerant wire types (async-openai's
//! `byot` calls), an idle timeout around every read, bounded retries and optional recording.
//!
//! - Timeouts: `connect_timeout` on the HTTP client; `idle_timeout` for the response (a whole
//!   non-streamed body, or the first chunk) and between two stream chunks. There is no total
//!   timeout, so a long healthy stream is never cut.
//! - Retries ([`super::retry`]): 429 (honouring Retry-After), 5xx, connection errors and
//!   timeouts; never `insufficient_quota` or other 4xx; a streamed call only while no delta has
//!   been sent. async-openai's own retry layer is replaced by a plain transport.
//! - A stream that ends without a `finish_reason` is a [`ModelError::Connection`]; a malformed
//!   chunk is a [`ModelError::MalformedResponse`]: never a silently truncated answer.
//! - The API key is read from `api_key_env` at each attempt, sent as a sensitive header and
//!   never logged; errors never contain it, the base URL or any other URL ([`Redact`]).
//! - Hostile servers: Retry-After is clamped to `max_retry_time`; a body, an SSE event and a
//!   streamed answer are bounded by `max_response_bytes` ([`ResponseBound`], [`Assembly`]),
//!   past which the call fails with [`ModelError::ResponseTooLarge`], not retried.

use std::future::Future;
use std::sync::Arc;

use async_openai::Client;
use async_trait::async_trait;
use futures::StreamExt;
use troupe_config::{ModelSettings, Provider};
use troupe_runtime::retry::RetryPolicy;

use super::cassette::{Exchange, Recorder};
use super::retry::{self, Failure};
use super::transport::{self, Endpoint, Redact, ResponseBound, Transport};
use super::wire::{self, Assembly};
use super::{ChatRequest, ChatResponse, DeltaSink, Embeddings, ModelError, ModelService};

/// A model behind an OpenAI-compatible HTTP API.
#[derive(Debug)]
pub struct OpenAiModel {
    name: String,
    model: String,
    base_url: String,
    settings: ModelSettings,
    http: reqwest::Client,
    retry: RetryPolicy,
    recorder: Option<Recorder>,
}

impl OpenAiModel {
    /// The model configured as `[models.NAME]` (`provider = "openai"`).
    pub fn new(name: &str, settings: &ModelSettings) -> Result<OpenAiModel, ModelError> {
        let Provider::Openai {
            base_url,
            model,
            record,
            ..
        } = &settings.provider
        else {
            return Err(ModelError::invalid_request(name, "not an openai model"));
        };
        let http = transport::http_client(settings.connect_timeout)
            .map_err(|message| ModelError::invalid_request(name, message))?;
        Ok(OpenAiModel {
            name: name.to_owned(),
            model: model.clone(),
            base_url: base_url.clone(),
            settings: settings.clone(),
            http,
            retry: retry::policy(settings),
            recorder: record.clone().map(Recorder::new),
        })
    }

    /// The API key as it is in the environment now (`None` when the model names none).
    fn key(&self) -> Result<Option<String>, ModelError> {
        match &self.settings.provider {
            Provider::Openai {
                api_key_env: Some(var),
                ..
            } => self.settings.api_key().map(Some).ok_or_else(|| {
                let message = format!("the API key variable {var} is unset or empty");
                ModelError::invalid_request(&self.name, message)
            }),
            _ => Ok(None),
        }
    }

    /// A client for one attempt with `key`, reading responses through `bound`.
    fn client(
        &self,
        key: Option<String>,
        bound: &Arc<ResponseBound>,
    ) -> Result<Client<Endpoint>, ModelError> {
        let endpoint = Endpoint::new(&self.base_url, key)
            .map_err(|message| ModelError::invalid_request(&self.name, message))?;
        let transport = Transport::new(
            self.http.clone(),
            bound.clone(),
            self.settings.max_retry_time,
        );
        Ok(Client::build(self.http.clone(), endpoint).with_http_service(transport))
    }

    /// What a failed read means; a failure caused by `bound` is [`ModelError::ResponseTooLarge`]
    /// whatever async-openai made of it.
    fn classify(
        &self,
        bound: &ResponseBound,
        error: async_openai::error::OpenAIError,
    ) -> ModelError {
        if bound.exceeded() {
            return ModelError::ResponseTooLarge {
                model: self.name.clone(),
                limit: self.settings.max_response_bytes,
            };
        }
        transport::classify(&self.name, self.settings.connect_timeout, error)
    }

    /// Runs one attempt of `call` with the current key; its error is redacted (no URL, no
    /// key), so that neither logs nor tenants ever see them.
    async fn redacted<T, Fut>(&self, call: impl FnOnce(Option<String>) -> Fut) -> Result<T, Failure>
    where
        Fut: Future<Output = Result<T, Failure>>,
    {
        let key = self.key()?;
        let redact = Redact::new(&self.base_url, key.as_deref());
        call(key).await.map_err(|failure| Failure {
            error: failure.error.map_text(|text| redact.apply(text)),
            streamed: failure.streamed,
        })
    }

    fn timeout(&self, phase: &'static str) -> ModelError {
        ModelError::Timeout {
            model: self.name.clone(),
            phase,
            after: self.settings.idle_timeout,
        }
    }

    /// `future` under the idle timeout.
    async fn idle<T>(&self, future: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout(self.settings.idle_timeout, future)
            .await
            .ok()
    }

    async fn attempt(
        &self,
        key: Option<String>,
        request: &ChatRequest,
        deltas: Option<&DeltaSink>,
    ) -> Result<ChatResponse, Failure> {
        let bound = ResponseBound::new(self.settings.max_response_bytes, deltas.is_some());
        let client = self.client(key, &bound)?;
        let body = wire::Request::new(&self.model, request, deltas.is_some());
        tracing::debug!(
            messages = request.messages.len(),
            tools = request.tools.len(),
            stream = deltas.is_some(),
            "chat completion request"
        );
        let Some(sink) = deltas else {
            let response: wire::Response = self
                .idle(client.chat().create_byot(&body))
                .await
                .ok_or_else(|| self.timeout("waiting for a response"))?
                .map_err(|err| self.classify(&bound, err))?;
            return Ok(response.into_chat(&self.name, &self.model)?);
        };

        let mut stream = self
            .idle(client.chat().create_stream_byot::<_, wire::Chunk>(&body))
            .await
            .ok_or_else(|| self.timeout("waiting for a response"))?
            .map_err(|err| self.classify(&bound, err))?;
        let mut assembly = Assembly::new(self.settings.max_response_bytes);
        let mut streamed = false;
        let fail = |error: ModelError, streamed: bool| Failure { error, streamed };
        loop {
            let phase = if assembly.chunks() == 0 {
                "waiting for a response"
            } else {
                "between stream chunks"
            };
            let next = self
                .idle(stream.next())
                .await
                .ok_or_else(|| fail(self.timeout(phase), streamed))?;
            let chunk = match next {
                None => break,
                Some(chunk) => chunk.map_err(|err| fail(self.classify(&bound, err), streamed))?,
            };
            if let Some(text) = assembly
                .apply(&self.name, chunk)
                .map_err(|err| fail(err, streamed))?
            {
                streamed = true;
                // A receiver that went away does not stop the answer.
                let _ = sink.send(text);
            }
        }
        assembly
            .finish(&self.name, &self.model)
            .map_err(|err| fail(err, streamed))
    }

    async fn embed_once(
        &self,
        key: Option<String>,
        inputs: &[String],
    ) -> Result<Embeddings, Failure> {
        let bound = ResponseBound::new(self.settings.max_response_bytes, false);
        let client = self.client(key, &bound)?;
        let body = wire::EmbeddingRequest {
            model: &self.model,
            input: inputs,
            encoding_format: "float",
        };
        tracing::debug!(inputs = inputs.len(), "embeddings request");
        let response: wire::EmbeddingResponse = self
            .idle(client.embeddings().create_byot(&body))
            .await
            .ok_or_else(|| self.timeout("waiting for a response"))?
            .map_err(|err| self.classify(&bound, err))?;
        Ok(response.into_embeddings(&self.name, inputs.len())?)
    }
}

#[async_trait]
impl ModelService for OpenAiModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        deltas: Option<DeltaSink>,
    ) -> Result<ChatResponse, ModelError> {
        let response = retry::run(&self.retry, &self.name, || {
            self.redacted(|key| self.attempt(key, request, deltas.as_ref()))
        })
        .await?;
        if let Some(recorder) = &self.recorder {
            recorder
                .record(Exchange::Chat {
                    model: self.name.clone(),
                    request: request.clone(),
                    response: response.clone(),
                })
                .await;
        }
        Ok(response)
    }

    async fn embed(&self, inputs: &[String]) -> Result<Embeddings, ModelError> {
        if inputs.is_empty() {
            return Ok(Embeddings {
                vectors: Vec::new(),
                usage: None,
            });
        }
        let embeddings = retry::run(&self.retry, &self.name, || {
            self.redacted(|key| self.embed_once(key, inputs))
        })
        .await?;
        if let Some(recorder) = &self.recorder {
            recorder
                .record(Exchange::Embed {
                    model: self.name.clone(),
                    inputs: inputs.to_vec(),
                    response: embeddings.clone(),
                })
                .await;
        }
        Ok(embeddings)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::message::{ChatMessage, Role};

    /// The model of `[models.m]` with `keys`.
    fn model(keys: &str) -> OpenAiModel {
        let text = format!("[models.m]\nprovider = \"openai\"\nmodel = \"x\"\n{keys}");
        let config = match troupe_config::load_str(&text, "t.toml", &[]) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        match OpenAiModel::new("m", &config.models["m"]) {
            Ok(model) => model,
            Err(err) => panic!("{err}"),
        }
    }

    /// A failed connection's error names neither the base URL (host, path) nor the key.
    #[tokio::test]
    async fn failed_connections_name_no_url_and_no_key() {
        let var = "TROUPE_TEST_OPENAI_UNIT_KEY";
        std::env::set_var(var, "sk-test-SECRET");
        let request = ChatRequest {
            messages: vec![ChatMessage::new(Role::User, "hi")],
            tools: Vec::new(),
            temperature: None,
            max_tokens: None,
        };
        // Refused at once (a closed port on loopback: nothing leaves the machine).
        for base in ["http://127.0.0.1:9/secret-path/v1"] {
            let model = model(&format!(
                "base_url = \"{base}\"\napi_key_env = \"{var}\"\nconnect_timeout = \"200ms\"\n\
                 max_retries = 1\ninitial_backoff = \"1ms\"\nmax_backoff = \"1ms\"\n"
            ));
            for streamed in [false, true] {
                let (sink, _deltas) = tokio::sync::mpsc::unbounded_channel();
                let deltas = streamed.then_some(sink);
                let result =
                    tokio::time::timeout(Duration::from_secs(10), model.chat(&request, deltas))
                        .await
                        .unwrap_or_else(|_| panic!("{base}: no answer"));
                let Err(err) = result else {
                    panic!("{base}: a call to nowhere succeeded");
                };
                let text = err.to_string();
                assert!(
                    matches!(
                        err,
                        ModelError::Connection { .. } | ModelError::Timeout { .. }
                    ),
                    "{text}"
                );
                for leak in ["127.0.0.1", "secret-path", "sk-test-SECRET", "http"] {
                    assert!(!text.contains(leak), "{leak} in {text}");
                }
            }
        }
        let embed = model(&format!(
            "base_url = \"http://127.0.0.1:9/secret-path/v1\"\napi_key_env = \"{var}\"\nmax_retries = 0\n"
        ))
        .embed(&["x".to_owned()])
        .await;
        let text = embed.err().map(|err| err.to_string()).unwrap_or_default();
        assert!(text.contains("connection failed"), "{text}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("secret-path"),
            "{text}"
        );
    }
}
