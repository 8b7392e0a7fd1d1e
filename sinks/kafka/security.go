package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// SASL mechanisms SASLConfig.Mechanism accepts, spelled as Kafka's
// sasl.mechanism setting spells them.
const (
	SASLPlain       = "PLAIN"
	SASLSCRAMSHA256 = "SCRAM-SHA-256"
	SASLSCRAMSHA512 = "SCRAM-SHA-512"
	SASLOAuthBearer = "OAUTHBEARER"
)

// redacted stands for a secret in logs, errors and fmt output, as in
// cdc.RedactDSN.
const redacted = "xxxxx"

// TLSConfig says how the Sink encrypts its broker connections and proves
// its identity to the brokers. The zero value is plaintext. The files are
// those of delivery.TLSFiles: the brokers' CA, and the client certificate and
// key that brokers with ssl.client.auth ask for; a zero ServerName means
// the host of each broker address dialed.
type TLSConfig struct {
	// Enable dials every broker with TLS 1.2 or later. The other fields
	// need it.
	Enable bool
	delivery.TLSFiles
}

// validate reports what is wrong with c, loading its files to check them.
func (c TLSConfig) validate() []error {
	return c.Validate("kafka", c.Enable, "TLS is not enabled", "enable TLS")
}

// clientConfig reads c's files and returns the client's TLS configuration,
// or nil if TLS is off. Its errors name the file at fault.
func (c TLSConfig) clientConfig() (*tls.Config, error) {
	if !c.Enable {
		return nil, nil
	}
	tc, err := c.Config("")
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return tc, nil
}

// LogValue describes c for logs.
func (c TLSConfig) LogValue() slog.Value {
	if !c.Enable {
		return slog.GroupValue(slog.Bool("enable", false))
	}
	return slog.GroupValue(append([]slog.Attr{slog.Bool("enable", true)}, c.LogAttrs()...)...)
}

// SASLConfig says how the Sink authenticates to the brokers. The zero value
// does not authenticate. Its LogValue, String and GoString leave out the
// password and the token, so logging or printing a Config shows neither.
type SASLConfig struct {
	// Mechanism is SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512 or
	// SASLOAuthBearer, in any case. Zero means no SASL. PLAIN sends the
	// password as is: use it with TLS only.
	Mechanism string
	// Username and Password are the credentials of PLAIN and SCRAM; both
	// are required for them, and unused by OAUTHBEARER.
	Username, Password string
	// Token is the bearer token OAUTHBEARER sends, as is, on every
	// connection; required for it, unused by the others. The Sink does not
	// refresh it: restart the relay with a new token before it expires.
	Token string
}

// mechanismName returns c's mechanism in upper case.
func (c SASLConfig) mechanismName() string { return strings.ToUpper(strings.TrimSpace(c.Mechanism)) }

// validate reports what is wrong with c.
func (c SASLConfig) validate() []error {
	var errs []error
	switch m := c.mechanismName(); m {
	case "":
		if c.Username != "" || c.Password != "" || c.Token != "" {
			errs = append(errs, errors.New("kafka: SASL credentials are given but no SASL mechanism; set the mechanism to PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER, or remove them"))
		}
	case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
		if c.Username == "" {
			errs = append(errs, fmt.Errorf("kafka: SASL %s needs a username; set it", m))
		}
		if c.Password == "" {
			errs = append(errs, fmt.Errorf("kafka: SASL %s needs a password; set it", m))
		}
		if c.Token != "" {
			errs = append(errs, fmt.Errorf("kafka: a SASL token is given but the mechanism is %s, which uses a username and password; remove the token, or use OAUTHBEARER", m))
		}
	case SASLOAuthBearer:
		if c.Token == "" {
			errs = append(errs, errors.New("kafka: SASL OAUTHBEARER needs a token; set it"))
		}
		if c.Username != "" || c.Password != "" {
			errs = append(errs, errors.New("kafka: a SASL username or password is given but the mechanism is OAUTHBEARER, which sends only a token; remove them, or use PLAIN or SCRAM"))
		}
	default:
		errs = append(errs, fmt.Errorf("kafka: SASL mechanism %q is unknown; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER", c.Mechanism))
	}
	return errs
}

// mechanism returns the franz-go mechanism for c, which must be valid, or
// nil when SASL is off.
func (c SASLConfig) mechanism() sasl.Mechanism {
	switch c.mechanismName() {
	case SASLPlain:
		return plain.Auth{User: c.Username, Pass: c.Password}.AsMechanism()
	case SASLSCRAMSHA256:
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha256Mechanism()
	case SASLSCRAMSHA512:
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha512Mechanism()
	case SASLOAuthBearer:
		return oauth.Auth{Token: c.Token}.AsMechanism()
	default:
		return nil
	}
}

// LogValue describes c for logs: the mechanism and the username, never the
// password or the token.
func (c SASLConfig) LogValue() slog.Value {
	if c.mechanismName() == "" {
		return slog.GroupValue(slog.String("mechanism", "none"))
	}
	attrs := []slog.Attr{slog.String("mechanism", c.mechanismName())}
	if c.Username != "" {
		attrs = append(attrs, slog.String("username", c.Username))
	}
	return slog.GroupValue(attrs...)
}

// String describes c for fmt's %v and %s with its secrets replaced by
// "xxxxx".
func (c SASLConfig) String() string {
	return fmt.Sprintf("{Mechanism:%s Username:%s Password:%s Token:%s}", c.Mechanism, c.Username, mask(c.Password), mask(c.Token))
}

// GoString describes c for fmt's %#v with its secrets replaced by "xxxxx".
func (c SASLConfig) GoString() string {
	return fmt.Sprintf("kafka.SASLConfig{Mechanism:%q, Username:%q, Password:%q, Token:%q}", c.Mechanism, c.Username, mask(c.Password), mask(c.Token))
}

// mask returns "xxxxx" for a secret that is set, and "" for one that is not.
func mask(secret string) string {
	if secret == "" {
		return ""
	}
	return redacted
}

// securityOpts returns the franz-go options for c.TLS and c.SASL, which
// must be valid. Should a TLS file have changed since Validate read it,
// every dial fails with the error naming it, so Ping reports it.
func (c Config) securityOpts() []kgo.Opt {
	var opts []kgo.Opt
	tc, err := c.TLS.clientConfig()
	switch {
	case err != nil:
		opts = append(opts, kgo.Dialer(func(context.Context, string, string) (net.Conn, error) { return nil, err }))
	case tc != nil:
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.SASL.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts
}
