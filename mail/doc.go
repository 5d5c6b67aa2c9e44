// Package mail is the platform's courier: the Message every mail-sending
// service renders, the senders that deliver it (SMTP through go-mail, or an
// outbox directory of .eml files), the SMTP settings, and the classification
// of failures into permanent, temporary and "the mail service is down".
//
// It is not a service. The notifier, the recommender and any later
// subscriber depend on it, never on each other (Kratos' courier is the
// model: every flow depends on the courier, no flow on another flow).
// HandlerError maps a send failure onto the subscriber kit's retry
// semantics, so a mail-sending handler needs one line for it. Addresses are
// redacted from errors: they are personal data.
//
// Package mail/smtptest is a real SMTP server for tests, which records mail
// and can be told to fail.
package mail
