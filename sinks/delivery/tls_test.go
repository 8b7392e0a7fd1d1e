package delivery

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// files are PEM files for the tests: two self-signed certificates, each
// with its key, so that either serves as a CA file or a client
// certificate, and the key of one does not match the other.
type files struct {
	dir                      string
	cert, key, other, notPEM string
}

func newFiles(t *testing.T) files {
	t.Helper()
	f := files{dir: t.TempDir()}
	f.cert, f.key = selfSigned(t, f.dir, "a")
	f.other, _ = selfSigned(t, f.dir, "b")
	f.notPEM = filepath.Join(f.dir, "not.pem")
	if err := os.WriteFile(f.notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// selfSigned writes a self-signed certificate and its key into dir and
// returns their paths. Nothing here verifies a chain, so the certificate
// holds no more than a serial number.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", certDER)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	f := newFiles(t)
	missing := filepath.Join(f.dir, "missing.pem")
	unreadable := filepath.Join(f.dir, "unreadable.pem")
	if err := os.Mkdir(unreadable, 0o700); err != nil { // reading a directory fails, even as root
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		files    TLSFiles
		mentions [][]string // per error; empty: valid
	}{
		{"zero", TLSFiles{}, nil},
		{"CA", TLSFiles{CAFile: f.cert}, nil},
		{"client certificate", TLSFiles{CAFile: f.other, CertFile: f.cert, KeyFile: f.key}, nil},
		{"server name", TLSFiles{ServerName: "broker.test"}, nil},
		{"skip verification", TLSFiles{InsecureSkipVerify: true}, nil},
		{"certificate without key", TLSFiles{CertFile: f.cert},
			[][]string{{"TLS client certificate " + f.cert, "has no key file; give the key file too"}}},
		{"key without certificate", TLSFiles{KeyFile: f.key},
			[][]string{{"TLS client key " + f.key, "has no certificate file; give the certificate file too"}}},
		{"CA and skip verification", TLSFiles{CAFile: f.cert, InsecureSkipVerify: true},
			[][]string{{"TLS CA file " + f.cert, "verification is skipped; use one or the other"}}},
		{"both faults, files not read", TLSFiles{CAFile: missing, CertFile: f.cert, InsecureSkipVerify: true},
			[][]string{{"has no key file"}, {"one or the other"}}},
		{"missing CA file", TLSFiles{CAFile: missing}, [][]string{{"read TLS CA file", missing, "no such file"}}},
		{"unreadable CA file", TLSFiles{CAFile: unreadable}, [][]string{{"read TLS CA file", unreadable}}},
		{"CA file not PEM", TLSFiles{CAFile: f.notPEM},
			[][]string{{"TLS CA file " + f.notPEM + " holds no PEM certificate; give the CA certificates in PEM"}}},
		{"missing key file", TLSFiles{CertFile: f.cert, KeyFile: missing}, [][]string{{f.cert, missing, "no such file"}}},
		{"certificate and key swapped", TLSFiles{CertFile: f.key, KeyFile: f.cert},
			[][]string{{"load TLS client certificate " + f.key + " with key " + f.cert}}},
		{"key of another certificate", TLSFiles{CertFile: f.other, KeyFile: f.key}, [][]string{{f.other, f.key, "does not match"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.files.Check()
			if len(errs) != len(tt.mentions) {
				t.Fatalf("Check(%+v) = %q, want %d errors", tt.files, errs, len(tt.mentions))
			}
			for i, err := range errs {
				for _, m := range tt.mentions[i] {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("Check(%+v)[%d] = %q, want it to mention %q", tt.files, i, err, m)
					}
				}
			}
		})
	}
}

func TestCheckKeepsPathError(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	errs := TLSFiles{CAFile: missing}.Check()
	if len(errs) != 1 || !errors.Is(errs[0], fs.ErrNotExist) {
		t.Errorf("Check of a missing CA file = %v, want one error that is fs.ErrNotExist", errs)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	f := newFiles(t)
	for _, tt := range []struct {
		name       string
		files      TLSFiles
		serverName string
		wantName   string
	}{
		{"zero", TLSFiles{}, "", ""},
		{"host dialed", TLSFiles{}, "broker.test", "broker.test"},
		{"server name wins", TLSFiles{ServerName: "name.test"}, "broker.test", "name.test"},
		{"everything", TLSFiles{CAFile: f.other, CertFile: f.cert, KeyFile: f.key, ServerName: "name.test"}, "", "name.test"},
		{"skip verification", TLSFiles{InsecureSkipVerify: true}, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := tt.files.Config(tt.serverName)
			if err != nil {
				t.Fatalf("Config(%q) of %+v: %v", tt.serverName, tt.files, err)
			}
			if tc.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion = %x, want TLS 1.2 (%x)", tc.MinVersion, tls.VersionTLS12)
			}
			if tc.ServerName != tt.wantName {
				t.Errorf("ServerName = %q, want %q", tc.ServerName, tt.wantName)
			}
			if tc.InsecureSkipVerify != tt.files.InsecureSkipVerify {
				t.Errorf("InsecureSkipVerify = %v, want %v", tc.InsecureSkipVerify, tt.files.InsecureSkipVerify)
			}
			if (tc.RootCAs != nil) != (tt.files.CAFile != "") {
				t.Errorf("RootCAs = %v with CA file %q; want roots exactly when a CA file is given", tc.RootCAs, tt.files.CAFile)
			}
			wantCerts := 0
			if tt.files.CertFile != "" {
				wantCerts = 1
			}
			if len(tc.Certificates) != wantCerts {
				t.Errorf("%d client certificates, want %d", len(tc.Certificates), wantCerts)
			}
		})
	}
}

