//! Logging: tracing to stderr, human-readable or JSON; `log` records (actix) bridged in. With the
//! `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the exporters of [`init`] running; dropping it flushes and stops them.
#[must_use = "dropping the guard stops span export"]
pub struct Guard {
    #[cfg(feature = "otel")]
    otel: Option<otel::Exporter>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(exporter) = self.otel.take() {
            exporter.shutdown();
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_level`.
pub fn init(format: Format, default_level: &str) -> Guard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        Format::Text => fmt.boxed(),
        Format::Json => fmt.json().boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);

    #[cfg(feature = "otel")]
    let (registry, otel) = {
        let exporter = otel::Exporter::from_env();
        let layer = exporter.as_ref().map(otel::Exporter::layer);
        (registry.with(layer), exporter)
    };

    // `try_init` also installs the `log` -> `tracing` bridge (tracing-log feature).
    if let Err(err) = registry.try_init() {
        eprintln!("troupe: logging not initialised: {err}");
    }
    Guard {
        #[cfg(feature = "otel")]
        otel,
    }
}

/// OTLP export of spans (feature `otel`).
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_subscriber::registry::LookupSpan;

    /// The service name when `OTEL_SERVICE_NAME` is unset.
    const SERVICE: &str = "troupe";

    /// A running span exporter.
    pub(super) struct Exporter {
        provider: SdkTracerProvider,
    }

    impl Exporter {
        /// An OTLP/HTTP exporter to `OTEL_EXPORTER_OTLP_ENDPOINT` (the standard `OTEL_*`
        /// variables apply), or none when the endpoint is unset or the exporter cannot be
        /// built (said on stderr: logging is not up yet).
        pub(super) fn from_env() -> Option<Exporter> {
            let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
            if endpoint.trim().is_empty() {
                return None;
            }
            let exporter = match opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
            {
                Ok(exporter) => exporter,
                Err(err) => {
                    eprintln!("troupe: spans not exported to {endpoint}: {err}");
                    return None;
                }
            };
            let service = std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| SERVICE.to_owned());
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service).build())
                .build();
            Some(Exporter { provider })
        }

        /// The layer turning tracing spans into OpenTelemetry spans.
        pub(super) fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, Tracer>
        where
            S: tracing::Subscriber + for<'span> LookupSpan<'span>,
        {
            tracing_opentelemetry::layer().with_tracer(self.provider.tracer("troupe"))
        }

        /// Exports the spans still buffered and stops.
        pub(super) fn shutdown(self) {
            if let Err(err) = self.provider.shutdown() {
                eprintln!("troupe: span export did not shut down cleanly: {err}");
            }
        }
    }

    /// The SDK's tracer.
    pub(super) type Tracer = opentelemetry_sdk::trace::Tracer;
}
