package nats

import "github.com/outbox-relay/outbox-relay/schema"

// MessageSize returns the size, headers and payload, of the message a Sink
// with cfg makes of ev, whatever its limit.
func MessageSize(cfg Config, ev *schema.Event) int {
	cfg = cfg.withDefaults()
	tmpl, err := parseSubjectTemplate(cfg.Subject)
	if err != nil {
		panic(err)
	}
	b := &broker{subject: tmpl, maxBytes: maxMessageBytes}
	msg, _, err := b.Map(ev)
	if err != nil {
		panic(err)
	}
	return headerBytes(msg.Header) + len(msg.Data)
}
