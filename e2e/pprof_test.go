package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPprofOnlyOnLoopbackAddress checks that Go profiles are never served on
// the metrics address, which listens on every interface in the shipped
// configurations, and that the pprof address does not serve the command
// line, which holds the flags and so maybe secrets.
func TestPprofOnlyOnLoopbackAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped by -short")
	}
	e := newEnv(t)

	t.Run("pprof-addr", func(t *testing.T) {
		pprofAddr := freeAddr(t)
		p := e.startRun([]string{"--pprof-addr", pprofAddr})
		p.waitStreaming(60 * time.Second)
		metrics := p.metricsAddr(t)
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
			wantStatus(t, "http://"+metrics+path, http.StatusNotFound)
		}
		wantStatus(t, "http://"+pprofAddr+"/debug/pprof/heap", http.StatusOK)
		wantStatus(t, "http://"+pprofAddr+"/debug/pprof/", http.StatusOK)
		wantStatus(t, "http://"+pprofAddr+"/debug/pprof/cmdline", http.StatusNotFound)
		wantStatus(t, "http://"+pprofAddr+"/metrics", http.StatusNotFound)
		if code := p.term(60 * time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0\n%s", code, p.logText())
		}
	})

	t.Run("deprecated pprof flag", func(t *testing.T) {
		p := e.startRun([]string{"--pprof"})
		p.waitStreaming(60 * time.Second)
		wantStatus(t, "http://"+p.metricsAddr(t)+"/debug/pprof/", http.StatusNotFound)
		if p.logged("--pprof is deprecated; use --pprof-addr=127.0.0.1:6060") == 0 {
			t.Errorf("no deprecation warning for --pprof in the log:\n%s", p.logText())
		}
		if code := p.term(60 * time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0\n%s", code, p.logText())
		}
	})

	t.Run("refused on all interfaces", func(t *testing.T) {
		r := runCmd(t, e.command(t.Context(), "run", "--pprof-addr", "0.0.0.0:6060"), 30*time.Second)
		if r.code != 2 {
			t.Errorf("run --pprof-addr 0.0.0.0:6060: exit %d, want 2\n%s", r.code, r.stderr)
		}
		const want = `outbox-relay: --pprof-addr "0.0.0.0:6060": pprof must listen on a loopback address; use 127.0.0.1:6060`
		if !containsLine(r.stderr, want) {
			t.Errorf("run --pprof-addr 0.0.0.0:6060 printed:\n%s\nwant a line starting %q", r.stderr, want)
		}
	})
}

// containsLine reports whether a line of s starts with prefix.
func containsLine(s, prefix string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func wantStatus(t *testing.T, url string, want int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != want {
		t.Errorf("GET %s: %s, want %d", url, resp.Status, want)
	}
}
