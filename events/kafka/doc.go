// Package kafka is the librdkafka runtime under the event contract (package
// events): the producer, the subscriber, topic administration and their
// configuration. It needs cgo (confluent-kafka-go bundles librdkafka).
//
// Delivery guarantees, which every implementation and every subscriber may rely on:
//
//   - Producer.Publish returns nil only after the broker acknowledged the record
//     with acks=all on an idempotent producer. An error means the caller must
//     treat the event as not published; it may still arrive (a timeout cannot
//     tell), which is why subscribers dedupe on the event id.
//   - A Subscriber delivers every record at least once. An offset is stored only
//     after its handler returned nil or the record was written to the
//     dead-letter topic "<group-id>.dlq"; stored offsets are committed every N
//     handled records (in the background, one commit at a time), on
//     revocation, periodically while idle and on shutdown. A crash re-delivers
//     at most what was handled since the last finished commit: fewer than 2N
//     records.
//   - A handler error is retried with exponential backoff up to a limit; an
//     error wrapped with Permanent, an exhausted retry budget and an
//     undecodable record go to the dead-letter topic, and the partition moves on.
//     An error wrapped with Unavailable (a dependency is down) is never
//     dead-lettered: once its retries are spent the record is held back, the
//     partitions paused, and it is tried again every ProbeInterval (5s) until it
//     succeeds.
//
// Given a Registerer (SubscriberConfig.Registerer, or WithRegisterer for a
// Worker), a subscriber exports its consumer lag per assigned partition
// (countersign_consumer_lag_records, measured every few seconds on a
// goroutine of its own, so it keeps moving while a handler is stuck), the
// records held back for an unavailable dependency and its dead letters; see
// lag.go.
package kafka
