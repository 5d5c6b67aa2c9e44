// Package notifier is the notification service: the consumer group
// "notification-service", which mails a verification code (and link) for
// every user_account_created event, a confirmation for every
// user_account_verified event, and a "you already have an account" notice
// for every user_account_exists event (someone registered an address that
// is an account; the notice names nobody, since the attempt's names are
// whoever tried's text).
//
// It is a handler and its metrics on top of the subscriber kit
// (events/kafka.Worker: commits every N, retries, hold-back through SMTP
// outages, dead letters, dedupe) and the courier (package mail). It imports
// no other service: the user API and it share only the event contract.
package notifier
