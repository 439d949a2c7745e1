//! How to reach the cluster: bootstrap servers, TLS, SASL and librdkafka properties, one set of
//! settings for the consumer, the producer and the admin client.
//!
//! Each client's configuration is built in three layers, later ones winning: the connection and
//! security settings, the host's own defaults for that client (fetch sizes, batching...), then
//! the operator's pass-through properties (`--kafka-property` for every client,
//! `--consumer-property`, `--producer-property`, `--admin-property` for one). Properties that a
//! flag sets, or that the delivery guarantee depends on, cannot be passed through: the error
//! names the flag to use instead.
//!
//! Secrets (the SASL password, the TLS key's password) are held as [`Secret`], whose `Debug`
//! prints nothing, and are redacted from librdkafka's error texts: they never reach a log line,
//! an error message or `/api/status`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

/// The Kafka client a configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Consumer => "consumer",
            Role::Producer => "producer",
            Role::Admin => "admin client",
        }
    }
}

/// librdkafka's `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication
    #[default]
    #[value(alias = "PLAINTEXT")]
    Plaintext,
    /// TLS, optionally with a client certificate
    #[value(alias = "SSL")]
    Ssl,
    /// SASL authentication without TLS (the password crosses the network in clear with PLAIN)
    #[value(name = "sasl_plaintext", alias = "sasl-plaintext", alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL authentication over TLS: what managed clusters require
    #[value(name = "sasl_ssl", alias = "sasl-ssl", alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
pub enum SaslMechanism {
    /// User name and password, sent as they are (use it over TLS only)
    #[value(name = "PLAIN", alias = "plain")]
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    /// Salted challenge-response: the password never crosses the network
    #[value(name = "SCRAM-SHA-256", alias = "scram-sha-256")]
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    /// As SCRAM-SHA-256, with SHA-512
    #[value(name = "SCRAM-SHA-512", alias = "scram-sha-512")]
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
    /// A bearer token (JWT) read from --sasl-oauthbearer-token-file, re-read at every refresh
    #[value(name = "OAUTHBEARER", alias = "oauthbearer")]
    #[serde(rename = "OAUTHBEARER", alias = "oauthbearer")]
    OAuthBearer,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// A password or key: shown as `[redacted]` by `Debug`, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// From a flag or environment variable, or else from a file (trailing newlines dropped, as
    /// files written by `echo` or mounted by Kubernetes have them). Naming both is an error.
    pub fn resolve(value: Option<String>, file: Option<&Path>, flag: &str) -> anyhow::Result<Option<Secret>> {
        match (value, file) {
            (Some(_), Some(_)) => bail!("give either {flag} or {flag}-file, not both"),
            (Some(v), None) => Ok(Some(Secret(v))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("{flag}-file {}: cannot read it", path.display()))?;
                let v = text.trim_end_matches(['\n', '\r']).to_owned();
                ensure!(!v.is_empty(), "{flag}-file {} is empty", path.display());
                Ok(Some(Secret(v)))
            }
            (None, None) => Ok(None),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// TLS settings (used with `ssl` and `sasl_ssl`).
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// CA certificates (PEM) to verify the brokers with; `None`: the system's store.
    pub ca_location: Option<PathBuf>,
    /// The client's certificate and key (PEM), for brokers that require client authentication.
    pub certificate_location: Option<PathBuf>,
    pub key_location: Option<PathBuf>,
    pub key_password: Option<Secret>,
    /// Check that a broker's certificate names the host connected to (librdkafka's default).
    pub verify_hostname: bool,
}

/// SASL settings (used with `sasl_plaintext` and `sasl_ssl`).
#[derive(Clone, Debug)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// OAUTHBEARER: the file holding the current token.
    pub token_file: Option<PathBuf>,
}

/// One pass-through property and the flag (or file table) it came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
    pub origin: &'static str,
}

/// Everything needed to build a client configuration for each [`Role`].
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub brokers: String,
    pub protocol: SecurityProtocol,
    pub tls: Tls,
    pub sasl: Option<Sasl>,
    /// For every client, then per role (applied after the host's defaults).
    pub properties: Vec<Property>,
    pub consumer_properties: Vec<Property>,
    pub producer_properties: Vec<Property>,
    pub admin_properties: Vec<Property>,
}

