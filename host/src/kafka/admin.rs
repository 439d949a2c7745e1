//! Topic administration: reading how large a record each topic accepts, and creating missing
//! output topics able to hold what the input topics can hold.
//!
//! Output topics are created at start-up (and when a swapped-in plugin names a new one) so that
//! a first run on a fresh cluster does not fail with "unknown topic"; existing topics are never
//! changed. A created topic gets as many partitions as the impressions topic and a
//! `max.message.bytes` of the largest input topic's plus [`HEADROOM`], so that a dead letter
//! or late copy of any message the inputs accept, with the host's headers, fits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

use super::context::{Health, HostContext};
use super::failure::Failure;
use super::settings::{ClientSettings, Role, SaslMechanism};

/// Room for the host's headers on top of a copied input message.
pub const HEADROOM: usize = 64 * 1024;

/// What a topic accepts when its limit cannot be read (Kafka's default `max.message.bytes`).
pub const KAFKA_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// How long one admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Admin {
    client: AdminClient<HostContext>,
    runtime: tokio::runtime::Runtime,
    /// With SASL OAUTHBEARER: when to give the client the token file's token again (ms since
    /// the epoch). The client is kept for the run (the merge stage asks it before every window,
    /// the swap path on every new plugin); a token is not.
    renew_token_at: Option<Mutex<i64>>,
    settings: Arc<ClientSettings>,
}

impl Admin {
    pub fn new(settings: &Arc<ClientSettings>, health: &Health) -> anyhow::Result<Admin> {
        let context = HostContext::new(Role::Admin, settings.clone(), health.clone());
        let client: AdminClient<HostContext> = settings
            .client_config(
                Role::Admin,
                &[
                    // rust-rdkafka's admin client is a producer handle, for which librdkafka
                    // lets a metadata request create a missing topic: the merge stage asks
                    // this client for the input topics before every window, and a deleted
                    // input topic must stop the host, not come back empty.
                    ("allow.auto.create.topics", "false"),
                    // Every publication asks it: after an outage, reconnect within 2 s of the
                    // broker's return (default: 10 s), as the consumer and producer do.
                    ("reconnect.backoff.max.ms", "2000"),
                ],
            )
            .create_with_context(context)
            .map_err(|e| settings.explain(Role::Admin, e))?;
        let renew_token_at = if settings.sasl.as_ref().is_some_and(|s| s.mechanism == SaslMechanism::OAuthBearer) {
            let expires_ms = give_token(&client, settings)?;
            Some(Mutex::new(renewal_time(crate::ops::now_ms(), expires_ms)))
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Admin { client, runtime, renew_token_at, settings: settings.clone() })
    }

