// TLS settings every sink configures alike: the authorities it trusts, the
// certificate it presents, the name the server's certificate must hold,
// and, for tests, skipping verification. How TLS is turned on (a flag, a
// tls://, amqps:// or rediss:// URL) is each sink's own, as is the prefix
// of its errors. Every error names the file or setting at fault.

package delivery

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// TLSFiles are the settings of a client's TLS connection. The zero value
// trusts the system's roots, presents no client certificate and checks the
// server's certificate against the host dialed. A sink's TLSConfig embeds
// it, or is an alias of it, and says how TLS is turned on.
type TLSFiles struct {
	// CAFile is a PEM file of the certificate authorities that sign the
	// server's certificate; they replace the system's trusted roots. Zero
	// means the system's roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its private
	// key, presented to a server that asks for one (mutual TLS). Both or
	// neither. Zero means no client certificate.
	CertFile, KeyFile string
	// ServerName is the host name the server's certificate must hold.
	// Zero means the host dialed.
	ServerName string
	// InsecureSkipVerify accepts any server certificate, which lets anyone
	// on the network read and change the traffic. For tests only; it
	// cannot be combined with CAFile.
	InsecureSkipVerify bool
}

// Given names the settings of f that are given, as an error lists them
// ("a CA file", "skipping verification"), for a sink to report them given
// while TLS is off. It is nil for the zero TLSFiles.
func (f TLSFiles) Given() []string {
	var given []string
	for _, s := range []struct {
		name string
		set  bool
	}{
		{"a CA file", f.CAFile != ""},
		{"a client certificate file", f.CertFile != ""},
		{"a client key file", f.KeyFile != ""},
		{"a server name", f.ServerName != ""},
		{"skipping verification", f.InsecureSkipVerify},
	} {
		if s.set {
			given = append(given, s.name)
		}
	}
	return given
}

// Validate reports what is wrong with f for the sink named sink, each error
// prefixed with that name: when on is false, that settings are given while
// TLS is off, saying why it is off (off) and how to turn it on (turnOn);
// when on, Check's errors.
func (f TLSFiles) Validate(sink string, on bool, off, turnOn string) []error {
	if !on {
		if given := f.Given(); len(given) > 0 {
			return []error{fmt.Errorf("%s: TLS settings (%s) are given but %s; %s, or remove them", sink, strings.Join(given, ", "), off, turnOn)}
		}
		return nil
	}
	var errs []error
	for _, err := range f.Check() {
		errs = append(errs, fmt.Errorf("%s: %w", sink, err))
	}
	return errs
}

// Check reports what is wrong with f for a connection that uses TLS: a
// client certificate without its key or the reverse, a CA file while
// verification is skipped, or else a file that cannot be read or parsed,
// which it loads to find out. Its errors carry no sink's prefix: the
// caller wraps them in its own.
func (f TLSFiles) Check() []error {
	var errs []error
	switch {
	case f.CertFile != "" && f.KeyFile == "":
		errs = append(errs, fmt.Errorf("TLS client certificate %s has no key file; give the key file too", f.CertFile))
	case f.CertFile == "" && f.KeyFile != "":
		errs = append(errs, fmt.Errorf("TLS client key %s has no certificate file; give the certificate file too", f.KeyFile))
	}
	if f.InsecureSkipVerify && f.CAFile != "" {
		errs = append(errs, fmt.Errorf("TLS CA file %s is given but verification is skipped; use one or the other", f.CAFile))
	}
	if len(errs) > 0 {
		return errs
	}
	if _, err := f.Config(""); err != nil {
		return []error{err}
	}
	return nil
}

// Config reads f's files and returns the client's TLS configuration: TLS
// 1.2 or later, the CA file's authorities as the roots, the client
// certificate, and f.ServerName as the name to verify, or serverName when
// that is zero. Its errors name the file at fault and carry no sink's
// prefix.
func (f TLSFiles) Config(serverName string) (*tls.Config, error) {
	if f.ServerName != "" {
		serverName = f.ServerName
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         serverName,
		InsecureSkipVerify: f.InsecureSkipVerify, // documented as for tests only
	}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read TLS CA file: %w", err) // *PathError names the file
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate; give the CA certificates in PEM (-----BEGIN CERTIFICATE-----)", f.CAFile)
		}
		tc.RootCAs = pool
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load TLS client certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// LogAttrs returns the settings of f that are given, for a sink's log
// group: the files' names, never their contents.
func (f TLSFiles) LogAttrs() []slog.Attr {
	var attrs []slog.Attr
	for _, a := range []slog.Attr{
		slog.String("ca_file", f.CAFile),
		slog.String("cert_file", f.CertFile),
		slog.String("key_file", f.KeyFile),
		slog.String("server_name", f.ServerName),
	} {
		if a.Value.String() != "" {
			attrs = append(attrs, a)
		}
	}
	if f.InsecureSkipVerify {
		attrs = append(attrs, slog.Bool("insecure_skip_verify", true))
	}
	return attrs
}

// LogValue describes f for logs: LogAttrs as a group.
func (f TLSFiles) LogValue() slog.Value { return slog.GroupValue(f.LogAttrs()...) }
