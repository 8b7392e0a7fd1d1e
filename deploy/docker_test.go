package deploy_test

// Checks of the deployment files under deploy/, runnable without a Docker
// engine, the compose plugin or a cluster: the Dockerfile's build line is the
// Makefile's and builds a static binary; the compose stack's references,
// mounts and settings hold; the Kubernetes manifests decode strictly into the
// API types and carry the probes, limits and security settings the relay
// needs; the release configuration builds what make builds.

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// ---- Dockerfile ----

// dockerInstruction is one Dockerfile instruction, continuation lines joined.
type dockerInstruction struct {
	line int
	cmd  string // upper case
	args string
}

func parseDockerfile(t *testing.T, path string) []dockerInstruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerInstruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: a continuation line ends the file", path)
	}
	return out
}

// dockerStages splits instructions at each FROM.
func dockerStages(ins []dockerInstruction) [][]dockerInstruction {
	var stages [][]dockerInstruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	return stages
}

// execForm decodes the JSON array form of CMD, ENTRYPOINT and HEALTHCHECK.
func execForm(t *testing.T, in dockerInstruction, s string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil {
		t.Errorf("Dockerfile:%d: %s %s: want the exec (JSON array) form: %v", in.line, in.cmd, s, err)
	}
	return argv
}

// shellWords splits a simple command line as sh would, expanding $NAME and
// ${NAME} outside single quotes through lookup.
func shellWords(s string, lookup func(string) (string, bool)) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	expand := func(i int) (int, error) { // s[i] == '$'
		name, end := "", i+1
		if end < len(s) && s[end] == '{' {
			j := strings.IndexByte(s[end:], '}')
			if j < 0 {
				return 0, fmt.Errorf("unterminated ${ in %q", s)
			}
			name, end = s[end+1:end+j], end+j+1
		} else {
			for end < len(s) && (s[end] == '_' || s[end] >= 'A' && s[end] <= 'Z' || s[end] >= 'a' && s[end] <= 'z' || s[end] >= '0' && s[end] <= '9') {
				end++
			}
			name = s[i+1 : end]
		}
		v, ok := lookup(name)
		if !ok {
			return 0, fmt.Errorf("unknown variable $%s in %q", name, s)
		}
		cur.WriteString(v)
		return end - 1, nil
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			inWord = true
			for i++; ; i++ {
				if i >= len(s) {
					return nil, fmt.Errorf(`unterminated " in %q`, s)
				}
				if s[i] == '"' {
					break
				}
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0:
					i++
					cur.WriteByte(s[i])
				case s[i] == '$':
					var err error
					if i, err = expand(i); err != nil {
						return nil, err
					}
				default:
					cur.WriteByte(s[i])
				}
			}
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == '$':
			var err error
			if i, err = expand(i); err != nil {
				return nil, err
			}
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case strings.IndexByte(";&|<>`()", c) >= 0:
			return nil, fmt.Errorf("%q is not a simple command (%q)", s, c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// withOutput returns argv with the value of -o replaced by out.
func withOutput(t *testing.T, argv []string, out string) []string {
	t.Helper()
	i := slices.Index(argv, "-o")
	if i < 0 || i+1 >= len(argv) {
		t.Fatalf("no -o in %q", argv)
	}
	argv = slices.Clone(argv)
	argv[i+1] = out
	return argv
}

// makeDryRun returns the commands `make -n target vars...` prints.
func makeDryRun(t *testing.T, target string, vars ...string) []string {
	t.Helper()
	args := append([]string{"-s", "--no-print-directory", "-n", target}, vars...)
	cmd := exec.Command("make", args...)
	cmd.Dir = deployRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// makeBuildLine is the go build command of the Makefile's build target.
func makeBuildLine(t *testing.T) []string {
	t.Helper()
	for _, line := range makeDryRun(t, "build", "GO=go", "VERSION="+deployTestVersion, "COMMIT="+deployTestCommit) {
		if strings.Contains(line, "go build") {
			argv, err := shellWords(line, func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			return argv
		}
	}
	t.Fatal("make -n build prints no go build line")
	return nil
}

// dockerBuildLine is the go build command of the Dockerfile, its ARGs given
// the test's values, and the line it is on.
func dockerBuildLine(t *testing.T) ([]string, dockerInstruction) {
	t.Helper()
	stages := dockerStages(parseDockerfile(t, filepath.Join(deployRoot, "deploy/Dockerfile")))
	for _, stage := range stages {
		args := map[string]bool{}
		for _, in := range stage {
			switch in.cmd {
			case "ARG":
				name, _, _ := strings.Cut(in.args, "=")
				args[name] = true
			case "RUN":
				if !strings.Contains(in.args, "go build") {
					continue
				}
				argv, err := shellWords(in.args, func(name string) (string, bool) {
					v := map[string]string{"VERSION": deployTestVersion, "COMMIT": deployTestCommit}[name]
					return v, args[name] && v != ""
				})
				if err != nil {
					t.Fatalf("Dockerfile:%d: %v (VERSION and COMMIT must be ARGs of the stage, before the RUN)", in.line, err)
				}
				return argv, in
			}
		}
	}
	t.Fatal("Dockerfile: no RUN with go build")
	return nil, dockerInstruction{}
}

// TestDockerfileBuildsLikeMake checks that the Dockerfile's go build line is
// the Makefile's, then runs it: the binary is static, stripped, reports the
// version and commit it was given, and answers the image's HEALTHCHECK.
func TestDockerfileBuildsLikeMake(t *testing.T) {
	docker, in := dockerBuildLine(t)
	mk := makeBuildLine(t)
	if diff := cmp.Diff(withOutput(t, mk, "OUT"), withOutput(t, docker, "OUT")); diff != "" {
		t.Fatalf("Dockerfile:%d go build differs from the Makefile's build target (-make +Dockerfile):\n%s", in.line, diff)
	}

	bin := filepath.Join(t.TempDir(), "outbox-relay")
	argv := withOutput(t, docker, bin)
	var envs []string
	for len(argv) > 0 && strings.Contains(argv[0], "=") {
		envs, argv = append(envs, argv[0]), argv[1:]
	}
	if !slices.Contains(envs, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile:%d: build without CGO_ENABLED=0: %q", in.line, envs)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, argv[0], argv[1:]...)
	build.Dir = deployRoot
	build.Env = append(os.Environ(), envs...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(docker, " "), err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a PT_INTERP program header: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("binary needs shared libraries %q (%v), want none", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: -ldflags -s did not apply")
	}

	out, err := exec.Command(bin, "version").CombinedOutput()
	want := fmt.Sprintf("outbox-relay %s (commit %s, ", deployTestVersion, deployTestCommit)
	if err != nil || !strings.HasPrefix(string(out), want) {
		t.Errorf("outbox-relay version = %q, %v; want it to start %q", out, err, want)
	}

	t.Run("healthcheck", func(t *testing.T) {
		hc := dockerfileHealthcheck(t)
		if len(hc) == 0 {
			t.Fatal("no HEALTHCHECK command")
		}
		if hc[0] != "outbox-relay" {
			t.Fatalf("HEALTHCHECK runs %q, want the relay binary", hc)
		}
		for _, tc := range []struct {
			status int
			ok     bool
		}{{http.StatusOK, true}, {http.StatusServiceUnavailable, false}} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/healthz" {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tc.status)
			}))
			// As in the container: the relay's settings are in the environment.
			cmd := exec.Command(bin, hc[1:]...)
			cmd.Env = []string{"OUTBOX_RELAY_METRICS_ADDR=" + strings.TrimPrefix(srv.URL, "http://")}
			out, err := cmd.CombinedOutput()
			srv.Close()
			if (err == nil) != tc.ok {
				t.Errorf("HEALTHCHECK %q against /healthz answering %d: %v, want success %v\n%s", hc, tc.status, err, tc.ok, out)
			}
		}
	})
}

// dockerfileHealthcheck is the final stage's HEALTHCHECK command.
func dockerfileHealthcheck(t *testing.T) []string {
	t.Helper()
	stages := dockerStages(parseDockerfile(t, filepath.Join(deployRoot, "deploy/Dockerfile")))
	for _, in := range stages[len(stages)-1] {
		if in.cmd == "HEALTHCHECK" {
			_, cmd, ok := strings.Cut(in.args, "CMD ")
			if !ok {
				t.Fatalf("Dockerfile:%d: HEALTHCHECK %s: want HEALTHCHECK [options] CMD [...]", in.line, in.args)
			}
			return execForm(t, in, cmd)
		}
	}
	return nil
}

// TestDockerfileImage checks the image the Dockerfile describes: pinned
// bases, a static final base, a non-root numeric user, the binary on PATH,
// ENTRYPOINT outbox-relay, CMD run, the metrics port, a HEALTHCHECK and the
// OCI labels.
func TestDockerfileImage(t *testing.T) {
	path := filepath.Join(deployRoot, "deploy/Dockerfile")
	stages := dockerStages(parseDockerfile(t, path))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(stages))
	}
	for _, stage := range stages {
		from := stage[0]
		ref := strings.Fields(from.args)
		image := ref[len(ref)-1]
		if len(ref) >= 3 && strings.EqualFold(ref[len(ref)-2], "AS") {
			image = ref[len(ref)-3]
		}
		_, tag, hasTag := strings.Cut(image[strings.LastIndex(image, "/")+1:], ":")
		if !strings.Contains(image, "@sha256:") && (!hasTag || tag == "" || tag == "latest" || strings.Contains(tag, "$")) {
			t.Errorf("Dockerfile:%d: FROM %s: pin the base image by tag or digest", from.line, image)
		}
	}
	if from := stages[0][0].args; !strings.HasPrefix(from, "golang:1.26") {
		t.Errorf("build stage FROM %s, want golang:1.26 (go.mod's go version)", from)
	}

	final := stages[len(stages)-1]
	if base := final[0].args; base != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("runtime stage FROM %s, want gcr.io/distroless/static-debian12:nonroot", base)
	}
	last := map[string]dockerInstruction{}
	for _, in := range final {
		last[in.cmd] = in
	}

	user, ok := last["USER"]
	if !ok {
		t.Error("runtime stage has no USER: it would run as root")
	} else {
		uid, _, _ := strings.Cut(user.args, ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("Dockerfile:%d: USER %s: want a numeric non-root uid, so that Kubernetes can check runAsNonRoot", user.line, user.args)
		}
	}

	if ep := execForm(t, last["ENTRYPOINT"], last["ENTRYPOINT"].args); !slices.Equal(ep, []string{"outbox-relay"}) {
		t.Errorf("ENTRYPOINT %q, want [\"outbox-relay\"]", ep)
	}
	if c := execForm(t, last["CMD"], last["CMD"].args); !slices.Equal(c, []string{"run"}) {
		t.Errorf("CMD %q, want [\"run\"]", c)
	}

	var copied bool
	for _, in := range final {
		f := strings.Fields(in.args)
		if in.cmd == "COPY" && len(f) == 3 && strings.HasPrefix(f[0], "--from=") {
			if f[2] != "/usr/local/bin/outbox-relay" {
				t.Errorf("Dockerfile:%d: the binary goes to %s, want /usr/local/bin/outbox-relay (on PATH, for ENTRYPOINT and HEALTHCHECK)", in.line, f[2])
			}
			copied = true
		}
	}
	if !copied {
		t.Error("runtime stage copies no binary from the build stage")
	}

	port := metricsPort(t, nil)
	if e := last["EXPOSE"]; e.args != strconv.Itoa(port) {
		t.Errorf("EXPOSE %q, want the default metrics port %d", e.args, port)
	}

	hc, ok := last["HEALTHCHECK"]
	if !ok || strings.HasPrefix(hc.args, "NONE") {
		t.Error("runtime stage has no HEALTHCHECK")
	} else {
		opts := map[string]time.Duration{}
		for _, f := range strings.Fields(hc.args) {
			if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "--") && k != "--retries" {
				d, err := time.ParseDuration(v)
				if err != nil {
					t.Errorf("HEALTHCHECK %s: %v", f, err)
				}
				opts[k] = d
			}
		}
		if opts["--timeout"] == 0 || opts["--interval"] == 0 || opts["--timeout"] >= opts["--interval"] {
			t.Errorf("HEALTHCHECK %s: want an --interval and a shorter --timeout", hc.args)
		}
		if c := dockerfileHealthcheck(t); !slices.Equal(c[:min(2, len(c))], []string{"outbox-relay", "healthcheck"}) {
			t.Errorf("HEALTHCHECK runs %q, want outbox-relay healthcheck (the image has no curl)", c)
		}
	}

	labels := map[string]string{}
	for _, in := range final {
		if in.cmd != "LABEL" {
			continue
		}
		words, err := shellWords(in.args, func(name string) (string, bool) { return "${" + name + "}", true })
		if err != nil {
			t.Fatalf("Dockerfile:%d: %v", in.line, err)
		}
		for _, w := range words {
			k, v, _ := strings.Cut(w, "=")
			labels[k] = v
		}
	}
	for _, k := range []string{"title", "description", "source", "version", "revision"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("no LABEL org.opencontainers.image.%s", k)
		}
	}
	if labels["org.opencontainers.image.version"] != "${VERSION}" || labels["org.opencontainers.image.revision"] != "${COMMIT}" {
		t.Errorf("LABEL version %q, revision %q: want the build args ${VERSION} and ${COMMIT}", labels["org.opencontainers.image.version"], labels["org.opencontainers.image.revision"])
	}
}

