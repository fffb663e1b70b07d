//! The mock model server started in-process on 127.0.0.1:0 (stopped when its handle drops),
//! and model settings pointing at it with short timeouts and fast retries.

use std::path::Path;
use std::time::Duration;

use troupe_config::ModelSettings;
pub use troupe_mock_llm::{Fault, MockConfig, MockHandle, Quirk};

/// Starts a mock server with `config`.
pub async fn start(config: MockConfig) -> MockHandle {
    troupe_mock_llm::MockServer::start(config)
        .await
        .unwrap_or_else(|err| panic!("mock model server did not start: {err}"))
}

/// A mock config from TOML text (rules, quirks, faults).
pub fn mock_config(text: &str) -> MockConfig {
    MockConfig::from_toml(text, "mock.toml").unwrap_or_else(|err| panic!("{err}"))
}

/// The settings of `[models.NAME]` in a config made of `model_toml` (the table's body), loaded
/// as the file `origin` so that relative paths resolve against its directory.
pub fn model_settings(model_toml: &str, origin: &Path) -> ModelSettings {
    let text = format!("[models.m]\n{model_toml}\n");
    let origin = origin.display().to_string();
    let config =
        troupe_config::load_str(&text, &origin, &[]).unwrap_or_else(|err| panic!("{err}\n{text}"));
    config.models["m"].clone()
}

/// An `openai` model on `mock`: idle timeout 300 ms, 3 retries within 5 s, backoff 10–50 ms.
pub fn openai_settings(mock: &MockHandle) -> ModelSettings {
    openai_settings_with(mock, "")
}

/// Like [`openai_settings`], with extra keys (not the ones set there).
pub fn openai_settings_with(mock: &MockHandle, extra: &str) -> ModelSettings {
    model_settings(
        &format!(
            r#"provider = "openai"
base_url = "{}"
model = "mock-model"
connect_timeout = "500ms"
idle_timeout = "300ms"
max_retries = 3
max_retry_time = "5s"
initial_backoff = "10ms"
max_backoff = "50ms"
{extra}"#,
            mock.base_url()
        ),
        Path::new("troupe.toml"),
    )
}

/// A short duration the tests treat as "promptly" on a loaded machine.
pub const PROMPTLY: Duration = Duration::from_secs(3);