    /// The client, given a fresh OAUTHBEARER token first when the last one is most of the way
    /// through its lifetime (as librdkafka asks the other clients for one). A token file that
    /// cannot be read is tried again 10 s later; the client keeps the token it has meanwhile.
    fn client(&self) -> &AdminClient<HostContext> {
        if let Some(renew_at) = &self.renew_token_at {
            let mut renew_at = renew_at.lock().unwrap_or_else(|e| e.into_inner());
            let now_ms = crate::ops::now_ms();
            if now_ms >= *renew_at {
                *renew_at = match give_token(&self.client, &self.settings) {
                    Ok(expires_ms) => renewal_time(now_ms, expires_ms),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot renew the admin client's OAUTHBEARER token; trying again in 10 s");
                        now_ms + 10_000
                    }
                };
            }
        }
        &self.client
    }

    /// The metadata of `topic`, asked on the admin client's own connection.
    pub fn metadata(&self, topic: &str, timeout: Duration) -> KafkaResult<Metadata> {
        self.client().inner().fetch_metadata(Some(topic), timeout)
    }

    /// The partitions of `topic`, or `None` if the cluster does not have it.
    pub fn partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, Failure> {
        let metadata = self
            .client()
            .inner()
            .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
            .map_err(|e| Failure::kafka(e, format!("fetching the metadata of topic {topic}")))?;
        let Some(t) = metadata.topics().first() else { return Ok(None) };
        match t.error() {
            None if !t.partitions().is_empty() => Ok(Some(t.partitions().iter().map(|p| p.id()).collect())),
            None => Ok(None),
            Some(e) => {
                let code = RDKafkaErrorCode::from(e);
                if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                    Ok(None)
                } else {
                    Err(Failure::kafka(rdkafka::error::KafkaError::MetadataFetch(code), format!("topic {topic}")))
                }
            }
        }
    }

    /// Those of `topics` the cluster does not have (or does not show this principal), asked
    /// topic by topic: a listing of every topic costs tens of milliseconds on a cluster of
    /// thousands (31–40 ms for 1,839 on the test broker, against 1–3 ms for one), and a new
    /// group's first start waits for this before it creates its partials topic. Asking never
    /// creates a topic (`allow.auto.create.topics=false`).
    pub fn missing(&self, topics: &[String]) -> Result<Vec<String>, Failure> {
        let client = self.client();
        let mut missing = Vec::new();
        for topic in topics {
            let metadata = client
                .inner()
                .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
                .map_err(|e| Failure::kafka(e, format!("looking up topic {topic}")))?;
            if !metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none()) {
                missing.push(topic.clone());
            }
        }
        Ok(missing)
    }

    /// Each topic's `max.message.bytes` as the broker applies it (the topic's own setting, or
    /// the broker's default). A topic whose configuration the broker does not give (the
    /// principal may not read it, or the topic was created a moment ago and the broker does not
    /// know it yet) is assumed to take Kafka's default, and the host says so.
    pub fn max_message_bytes(&self, topics: &[String]) -> Result<HashMap<String, usize>, Failure> {
        let (mut limits, unread) = self.describe_limits(topics)?;
        for topic in unread {
            tracing::warn!(%topic, "cannot read the topic's max.message.bytes (no DescribeConfigs permission on it?); assuming Kafka's default of {KAFKA_DEFAULT_MAX_MESSAGE_BYTES}");
            limits.insert(topic, KAFKA_DEFAULT_MAX_MESSAGE_BYTES);
        }
        Ok(limits)
    }

    /// Every topic's `max.message.bytes` in one round trip, and the topics whose configuration
    /// the broker did not give: missing, not readable by this principal, or created a moment
    /// ago (rust-rdkafka does not say which).
    pub fn describe_limits(&self, topics: &[String]) -> Result<(HashMap<String, usize>, Vec<String>), Failure> {
        let mut limits = HashMap::new();
        let mut unread = Vec::new();
        // librdkafka refuses a request for no resource at all (InvalidArgument).
        if topics.is_empty() {
            return Ok((limits, unread));
        }
        let resources: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .runtime
            .block_on(self.client().describe_configs(&resources, &options))
            .map_err(|e| Failure::kafka(e, "reading the topics' max.message.bytes"))?;
        for (topic, result) in topics.iter().zip(results) {
            // A topic's error comes as no configuration at all (rust-rdkafka drops the code).
            match result.map(|r| r.get("max.message.bytes").and_then(|e| e.value.as_deref()).map(str::parse::<usize>)) {
                Ok(Some(Ok(limit))) => {
                    limits.insert(topic.clone(), limit);
                }
                Ok(_) | Err(_) => unread.push(topic.clone()),
            }
        }
        Ok((limits, unread))
    }

    /// Creates each of `topics` that does not exist, with `partitions` partitions, the broker's
    /// default replication factor and `max_message_bytes`; returns the limits of those it
    /// created (the others existed already).
    pub fn create(
        &self,
        topics: &[String],
        partitions: i32,
        max_message_bytes: usize,
    ) -> Result<HashMap<String, usize>, Failure> {
        self.create_with(topics, partitions, max_message_bytes, &[])
    }

    /// [`Admin::create`] with more topic settings, e.g. `cleanup.policy=compact`.
    pub fn create_with(
        &self,
        topics: &[String],
        partitions: i32,
        max_message_bytes: usize,
        settings: &[(&str, &str)],
    ) -> Result<HashMap<String, usize>, Failure> {
        let limit = max_message_bytes.to_string();
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(-1)).set("max.message.bytes", &limit);
                settings.iter().fold(topic, |topic, (k, v)| topic.set(k, v))
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .runtime
            .block_on(self.client().create_topics(&new, &options))
            .map_err(|e| Failure::kafka(e, "creating output topics"))?;
        let mut created = HashMap::new();
        for result in results {
            match result {
                Ok(topic) => {
                    tracing::info!(%topic, partitions, max_message_bytes, "created missing output topic");
                    created.insert(topic, max_message_bytes);
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(creation_failure(&topic, code)),
            }
        }
        Ok(created)
    }

    /// The limits of `topics`: those just `created` as created, the others as described.
    pub fn limits(
        &self,
        topics: &[String],
        created: HashMap<String, usize>,
    ) -> Result<HashMap<String, usize>, Failure> {
        let others: Vec<String> = topics.iter().filter(|t| !created.contains_key(*t)).cloned().collect();
        let mut limits = self.max_message_bytes(&others)?;
        limits.extend(created);
        Ok(limits)
    }
}

