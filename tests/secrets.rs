//! The model's API key is sent as a bearer token and never reaches the logs, even at TRACE.
//!
//! Its own test binary: it captures logs with a subscriber of its own, and a callsite's
//! interest is cached process-wide, so other tests registering the same callsites at the same
//! time (the `it` binary runs them in parallel) could silence the retry warning it checks.

use std::io::Write;
use std::sync::{Arc, Mutex};

use troupe_agents::model::{self, ChatRequest, ChatResponse, ModelError, ModelService};
use troupe_agents::{ChatMessage, Role};

use troupe_testkit::llm::{self, openai_settings_with, Fault, MockConfig};

fn user(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::User, text)],
        tools: Vec::new(),
        temperature: Some(0.2),
        max_tokens: None,
    }
}

fn build(settings: &troupe_config::ModelSettings) -> Arc<dyn ModelService> {
    model::build("m", settings).unwrap_or_else(|err| panic!("{err}"))
}

/// Runs a streamed call to its end.
async fn streamed(
    model: &dyn ModelService,
    request: &ChatRequest,
) -> Result<ChatResponse, ModelError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let result = model.chat(request, Some(tx)).await;
    while rx.recv().await.is_some() {}
    result
}

fn ok(result: Result<ChatResponse, ModelError>) -> ChatResponse {
    result.unwrap_or_else(|err| panic!("model call failed: {err}"))
}

/// A `Write` into a shared buffer, for capturing logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_api_key_is_sent_as_bearer_but_never_logged() {
    let var = format!("TROUPE_IT_MODELS_KEY_{}", std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or_default();
    let key = format!("sk-troupe-it-{}-{nanos}", std::process::id());
    std::env::set_var(&var, &key);

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let mock = llm::start(MockConfig::default()).await;
    mock.push_faults([Fault::ServerError]);
    let model = build(&openai_settings_with(
        &mock,
        &format!("api_key_env = \"{var}\""),
    ));
    ok(model.chat(&user("hi"), None).await);
    ok(streamed(&*model, &user("hi")).await);
    model
        .embed(&["x".to_owned()])
        .await
        .unwrap_or_else(|err| panic!("{err}"));

    let requests = mock.requests();
    assert_eq!(requests.len(), 4);
    let bearer = format!("Bearer {key}");
    assert!(requests
        .iter()
        .all(|r| r.authorization.as_deref() == Some(bearer.as_str())));

    let logs = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    // Capture works (the retry warning with its fields is there), so the absence of the key
    // below means something.
    assert!(
        logs.contains("retrying") && logs.contains("attempt=1") && logs.contains("model=\"m\""),
        "{logs}"
    );
    assert!(!logs.contains(&key), "the key leaked into the logs");
    let settings = openai_settings_with(&mock, &format!("api_key_env = \"{var}\""));
    let concrete = model::OpenAiModel::new("m", &settings).unwrap_or_else(|err| panic!("{err}"));
    assert!(!format!("{concrete:?}").contains(&key));

    // An unset variable fails before any request, naming the variable (not a value).
    std::env::remove_var(&var);
    let err = model.chat(&user("hi"), None).await.err();
    assert!(
        matches!(&err, Some(ModelError::InvalidRequest { message, .. }) if message.contains(&var)),
        "{err:?}"
    );
    assert_eq!(mock.requests().len(), 4);
}
