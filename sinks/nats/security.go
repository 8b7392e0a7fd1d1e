package nats

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// redacted stands for a secret in logs, errors and fmt output, as in
// cdc.RedactDSN.
const redacted = "xxxxx"

// schemes are the URL schemes the client dials.
var schemes = []string{"nats", "tls", "ws", "wss"}

// splitURLs returns the entries of a Config.URL.
func splitURLs(s string) []string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

// validateURL reports what is wrong with the server list s. Its errors
// show the URLs redacted.
func validateURL(s string) []error {
	var errs []error
	for _, raw := range splitURLs(s) {
		if raw == "" {
			errs = append(errs, fmt.Errorf("nats: URL %q has an empty entry; separate server URLs with single commas", redactURL(s)))
			continue
		}
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			// url.Error quotes the URL, password included: show only
			// the redacted form.
			errs = append(errs, fmt.Errorf("nats: URL %q cannot be parsed; write it as nats://host:port", redactURL(raw)))
		case !isScheme(u.Scheme):
			errs = append(errs, fmt.Errorf("nats: URL %q has scheme %q; use nats://host:port (or tls://, ws://, wss://)", redactURL(raw), u.Scheme))
		case u.Host == "" || u.Hostname() == "":
			errs = append(errs, fmt.Errorf("nats: URL %q names no host; write it as nats://host:port", redactURL(raw)))
		}
	}
	return errs
}

func isScheme(s string) bool {
	for _, ok := range schemes {
		if strings.EqualFold(s, ok) {
			return true
		}
	}
	return false
}

// urlHasCredentials reports whether an entry of the server list s carries
// a user, password or token.
func urlHasCredentials(s string) bool {
	for _, raw := range splitURLs(s) {
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			return true
		}
	}
	return false
}

// urlWantsTLS reports whether an entry of the server list s uses tls:// or
// wss://.
func urlWantsTLS(s string) bool {
	for _, raw := range splitURLs(s) {
		if u, err := url.Parse(raw); err == nil && (strings.EqualFold(u.Scheme, "tls") || strings.EqualFold(u.Scheme, "wss")) {
			return true
		}
	}
	return false
}

// redactURL returns the server list s with its passwords and tokens
// replaced by "xxxxx". A user without a password is a token to NATS, so it
// is replaced too. An entry that does not parse is replaced whole when it
// holds an @.
func redactURL(s string) string {
	parts := splitURLs(s)
	for i, raw := range parts {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			if strings.Contains(raw, "@") {
				parts[i] = redacted
			}
		case u.User == nil:
		default:
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), redacted)
			} else {
				u.User = url.User(redacted)
			}
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// AuthConfig says how the Sink authenticates to the servers when Config.URL
// carries no credentials: a user and password, a token, or the credentials
// of a decentralized (JWT) account. The zero value does not authenticate.
// Its LogValue, String and GoString leave out the secrets.
type AuthConfig struct {
	// Username and Password are the credentials of a server that lists
	// its users; both or neither.
	Username, Password string
	// Token is the token of a server that authorizes with one.
	Token string
	// Credentials is the content of a .creds file (the user's JWT and
	// nkey seed, as nsc writes it), for servers of decentralized
	// accounts. Hold the content, not the file's path: the caller reads
	// the file.
	Credentials string
}