/// Properties a flag sets: passing them through would fight the flag.
const FLAG_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "--brokers"),
    ("metadata.broker.list", "--brokers"),
    ("security.protocol", "--security-protocol"),
    ("sasl.mechanism", "--sasl-mechanism"),
    ("sasl.mechanisms", "--sasl-mechanism"),
    ("sasl.username", "--sasl-username"),
    ("sasl.password", "--sasl-password or --sasl-password-file"),
    ("ssl.ca.location", "--ssl-ca-location"),
    ("ssl.certificate.location", "--ssl-certificate-location"),
    ("ssl.key.location", "--ssl-key-location"),
    ("ssl.key.password", "--ssl-key-password or --ssl-key-password-file"),
    ("ssl.endpoint.identification.algorithm", "--ssl-endpoint-identification"),
    ("group.id", "--group-id"),
    ("transactional.id", "--transactional-id"),
    ("compression.type", "--output-compression"),
    ("compression.codec", "--output-compression"),
];

/// Properties the delivery guarantee rests on: the host sets them and nothing may change them.
const HOST_PROPERTIES: &[(&str, &str)] = &[
    ("enable.auto.commit", "offsets are committed with the output, in the same transaction"),
    ("enable.auto.offset.store", "offsets are committed with the output, in the same transaction"),
    ("isolation.level", "input written in aborted transactions must not be counted"),
    ("enable.idempotence", "exactly-once needs the idempotent producer"),
];

/// Words in a property's name that say its value is a secret (redacted from error texts).
const SECRET_WORDS: &[&str] = &["password", "secret", "token", "key.pem", "credential", "jaas"];

