//! What a Kafka error means for the host: wait and retry (a broker outage heals by itself), or
//! stop with a message that says what to fix (a wrong password, an untrusted certificate, a
//! missing ACL, an unsupported codec never heal by retrying).
//!
//! librdkafka retries everything itself, forever: left alone, a host with a wrong password logs
//! the same error every few seconds and never consumes. [`fix_for`] is the list of errors that
//! end the host instead; every other error is waited out (see `app::run` for the restart
//! policy and its bounds).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Why a `run` attempt ended, and what the supervisor does about it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Retrying cannot help: the host stops, and the message says what to fix.
    #[error("{0:#}")]
    Fatal(anyhow::Error),
    /// Kafka did not answer in time, or refused a step that a fresh start redoes: the host
    /// starts again from the last checkpoint after a backoff.
    #[error("{0:#}")]
    Recoverable(anyhow::Error),
}

impl Failure {
    /// A Kafka error in `what`: fatal if [`fix_for`] has a fix (added to the message),
    /// recoverable otherwise.
    pub fn kafka(error: KafkaError, what: impl Into<String>) -> Failure {
        let what = what.into();
        match error.rdkafka_error_code().and_then(|code| fix_for(code, &error.to_string())) {
            Some(fix) => Failure::Fatal(anyhow::Error::new(error).context(what).context(fix)),
            None => Failure::Recoverable(anyhow::Error::new(error).context(what)),
        }
    }

    pub fn is_fatal(&self) -> bool {
        matches!(self, Failure::Fatal(_))
    }

    pub fn into_error(self) -> anyhow::Error {
        match self {
            Failure::Fatal(e) | Failure::Recoverable(e) => e,
        }
    }
}

/// Anything that is not a Kafka error (a plugin that does not load, a file that cannot be
/// written, a setting that makes no sense) does not heal by retrying either.
impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        let error = match error.downcast::<Failure>() {
            Ok(failure) => return failure,
            Err(error) => error,
        };
        if let Some(kafka) = error.chain().find_map(|c| c.downcast_ref::<KafkaError>()) {
            let fatal = kafka.rdkafka_error_code().and_then(|code| fix_for(code, &kafka.to_string()));
            return match fatal {
                Some(fix) => Failure::Fatal(error.context(fix)),
                None => Failure::Recoverable(error),
            };
        }
        Failure::Fatal(error)
    }
}

/// OpenSSL's texts for the TLS alerts a broker sends when the client's certificate is missing or
/// not one it accepts (bad_certificate, certificate_required, unknown_ca, certificate_expired,
/// certificate_unknown, certificate_revoked, unsupported_certificate). Java's TLS stack also
/// sends certificate_unknown when its own check of a certificate fails for a passing reason (a
/// revocation list it could not fetch): the host stops then too, naming the alert.
const CLIENT_CERTIFICATE_ALERTS: [&str; 7] = [
    "alert bad certificate",
    "alert certificate required",
    "alert unknown ca",
    "alert certificate expired",
    "alert certificate unknown",
    "alert certificate revoked",
    "alert unsupported certificate",
];

