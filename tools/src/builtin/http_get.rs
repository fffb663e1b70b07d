//! `kind = "http_get"`: fetches a URL with GET and returns the body as text, guarded against
//! server-side request forgery: only http(s), a host allowlist, no private/loopback/link-local
//! destinations unless opened, names resolved and checked by the tool and the connection
//! pinned to the checked addresses, every redirect hop checked again, and a size limit.
//!
//! Options (`[tools.NAME.options]`):
//! - `allow = ["example.com", "*.example.org", "10.1.2.3"]`: hosts it may fetch from (default
//!   empty: any host with public addresses). Naming an IP address also opens that address.
//! - `allow_private = false`: open private (`10/8`, `172.16/12`, `192.168/16`), loopback,
//!   unique-local (`fc00::/7`) and shared-NAT (`100.64/10`) addresses. Never link-local.
//! - `allow_networks = ["127.0.0.0/8"]`: open these networks (CIDR or single addresses), even
//!   link-local ones. Unspecified, broadcast and multicast addresses are never opened.
//! - `max_bytes = 1048576`: longer bodies are truncated, with a note.
//! - `max_redirects = 3`: redirects followed, each hop checked like the first URL.

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::arguments;
use super::Options;
use crate::error::ToolError;
use crate::net::{DestinationPolicy, GuardedResolver, HostPattern, Refusal};
use crate::tool::{Tool, ToolContext, ToolOutput};

/// Largest body read when `max_bytes` is not set: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Redirects followed when `max_redirects` is not set.
pub const DEFAULT_MAX_REDIRECTS: u32 = 3;

/// The options of an `http_get` tool, read from `[tools.NAME.options]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGetOptions {
    /// Hosts it may fetch from; empty: any host with public addresses.
    pub allow: Vec<HostPattern>,
    /// Open private, loopback, unique-local and shared-NAT addresses.
    pub allow_private: bool,
    /// Networks opened explicitly.
    pub allow_networks: Vec<IpNet>,
    /// Longest body returned (> 0).
    pub max_bytes: usize,
    /// Redirects followed.
    pub max_redirects: u32,
}