func TestGiven(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		files TLSFiles
		want  []string
	}{
		{TLSFiles{}, nil},
		{TLSFiles{CAFile: "ca.pem"}, []string{"a CA file"}},
		{TLSFiles{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "h", InsecureSkipVerify: true},
			[]string{"a CA file", "a client certificate file", "a client key file", "a server name", "skipping verification"}},
		{TLSFiles{KeyFile: "k.pem", InsecureSkipVerify: true}, []string{"a client key file", "skipping verification"}},
	} {
		if diff := cmp.Diff(tt.want, tt.files.Given()); diff != "" {
			t.Errorf("Given() of %+v mismatch (-want +got):\n%s", tt.files, diff)
		}
	}
}

// TestValidate checks the sink's prefix and the two cases: settings given
// while TLS is off, and Check's errors while it is on.
func TestValidate(t *testing.T) {
	t.Parallel()
	off := TLSFiles{CAFile: "ca.pem", ServerName: "h"}
	errs := off.Validate("redis", false, "the URL is redis://", "use rediss://")
	want := "redis: TLS settings (a CA file, a server name) are given but the URL is redis://; use rediss://, or remove them"
	if len(errs) != 1 || errs[0].Error() != want {
		t.Errorf("Validate with TLS off = %v, want [%s]", errs, want)
	}
	if errs := (TLSFiles{}).Validate("redis", false, "off", "on"); errs != nil {
		t.Errorf("Validate of no settings with TLS off = %v, want none", errs)
	}
	errs = TLSFiles{CertFile: "c.pem"}.Validate("kafka", true, "off", "on")
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "kafka: TLS client certificate c.pem has no key file") {
		t.Errorf("Validate with TLS on = %v, want Check's error prefixed with kafka:", errs)
	}
}

func TestLogValue(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		files TLSFiles
		want  string
	}{
		{TLSFiles{}, "[]"},
		{TLSFiles{ServerName: "h"}, "[server_name=h]"},
		{TLSFiles{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "h", InsecureSkipVerify: true},
			"[ca_file=ca.pem cert_file=c.pem key_file=k.pem server_name=h insecure_skip_verify=true]"},
	} {
		if got := tt.files.LogValue().String(); got != tt.want {
			t.Errorf("LogValue() of %+v = %s, want %s", tt.files, got, tt.want)
		}
		if got := slog.GroupValue(tt.files.LogAttrs()...).String(); got != tt.want {
			t.Errorf("LogAttrs() of %+v = %s, want %s", tt.files, got, tt.want)
		}
	}
}
