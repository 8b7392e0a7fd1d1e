package nats

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Defaults for the zero values of Config fields.
const (
	// DefaultURL is Config.URL when empty: a server on this host, at
	// NATS's default port.
	DefaultURL = "nats://127.0.0.1:4222"
	// DefaultName is Config.Name when empty.
	DefaultName = "outbox-relay"
	// DefaultSubject is Config.Subject when empty: one subject per
	// aggregate, under one per aggregate type.
	DefaultSubject = "outbox.{aggregate_type}.{aggregate_id}"
	// DefaultStream is Config.Stream when empty.
	DefaultStream = "OUTBOX"
	// DefaultDeadLetterSubject is Config.DeadLetterSubject when empty.
	DefaultDeadLetterSubject = "outbox-relay-dlq"
	// DefaultDeadLetterStream is Config.DeadLetterStream when empty.
	DefaultDeadLetterStream = "OUTBOX_RELAY_DLQ"
	// DefaultDuplicateWindow is Config.DuplicateWindow when zero: two
	// minutes, JetStream's own default, in which a relay restarts.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultReplicas is Config.Replicas when zero.
	DefaultReplicas = 1
	// DefaultMaxMessageBytes is Config.MaxMessageBytes when zero: 1 MiB,
	// the servers' default max_payload.
	DefaultMaxMessageBytes = 1 << 20
	// DefaultAckTimeout is Config.AckTimeout when zero.
	DefaultAckTimeout = 5 * time.Second
	// DefaultReconnectWait is Config.ReconnectWait when zero: NATS's own
	// default.
	DefaultReconnectWait = 2 * time.Second
)

// Limits Validate enforces.
const (
	// minMessageBytes leaves room for the relay's headers; maxMessageBytes
	// is the largest max_payload a server accepts.
	minMessageBytes = 1 << 10
	maxMessageBytes = 64 << 20
	// maxReplicas is the most replicas JetStream keeps of a stream.
	maxReplicas = 5
	// minAckTimeout is the shortest acknowledgement wait that a healthy
	// server on a slow disk still meets.
	minAckTimeout = 100 * time.Millisecond
)

