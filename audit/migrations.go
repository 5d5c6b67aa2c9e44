package audit

// migration is one versioned schema change. Versions are applied in order,
// each once, in the transaction that records it in audit_schema_migrations;
// a released migration is never edited, only followed by a new one.
type migration struct {
	version  int
	name     string
	postgres string
	sqlite   string
}

var migrations = []migration{
	{
		version: 1,
		name:    "audit_events, accounts, audit_offsets",
		postgres: `
CREATE TABLE audit_events (
	event_id        TEXT        PRIMARY KEY,
	event_type      TEXT        NOT NULL,
	email           TEXT        NOT NULL,
	user_id         TEXT        NOT NULL,
	occurred_at     TIMESTAMPTZ NOT NULL,
	topic           TEXT        NOT NULL,
	kafka_partition INTEGER     NOT NULL,
	kafka_offset    BIGINT      NOT NULL,
	payload         JSONB       NOT NULL,
	recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_email ON audit_events (email, event_type, occurred_at);
CREATE INDEX audit_events_type_occurred ON audit_events (event_type, occurred_at);
CREATE TABLE accounts (
	email       TEXT        PRIMARY KEY,
	user_id     TEXT        NOT NULL,
	first_name  TEXT        NOT NULL,
	last_name   TEXT        NOT NULL,
	verified_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE audit_offsets (
	group_id        TEXT        NOT NULL,
	topic           TEXT        NOT NULL,
	kafka_partition INTEGER     NOT NULL,
	next_offset     BIGINT      NOT NULL,
	updated_at      TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (group_id, topic, kafka_partition)
);`,
		// SQLite has no timestamp type: times are UTC RFC 3339 text with
		// microseconds ("2026-11-30T10:17:19.123456Z"), which sorts in time
		// order and which SQLite's date functions read.
		sqlite: `
CREATE TABLE audit_events (
	event_id        TEXT    PRIMARY KEY,
	event_type      TEXT    NOT NULL,
	email           TEXT    NOT NULL,
	user_id         TEXT    NOT NULL,
	occurred_at     TEXT    NOT NULL,
	topic           TEXT    NOT NULL,
	kafka_partition INTEGER NOT NULL,
	kafka_offset    INTEGER NOT NULL,
	payload         TEXT    NOT NULL,
	recorded_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX audit_events_email ON audit_events (email, event_type, occurred_at);
CREATE INDEX audit_events_type_occurred ON audit_events (event_type, occurred_at);
CREATE TABLE accounts (
	email       TEXT PRIMARY KEY,
	user_id     TEXT NOT NULL,
	first_name  TEXT NOT NULL,
	last_name   TEXT NOT NULL,
	verified_at TEXT NOT NULL
);
CREATE TABLE audit_offsets (
	group_id        TEXT    NOT NULL,
	topic           TEXT    NOT NULL,
	kafka_partition INTEGER NOT NULL,
	next_offset     INTEGER NOT NULL,
	updated_at      TEXT    NOT NULL,
	PRIMARY KEY (group_id, topic, kafka_partition)
);`,
	},
	{
		// The id of the topic each offset was read from (Kafka's topic ids,
		// KIP-516): a topic deleted and created again is read from its
		// beginning even when it has grown past the stored offset
		// (kafka.TopicIDStore). '' for offsets stored before.
		version:  2,
		name:     "audit_offsets.topic_id",
		postgres: `ALTER TABLE audit_offsets ADD COLUMN topic_id TEXT NOT NULL DEFAULT '';`,
		sqlite:   `ALTER TABLE audit_offsets ADD COLUMN topic_id TEXT NOT NULL DEFAULT '';`,
	},
}
