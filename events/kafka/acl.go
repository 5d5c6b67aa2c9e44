package kafka

import (
	"context"
	"fmt"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Least privilege on a cluster with an authorizer (issue 14; the list is in
// docs/security.md). The event seal stops a forged code from opening; ACLs
// stop a forged event from being written at all: only the user API's
// principal may produce to the platform's topics, and each subscriber's
// principal may read only its own topics, with its own consumer group.
// None of them may create topics: an operator (or the admin principal of
// scripts/kafka-local --sasl) creates them first.

// ProducerACLs lets principal ("User:<name>") produce to topics: WRITE and
// DESCRIBE on each, by literal name. WRITE is also what an idempotent
// producer needs to get its producer id.
func ProducerACLs(principal string, topics ...string) []ckafka.ACLBinding {
	var out []ckafka.ACLBinding
	for _, t := range topics {
		out = append(out,
			allow(principal, ckafka.ResourceTopic, t, ckafka.ACLOperationWrite),
			allow(principal, ckafka.ResourceTopic, t, ckafka.ACLOperationDescribe))
	}
	return out
}

// AccountsReaderACLs lets principal read topic without a consumer group,
// as the user API's accounts follower reads user_account_verified
// (FollowTopic): READ and DESCRIBE, no group.
func AccountsReaderACLs(principal, topic string) []ckafka.ACLBinding {
	return []ckafka.ACLBinding{
		allow(principal, ckafka.ResourceTopic, topic, ckafka.ACLOperationRead),
		allow(principal, ckafka.ResourceTopic, topic, ckafka.ACLOperationDescribe),
	}
}

// SubscriberACLs lets principal consume topics as group, as a kafka.Worker
// does: READ and DESCRIBE on each topic and READ on the group; WRITE and
// DESCRIBE on the group's dead-letter topic; and, for replay-dlq, READ on
// the dead-letter topic and on the group's replay group (<group>.replay).
func SubscriberACLs(principal, group string, topics ...string) []ckafka.ACLBinding {
	var out []ckafka.ACLBinding
	dlq := DeadLetterTopic(group)
	for _, t := range append(append([]string(nil), topics...), dlq) {
		out = append(out,
			allow(principal, ckafka.ResourceTopic, t, ckafka.ACLOperationRead),
			allow(principal, ckafka.ResourceTopic, t, ckafka.ACLOperationDescribe))
	}
	return append(out,
		allow(principal, ckafka.ResourceTopic, dlq, ckafka.ACLOperationWrite),
		allow(principal, ckafka.ResourceGroup, group, ckafka.ACLOperationRead),
		allow(principal, ckafka.ResourceGroup, group+".replay", ckafka.ACLOperationRead))
}

func allow(principal string, rt ckafka.ResourceType, name string, op ckafka.ACLOperation) ckafka.ACLBinding {
	return ckafka.ACLBinding{
		Type: rt, Name: name, ResourcePatternType: ckafka.ResourcePatternTypeLiteral,
		Principal: principal, Host: "*", Operation: op, PermissionType: ckafka.ACLPermissionTypeAllow,
	}
}

// CreateACLs creates acls with cfg's credentials, which must be allowed to
// (ALTER on the cluster, or a super user).
func CreateACLs(ctx context.Context, cfg Config, acls []ckafka.ACLBinding) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	pr, err := NewProducer(cfg)
	if err != nil {
		return fmt.Errorf("create acls: %w", err)
	}
	defer pr.Close(context.Background())
	a, err := ckafka.NewAdminClientFromProducer(pr.p)
	if err != nil {
		return fmt.Errorf("create acls: admin client: %w", err)
	}
	defer a.Close()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	res, err := a.CreateACLs(ctx, acls)
	if err != nil {
		return fmt.Errorf("create acls: %w", err)
	}
	for i, r := range res {
		if r.Error.Code() != ckafka.ErrNoError {
			return fmt.Errorf("create acl %s %s on %s %s: %w", acls[i].Principal, acls[i].Operation, acls[i].Type, acls[i].Name, r.Error)
		}
	}
	return nil
}