// Config configures a Sink. The zero value of every field has a documented
// meaning; New fills in the defaults itself, and Validate accepts a Config
// with or without them.
type Config struct {
	// URL names the NATS servers: nats://host:port (tls://host:port asks
	// for TLS), several separated by commas. The client learns the rest of
	// a cluster from them. It may carry credentials, user:password@ or
	// token@, which logs and errors never show; AuthConfig carries them
	// otherwise. Zero means DefaultURL.
	URL string
	// Name names the connection in the server's monitoring. Zero means
	// DefaultName.
	Name string
	// Auth authenticates the connection. Zero means none, or the
	// credentials in URL.
	Auth AuthConfig
	// TLS encrypts the connection. Zero means plaintext, unless URL uses
	// tls://.
	TLS TLSConfig
	// Subject is the template that names each event's subject. The
	// placeholders {aggregate_type}, {event_type} and {aggregate_id} are
	// replaced by the event's fields; no other {...} is allowed. A rendered
	// subject that is not a valid NATS subject (an empty token, white
	// space, * or >) fails the event with a *delivery.PermanentError of
	// delivery.ReasonDestination. Zero means DefaultSubject,
	// "outbox.{aggregate_type}.{aggregate_id}"; see the package
	// documentation for why, and for what a dot in a field does.
	Subject string
	// Stream names the JetStream stream Setup creates for the events.
	// Zero means DefaultStream, "OUTBOX".
	Stream string
	// StreamSubjects are the subjects of the stream Setup creates; they
	// must cover every subject Subject renders (each token with a
	// placeholder counting as *). Zero means the literal tokens of
	// Subject before its first placeholder, then >: "outbox.>" for the
	// default. A template that begins with a placeholder needs them set.
	StreamSubjects []string
	// DeadLetterSubject receives the events that can never be delivered,
	// with headers saying why (see delivery.DeadLetterHeaders). It must
	// be a subject without wildcards that StreamSubjects do not cover.
	// Zero means DefaultDeadLetterSubject, "outbox-relay-dlq".
	DeadLetterSubject string
	// DeadLetterStream names the stream Setup creates for
	// DeadLetterSubject. Zero means DefaultDeadLetterStream,
	// "OUTBOX_RELAY_DLQ".
	DeadLetterStream string
	// DuplicateWindow is the duplicate window of the streams Setup
	// creates: a message whose Nats-Msg-Id (the event's ID) the stream
	// stored less than this long ago is acknowledged and dropped. It
	// must outlast a relay restart, after which PostgreSQL sends again
	// the events the relay had not confirmed, and be longer than
	// AckTimeout. Zero means DefaultDuplicateWindow, two minutes.
	DuplicateWindow time.Duration
	// Replicas is how many servers of a cluster keep each stream Setup
	// creates: 1 to 5, at most the cluster's size. Zero means
	// DefaultReplicas, 1.
	Replicas int
	// MaxMessageBytes bounds a message, payload and headers: a larger
	// event fails with a *delivery.PermanentError of delivery.ReasonSize,
	// and a dead letter goes without its payload. Keep it at or below the
	// servers' max_payload. Zero means DefaultMaxMessageBytes, 1 MiB; from
	// 1 KiB to 64 MiB.
	MaxMessageBytes int
	// AckTimeout is how long a published message waits for the stream's
	// acknowledgement before it is sent again. Zero means
	// DefaultAckTimeout, five seconds; at least 100ms.
	AckTimeout time.Duration
	// ReconnectWait is the longest pause between two rounds of attempts
	// to reach the servers; the first rounds follow one another faster.
	// The client retries without end. Zero means DefaultReconnectWait.
	ReconnectWait time.Duration
	// Delivery bounds batches and concurrent sends and sets the retry
	// backoff. New sets its Name to "nats".
	Delivery delivery.Config
}

// deliveryName is the Sink's name in logs and in the sink label of metrics.
const deliveryName = "nats"

// withDefaults returns c with its zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Subject == "" {
		c.Subject = DefaultSubject
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if len(c.StreamSubjects) == 0 {
		if t, err := parseSubjectTemplate(c.Subject); err == nil && t.streamSubject() != "" {
			c.StreamSubjects = []string{t.streamSubject()}
		}
	}
	if c.DeadLetterSubject == "" {
		c.DeadLetterSubject = DefaultDeadLetterSubject
	}
	if c.DeadLetterStream == "" {
		c.DeadLetterStream = DefaultDeadLetterStream
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = DefaultReconnectWait
	}
	c.Delivery.Name = deliveryName
	return c
}

