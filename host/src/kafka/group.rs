//! Membership in the consumer group: the consumer's context, which hands rebalances to the
//! host instead of applying them on its own.
//!
//! librdkafka tells a member of the group that its partitions are revoked or assigned from
//! inside `poll`. The host must first finish with the partitions it gives up (commit the
//! transaction that covers them, or abort it if they were lost) and must read the checkpoints
//! of the ones it gets before any of their messages: so the callback only records the event,
//! and the pipeline thread acts on it right after `poll` returns, calling `unassign` or
//! `assign` itself. librdkafka waits for that call (its group state is "waiting for the
//! application", heartbeats go on meanwhile), so the group never moves on while a revoked
//! partition's output is uncommitted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset};

use super::HostContext;

/// What the group decided, for the pipeline thread to carry out.
#[derive(Debug)]
pub enum Rebalanced {
    /// Every partition is taken away (the range assignor is eager). `lost`: the member was
    /// thrown out of the group (its session expired): another member may already own them,
    /// so what this one did since its last commit must be aborted, not committed.
    Revoked { lost: bool },
    /// These partitions are this member's now.
    Assigned(Vec<(String, i32)>),
    /// The rebalance failed; the member gives its partitions up and rejoins.
    Failed(String),
}

/// The consumer's context: the host's, plus the rebalances not carried out yet.
pub struct GroupContext {
    host: HostContext,
    pending: Mutex<Vec<Rebalanced>>,
    any: AtomicBool,
    /// The consumer is being closed: nobody will act on a rebalance any more, so the callback
    /// gives the partitions up itself (closing waits for that).
    closing: AtomicBool,
}

impl GroupContext {
    pub fn new(host: HostContext) -> Self {
        GroupContext {
            host,
            pending: Mutex::new(Vec::new()),
            any: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    /// From now on, a revoke is carried out in the callback (see [`GroupContext::closing`]).
    pub fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// The rebalances since the last call, oldest first (cheap when there are none: one load).
    pub fn take_rebalances(&self) -> Vec<Rebalanced> {
        if !self.any.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ClientContext for GroupContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.host.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.host.error(error, reason);
    }

    fn generate_oauth_token(&self, config: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.host.generate_oauth_token(config)
    }
}

impl ConsumerContext for GroupContext {
    /// Records the rebalance; the pipeline thread assigns or unassigns (see the module doc).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        if self.closing.load(Ordering::Acquire) {
            if let Err(e) = consumer.unassign() {
                tracing::debug!(error = %e, "giving the partitions up while closing");
            }
            return;
        }
        let event = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                Rebalanced::Assigned(tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect())
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                Rebalanced::Revoked { lost: consumer.assignment_lost() }
            }
            other => Rebalanced::Failed(rdkafka::error::RDKafkaErrorCode::from(other).to_string()),
        };
        tracing::debug!(?event, "rebalance");
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).push(event);
        self.any.store(true, Ordering::Release);
    }
}

/// The assignment to hand librdkafka: `partitions` from the given offsets (`None`: from the
/// start, as `auto.offset.reset=earliest` would).
pub fn assignment(partitions: &[(String, i32, Option<i64>)]) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in partitions {
        tpl.add_partition_offset(topic, *partition, offset.map_or(Offset::Beginning, Offset::Offset))?;
    }
    Ok(tpl)
}
