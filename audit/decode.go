package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
)

// TopicUserAccountDeleted is the topic and type of user_account_deleted,
// which removes the address's accounts row.
const TopicUserAccountDeleted = events.TopicUserAccountDeleted

// Topics is every topic the audit reads: all the platform emits. A new
// event type is one more name here (none when it is added to events.Topics).
var Topics = func() []string {
	ts := slices.Clone(events.Topics)
	for _, t := range []string{TopicUserAccountDeleted} {
		if !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	return ts
}()

// accountChange is what an event does to the accounts table.
type accountChange int

const (
	accountNone accountChange = iota
	accountUpsert
	accountDelete
)

// row is one audit_events row and its effect on accounts.
type row struct {
	eventID, eventType, email, userID string
	occurredAt                        time.Time
	topic                             string
	partition                         int32
	offset                            int64
	payload                           json.RawMessage

	account             accountChange
	firstName, lastName string
	verifiedAt          time.Time
}

// personData is what every event's data carries: who it is about.
type personData struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
}

// Decode is the audit's record decoder: events.Decode, plus
// user_account_deleted while the events package does not know it yet.
func Decode(value []byte) (events.Event, error) {
	e, err := events.Decode(value)
	if err == nil {
		return e, nil
	}
	var env struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(value, &env) != nil || env.Type != TopicUserAccountDeleted {
		return events.Event{}, err
	}
	return decodeDeleted(value)
}

// decodeDeleted checks a user_account_deleted event the way events.Decode
// checks the others: the envelope, and the data's user_id and email.
func decodeDeleted(value []byte) (events.Event, error) {
	var e events.Event
	if err := json.Unmarshal(value, &e); err != nil {
		return events.Event{}, &events.DecodeError{Reason: "malformed JSON"}
	}
	switch {
	case e.SpecVersion != events.SpecVersion:
		return events.Event{}, &events.DecodeError{Reason: fmt.Sprintf("specversion is not %q", events.SpecVersion)}
	case e.ID == "":
		return events.Event{}, &events.DecodeError{Reason: "missing id"}
	case e.Source == "":
		return events.Event{}, &events.DecodeError{Reason: "missing source"}
	case e.Time.IsZero():
		return events.Event{}, &events.DecodeError{Reason: "missing time"}
	case len(e.Data) == 0 || string(e.Data) == "null":
		return events.Event{}, &events.DecodeError{Reason: "missing data"}
	}
	var d personData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return events.Event{}, &events.DecodeError{Reason: "malformed data"}
	}
	switch {
	case d.UserID == "":
		return events.Event{}, &events.DecodeError{Reason: "data: missing user_id"}
	case d.Email == "":
		return events.Event{}, &events.DecodeError{Reason: "data: missing email"}
	}
	return e, nil
}

var errNoPerson = errors.New("event data names no email")

// toRow maps a decoded event to its row. Every event type carries email in
// its data, and all but user_account_exists a user_id (its row's is empty);
// verified and deleted change accounts.
func toRow(r kafka.BatchRecord) (row, error) {
	e := r.Event
	out := row{
		eventID: e.ID, eventType: e.Type, occurredAt: e.Time,
		topic: r.Topic, partition: r.Partition.Partition, offset: r.Offset,
		// As published: the verification code inside stays sealed.
		payload: e.Data,
	}
	switch e.Type {
	case events.TopicUserAccountVerified:
		d, err := e.UserAccountVerified()
		if err != nil {
			return out, err
		}
		out.email, out.userID = d.Email, d.UserID
		out.account, out.firstName, out.lastName, out.verifiedAt = accountUpsert, d.FirstName, d.LastName, d.VerifiedAt
	default:
		var d personData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return out, fmt.Errorf("event %s data: %w", e.ID, errNoPerson)
		}
		out.email, out.userID = events.NormalizeEmail(d.Email), d.UserID
		if out.email == "" {
			out.email = e.Key
		}
		if e.Type == TopicUserAccountDeleted {
			out.account = accountDelete
		}
	}
	return out, nil
}
