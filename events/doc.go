// Package events is Countersign's event contract: topics, the CloudEvents
// envelope, the data types, decoding, and the Keyring that seals codes. It
// builds with CGO_ENABLED=0 and imports no Kafka client, so a team that only
// decodes the events, with any client, needs nothing else; the librdkafka
// runtime (producer, subscriber kit, admin) is events/kafka.
//
// The event types in this package are the only thing the user API and its
// subscribers share. Every event is a CloudEvents 1.0 document in structured
// JSON mode: the Kafka record value is the whole JSON event, the record carries
// the header "content-type: application/cloudevents+json", and the record key
// is the normalized e-mail address, so all events of one address land in one
// partition, in order.
//
// The verification code never travels in plain text: it is sealed with
// AES-256-GCM (see Keyring), bound to the user id and address.
package events