// TestDockerfileContext checks .dockerignore against what the build reads:
// no file of the packages of cmd/outbox-relay (sources and embedded files),
// nor go.mod and go.sum, is left out of the build context, and the large and
// irrelevant things are.
func TestDockerfileContext(t *testing.T) {
	f, err := os.Open(filepath.Join(deployRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`,
		"./cmd/outbox-relay")
	cmd.Dir = deployRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs(deployRoot)
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, p := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatal(err)
		}
		needed = append(needed, filepath.ToSlash(rel))
	}
	if len(needed) < 10 {
		t.Fatalf("go list found %d files the build reads; want the relay's packages", len(needed))
	}
	for _, p := range needed {
		if ignored, err := pm.MatchesOrParentMatches(p); err != nil || ignored {
			t.Errorf(".dockerignore leaves %s out of the build context, and the build needs it (%v)", p, err)
		}
	}
	for _, p := range []string{".git", "bin/outbox-relay", "outbox-relay", "e2e/harness_test.go", "cdc/stream_test.go"} {
		if ignored, _ := pm.MatchesOrParentMatches(p); !ignored {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
}

// TestDockerfileMakeImage checks the Makefile's image target: it builds
// deploy/Dockerfile from the repository root, passes the version and commit
// as the ARGs the Dockerfile declares, and tags the image with the version.
func TestDockerfileMakeImage(t *testing.T) {
	lines := makeDryRun(t, "image", "VERSION="+deployTestVersion, "COMMIT="+deployTestCommit)
	if len(lines) != 1 {
		t.Fatalf("make -n image prints %q, want one docker build", lines)
	}
	argv, err := shellWords(lines[0], func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"docker", "build", "-f", "deploy/Dockerfile",
		"--build-arg", "VERSION=" + deployTestVersion, "--build-arg", "COMMIT=" + deployTestCommit,
		"-t", "outbox-relay:" + deployTestVersion, "."}
	if diff := cmp.Diff(want, argv); diff != "" {
		t.Errorf("make image (-want +got):\n%s", diff)
	}
	declared := map[string]bool{}
	for _, in := range parseDockerfile(t, filepath.Join(deployRoot, "deploy/Dockerfile")) {
		if in.cmd == "ARG" {
			name, _, _ := strings.Cut(in.args, "=")
			declared[name] = true
		}
	}
	for i, a := range argv {
		if a == "--build-arg" && i+1 < len(argv) {
			if name, _, _ := strings.Cut(argv[i+1], "="); !declared[name] {
				t.Errorf("make image passes --build-arg %s, which the Dockerfile does not declare", name)
			}
		}
	}
}