impl Default for HttpGetOptions {
    fn default() -> Self {
        HttpGetOptions {
            allow: Vec::new(),
            allow_private: false,
            allow_networks: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }
}

impl HttpGetOptions {
    /// Reads `[tools.tool.options]`; an unknown key or a bad value is a
    /// [`ToolError::Config`] naming the key.
    pub fn parse(tool: &str, table: &toml::Table) -> Result<Self, ToolError> {
        let mut options = Options::new(tool, table);
        let allow = options
            .strings("allow")?
            .iter()
            .map(|entry| HostPattern::parse(entry).map_err(|err| options.error("allow", err)))
            .collect::<Result<Vec<_>, _>>()?;
        let allow_private = options.bool("allow_private", false)?;
        let allow_networks = options
            .strings("allow_networks")?
            .iter()
            .map(|entry| {
                parse_network(entry).ok_or_else(|| {
                    options.error(
                        "allow_networks",
                        format!("invalid network \"{entry}\": expected a CIDR such as \"127.0.0.0/8\" or an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_bytes = options.u64("max_bytes", DEFAULT_MAX_BYTES as u64)?;
        let max_bytes = usize::try_from(max_bytes)
            .ok()
            .filter(|max| *max > 0)
            .ok_or_else(|| {
                options.error(
                    "max_bytes",
                    format!("must be greater than 0, got {max_bytes}"),
                )
            })?;
        let max_redirects = options.u64("max_redirects", u64::from(DEFAULT_MAX_REDIRECTS))?;
        let max_redirects = u32::try_from(max_redirects)
            .ok()
            .filter(|max| *max <= 20)
            .ok_or_else(|| {
                options.error(
                    "max_redirects",
                    format!("must be at most 20, got {max_redirects}"),
                )
            })?;
        options.finish()?;
        Ok(HttpGetOptions {
            allow,
            allow_private,
            allow_networks,
            max_bytes,
            max_redirects,
        })
    }
}

/// `10.0.0.0/8` or a single address.
fn parse_network(entry: &str) -> Option<IpNet> {
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The `http_get` tool.
#[derive(Debug, Clone)]
pub struct HttpGet {
    name: String,
    description: String,
    policy: Arc<DestinationPolicy>,
    client: reqwest::Client,
    max_bytes: usize,
    max_redirects: u32,
}

/// Its arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    url: String,
}

impl HttpGet {
    /// `[tools.name] kind = "http_get"` with `options`; `timeout` bounds connecting (the
    /// registry bounds the whole call with it too).
    pub fn new(
        name: impl Into<String>,
        options: HttpGetOptions,
        timeout: Duration,
    ) -> Result<Self, ToolError> {
        let name = name.into();
        let mut description = format!(
            "Fetch a web page or document with HTTP GET and return its body as text (at most {} bytes).",
            options.max_bytes
        );
        if !options.allow.is_empty() {
            let hosts: Vec<String> = options.allow.iter().map(ToString::to_string).collect();
            description.push_str(&format!(" Allowed hosts: {}.", hosts.join(", ")));
        }
        let policy = Arc::new(DestinationPolicy::new(
            options.allow,
            options.allow_networks,
            options.allow_private,
        ));
        let client = reqwest::Client::builder()
            // A proxy would make the connection go elsewhere than the checked address.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&policy))))
            .connect_timeout(timeout)
            .user_agent(concat!("troupe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| ToolError::Config {
                tool: name.clone(),
                message: format!("cannot build the HTTP client: {}", chain(&err)),
            })?;
        Ok(HttpGet {
            name,
            description,
            policy,
            client,
            max_bytes: options.max_bytes,
            max_redirects: options.max_redirects,
        })
    }

    fn invalid(&self, message: impl Into<String>) -> ToolError {
        arguments::invalid(&self.name, message)
    }

    fn failed(&self, message: impl Into<String>, retryable: bool) -> ToolError {
        ToolError::Failed {
            tool: self.name.clone(),
            message: message.into(),
            retryable,
        }
    }

    fn denied(&self, url: &Url, redirects: u32, refusal: &Refusal) -> ToolError {
        ToolError::Denied {
            tool: self.name.clone(),
            reason: if redirects == 0 {
                refusal.to_string()
            } else {
                format!("redirected to {url}: {refusal}")
            },
        }
    }

    /// A failed request: a refusal from the resolver, or a network error.
    fn request_error(&self, url: &Url, redirects: u32, err: &reqwest::Error) -> ToolError {
        let mut source = err.source();
        while let Some(cause) = source {
            if let Some(refusal) = cause.downcast_ref::<Refusal>() {
                return self.denied(url, redirects, refusal);
            }
            source = cause.source();
        }
        let what = if err.is_connect() {
            "cannot connect"
        } else if err.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        self.failed(format!("{url}: {what}: {}", chain(err)), true)
    }

    /// Reads at most `max_bytes` of the body; `true` when there was more.
    async fn read_body(
        &self,
        url: &Url,
        mut response: reqwest::Response,
    ) -> Result<(Vec<u8>, bool), ToolError> {
        let expected = response.content_length().unwrap_or(0);
        let mut body =
            Vec::with_capacity(usize::try_from(expected).unwrap_or(0).min(self.max_bytes));
        while let Some(chunk) = response.chunk().await.map_err(|err| {
            self.failed(
                format!("{url}: reading the response failed: {}", chain(&err)),
                true,
            )
        })? {
            let room = self.max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                return Ok((body, true));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, false))
    }
}

#[async_trait]
impl Tool for HttpGet {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "description": "Absolute http:// or https:// URL to fetch."
                }
            },
            "required": ["url"],
            "additionalProperties": false
        })
    }

