package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

// TestWrite checks that the files verify as a chain: the server for its
// names under the CA and not under the other CA, the client for client
// authentication, and that the keys are private to their owner.
func TestWrite(t *testing.T) {
	p, err := Write(t.TempDir(), "kafka.test")
	if err != nil {
		t.Fatal(err)
	}
	pool := func(name string) *x509.CertPool {
		data, err := os.ReadFile(p.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			t.Fatalf("%s holds no certificate", name)
		}
		return pool
	}
	// LoadX509KeyPair also checks that each key matches its certificate,
	// and parses the certificate into Leaf.
	load := func(cert, key string) *x509.Certificate {
		c, err := tls.LoadX509KeyPair(p.Path(cert), p.Path(key))
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	leaf := load(ServerCertFile, ServerKeyFile)
	for _, name := range []string{"localhost", "127.0.0.1", "kafka.test"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool(CAFile)}); err != nil {
			t.Errorf("server certificate for %s under the CA: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool(OtherCAFile)}); err == nil {
		t.Error("the server certificate verifies under the other CA")
	}
	if _, err := load(ClientCertFile, ClientKeyFile).Verify(x509.VerifyOptions{Roots: p.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	for _, name := range []string{ServerKeyFile, ClientKeyFile} {
		fi, err := os.Stat(p.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
}
