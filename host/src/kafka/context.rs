//! The client context every Kafka client of the host runs with.
//!
//! - librdkafka's global errors are sorted ([`super::failure::fix_for`]): one that never heals
//!   goes into the attempt's [`FatalSlot`], which the pipeline looks at between messages and
//!   while it waits on Kafka, so that a wrong password ends the host within seconds rather
//!   than being retried forever; any other is logged, at most once per [`LOG_EVERY`] per kind,
//!   so that an outage reads as a few lines, not thousands.
//! - librdkafka's own log lines go to `tracing` under the `librdkafka` target. Connection
//!   failures (`FAIL`) are reported again as errors, so their log lines drop to debug.
//! - OAUTHBEARER tokens are read from `--sasl-oauthbearer-token-file` whenever librdkafka asks
//!   for one (at 80% of the current token's lifetime): whatever renews the file (an identity
//!   agent, a Kubernetes projected token) renews the host's credentials.
//!
//! Every text from librdkafka is redacted of the configuration's secrets before it is logged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use rdkafka::ClientContext;
use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::failure::fix_for;
use super::settings::{ClientSettings, Role};

/// The same kind of transient error is logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// The first error of an attempt that retrying cannot heal, shared by its clients.
#[derive(Clone, Debug, Default)]
pub struct FatalSlot(Arc<Mutex<Option<String>>>);

impl FatalSlot {
    /// Keeps the first; says whether this one was it.
    pub fn set(&self, message: String) -> bool {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return false;
        }
        *slot = Some(message);
        true
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `Err` with the message, if one was set.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.get() {
            Some(message) => Err(anyhow::anyhow!(message)),
            None => Ok(()),
        }
    }
}

/// The latest transient error any client of an attempt saw, for `/readyz`.
#[derive(Clone, Debug, Default)]
pub struct LastError(Arc<Mutex<Option<(String, Instant)>>>);

impl LastError {
    fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((text, Instant::now()));
    }

    /// The error, if one was seen within `within`.
    pub fn recent(&self, within: Duration) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref().filter(|(_, at)| at.elapsed() <= within).map(|(text, _)| text.clone())
    }

    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// What the clients of one attempt share.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub fatal: FatalSlot,
    pub last_error: LastError,
}

/// The context of every Kafka client the host creates.
pub struct HostContext {
    role: Role,
    settings: Arc<ClientSettings>,
    health: Health,
    /// When each kind of message was last logged (by code or facility), for rate limiting.
    logged: Mutex<HashMap<String, Instant>>,
}

impl HostContext {
    pub fn new(role: Role, settings: Arc<ClientSettings>, health: Health) -> Self {
        HostContext { role, settings, health, logged: Mutex::new(HashMap::new()) }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether a line of this kind may be logged now (at most once per [`LOG_EVERY`]).
    fn due(&self, kind: &str) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match logged.get(kind) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            _ => {
                logged.insert(kind.to_owned(), now);
                true
            }
        }
    }
}

impl ClientContext for HostContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let message = self.settings.redact(message);
        let client = self.role.name();
        match level {
            // Connection failures come again through `error`, rate-limited there.
            _ if fac == "FAIL" => tracing::debug!(target: "librdkafka", client, fac, "{message}"),
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if self.due(fac) {
                    tracing::warn!(target: "librdkafka", client, fac, "{message}");
                }
            }
            RDKafkaLogLevel::Notice => tracing::info!(target: "librdkafka", client, fac, "{message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client, fac, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // rust-rdkafka hands a consumer's every error event to the context as well as to the
        // `poll` that returns it, the end of a partition included: a reader that asked for it
        // (`enable.partition.eof`) acts on it there, and it is no error.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        let reason = self.settings.redact(reason);
        let client = self.role.name();
        if let Some(fix) = error.rdkafka_error_code().and_then(|code| fix_for(code, &reason)) {
            if self.health.fatal.set(format!("{fix} ({}: {reason})", self.settings.brokers)) {
                tracing::error!(client, error = %reason, "{fix}");
            }
            return;
        }
        self.health.last_error.set(reason.clone());
        let kind = format!("{:?}", error.rdkafka_error_code());
        if self.due(&kind) {
            tracing::warn!(client, error = %reason, "Kafka: {error}; librdkafka retries by itself (this kind of error is logged at most every {} s)", LOG_EVERY.as_secs());
        }
    }

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let file = self.settings.token_file().ok_or("SASL OAUTHBEARER needs --sasl-oauthbearer-token-file")?;
        match read_token(file) {
            Ok(token) => {
                tracing::debug!(client = self.role.name(), principal = %token.principal_name, expires_ms = token.lifetime_ms, "OAUTHBEARER token read");
                Ok(token)
            }
            Err(e) => {
                tracing::warn!(client = self.role.name(), file = %file.display(), error = %format!("{e:#}"), "cannot use the OAUTHBEARER token file; librdkafka asks again in 10 s");
                Err(format!("{e:#}").into())
            }
        }
    }
}

impl ConsumerContext for HostContext {}

/// The OAUTHBEARER token in `path`: a JWT whose `exp` claim (seconds since the epoch) says when
/// it expires and whose `sub` claim names the principal.
pub fn read_token(path: &Path) -> anyhow::Result<OAuthToken> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let token = text.trim().to_owned();
    let payload = token
        .split('.')
        .nth(1)
        .filter(|p| !p.is_empty())
        .with_context(|| format!("{} does not hold a JWT (header.payload.signature)", path.display()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .with_context(|| format!("{}: the JWT's payload is not base64url", path.display()))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: the JWT's payload is not JSON", path.display()))?;
    let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_f64) else {
        bail!("{}: the JWT has no `exp` claim, so the host cannot know when to refresh it", path.display());
    };
    let lifetime_ms = (exp * 1000.0) as i64;
    let now_ms = crate::ops::now_ms();
    ensure!(lifetime_ms > now_ms, "{}: the token expired {} s ago", path.display(), (now_ms - lifetime_ms) / 1000);
    let principal_name = claims.get("sub").and_then(serde_json::Value::as_str).unwrap_or("adstream").to_owned();
    Ok(OAuthToken { token, principal_name, lifetime_ms })
}

/// For tests and tools: an unsigned token (`alg: none`) for `sub`, valid `for_secs`, as a
/// broker with the unsecured OAUTHBEARER validator (Kafka's default) accepts.
pub fn unsecured_token(sub: &str, for_secs: i64) -> String {
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = crate::ops::now_ms() / 1000;
    let header = b64(serde_json::json!({"alg": "none"}));
    let claims = b64(serde_json::json!({"sub": sub, "iat": now, "exp": now + for_secs}));
    format!("{header}.{claims}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_gives_the_token_its_principal_and_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, unsecured_token("alice", 3600) + "\n").unwrap();
        let t = read_token(&path).unwrap();
        assert_eq!(t.principal_name, "alice");
        assert!(!t.token.ends_with('\n'));
        let left = t.lifetime_ms - crate::ops::now_ms();
        assert!((3_500_000..=3_600_000).contains(&left), "{left}");
        std::fs::write(&path, unsecured_token("alice", -10)).unwrap();
        assert!(read_token(&path).err().unwrap().to_string().contains("expired"));
        std::fs::write(&path, "not a token").unwrap();
        assert!(read_token(&path).err().unwrap().to_string().contains("JWT"));
    }

    #[test]
    fn the_first_fatal_error_is_kept() {
        let slot = FatalSlot::default();
        assert!(slot.check().is_ok());
        assert!(slot.set("first".into()));
        assert!(!slot.set("second".into()));
        assert_eq!(slot.get().as_deref(), Some("first"));
    }
}
