//! The consumer's two queues of fetched messages (`adstream::kafka::fetched`), against the real
//! broker: every message taken once and in offset order per partition, the partials partition's
//! taken ahead of the inputs', and a wait on the inputs woken by a partials record.

use std::time::{Duration, Instant};

use adstream::kafka::fetched::{Fetched, Lane};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const INPUTS: i64 = 20_000;

fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let new: Vec<NewTopic<'_>> = topics.iter().map(|&(t, n)| NewTopic::new(t, n, TopicReplication::Fixed(1))).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for result in runtime.block_on(admin.create_topics(&new, &AdminOptions::new())).expect("CreateTopics") {
        result.unwrap_or_else(|(topic, e)| panic!("creating {topic}: {e}"));
    }
}

fn produce(producer: &BaseProducer, topic: &str, partition: i32, payload: &str) {
    let mut record = BaseRecord::to(topic).partition(partition).key("k").payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn partials_are_taken_first_and_wake_a_wait_for_inputs() {
    let brokers = crate::common::brokers();
    let prefix = crate::common::fresh_prefix("fetched");
    let (inputs, partials) = (format!("{prefix}inputs"), format!("{prefix}partials"));
    create_topics(&brokers, &[(&inputs, 2), (&partials, 1)]);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for i in 0..INPUTS {
        produce(&producer, &inputs, (i % 2) as i32, &i.to_string());
    }
    produce(&producer, &partials, 0, "p0");
    producer.flush(Duration::from_secs(30)).expect("the records written");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{prefix}g"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // SAFETY: `fetched` is declared after `consumer`, so it is dropped first.
    let mut fetched = unsafe { Fetched::new(&consumer) };
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, lane) in
        [(&inputs, 0, Lane::Input), (&inputs, 1, Lane::Input), (&partials, 0, Lane::Partials)]
    {
        fetched.forward(topic, partition, lane).unwrap();
        tpl.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    // Nothing taken until librdkafka has fetched everything: the partials record is then
    // behind 20,000 input messages, as in a catch-up. (A queue's length counts librdkafka's
    // control operations too: a barrier per partition as its fetch starts.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while fetched.waiting(Lane::Input) < INPUTS as usize + 2 || fetched.waiting(Lane::Partials) < 2 {
        assert!(
            Instant::now() < deadline,
            "not fetched within 60 s: {} inputs, {} partials",
            fetched.waiting(Lane::Input),
            fetched.waiting(Lane::Partials)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Everything, each message once, in offset order within its partition; the partials record
    // before any input message.
    let (mut next, mut partials_taken) = ([0i64; 2], 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (next[0] + next[1] < INPUTS || partials_taken == 0) && Instant::now() < deadline {
        let taken = fetched.take(Duration::from_millis(100));
        for i in 0..taken {
            let msg = fetched.message(i);
            assert!(msg.error().is_none(), "fetch error: {:?}", msg.error());
            if msg.topic() == partials {
                assert_eq!(next, [0, 0], "the partials record was taken behind input messages fetched with it");
                assert_eq!((msg.offset(), msg.payload()), (0, &b"p0"[..]));
                partials_taken += 1;
            } else {
                let p = msg.partition() as usize;
                assert_eq!(msg.offset(), next[p], "partition {p} out of order");
                assert_eq!(msg.key(), Some(&b"k"[..]));
                next[p] += 1;
            }
        }
    }
    assert_eq!((next[0] + next[1], partials_taken), (INPUTS, 1), "not everything was taken within 60 s");

    // Nothing left: a take waiting up to 20 s on the inputs returns once a partials record comes.
    let writer = {
        let (brokers, partials) = (brokers.clone(), partials.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
            produce(&producer, &partials, 0, "p1");
            producer.flush(Duration::from_secs(30)).expect("the record written");
        })
    };
    let started = Instant::now();
    let mut woken_after = None;
    while woken_after.is_none() && started.elapsed() < Duration::from_secs(60) {
        let taken = fetched.take(Duration::from_secs(20));
        if (0..taken).any(|i| fetched.message(i).topic() == partials) {
            woken_after = Some(started.elapsed());
        }
    }
    writer.join().unwrap();
    let woken_after = woken_after.expect("the partials record was never taken");
    assert!(
        woken_after < Duration::from_secs(10),
        "the wait on the inputs was not woken by the partials record: it returned after {woken_after:?}"
    );
}
