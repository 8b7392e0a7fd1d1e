// Package testpki makes throwaway certificates for tests of TLS
// connections: a certificate authority; a server certificate for
// localhost and 127.0.0.1 and a client certificate, both signed by it; and
// a second authority that signed neither, to be refused. They are kept in
// memory and written as PEM files, valid from an hour ago for a day.
package testpki

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

// The files Write writes, in its directory. Certificates are readable by
// everyone, keys (PKCS #8) by their owner only.
const (
	CAFile         = "ca.pem"
	OtherCAFile    = "other-ca.pem" // an authority that signed neither certificate
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server-key.pem"
	ClientCertFile = "client.pem"
	ClientKeyFile  = "client-key.pem"
)

// PKI is a certificate authority and the certificates it signed.
type PKI struct {
	Dir    string // where the files are
	CA     *x509.Certificate
	Roots  *x509.CertPool // CA alone
	Server tls.Certificate
	Client tls.Certificate // common name outbox-relay
}

// Path returns the path of one of the files, such as CAFile.
func (p *PKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// Write creates a PKI and writes its files into dir, which must exist. The
// server certificate names localhost, 127.0.0.1 and dnsNames.
func Write(dir string, dnsNames ...string) (*PKI, error) {
	caKey, ca, err := authority("outbox-relay test CA")
	if err != nil {
		return nil, err
	}
	_, other, err := authority("another test CA")
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CA: ca, Roots: x509.NewCertPool()}
	p.Roots.AddCert(ca)
	cn := "localhost"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	if p.Server, err = issue(caKey, ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    append([]string{"localhost"}, dnsNames...),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, err
	}
	if p.Client, err = issue(caKey, ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "outbox-relay"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	if err := p.write(CAFile, "CERTIFICATE", ca.Raw, 0o644); err != nil {
		return nil, err
	}
	if err := p.write(OtherCAFile, "CERTIFICATE", other.Raw, 0o644); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		cert, key string
		tc        tls.Certificate
	}{{ServerCertFile, ServerKeyFile, p.Server}, {ClientCertFile, ClientKeyFile, p.Client}} {
		der, err := x509.MarshalPKCS8PrivateKey(c.tc.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("encode the key of %s: %w", c.cert, err)
		}
		if err := p.write(c.cert, "CERTIFICATE", c.tc.Certificate[0], 0o644); err != nil {
			return nil, err
		}
		if err := p.write(c.key, "PRIVATE KEY", der, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// write writes one PEM block of kind holding der to the file name.
func (p *PKI) write(name, kind string, der []byte, mode os.FileMode) error {
	path := p.Path(name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// authority returns a new self-signed certificate authority and its key.
func authority(name string) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate the key of %s: %w", name, err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	cert, err := create(tmpl, tmpl, key, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", name, err)
	}
	return key, cert, nil
}

// issue returns a certificate for tmpl with a new key, signed by ca.
func issue(caKey *ecdsa.PrivateKey, ca, tmpl *x509.Certificate) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate the key of %s: %w", tmpl.Subject.CommonName, err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	cert, err := create(tmpl, ca, key, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create the certificate of %s: %w", tmpl.Subject.CommonName, err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// create signs tmpl for key with parent's signer, giving it a random
// serial number and a validity from an hour ago for a day.
func create(tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
