package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files of Options.TLS, in the server's directory.
const (
	caCertFile     = "ca.crt"
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
	clientCertFile = "client.crt"
	clientKeyFile  = "client.key"
)

// writeCertificates creates a certificate authority, a server certificate
// for 127.0.0.1 and localhost and a client certificate, both signed by it,
// writes them to s.Dir, and sets s's file names and the readers' TLS
// configuration.
func (s *Server) writeCertificates() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parse CA certificate: %w", err)
	}
	if err := writePEM(filepath.Join(s.Dir, caCertFile), "CERTIFICATE", caDER); err != nil {
		return err
	}
	for _, c := range []struct {
		cert, key string
		tmpl      *x509.Certificate
	}{
		{serverCertFile, serverKeyFile, &x509.Certificate{
			SerialNumber: big.NewInt(2),
			Subject:      pkix.Name{CommonName: "localhost"},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}},
		{clientCertFile, clientKeyFile, &x509.Certificate{
			SerialNumber: big.NewInt(3),
			Subject:      pkix.Name{CommonName: "outbox-relay"},
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("generate key for %s: %w", c.cert, err)
		}
		c.tmpl.NotBefore, c.tmpl.NotAfter = caTmpl.NotBefore, caTmpl.NotAfter
		c.tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, c.tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("create %s: %w", c.cert, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return fmt.Errorf("encode key of %s: %w", c.cert, err)
		}
		if err := writePEM(filepath.Join(s.Dir, c.cert), "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(s.Dir, c.key), "PRIVATE KEY", keyDER); err != nil {
			return err
		}
	}
	s.CAFile = filepath.Join(s.Dir, caCertFile)
	s.ClientCertFile = filepath.Join(s.Dir, clientCertFile)
	s.ClientKeyFile = filepath.Join(s.Dir, clientKeyFile)
	client, err := tls.LoadX509KeyPair(s.ClientCertFile, s.ClientKeyFile)
	if err != nil {
		return fmt.Errorf("load client certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	s.tls = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS12}
	return nil
}

// writePEM writes one PEM block of kind holding der to path, readable by
// its owner only.
func writePEM(path, kind string, der []byte) error {
	data := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