/// For an error that never heals by retrying, what the operator should do; `None` for the
/// errors librdkafka (or a restart) gets past by itself. `text` is librdkafka's description,
/// which tells some causes of the same code apart.
pub fn fix_for(code: RDKafkaErrorCode, text: &str) -> Option<&'static str> {
    use RDKafkaErrorCode as C;
    Some(match code {
        // librdkafka reports a connection lost during the SASL handshake as an authentication
        // error too ("SASL SCRAM-SHA-512 mechanism handshake failed: Local: Broker transport
        // failure: broker's supported mechanisms: (n/a)"): nothing was refused, and the next
        // connection retries it.
        C::Authentication if text.contains("handshake failed: Local:") => return None,
        C::Authentication | C::SaslAuthenticationFailed => {
            "the broker refused the SASL credentials: check --sasl-mechanism (it must be one the broker enables), --sasl-username and the password (ADSTREAM_SASL_PASSWORD or --sasl-password-file)"
        }
        C::UnsupportedSASLMechanism => {
            "the broker does not enable this SASL mechanism: choose one it enables with --sasl-mechanism"
        }
        // The broker's TLS alert about the host's certificate (a listener that requires one, as
        // with mutual TLS). Received during the handshake (TLS 1.2) librdkafka reports it as an
        // SSL error; after the client's part of it (TLS 1.3), as a lost connection ("Receive
        // failed"), which it retries forever.
        C::SSL | C::BrokerTransportFailure if CLIENT_CERTIFICATE_ALERTS.iter().any(|alert| text.contains(alert)) => {
            "the broker refused the host's TLS client certificate (its listener requires one, signed by a CA it trusts): give it with --ssl-certificate-location and its key with --ssl-key-location (PEM files; --ssl-key-password or --ssl-key-password-file if the key is encrypted)"
        }
        C::SSL if text.contains("certificate verify failed") || text.contains("could not be verified") => {
            "the broker's TLS certificate is not trusted: give the CA that signed it with --ssl-ca-location (a PEM file), or connect to a listener whose certificate the system trusts"
        }
        C::SSL if text.contains("hostname") || text.contains("host name") || text.contains("IP address mismatch") => {
            "the broker's TLS certificate does not name the host connected to: connect with a name the certificate holds (--brokers), or turn the check off with --ssl-endpoint-identification none (not for production)"
        }
        C::SSL => {
            "the TLS handshake with the broker failed: check that --brokers names a TLS listener, --ssl-ca-location, and, if the broker requires a client certificate, --ssl-certificate-location and --ssl-key-location"
        }
        C::TopicAuthorizationFailed => {
            "the principal is not allowed to use a topic: grant it READ and DESCRIBE on the input topics, and WRITE, DESCRIBE (and CREATE, unless --no-create-topics) on the output topics, and READ as well on the host's own: the partials, state and completeness topics"
        }
        C::GroupAuthorizationFailed => {
            "the principal is not allowed to use the consumer group: grant it READ on --group-id"
        }
        C::ClusterAuthorizationFailed => {
            "the principal lacks a cluster permission: the transactional producer needs IDEMPOTENT_WRITE on the cluster (Kafka < 3.0), and creating topics needs CREATE"
        }
        C::TransactionalIdAuthorizationFailed => {
            "the principal is not allowed to use the transactional id: grant it WRITE and DESCRIBE on <group-id>.<host-id> and, with --threads, <group-id>.<host-id>.<n> (or --transactional-id; a prefixed ACL on <group-id>. covers every host and thread), or use --delivery at-least-once"
        }
        C::FencedInstanceId => {
            "another host joined the consumer group with the same --host-id: give each host its own (a restarted host keeps its own, and takes its tasks back)"
        }
        C::NotImplemented if text.contains("ecompress") => {
            "the input was written with a compression codec this build of the host cannot read (it reads gzip, snappy, lz4 and zstd)"
        }
        C::InvalidTransactionTimeout => {
            "the broker's transaction.max.timeout.ms is below the producer's transaction.timeout.ms: lower it with --producer-property transaction.timeout.ms=MS"
        }
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition if text.contains("consum") => {
            "an input topic or partition the host was reading no longer exists: recreate it, or restart the host on the topics that exist"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_never_heal_stop_the_host_and_outages_do_not() {
        let fatal = |code| Failure::kafka(KafkaError::Global(code), "connecting").is_fatal();
        for code in [
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::SSL,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::GroupAuthorizationFailed,
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ] {
            assert!(fatal(code), "{code:?} is fatal");
        }
        for code in [
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::CoordinatorNotAvailable,
            RDKafkaErrorCode::NotCoordinator,
            RDKafkaErrorCode::RequestTimedOut,
        ] {
            assert!(!fatal(code), "{code:?} is waited out");
        }
        let codec = KafkaError::MessageConsumption(RDKafkaErrorCode::NotImplemented);
        assert!(
            fix_for(RDKafkaErrorCode::NotImplemented, "Decompression (codec 0x4) of message at 0 failed").is_some()
        );
        let message = Failure::kafka(codec, "reading ad-impressions").to_string();
        assert!(message.contains("reading ad-impressions"), "{message}");
    }

    #[test]
    fn a_connection_lost_during_the_sasl_handshake_is_retried_and_a_refusal_is_not() {
        let lost = "GroupCoordinator: SASL SCRAM-SHA-512 mechanism handshake failed: Local: Broker transport failure: broker's supported mechanisms: (n/a) (after 0ms in state DOWN)";
        assert_eq!(fix_for(RDKafkaErrorCode::Authentication, lost), None);
        let refused = "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512";
        assert!(
            fix_for(RDKafkaErrorCode::Authentication, refused)
                .is_some_and(|f| f.contains("refused the SASL credentials"))
        );
        assert!(fix_for(RDKafkaErrorCode::SaslAuthenticationFailed, refused).is_some());
    }

    #[test]
    fn a_refused_client_certificate_stops_the_host_and_a_lost_connection_does_not() {
        let refused = "ssl://127.0.0.1:9095/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42 (after 5ms in state APIVERSION_QUERY)";
        assert!(
            fix_for(RDKafkaErrorCode::BrokerTransportFailure, refused)
                .is_some_and(|f| f.contains("client certificate") && f.contains("--ssl-certificate-location"))
        );
        let during_handshake = "ssl://b:9093/bootstrap: SSL handshake failed: error:0A000418:SSL routines::tlsv1 alert unknown ca: SSL alert number 48";
        assert!(
            fix_for(RDKafkaErrorCode::SSL, during_handshake).is_some_and(|f| f.contains("client certificate")),
            "a TLS 1.2 broker's refusal, during the handshake"
        );
        let untrusted = "ssl://b:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified";
        assert!(
            fix_for(RDKafkaErrorCode::SSL, untrusted)
                .is_some_and(|f| f.contains("broker's TLS certificate is not trusted"))
        );
        let lost = "ssl://127.0.0.1:9095/bootstrap: Connect to ipv4#127.0.0.1:9095 failed: Connection refused (after 0ms in state CONNECT)";
        assert_eq!(fix_for(RDKafkaErrorCode::BrokerTransportFailure, lost), None);
    }

    #[test]
    fn a_failure_says_what_to_fix_first() {
        let f = Failure::kafka(KafkaError::Global(RDKafkaErrorCode::Authentication), "connecting to b:9093");
        let text = f.to_string();
        assert!(text.starts_with("the broker refused the SASL credentials"), "{text}");
        assert!(text.contains("connecting to b:9093"), "{text}");
        let wrapped: Failure =
            anyhow::Error::new(KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)).context("committing").into();
        assert!(!wrapped.is_fatal());
        let plain: Failure = anyhow::anyhow!("plugin x does not exist").into();
        assert!(plain.is_fatal());
    }
}