// Validate reports every field of c that New would reject, each with what
// to change. It reads the TLS files and parses the credentials, but does
// not contact the servers; see Sink.Ping.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	errs = append(errs, validateURL(c.URL)...)
	errs = append(errs, c.Auth.validate(c.URL)...)
	errs = append(errs, c.TLS.validate(c.URL)...)

	tmpl, err := parseSubjectTemplate(c.Subject)
	if err != nil {
		errs = append(errs, fmt.Errorf("nats: %w", err))
	}
	if tmpl != nil && len(c.StreamSubjects) == 0 {
		errs = append(errs, fmt.Errorf("nats: subject template %q begins with a placeholder, so no stream subject captures it without capturing every subject; set the stream subjects, or begin the template with a fixed token such as \"outbox.\"", c.Subject))
	}
	for _, s := range c.StreamSubjects {
		if err := checkFilter(s); err != nil {
			errs = append(errs, fmt.Errorf("nats: stream subject %q is not a valid subject filter: %w", s, err))
		}
	}
	if tmpl != nil && len(c.StreamSubjects) > 0 && !coveredBy(c.StreamSubjects, tmpl.pattern) {
		errs = append(errs, fmt.Errorf("nats: stream subjects %q do not cover %q, the subjects of template %q; add a subject that does, such as %q",
			c.StreamSubjects, tmpl.pattern, c.Subject, tmpl.pattern))
	}
	if err := checkSubject(c.DeadLetterSubject); err != nil {
		errs = append(errs, fmt.Errorf("nats: dead-letter subject %q is not a valid NATS subject: %w", c.DeadLetterSubject, err))
	} else if coveredBy(c.StreamSubjects, c.DeadLetterSubject) {
		errs = append(errs, fmt.Errorf("nats: dead-letter subject %q is among the stream subjects %q, so dead letters would mix with events; pick a dead-letter subject outside them",
			c.DeadLetterSubject, c.StreamSubjects))
	}
	for _, s := range []struct{ what, name string }{{"stream", c.Stream}, {"dead-letter stream", c.DeadLetterStream}} {
		if err := checkStreamName(s.name); err != nil {
			errs = append(errs, fmt.Errorf("nats: %s name %q %w", s.what, s.name, err))
		}
	}
	if c.Stream == c.DeadLetterStream {
		errs = append(errs, fmt.Errorf("nats: the stream and the dead-letter stream are both %q; give them different names", c.Stream))
	}
	if c.DuplicateWindow <= c.AckTimeout {
		errs = append(errs, fmt.Errorf("nats: duplicate window %s is not longer than the acknowledgement timeout %s, so a message sent again after a lost acknowledgement would be stored twice; use minutes (0 means %s)",
			c.DuplicateWindow, c.AckTimeout, DefaultDuplicateWindow))
	}
	if c.Replicas < 1 || c.Replicas > maxReplicas {
		errs = append(errs, fmt.Errorf("nats: replicas is %d; use 1 to %d, at most the cluster's size, or 0 for %d", c.Replicas, maxReplicas, DefaultReplicas))
	}
	if c.MaxMessageBytes < minMessageBytes || c.MaxMessageBytes > maxMessageBytes {
		errs = append(errs, fmt.Errorf("nats: max message bytes %d is out of range; use %d to %d, at most the servers' max_payload, or 0 for %d",
			c.MaxMessageBytes, minMessageBytes, maxMessageBytes, DefaultMaxMessageBytes))
	}
	if c.AckTimeout < minAckTimeout {
		errs = append(errs, fmt.Errorf("nats: acknowledgement timeout %s is too short; use at least %s, or 0 for %s", c.AckTimeout, minAckTimeout, DefaultAckTimeout))
	}
	if c.ReconnectWait < 0 {
		errs = append(errs, fmt.Errorf("nats: reconnect wait %s is negative; use a positive duration, or 0 for %s", c.ReconnectWait, DefaultReconnectWait))
	}
	if err := c.Delivery.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkStreamName reports why JetStream would refuse name for a stream.
func checkStreamName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty; give a name")
	case strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune(".*>/\\", r) }):
		return errors.New("holds white space, a control character, or one of . * > / \\; use letters, digits, - and _")
	}
	return nil
}

// LogValue describes c for logs, without the secrets in URL and Auth.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", redactURL(c.URL)),
		slog.Any("auth", c.Auth),
		slog.Any("tls", c.TLS),
		slog.String("subject", c.Subject),
		slog.String("stream", c.Stream),
		slog.String("dead_letter_subject", c.DeadLetterSubject),
		slog.String("dead_letter_stream", c.DeadLetterStream),
	)
}

// plainConfig is Config without its methods, for String and GoString.
type plainConfig Config

// String describes c for fmt's %v and %s with its secrets replaced by
// "xxxxx".
func (c Config) String() string {
	c.URL = redactURL(c.URL)
	return fmt.Sprintf("%+v", plainConfig(c))
}

// GoString describes c for fmt's %#v with its secrets replaced by "xxxxx".
func (c Config) GoString() string {
	c.URL = redactURL(c.URL)
	return "nats.Config" + strings.TrimPrefix(fmt.Sprintf("%#v", plainConfig(c)), "nats.plainConfig")
}