    async fn call(
        &self,
        _ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        let Args { url: requested } = arguments::parse(&self.name, args)?;
        let mut url = Url::parse(requested.trim()).map_err(|err| {
            self.invalid(format!(
                "\"{requested}\" is not an absolute URL ({err}): send one such as \"https://example.com/page\""
            ))
        })?;
        let mut redirects = 0;
        loop {
            // Checked before anything is sent; the resolver checks host names' addresses.
            self.policy
                .check_url(&url)
                .map_err(|refusal| self.denied(&url, redirects, &refusal))?;
            let response = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|err| self.request_error(&url, redirects, &err))?;
            let status = response.status();
            if is_redirect(status) {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| {
                        self.failed(format!("{url}: HTTP {status} without a Location"), false)
                    })?;
                let next = url.join(location).map_err(|err| {
                    self.failed(
                        format!(
                            "{url}: HTTP {status} to an invalid location \"{location}\": {err}"
                        ),
                        false,
                    )
                })?;
                if redirects >= self.max_redirects {
                    return Err(self.failed(
                        format!(
                            "{url}: too many redirects (at most {} are followed), next was {next}",
                            self.max_redirects
                        ),
                        false,
                    ));
                }
                tracing::debug!(from = %url, to = %next, %status, "following redirect");
                redirects += 1;
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(self.failed(
                    format!("{url}: HTTP {status}"),
                    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
                ));
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let (body, truncated) = self.read_body(&url, response).await?;
            let mut content = text(&body, truncated);
            if truncated {
                content.push_str(&format!(
                    "\n\n[truncated: the response is longer than {} bytes]",
                    self.max_bytes
                ));
            }
            return Ok(ToolOutput {
                content,
                data: serde_json::json!({
                    "url": url.as_str(),
                    "status": status.as_u16(),
                    "content_type": content_type,
                    "bytes": body.len(),
                    "truncated": truncated,
                    "redirects": redirects,
                }),
            });
        }
    }
}

