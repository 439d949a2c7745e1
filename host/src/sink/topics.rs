//! Creates missing output topics at start-up, so that a first run on a fresh cluster does not
//! fail with "unknown topic". Existing topics are never touched; operators who want other
//! partition counts or retention create the topics themselves first.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

/// Creates each of `topics` that does not exist, with `partitions` partitions and the broker's
/// default replication factor.
pub fn ensure_topics(brokers: &str, topics: &[String], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("creating the Kafka admin client")?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = runtime.block_on(admin.create_topics(&new, &options)).context("creating output topics")?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, partitions, "created missing output topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("could not create output topic {topic}: {code}"),
        }
    }
    Ok(())
}
