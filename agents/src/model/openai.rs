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
//!   never logged.

use std::future::Future;

use async_openai::Client;
use async_trait::async_trait;
use futures::StreamExt;
use troupe_config::{ModelSettings, Provider};

use super::cassette::{Exchange, Recorder};
use super::retry::{self, Failure};
use super::transport::{self, Endpoint, Transport};
use super::wire::{self, Assembly};
use super::{
    ChatRequest, ChatResponse, DeltaSink, Embeddings, ModelError, ModelService, RetryPolicy,
};

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
            return Err(ModelError::InvalidRequest {
                model: name.to_owned(),
                message: "not an openai model".to_owned(),
            });
        };
        let http = transport::http_client(settings.connect_timeout).map_err(|message| {
            ModelError::InvalidRequest {
                model: name.to_owned(),
                message,
            }
        })?;
        Ok(OpenAiModel {
            name: name.to_owned(),
            model: model.clone(),
            base_url: base_url.clone(),
            settings: settings.clone(),
            http,
            retry: RetryPolicy::from_settings(settings),
            recorder: record.clone().map(Recorder::new),
        })
    }

    /// The provider's model name (e.g. `gpt-4o-mini`).
    pub fn provider_model(&self) -> &str {
        &self.model
    }

    /// A client for one attempt, with the key as it is in the environment now.
    fn client(&self) -> Result<Client<Endpoint>, ModelError> {
        let key = match &self.settings.provider {
            Provider::Openai {
                api_key_env: Some(var),
                ..
            } => Some(
                self.settings
                    .api_key()
                    .ok_or_else(|| ModelError::InvalidRequest {
                        model: self.name.clone(),
                        message: format!("the API key variable {var} is unset or empty"),
                    })?,
            ),
            _ => None,
        };
        let endpoint =
            Endpoint::new(&self.base_url, key).map_err(|message| ModelError::InvalidRequest {
                model: self.name.clone(),
                message,
            })?;
        Ok(Client::build(self.http.clone(), endpoint)
            .with_http_service(Transport::new(self.http.clone())))
    }

    fn classify(&self, error: async_openai::error::OpenAIError) -> ModelError {
        transport::classify(&self.name, self.settings.connect_timeout, error)
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
        request: &ChatRequest,
        deltas: Option<&DeltaSink>,
    ) -> Result<ChatResponse, Failure> {
        let client = self.client()?;
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
                .map_err(|err| self.classify(err))?;
            return Ok(response.into_chat(&self.name, &self.model)?);
        };

        let mut stream = self
            .idle(client.chat().create_stream_byot::<_, wire::Chunk>(&body))
            .await
            .ok_or_else(|| self.timeout("waiting for a response"))?
            .map_err(|err| self.classify(err))?;
        let mut assembly = Assembly::default();
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
                Some(chunk) => chunk.map_err(|err| fail(self.classify(err), streamed))?,
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

    async fn embed_once(&self, inputs: &[String]) -> Result<Embeddings, Failure> {
        let client = self.client()?;
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
            .map_err(|err| self.classify(err))?;
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
            self.attempt(request, deltas.as_ref())
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
        let embeddings = retry::run(&self.retry, &self.name, || self.embed_once(inputs)).await?;
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