fn is_secret_key(key: &str) -> bool {
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// `KEY=VALUE`, for the pass-through flags.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| {
        format!("{s:?}: expected KEY=VALUE with a librdkafka property name, e.g. fetch.max.bytes=10485760")
    })?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("{s:?}: no property name before '='"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

impl ClientSettings {
    /// Settings for a plaintext broker with no pass-through properties (tools and tests).
    pub fn plaintext(brokers: &str) -> Self {
        ClientSettings {
            brokers: brokers.to_owned(),
            protocol: SecurityProtocol::Plaintext,
            tls: Tls { verify_hostname: true, ..Tls::default() },
            sasl: None,
            properties: Vec::new(),
            consumer_properties: Vec::new(),
            producer_properties: Vec::new(),
            admin_properties: Vec::new(),
        }
    }

    /// OAUTHBEARER: the file holding the current token, if one is named.
    pub fn token_file(&self) -> Option<&Path> {
        self.sasl.as_ref().and_then(|s| s.token_file.as_deref())
    }

    /// Every pass-through property, for every client and for one.
    fn all_properties(&self) -> impl Iterator<Item = &Property> {
        self.properties
            .iter()
            .chain(&self.consumer_properties)
            .chain(&self.producer_properties)
            .chain(&self.admin_properties)
    }

    fn role_properties(&self, role: Role) -> &[Property] {
        match role {
            Role::Consumer => &self.consumer_properties,
            Role::Producer => &self.producer_properties,
            Role::Admin => &self.admin_properties,
        }
    }

    /// The configuration of a `role` client: connection and security, then `defaults` (the
    /// host's choices for that client), then the pass-through properties.
    pub fn client_config(&self, role: Role, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("security.protocol", self.protocol.name());
        if self.protocol.tls() {
            let tls = &self.tls;
            let path = |p: &Path| p.display().to_string();
            if let Some(p) = &tls.ca_location {
                config.set("ssl.ca.location", path(p));
            }
            if let Some(p) = &tls.certificate_location {
                config.set("ssl.certificate.location", path(p));
            }
            if let Some(p) = &tls.key_location {
                config.set("ssl.key.location", path(p));
            }
            if let Some(s) = &tls.key_password {
                config.set("ssl.key.password", s.expose());
            }
            config.set("ssl.endpoint.identification.algorithm", if tls.verify_hostname { "https" } else { "none" });
        }
        if let Some(sasl) = self.sasl.as_ref().filter(|_| self.protocol.sasl()) {
            config.set("sasl.mechanism", sasl.mechanism.name());
            if let Some(u) = &sasl.username {
                config.set("sasl.username", u);
            }
            if let Some(p) = &sasl.password {
                config.set("sasl.password", p.expose());
            }
        }
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for p in self.properties.iter().chain(self.role_properties(role)) {
            config.set(&p.key, &p.value);
        }
        config
    }

    /// One line for the log: where and how the host connects (never a secret).
    pub fn describe(&self) -> String {
        let mut s = format!("{} over {}", self.brokers, self.protocol.name());
        if let Some(sasl) = self.sasl.as_ref().filter(|_| self.protocol.sasl()) {
            s.push_str(&format!(", SASL {}", sasl.mechanism.name()));
            if let Some(u) = &sasl.username {
                s.push_str(&format!(" as {u}"));
            }
        }
        if let Some(certificate) = self.tls.certificate_location.as_ref().filter(|_| self.protocol.tls()) {
            s.push_str(&format!(", client certificate {}", certificate.display()));
        }
        if self.protocol.tls() && !self.tls.verify_hostname {
            s.push_str(", hostname verification off");
        }
        s
    }

    /// Checks what can be checked before connecting: the pass-through properties (by name and
    /// against the flags), the SASL and TLS settings against each other, the files they name,
    /// and every client's configuration with librdkafka itself (its own error text, with
    /// secrets redacted).
    pub fn validate(&self) -> anyhow::Result<()> {
        for p in self.all_properties() {
            if let Some((_, flag)) = FLAG_PROPERTIES.iter().find(|(k, _)| *k == p.key) {
                bail!("{} {}: set it with {flag} instead", p.origin, p.key);
            }
            if let Some((_, why)) = HOST_PROPERTIES.iter().find(|(k, _)| *k == p.key) {
                bail!("{} {}: the host sets this property itself and it cannot be changed ({why})", p.origin, p.key);
            }
        }
        if let Some(sasl) = &self.sasl {
            ensure!(
                self.protocol.sasl(),
                "--sasl-mechanism {} needs --security-protocol sasl_ssl (or sasl_plaintext); it is {}",
                sasl.mechanism.name(),
                self.protocol.name()
            );
            match sasl.mechanism {
                SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                    ensure!(sasl.username.is_some(), "SASL {} needs --sasl-username", sasl.mechanism.name());
                    ensure!(
                        sasl.password.is_some(),
                        "SASL {} needs a password: ADSTREAM_SASL_PASSWORD, --sasl-password-file or --sasl-password",
                        sasl.mechanism.name()
                    );
                }
                SaslMechanism::OAuthBearer => {
                    let file = sasl.token_file.as_deref().ok_or_else(|| {
                        anyhow::anyhow!(
                            "SASL OAUTHBEARER needs --sasl-oauthbearer-token-file: a file holding the current token (a JWT), kept fresh by your identity agent; the host re-reads it before the token expires"
                        )
                    })?;
                    super::context::read_token(file).context("--sasl-oauthbearer-token-file")?;
                }
            }
        } else {
            ensure!(!self.protocol.sasl(), "--security-protocol {} needs --sasl-mechanism", self.protocol.name());
        }
        for (flag, path) in [
            ("--ssl-ca-location", &self.tls.ca_location),
            ("--ssl-certificate-location", &self.tls.certificate_location),
            ("--ssl-key-location", &self.tls.key_location),
        ] {
            if let Some(p) = path {
                ensure!(
                    self.protocol.tls(),
                    "{flag} is set, but --security-protocol {} uses no TLS",
                    self.protocol.name()
                );
                std::fs::File::open(p).with_context(|| format!("{flag} {}: cannot read it", p.display()))?;
            }
        }
        ensure!(
            self.tls.certificate_location.is_some() == self.tls.key_location.is_some(),
            "a client certificate needs both --ssl-certificate-location and --ssl-key-location"
        );
        for role in [Role::Consumer, Role::Producer, Role::Admin] {
            self.client_config(role, &[]).create_native_config().map_err(|e| self.explain(role, e))?;
        }
        Ok(())
    }

    /// A librdkafka configuration error as a message naming the flag the property came from,
    /// without any secret value.
    pub fn explain(&self, role: Role, error: KafkaError) -> anyhow::Error {
        let KafkaError::ClientConfig(_, desc, key, value) = &error else {
            // Read before redacting (a short secret could hide librdkafka's words); the problem
            // itself names only flags and paths.
            let said = error.to_string();
            let text = self.redact(&said);
            let context = format!("configuring the Kafka {}", role.name());
            return match self.tls_file_problem(&said) {
                Some(problem) => anyhow::anyhow!("{problem} (librdkafka: {text})").context(context),
                None => anyhow::anyhow!("{text}").context(context),
            };
        };
        let origin = self
            .properties
            .iter()
            .chain(self.role_properties(role))
            .rev()
            .find(|p| &p.key == key)
            .map_or("the Kafka setting", |p| p.origin);
        let mut desc = self.redact(desc);
        if is_secret_key(key) && !value.is_empty() {
            desc = desc.replace(value.as_str(), "[redacted]");
        }
        anyhow::anyhow!("{origin} {key}: {desc} (librdkafka, for the {})", role.name())
    }

    /// What a TLS file that librdkafka could not load (`text`, its error at client creation:
    /// OpenSSL's words, such as "PEM lib") most likely holds wrong, naming the flag that gave it.
    fn tls_file_problem(&self, text: &str) -> Option<String> {
        // The file's bytes, when it can be read (a CA location may also be a directory).
        fn file(path: &Option<PathBuf>) -> Option<(&Path, Vec<u8>)> {
            path.as_deref().and_then(|p| std::fs::read(p).ok().map(|bytes| (p, bytes)))
        }
        let has = |bytes: &[u8], needle: &str| memchr::memmem::find(bytes, needle.as_bytes()).is_some();
        // OpenSSL 3 loads a key of another type than the certificate's, and librdkafka's check
        // of the pair then fails with "Private key check failed".
        let mismatch = text.contains("key values mismatch") || text.contains("Private key check failed");
        if text.contains("ssl.key.location failed") || mismatch {
            let at = format!("--ssl-key-location {}", self.tls.key_location.as_deref()?.display());
            if mismatch {
                let certificate = self.tls.certificate_location.as_deref()?;
                return Some(format!(
                    "{at}: this private key does not belong to the certificate in --ssl-certificate-location {}",
                    certificate.display()
                ));
            }
            let (_, bytes) = file(&self.tls.key_location)?;
            return Some(if has(&bytes, "ENCRYPTED") && self.tls.key_password.is_some() {
                format!(
                    "{at}: the key is encrypted, and could not be decrypted with the password given (--ssl-key-password-file or --ssl-key-password): a wrong password, or a cipher this OpenSSL does not support"
                )
            } else if has(&bytes, "ENCRYPTED") {
                format!(
                    "{at}: the key is encrypted: give its password with --ssl-key-password-file (or --ssl-key-password)"
                )
            } else if !has(&bytes, "PRIVATE KEY-----") {
                format!("{at}: no private key in PEM form in it (a block that begins \"-----BEGIN PRIVATE KEY-----\")")
            } else {
                format!("{at}: the private key could not be loaded")
            });
        }
        let (flag, path, what) = if text.contains("ssl.certificate.location failed") {
            ("--ssl-certificate-location", &self.tls.certificate_location, "the client's certificate")
        } else if text.contains("ssl.ca.location failed") {
            ("--ssl-ca-location", &self.tls.ca_location, "the CA certificates to verify the brokers with")
        } else {
            return None;
        };
        let (path, bytes) = file(path)?;
        Some(if has(&bytes, "CERTIFICATE-----") {
            format!("{flag} {}: {what} could not be loaded from it", path.display())
        } else {
            format!(
                "{flag} {}: no certificate in PEM form in it (a block that begins \"-----BEGIN CERTIFICATE-----\"); it should hold {what}",
                path.display()
            )
        })
    }

    /// `text` with every secret this configuration holds replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<&str> = Vec::new();
        if let Some(p) = self.sasl.as_ref().and_then(|s| s.password.as_ref()) {
            secrets.push(p.expose());
        }
        if let Some(p) = &self.tls.key_password {
            secrets.push(p.expose());
        }
        for p in self.all_properties() {
            if is_secret_key(&p.key) {
                secrets.push(&p.value);
            }
        }
        let mut text = text.to_owned();
        for s in secrets.into_iter().filter(|s| s.len() >= 3) {
            text = text.replace(s, "[redacted]");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scram() -> ClientSettings {
        ClientSettings {
            protocol: SecurityProtocol::SaslSsl,
            sasl: Some(Sasl {
                mechanism: SaslMechanism::ScramSha512,
                username: Some("adstream".into()),
                password: Some(Secret("hunter2-secret".into())),
                token_file: None,
            }),
            ..ClientSettings::plaintext("broker:9093")
        }
    }

    #[test]
    fn a_secret_never_shows_in_debug_output_or_errors() {
        let s = scram();
        assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
        assert_eq!(s.redact("auth failed for hunter2-secret"), "auth failed for [redacted]");
        assert!(s.describe().contains("SCRAM-SHA-512 as adstream"), "{}", s.describe());
        assert!(!s.describe().contains("hunter2"));
        let mut mtls = ClientSettings { protocol: SecurityProtocol::Ssl, sasl: None, ..scram() };
        mtls.tls.certificate_location = Some("/etc/kafka/client.pem".into());
        mtls.tls.key_location = Some("/etc/kafka/client-key.pem".into());
        assert_eq!(mtls.describe(), "broker:9093 over ssl, client certificate /etc/kafka/client.pem");
    }

    #[test]
    fn security_settings_are_checked_against_each_other() {
        assert!(scram().validate().is_ok());
        let no_password = ClientSettings { sasl: Some(Sasl { password: None, ..scram().sasl.unwrap() }), ..scram() };
        let e = no_password.validate().unwrap_err().to_string();
        assert!(e.contains("ADSTREAM_SASL_PASSWORD"), "{e}");
        let plaintext = ClientSettings { protocol: SecurityProtocol::Plaintext, ..scram() };
        let e = plaintext.validate().unwrap_err().to_string();
        assert!(e.contains("--security-protocol sasl_ssl"), "{e}");
        let e = ClientSettings { sasl: None, ..scram() }.validate().unwrap_err().to_string();
        assert!(e.contains("needs --sasl-mechanism"), "{e}");
        let tls = Tls { ca_location: Some("/nonexistent/ca.pem".into()), ..scram().tls };
        let e = ClientSettings { tls, ..scram() }.validate().unwrap_err().to_string();
        assert!(e.contains("--ssl-ca-location /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn pass_through_properties_are_checked_by_librdkafka_and_against_the_flags() {
        let with = |p: Property| ClientSettings { consumer_properties: vec![p], ..ClientSettings::plaintext("b:9092") };
        let prop = |k: &str, v: &str| Property { key: k.into(), value: v.into(), origin: "--consumer-property" };
        assert!(with(prop("fetch.max.bytes", "10485760")).validate().is_ok());
        let e = with(prop("fetch.max.byts", "1")).validate().unwrap_err().to_string();
        assert!(
            e.contains("--consumer-property fetch.max.byts") && e.contains("No such configuration property"),
            "{e}"
        );
        let e = with(prop("fetch.wait.max.ms", "soon")).validate().unwrap_err().to_string();
        assert!(e.contains("fetch.wait.max.ms") && e.contains("Invalid value"), "{e}");
        let e = with(prop("group.id", "x")).validate().unwrap_err().to_string();
        assert!(e.contains("--group-id"), "{e}");
        let e = with(prop("isolation.level", "read_uncommitted")).validate().unwrap_err().to_string();
        assert!(e.contains("cannot be changed"), "{e}");
        // librdkafka's words about a secret property quote its value: the host's do not.
        let secret = prop("sasl.oauthbearer.client.secret", "s3cr3t-value");
        let said = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"s3cr3t-value\" for configuration property".into(),
            secret.key.clone(),
            secret.value.clone(),
        );
        let e = with(secret).explain(Role::Consumer, said).to_string();
        assert!(e.contains("sasl.oauthbearer.client.secret") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn tls_files_librdkafka_cannot_load_are_explained_by_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let encrypted =
            write("enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n");
        let certificate = write("cert.pem", "-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n");
        let key = write("key.pem", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n");
        let settings = |key: &Path, password: Option<&str>| ClientSettings {
            protocol: SecurityProtocol::Ssl,
            tls: Tls {
                ca_location: Some(key.to_owned()),
                certificate_location: Some(certificate.clone()),
                key_location: Some(key.to_owned()),
                key_password: password.map(|p| Secret(p.into())),
                verify_hostname: true,
            },
            ..ClientSettings::plaintext("b:9093")
        };
        let said = |what: &str, why: &str| format!("Client creation error: {what} failed: {why}");
        let pem_lib = said("ssl.key.location", "error:0A080009:SSL routines::PEM lib");
        let explain = |s: &ClientSettings, text: &str| s.tls_file_problem(text).unwrap_or_default();

        let e = explain(&settings(&encrypted, None), &pem_lib);
        assert!(e.contains("--ssl-key-location") && e.contains("is encrypted: give its password"), "{e}");
        let e = explain(&settings(&encrypted, Some("n0t-the-key-password")), &pem_lib);
        assert!(e.contains("could not be decrypted with the password given") && !e.contains("n0t-the"), "{e}");
        let e = explain(&settings(&certificate, None), &pem_lib);
        assert!(e.contains("no private key in PEM form"), "{e}");
        let mismatch = said("ssl.key.location", "error:05800074:x509 certificate routines::key values mismatch");
        let e = explain(&settings(&key, None), &mismatch);
        assert!(e.contains("does not belong to the certificate in --ssl-certificate-location"), "{e}");
        let e =
            explain(&settings(&key, None), "Client creation error: Private key check failed: no certificate assigned");
        assert!(e.contains("--ssl-key-location") && e.contains("does not belong to the certificate"), "{e}");
        let no_certificate =
            said("ssl.ca.location", "error:05800088:x509 certificate routines::no certificate or crl found");
        let e = explain(&settings(&key, None), &no_certificate);
        assert!(e.contains("--ssl-ca-location") && e.contains("no certificate in PEM form"), "{e}");
        // Through `explain`, with librdkafka's own words after the host's.
        let e = settings(&encrypted, None).explain(Role::Producer, KafkaError::ClientCreation(pem_lib.clone()));
        let e = format!("{e:#}");
        assert!(e.starts_with("configuring the Kafka producer: --ssl-key-location") && e.ends_with("PEM lib)"), "{e}");
        assert_eq!(settings(&key, None).tls_file_problem("Client creation error: something else"), None);
        // A CA file that cannot be read (a directory, say) is not said to hold no certificate.
        let unreadable = ClientSettings {
            tls: Tls { ca_location: Some(dir.path().to_owned()), ..settings(&key, None).tls },
            ..settings(&key, None)
        };
        assert_eq!(unreadable.tls_file_problem(&no_certificate), None);
    }

    #[test]
    fn the_pass_through_layer_wins_over_the_host_defaults() {
        let s = ClientSettings {
            producer_properties: vec![Property { key: "linger.ms".into(), value: "7".into(), origin: "x" }],
            ..ClientSettings::plaintext("b:9092")
        };
        let c = s.client_config(Role::Producer, &[("linger.ms", "1")]);
        assert_eq!(c.get("linger.ms"), Some("7"));
        assert_eq!(s.client_config(Role::Consumer, &[("linger.ms", "1")]).get("linger.ms"), Some("1"));
    }
}
