package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profileRun is the extra backlog run with the relay's profiles on.
type profileRun struct {
	dir    string
	result result
	files  []string
}

// profile runs --profile-workload once more with --pprof-addr, saving a 20 s
// CPU profile from the relay's start, and its allocation and heap profiles
// at the end.
func (b *bench) profile(ctx context.Context) (*profileRun, error) {
	dir, err := filepath.Abs(b.o.profileDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := &profileRun{dir: dir}
	w, _ := lookupWorkload(b.o.profileW)
	w = w.scaled(b.o)
	b.logf("profile run: %s with --pprof-addr, profiles in %s", w.name, dir)
	r, err := b.runOnce(ctx, w, 0, p)
	if err != nil {
		return nil, err
	}
	p.result = r
	b.logf("profile run: %s", r.oneLine())
	for _, pr := range []struct{ file, index string }{
		{"cpu.pprof", ""}, {"allocs.pprof", "alloc_space"}, {"allocs.pprof", "alloc_objects"}, {"heap.pprof", "inuse_space"},
	} {
		args := []string{"tool", "pprof", "-top", "-nodecount=40"}
		name := strings.TrimSuffix(pr.file, ".pprof")
		if pr.index != "" {
			args = append(args, "-sample_index="+pr.index)
			name = pr.index
		}
		args = append(args, b.relayBin, filepath.Join(dir, pr.file))
		out, err := exec.CommandContext(ctx, "go", args...).Output()
		if err != nil {
			b.logf("go tool pprof %s: %v", pr.file, err)
			continue
		}
		top := filepath.Join(dir, name+"-top.txt")
		if err := os.WriteFile(top, out, 0o644); err != nil {
			return nil, err
		}
		p.files = append(p.files, top)
	}
	return p, nil
}

// captureCPU saves a 20 s CPU profile of the relay as soon as its HTTP
// server answers.
func (p *profileRun) captureCPU(ctx context.Context, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.fetch(ctx, "http://"+addr+"/debug/pprof/profile?seconds=20", "cpu.pprof", time.Minute)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("capture CPU profile: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// captureAllocs saves the relay's allocation and heap profiles.
func (p *profileRun) captureAllocs(ctx context.Context, addr string) error {
	return errors.Join(
		p.fetch(ctx, "http://"+addr+"/debug/pprof/allocs", "allocs.pprof", 30*time.Second),
		p.fetch(ctx, "http://"+addr+"/debug/pprof/heap", "heap.pprof", 30*time.Second))
}

func (p *profileRun) fetch(ctx context.Context, url, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return os.WriteFile(filepath.Join(p.dir, file), b, 0o644)
}
