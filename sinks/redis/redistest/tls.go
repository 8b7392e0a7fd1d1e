package redistest

import (
	"crypto/tls"
	"fmt"

	"github.com/outbox-relay/outbox-relay/internal/testpki"
)

// writeCertificates creates a certificate authority, a server certificate
// for 127.0.0.1 and localhost and a client certificate, both signed by it,
// writes them to s.Dir, and sets s's file names and the readers' TLS
// configuration.
func (s *Server) writeCertificates() error {
	pki, err := testpki.Write(s.Dir)
	if err != nil {
		return fmt.Errorf("write certificates: %w", err)
	}
	s.CAFile = pki.Path(testpki.CAFile)
	s.ClientCertFile = pki.Path(testpki.ClientCertFile)
	s.ClientKeyFile = pki.Path(testpki.ClientKeyFile)
	s.tls = &tls.Config{RootCAs: pki.Roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pki.Client}, MinVersion: tls.VersionTLS12}
	return nil
}