/// Statuses whose `Location` is followed.
fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The body as text (UTF-8, invalid bytes replaced); a character cut by truncation is dropped.
fn text(body: &[u8], truncated: bool) -> String {
    let end = match std::str::from_utf8(body) {
        Err(err) if truncated && err.error_len().is_none() => err.valid_up_to(),
        _ => body.len(),
    };
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// An error and its sources, `: `-separated, without repeating a message already included.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Result<HttpGetOptions, String> {
        let table: toml::Table = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
        HttpGetOptions::parse("fetch", &table).map_err(|err| err.to_string())
    }

    #[test]
    fn options_parse_with_defaults() {
        assert_eq!(options(""), Ok(HttpGetOptions::default()));
        let parsed = options(
            "allow = [\"example.com\", \"*.example.org\", \"10.1.2.3\"]\nallow_private = true\nallow_networks = [\"127.0.0.0/8\", \"::1\"]\nmax_bytes = 10\nmax_redirects = 0",
        );
        let expected = HttpGetOptions {
            allow: vec![
                HostPattern::Domain("example.com".into()),
                HostPattern::Subdomains("example.org".into()),
                HostPattern::Ip(IpAddr::from([10, 1, 2, 3])),
            ],
            allow_private: true,
            allow_networks: vec![
                "127.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}")),
                "::1/128".parse().unwrap_or_else(|e| panic!("{e}")),
            ],
            max_bytes: 10,
            max_redirects: 0,
        };
        assert_eq!(parsed, Ok(expected));
    }

    #[test]
    fn bad_options_name_the_key() {
        for (text, message) in [
            ("allow = \"example.com\"", "tools.fetch: options.allow: expected an array of strings, got string \"example.com\""),
            ("allow = [\"https://example.com/\"]", "tools.fetch: options.allow: invalid host \"https://example.com/\": give a host name, not a URL (e.g. \"example.com\")"),
            ("allow = [\"*\"]", "tools.fetch: options.allow: invalid host \"*\": \"*\" is only allowed as a leading \"*.\" (e.g. \"*.example.org\")"),
            ("allow_private = \"yes\"", "tools.fetch: options.allow_private: expected true or false, got string \"yes\""),
            ("allow_networks = [\"127.0.0.0/33\"]", "tools.fetch: options.allow_networks: invalid network \"127.0.0.0/33\": expected a CIDR such as \"127.0.0.0/8\" or an IP address"),
            ("allow_networks = [\"localhost\"]", "tools.fetch: options.allow_networks: invalid network \"localhost\": expected a CIDR such as \"127.0.0.0/8\" or an IP address"),
            ("max_bytes = 0", "tools.fetch: options.max_bytes: must be greater than 0, got 0"),
            ("max_bytes = -5", "tools.fetch: options.max_bytes: must not be negative, got -5"),
            ("max_redirects = 50", "tools.fetch: options.max_redirects: must be at most 20, got 50"),
            ("allow_privat = true", "tools.fetch: unknown option \"allow_privat\": valid options are \"allow\", \"allow_networks\", \"allow_private\", \"max_bytes\", \"max_redirects\""),
        ] {
            assert_eq!(options(text), Err(message.to_owned()), "{text}");
        }
    }

    #[test]
    fn truncated_text_drops_a_cut_character() {
        let body = "héllo".as_bytes();
        assert_eq!(text(&body[..2], true), "h");
        assert_eq!(text(&body[..3], true), "hé");
        assert_eq!(text(b"a\xffb", false), "a\u{fffd}b");
        assert_eq!(text(&body[..2], false), "h\u{fffd}");
    }

    fn ctx() -> ToolContext {
        ToolContext {
            group: "g".into(),
            user: "u".into(),
            agent: "a".into(),
            thread: "t".into(),
            message_id: "m".into(),
        }
    }

    #[tokio::test]
    async fn arguments_are_checked_before_any_request() {
        let tool = HttpGet::new("fetch", HttpGetOptions::default(), Duration::from_secs(1))
            .unwrap_or_else(|err| panic!("{err}"));
        for (args, message) in [
            (serde_json::json!({}), "invalid arguments for fetch: missing field `url`"),
            (serde_json::json!({ "url": 1 }), "invalid arguments for fetch: invalid type: integer `1`, expected a string"),
            (serde_json::json!({ "url": "example.com" }), "invalid arguments for fetch: \"example.com\" is not an absolute URL (relative URL without a base): send one such as \"https://example.com/page\""),
            (serde_json::json!({ "url": "http://x", "method": "POST" }), "invalid arguments for fetch: unknown field `method`, expected `url`"),
            (serde_json::json!({ "url": "http://0xA9FEA9FE/latest/meta-data/" }), "fetch denied: 169.254.169.254 is a link-local address, which this tool may not reach"),
            (serde_json::json!({ "url": "file:///etc/passwd" }), "fetch denied: scheme \"file\" is not allowed: only http and https"),
        ] {
            let got = tool.call(&ctx(), args.clone()).await.map_err(|err| err.to_string());
            assert_eq!(got, Err(message.to_owned()), "{args}");
        }
    }

    #[tokio::test]
    async fn a_refusal_by_the_resolver_is_a_denial() {
        // `localhost` resolves (from the hosts file) to loopback only; port 9 is never reached.
        let tool = HttpGet::new("fetch", HttpGetOptions::default(), Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("{err}"));
        let got = tool
            .call(&ctx(), serde_json::json!({ "url": "http://localhost:9/" }))
            .await;
        match got {
            Err(ToolError::Denied { reason, .. }) => assert!(
                reason.starts_with("localhost resolves to ") && reason.contains("loopback"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn description_names_allowed_hosts() {
        let options = HttpGetOptions {
            allow: vec![HostPattern::Subdomains("example.org".into())],
            max_bytes: 100,
            ..HttpGetOptions::default()
        };
        let tool = HttpGet::new("fetch", options, Duration::from_secs(1))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            tool.description(),
            "Fetch a web page or document with HTTP GET and return its body as text (at most 100 bytes). Allowed hosts: *.example.org."
        );
    }
}
