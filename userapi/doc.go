// Package userapi is the user-facing HTTP API of Countersign: a person
// registers an address, receives a code of Config.CodeDigits digits (6 by
// default) by mail (sent by a
// subscriber of user_account_created), and proves they own the address by
// posting the code back.
//
//	POST /api/register {"email","first_name","last_name"} → 202 {"status":"pending_verification","expires_at"}
//	POST /api/verify   {"email","code"}                   → 200 {"status":"verified"}
//	POST /api/resend   {"email"}                          → 202 {"status":"accepted"}
//	GET  /healthz, GET /readyz
//
// The server registers its metrics (Deps.Registry) but does not serve them:
// the binary serves them on METRICS_ADDR, never on the public port.
//
// docs/openapi.yaml describes every route and error. Every error is an
// RFC 9457 application/problem+json document whose type is one of the Code
// URIs; writeError is the only place that makes one.
//
// # Guarantees
//
//   - 202 from register and resend, and 200 from verify, are sent only after
//     the broker acknowledged the event. When publishing fails or times out
//     (Config.PublishTimeout) the answer is 503 and the store is put back as
//     the request found it: a new registration is removed, a replaced one
//     comes back, a consumed one is restored. A timed-out event may still
//     reach the broker later (kafka.Producer.Publish says why), so a
//     subscriber can see a user_account_verified for a registration that was
//     restored and is verified again later: both carry the same user_id, and
//     subscribers treat verification as idempotent per user_id.
//   - Of any number of concurrent verifies with the right code for one
//     address, exactly one gets 200 and publishes user_account_verified; and
//     an address is verified once, ever: the step that consumes its pending
//     registration makes it an account (Store.Consume), registering an
//     account answers as for a new address but publishes no
//     user_account_created and issues no code, and the
//     accounts are rebuilt at start from the compacted user_account_verified
//     (Deps.AccountsLoaded holds the API back until they are).
//   - One code per address while it lives: register and resend mail the
//     same code again, without resetting its attempts or changing its names
//     (Store.Register, OutcomeResent); a new code only when it expired or
//     its attempts are used up.
//   - At most Config.VerifyMaxFailuresPerDay wrong codes are checked per
//     address in any 24 hours, across its codes (docs/security.md works out
//     the guessing bound).
//   - A code gets at most Config.CodeMaxAttempts checks, however many
//     requests arrive at once: the code is compared, and the attempt
//     counted or the record consumed, in one atomic step (Store.Check).
//   - A mailbox gets at most Config.CodeMaxSendsPerDay codes in 24 hours,
//     and the platform at most Config.CodeMaxSendsPerHour in an hour (see
//     MailBudget); past either, register and resend answer 202 and send
//     nothing. Past Config.PendingMax pending registrations, register
//     answers 503 with Retry-After.
//   - Registering an account publishes at most one user_account_exists (the
//     owner's "you already have an account" notice) per address per
//     Config.ResendInterval (Store.TakeNotice, atomic across replicas on
//     Redis), and only within the mail budgets, which notices share with
//     code mails. The notice carries the address, not the names given.
//   - The code exists in plain text only between its generation and its
//     sealing into the event; the store keeps an HMAC. It never appears in a
//     log line, an error or a response, nor does the address in a log line.
//
// # What an attacker can learn
//
// Verify answers the same 400 for a wrong code, an unknown address, an
// expired registration, an account and an address out of its failure
// budget; register answers the same 202 for a new address and an account;
// resend answers 202 either way. The answers that do reveal a pending
// address are the ones the contract requires: 429 from resend within
// RESEND_INTERVAL of a mail to it, 429 from verify once its attempts are
// used up, and 503 from resend while the broker is down.
//
// # Storage
//
// Pending registrations are kept behind the Store interface, whose methods
// are each one atomic step, so a shared store (Redis) can replace the
// in-process MemoryStore without touching the handlers; storetest.Run is
// the contract every implementation passes.
package userapi
