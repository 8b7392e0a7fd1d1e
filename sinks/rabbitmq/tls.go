package rabbitmq

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// TLSConfig says how the Sink checks the server's certificate and proves
// its own identity, on an amqps:// URL. The zero value trusts the system's
// roots and presents no client certificate.
type TLSConfig struct {
	// CAFile is a PEM file of the certificate authorities that sign the
	// server's certificate; they replace the system's trusted roots. Zero
	// means the system's roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its private
	// key, presented to a server that asks for one (ssl_options.verify =
	// verify_peer). Both or neither. Zero means no client certificate.
	CertFile, KeyFile string
	// ServerName is the host name the server's certificate must hold.
	// Zero means the host of the URL.
	ServerName string
	// InsecureSkipVerify accepts any server certificate, which lets anyone
	// on the network read and change the traffic. For tests only; it
	// cannot be combined with CAFile.
	InsecureSkipVerify bool
}

// set lists the settings of c that are given.
func (c TLSConfig) set() []string {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"a CA file", c.CAFile != ""},
		{"a client certificate file", c.CertFile != ""},
		{"a client key file", c.KeyFile != ""},
		{"a server name", c.ServerName != ""},
		{"skipping verification", c.InsecureSkipVerify},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	return set
}

// validate reports what is wrong with c for a URL that uses TLS (on) or
// not, loading its files to check them.
func (c TLSConfig) validate(on bool) []error {
	if !on {
		if set := c.set(); len(set) > 0 {
			return []error{fmt.Errorf("rabbitmq: TLS settings (%s) are given but the URL is amqp://; use amqps:// (port 5671 by default), or remove them", strings.Join(set, ", "))}
		}
		return nil
	}
	var errs []error
	switch {
	case c.CertFile != "" && c.KeyFile == "":
		errs = append(errs, fmt.Errorf("rabbitmq: TLS client certificate %s has no key file; give the key file too", c.CertFile))
	case c.CertFile == "" && c.KeyFile != "":
		errs = append(errs, fmt.Errorf("rabbitmq: TLS client key %s has no certificate file; give the certificate file too", c.KeyFile))
	}
	if c.InsecureSkipVerify && c.CAFile != "" {
		errs = append(errs, fmt.Errorf("rabbitmq: TLS CA file %s is given but verification is skipped; use one or the other", c.CAFile))
	}
	if len(errs) > 0 {
		return errs
	}
	if _, err := c.config(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// config reads c's files and returns the client's TLS configuration. Its
// errors name the file at fault.
func (c TLSConfig) config() (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, // documented as for tests only
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("rabbitmq: read TLS CA file: %w", err) // *PathError names the file
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("rabbitmq: TLS CA file %s holds no PEM certificate; give the CA certificates in PEM (-----BEGIN CERTIFICATE-----)", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("rabbitmq: load TLS client certificate %s with key %s: %w", c.CertFile, c.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// LogValue describes c for logs: the settings that are given.
func (c TLSConfig) LogValue() slog.Value {
	var attrs []slog.Attr
	for _, a := range []slog.Attr{
		slog.String("ca_file", c.CAFile),
		slog.String("cert_file", c.CertFile),
		slog.String("key_file", c.KeyFile),
		slog.String("server_name", c.ServerName),
	} {
		if a.Value.String() != "" {
			attrs = append(attrs, a)
		}
	}
	if c.InsecureSkipVerify {
		attrs = append(attrs, slog.Bool("insecure_skip_verify", true))
	}
	return slog.GroupValue(attrs...)
}