/// A refused topic creation, retried as Kafka's code says. What a refusal for the replication
/// factor means is said too: the host asks for the cluster's `default.replication.factor`, and a
/// cluster with fewer brokers up refuses it; briefly while brokers restart, for good on a small
/// cluster whose default is larger than its size.
fn creation_failure(topic: &str, code: RDKafkaErrorCode) -> Failure {
    let why = if code == RDKafkaErrorCode::InvalidReplicationFactor {
        ": fewer brokers are up than the cluster's default.replication.factor, which the host asks for"
    } else {
        ""
    };
    Failure::kafka(
        rdkafka::error::KafkaError::AdminOp(code),
        format!("creating output topic {topic}{why} (or create it yourself, and run with --no-create-topics)"),
    )
}

/// When to renew a token that expires at `expires_ms`, given at `now_ms`: 80% of the way through
/// its remaining lifetime, as librdkafka does.
fn renewal_time(now_ms: i64, expires_ms: i64) -> i64 {
    now_ms + (expires_ms - now_ms).max(0) * 4 / 5
}

/// rust-rdkafka's admin client never polls the queue on which librdkafka asks for OAUTHBEARER
/// tokens, so it is given the token file's current token, here; returns when that expires (ms
/// since the epoch). [`Admin::client`] gives it again before then.
fn give_token(client: &AdminClient<HostContext>, settings: &ClientSettings) -> anyhow::Result<i64> {
    let file = settings.token_file().context("SASL OAUTHBEARER needs --sasl-oauthbearer-token-file")?;
    let token = super::context::read_token(file)?;
    let expires_ms = token.lifetime_ms;
    let value = std::ffi::CString::new(token.token).context("the token holds a NUL byte")?;
    let principal = std::ffi::CString::new(token.principal_name).context("the principal holds a NUL byte")?;
    let mut errstr = [0 as std::ffi::c_char; 512];
    // SAFETY: the client pointer is valid for the client's lifetime; the strings are valid C
    // strings for the duration of the call (librdkafka copies them); no extensions are passed
    // (null pointer, size 0); errstr is a writable buffer of the size given.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_oauthbearer_set_token(
            client.inner().native_ptr(),
            value.as_ptr(),
            token.lifetime_ms,
            principal.as_ptr(),
            std::ptr::null_mut(),
            0,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: librdkafka wrote a NUL-terminated message into errstr.
        let message = unsafe { std::ffi::CStr::from_ptr(errstr.as_ptr()) }.to_string_lossy().into_owned();
        anyhow::bail!("the admin client refused the OAUTHBEARER token from {}: {message}", file.display());
    }
    Ok(expires_ms)
}

#[cfg(test)]
mod tests {
    use super::{creation_failure, renewal_time};
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn a_refused_topic_creation_says_what_to_do_and_is_retried_when_it_can_heal() {
        let failure = creation_failure("ctr-results", RDKafkaErrorCode::InvalidReplicationFactor);
        assert!(!failure.is_fatal(), "brokers may be restarting");
        let text = format!("{:#}", failure.into_error());
        assert!(
            text.contains(
                "creating output topic ctr-results: fewer brokers are up than the cluster's default.replication.factor"
            ) && text.contains("--no-create-topics"),
            "{text}"
        );
        let text = format!("{:#}", creation_failure("ctr-results", RDKafkaErrorCode::PolicyViolation).into_error());
        assert!(
            text.contains("creating output topic ctr-results (or create it yourself") && !text.contains("replication"),
            "{text}"
        );
    }

    #[test]
    fn a_token_is_renewed_four_fifths_through_its_remaining_life() {
        assert_eq!(renewal_time(1_000_000, 1_100_000), 1_080_000);
        // One already expired (a clock ahead of the issuer's): at once.
        assert_eq!(renewal_time(1_000_000, 900_000), 1_000_000);
    }
}