// validate reports what is wrong with c, given the server list serverURL.
func (c AuthConfig) validate(serverURL string) []error {
	var errs []error
	password := c.Username != "" || c.Password != ""
	set := 0
	for _, on := range []bool{password, c.Token != "", c.Credentials != ""} {
		if on {
			set++
		}
	}
	if set > 1 {
		errs = append(errs, errors.New("nats: more than one of a username and password, a token and credentials are given; give the one the server expects"))
	}
	if set > 0 && urlHasCredentials(serverURL) {
		errs = append(errs, errors.New("nats: the URL carries credentials and others are given too; give them in one place"))
	}
	switch {
	case c.Username != "" && c.Password == "":
		errs = append(errs, fmt.Errorf("nats: user %q has no password; give the password too", c.Username))
	case c.Username == "" && c.Password != "":
		errs = append(errs, errors.New("nats: a password is given without a username; give the username too"))
	}
	if c.Credentials != "" {
		if jwt, err := nkeys.ParseDecoratedJWT([]byte(c.Credentials)); err != nil || strings.Count(jwt, ".") != 2 {
			errs = append(errs, errors.New("nats: the credentials hold no user JWT; give the content of a .creds file (-----BEGIN NATS USER JWT----- ...)"))
		}
		if kp, err := nkeys.ParseDecoratedUserNKey([]byte(c.Credentials)); err != nil {
			errs = append(errs, fmt.Errorf("nats: the credentials hold no user nkey seed (%w); give the content of a .creds file, which ends with the seed (SU...)", err))
		} else {
			kp.Wipe()
		}
	}
	return errs
}

// options returns the client's options for c, which must be valid.
func (c AuthConfig) options() []natsgo.Option {
	switch {
	case c.Username != "":
		return []natsgo.Option{natsgo.UserInfo(c.Username, c.Password)}
	case c.Token != "":
		return []natsgo.Option{natsgo.Token(c.Token)}
	case c.Credentials != "":
		return []natsgo.Option{natsgo.UserCredentialBytes([]byte(c.Credentials))}
	}
	return nil
}

// LogValue describes c for logs: how it authenticates and the username,
// never a secret.
func (c AuthConfig) LogValue() slog.Value {
	switch {
	case c.Username != "":
		return slog.GroupValue(slog.String("method", "password"), slog.String("username", c.Username))
	case c.Token != "":
		return slog.GroupValue(slog.String("method", "token"))
	case c.Credentials != "":
		return slog.GroupValue(slog.String("method", "credentials"))
	}
	return slog.GroupValue(slog.String("method", "none"))
}

// String describes c for fmt's %v and %s with its secrets replaced by
// "xxxxx".
func (c AuthConfig) String() string {
	return fmt.Sprintf("{Username:%s Password:%s Token:%s Credentials:%s}", c.Username, mask(c.Password), mask(c.Token), mask(c.Credentials))
}

// GoString describes c for fmt's %#v with its secrets replaced by "xxxxx".
func (c AuthConfig) GoString() string {
	return fmt.Sprintf("nats.AuthConfig{Username:%q, Password:%q, Token:%q, Credentials:%q}", c.Username, mask(c.Password), mask(c.Token), mask(c.Credentials))
}

// mask returns "xxxxx" for a secret that is set, and "" for one that is not.
func mask(secret string) string {
	if secret == "" {
		return ""
	}
	return redacted
}

// TLSConfig says how the Sink encrypts its connections and proves its
// identity to the servers. The zero value is plaintext, unless Config.URL
// uses tls://, which turns TLS on with the system's roots. The files are
// those of delivery.TLSFiles: the servers' CA, and the client certificate and
// key that servers which verify clients (verify: true) ask for; a zero
// ServerName means the host of each URL dialed.
type TLSConfig struct {
	// Enable dials the servers with TLS 1.2 or later. The other fields
	// need it, or a tls:// URL.
	Enable bool
	delivery.TLSFiles
}

// on reports whether the connection uses TLS, given the server list
// serverURL.
func (c TLSConfig) on(serverURL string) bool { return c.Enable || urlWantsTLS(serverURL) }

// validate reports what is wrong with c, loading its files to check them.
func (c TLSConfig) validate(serverURL string) []error {
	return c.Validate("nats", c.on(serverURL), "TLS is not enabled", "enable TLS")
}

// clientConfig reads c's files and returns the client's TLS configuration,
// or nil if TLS is off. Its errors name the file at fault.
func (c TLSConfig) clientConfig(serverURL string) (*tls.Config, error) {
	if !c.on(serverURL) {
		return nil, nil
	}
	tc, err := c.Config("")
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
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
