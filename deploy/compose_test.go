package deploy_test

// Checks of the deployment files under deploy/, runnable without a Docker
// engine, the compose plugin or a cluster: the Dockerfile's build line is the
// Makefile's and builds a static binary; the compose stack's references,
// mounts and settings hold; the Kubernetes manifests decode strictly into the
// API types and carry the probes, limits and security settings the relay
// needs; the release configuration builds what make builds.

import (
	"encoding/json"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// ---- deploy/compose ----

type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]*struct{}      `json:"volumes"`
}

type composeService struct {
	Image           string                       `json:"image"`
	Build           *composeBuild                `json:"build"`
	Entrypoint      []string                     `json:"entrypoint"`
	Command         []string                     `json:"command"`
	Environment     map[string]string            `json:"environment"`
	EnvFile         []string                     `json:"env_file"`
	DependsOn       map[string]composeDependency `json:"depends_on"`
	Healthcheck     *composeHealthcheck          `json:"healthcheck"`
	Volumes         []string                     `json:"volumes"`
	Ports           []string                     `json:"ports"`
	Restart         string                       `json:"restart"`
	StopGracePeriod string                       `json:"stop_grace_period"`
	ReadOnly        bool                         `json:"read_only"`
	CapDrop         []string                     `json:"cap_drop"`
	SecurityOpt     []string                     `json:"security_opt"`
}

type composeBuild struct {
	Context    string `json:"context"`
	Dockerfile string `json:"dockerfile"`
}

type composeDependency struct {
	Condition string `json:"condition"`
}

type composeHealthcheck struct {
	Test        []string `json:"test"`
	Interval    string   `json:"interval"`
	Timeout     string   `json:"timeout"`
	Retries     int      `json:"retries"`
	StartPeriod string   `json:"start_period"`
	Disable     bool     `json:"disable"`
}

// composeMount is a bind mount: a file or directory of the repository seen
// at target in the container.
type composeMount struct{ source, target string }

const composeDir = deployRoot + "/deploy/compose"

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	return c
}

// mounts returns s's bind mounts; named volumes must be declared.
func (c composeFile) mounts(t *testing.T, name string) []composeMount {
	t.Helper()
	var ms []composeMount
	for _, v := range c.Services[name].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			t.Errorf("service %s: volume %q: want source:target[:ro]", name, v)
			continue
		}
		src, dst := parts[0], parts[1]
		if !strings.HasPrefix(dst, "/") {
			t.Errorf("service %s: volume %q: the target must be absolute", name, v)
		}
		switch {
		case strings.HasPrefix(src, "./") || strings.HasPrefix(src, "../"):
			ms = append(ms, composeMount{filepath.Join(composeDir, src), dst})
		case strings.HasPrefix(src, "/") || strings.HasPrefix(src, "~"):
			t.Errorf("service %s: volume %q: mount files of the repository, by a path relative to compose.yaml", name, v)
		default:
			if _, ok := c.Volumes[src]; !ok {
				t.Errorf("service %s: volume %q: named volume %s is not declared", name, v, src)
			}
		}
	}
	return ms
}

// hostPath returns the file of the repository seen at target in the
// container of service name.
func (c composeFile) hostPath(t *testing.T, name, target string) (string, bool) {
	t.Helper()
	for _, m := range c.mounts(t, name) {
		if target == m.target {
			return m.source, true
		}
		if rest, ok := strings.CutPrefix(target, m.target+"/"); ok {
			return filepath.Join(m.source, rest), true
		}
	}
	return "", false
}

// relayEnv returns the environment of a service running the relay image:
// its env files, then its environment.
func (c composeFile) relayEnv(t *testing.T, name string) map[string]string {
	t.Helper()
	s := c.Services[name]
	env := map[string]string{}
	for _, f := range s.EnvFile {
		b, err := os.ReadFile(filepath.Join(composeDir, f))
		if err != nil {
			t.Fatalf("service %s: env_file: %v", name, err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok || k == "" || strings.ContainsAny(k, " \t") {
				t.Errorf("%s:%d: want NAME=value, got %q", f, i+1, line)
				continue
			}
			env[k] = v
		}
	}
	for k, v := range s.Environment {
		env[k] = v
	}
	return env
}

// isRelay reports whether a service runs the image of deploy/Dockerfile.
func (s composeService) isRelay() bool {
	return s.Build != nil && filepath.ToSlash(s.Build.Dockerfile) == "deploy/Dockerfile"
}

// TestComposeStack checks deploy/compose/compose.yaml without Docker: it
// decodes strictly; every dependency, mount and env file exists; the relay
// services run setup and then run with known settings; Prometheus scrapes the
// relay with the alert rules (checked by promtool as the container would see
// them); Grafana has the data source and the dashboard.
func TestComposeStack(t *testing.T) {
	c := loadCompose(t)

	t.Run("services", func(t *testing.T) {
		hostPorts := map[string]string{}
		for name, s := range c.Services {
			if s.Image == "" {
				t.Errorf("service %s: no image", name)
			} else if _, tag, ok := strings.Cut(s.Image, ":"); !ok || tag == "latest" {
				t.Errorf("service %s: image %s: pin a tag", name, s.Image)
			}
			if s.Build != nil {
				ctxDir := filepath.Join(composeDir, s.Build.Context)
				for _, f := range []string{"go.mod", s.Build.Dockerfile} {
					if _, err := os.Stat(filepath.Join(ctxDir, f)); err != nil {
						t.Errorf("service %s: build context %s has no %s: %v", name, s.Build.Context, f, err)
					}
				}
			}
			for dep, d := range s.DependsOn {
				target, ok := c.Services[dep]
				switch {
				case !ok:
					t.Errorf("service %s depends on %s, which is not a service", name, dep)
				case d.Condition == "service_healthy" && (target.Healthcheck == nil || target.Healthcheck.Disable || len(target.Healthcheck.Test) == 0):
					t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
				case d.Condition == "service_completed_successfully" && (target.Restart == "always" || target.Restart == "unless-stopped"):
					t.Errorf("service %s waits for %s to complete, which restarts forever", name, dep)
				case d.Condition != "service_started" && d.Condition != "service_healthy" && d.Condition != "service_completed_successfully":
					t.Errorf("service %s depends on %s with condition %q", name, dep, d.Condition)
				}
			}
			if h := s.Healthcheck; h == nil {
				t.Errorf("service %s: no healthcheck (write `disable: true` for one-shot or client services)", name)
			} else if !h.Disable {
				if len(h.Test) < 2 || (h.Test[0] != "CMD" && h.Test[0] != "CMD-SHELL") {
					t.Errorf("service %s: healthcheck test %q: want [CMD, ...]", name, h.Test)
				}
				for _, d := range []string{h.Interval, h.Timeout, h.StartPeriod} {
					if _, err := time.ParseDuration(d); d != "" && err != nil {
						t.Errorf("service %s: healthcheck: %v", name, err)
					}
				}
			}
			for _, m := range c.mounts(t, name) {
				st, err := os.Stat(m.source)
				if err != nil {
					t.Errorf("service %s mounts %s, which does not exist: %v", name, m.source, err)
					continue
				}
				if !st.IsDir() && strings.HasSuffix(m.source, ".sh") {
					if out, err := exec.Command("sh", "-n", m.source).CombinedOutput(); err != nil {
						t.Errorf("service %s: %s: sh -n: %v\n%s", name, m.source, err, out)
					}
				}
			}
			for _, f := range s.EnvFile {
				if _, err := os.Stat(filepath.Join(composeDir, f)); err != nil {
					t.Errorf("service %s: env_file: %v", name, err)
				}
			}
			for _, p := range s.Ports {
				parts := strings.Split(p, ":")
				for _, n := range parts[max(0, len(parts)-2):] {
					if _, err := strconv.Atoi(n); err != nil {
						t.Errorf("service %s: port %q: %v", name, p, err)
					}
				}
				if len(parts) >= 2 {
					host := strings.Join(parts[:len(parts)-1], ":")
					if other, ok := hostPorts[host]; ok {
						t.Errorf("services %s and %s both publish host port %s", other, name, host)
					}
					hostPorts[host] = name
				}
			}
			var names []string
			for k := range s.Environment {
				names = append(names, k)
			}
			checkSettingNames(t, "service "+name, names)
		}
	})

	var setupSvc, runSvc string
	for name, s := range c.Services {
		if !s.isRelay() {
			continue
		}
		switch {
		case slices.Equal(s.Command, []string{"setup"}):
			setupSvc = name
		case slices.Equal(s.Command, []string{"run"}):
			runSvc = name
		default:
			t.Errorf("relay service %s runs %q, want setup or run", name, s.Command)
		}
	}
	if setupSvc == "" || runSvc == "" {
		t.Fatalf("want one relay service running setup and one running run; have %q and %q", setupSvc, runSvc)
	}
	settings := c.relayEnv(t, runSvc)
	port := metricsPort(t, settings)

	t.Run("relay", func(t *testing.T) {
		for _, name := range []string{setupSvc, runSvc} {
			env := c.relayEnv(t, name)
			names := make([]string, 0, len(env))
			for k := range env {
				names = append(names, k)
				if !strings.HasPrefix(k, "OUTBOX_RELAY_") {
					t.Errorf("service %s: %s is not a relay setting", name, k)
				}
			}
			checkSettingNames(t, "service "+name, names)
			if env["OUTBOX_RELAY_PG_DSN"] == "" {
				t.Errorf("service %s: no OUTBOX_RELAY_PG_DSN", name)
			}
		}
		run := c.Services[runSvc]
		if d := run.DependsOn[setupSvc]; d.Condition != "service_completed_successfully" {
			t.Errorf("service %s depends on %s with %q, want service_completed_successfully", runSvc, setupSvc, d.Condition)
		}
		if !slices.ContainsFunc(run.Ports, func(p string) bool { return strings.HasSuffix(p, strconv.Itoa(port)) }) {
			t.Errorf("service %s publishes %q, not the metrics port %d", runSvc, run.Ports, port)
		}
		if h := run.Healthcheck; h == nil || h.Disable || !slices.Equal(h.Test, []string{"CMD", "outbox-relay", "healthcheck"}) {
			t.Errorf("service %s: healthcheck %+v, want [CMD, outbox-relay, healthcheck]", runSvc, h)
		}
		if grace, err := time.ParseDuration(run.StopGracePeriod); err != nil {
			t.Errorf("service %s: stop_grace_period %q: %v", runSvc, run.StopGracePeriod, err)
		} else {
			checkGracePeriod(t, "service "+runSvc+" stop_grace_period", grace, settings)
		}
		checkRelayAccepts(t, settings)
		checkStateGrant(t, c, setupSvc, runSvc)
	})

	t.Run("prometheus", func(t *testing.T) {
		name := composeServiceByImage(t, c, "prom/prometheus:")
		const configPath = "/etc/prometheus/prometheus.yml" // the image's default
		host, ok := c.hostPath(t, name, configPath)
		if !ok {
			t.Fatalf("service %s does not mount %s", name, configPath)
		}
		b, err := os.ReadFile(host)
		if err != nil {
			t.Fatal(err)
		}
		var cfg prometheusConfig
		if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		var rules bool
		for _, rf := range cfg.RuleFiles {
			if !filepath.IsAbs(rf) {
				rf = filepath.Join(filepath.Dir(configPath), rf)
			}
			src, ok := c.hostPath(t, name, rf)
			if !ok {
				t.Errorf("rule file %s is not mounted in service %s", rf, name)
				continue
			}
			if filepath.Clean(src) == filepath.Join(deployRoot, "deploy/alerts/outbox-relay.rules.yml") {
				rules = true
			}
		}
		if !rules {
			t.Errorf("rule_files %q: want deploy/alerts/outbox-relay.rules.yml", cfg.RuleFiles)
		}
		// The rules select up{job="outbox-relay"}.
		i := slices.IndexFunc(cfg.ScrapeConfigs, func(s prometheusScrape) bool { return s.JobName == "outbox-relay" })
		if i < 0 {
			t.Fatal(`no scrape job "outbox-relay", which the alert rules select`)
		}
		job := cfg.ScrapeConfigs[i]
		var targets []string
		for _, sc := range job.StaticConfigs {
			targets = append(targets, sc.Targets...)
		}
		for _, sd := range job.DNSSDConfigs {
			if sd.Type != "A" {
				t.Errorf("dns_sd_configs type %q: Docker's DNS answers A", sd.Type)
			}
			for _, n := range sd.Names {
				targets = append(targets, net.JoinHostPort(n, strconv.Itoa(sd.Port)))
			}
		}
		if len(targets) == 0 {
			t.Fatal(`scrape job "outbox-relay" has no targets`)
		}
		for _, tg := range targets {
			h, p, err := net.SplitHostPort(tg)
			if err != nil || h != runSvc || p != strconv.Itoa(port) {
				t.Errorf("scrape target %s, want %s:%d (the relay's metrics port)", tg, runSvc, port)
			}
		}
		if job.MetricsPath != "" && job.MetricsPath != "/metrics" {
			t.Errorf("metrics_path %q, want /metrics", job.MetricsPath)
		}

		// promtool on the files as the container sees them.
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Fatal("promtool not found; install it (Debian and Ubuntu: apt-get install prometheus), as make test needs it anyway")
		}
		root := t.TempDir()
		for _, m := range c.mounts(t, name) {
			if err := copyTree(m.source, filepath.Join(root, m.target)); err != nil {
				t.Fatal(err)
			}
		}
		out, err := exec.Command(promtool, "check", "config", filepath.Join(root, configPath)).CombinedOutput()
		if err != nil {
			t.Errorf("promtool check config: %v\n%s", err, out)
		}
	})

	t.Run("grafana", func(t *testing.T) {
		name := composeServiceByImage(t, c, "grafana/grafana:")
		prom := composeServiceByImage(t, c, "prom/prometheus:")
		dsDir, ok := c.hostPath(t, name, "/etc/grafana/provisioning/datasources")
		if !ok {
			t.Fatal("no data source provisioning mounted")
		}
		var defaults int
		for _, f := range yamlFiles(t, dsDir) {
			var ds grafanaDatasources
			decodeStrictFile(t, f, &ds)
			for _, d := range ds.Datasources {
				if d.Type != "prometheus" {
					continue
				}
				if d.URL != "http://"+prom+":9090" {
					t.Errorf("%s: data source %s at %s, want http://%s:9090", f, d.Name, d.URL, prom)
				}
				if d.IsDefault {
					defaults++
				}
			}
		}
		if defaults != 1 {
			t.Errorf("%d default Prometheus data sources, want 1 (the dashboard's data source variable picks it)", defaults)
		}

		dbDir, ok := c.hostPath(t, name, "/etc/grafana/provisioning/dashboards")
		if !ok {
			t.Fatal("no dashboard provisioning mounted")
		}
		var found bool
		for _, f := range yamlFiles(t, dbDir) {
			var p grafanaProviders
			decodeStrictFile(t, f, &p)
			for _, pr := range p.Providers {
				if pr.Type != "file" {
					continue
				}
				src, ok := c.hostPath(t, name, pr.Options.Path+"/outbox-relay.json")
				if !ok {
					t.Errorf("%s: provider %s reads %s, where the dashboard is not mounted", f, pr.Name, pr.Options.Path)
					continue
				}
				if filepath.Clean(src) != filepath.Join(deployRoot, "deploy/dashboards/outbox-relay.json") {
					t.Errorf("%s/outbox-relay.json is %s, want deploy/dashboards/outbox-relay.json", pr.Options.Path, src)
				}
				b, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				var dash struct {
					UID   string `json:"uid"`
					Title string `json:"title"`
				}
				if err := json.Unmarshal(b, &dash); err != nil || dash.UID == "" {
					t.Errorf("%s: %v (uid %q)", src, err, dash.UID)
				}
				found = true
			}
		}
		if !found {
			t.Error("no file provider loads the dashboard")
		}
		if home := c.Services[name].Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
			if _, ok := c.hostPath(t, name, home); !ok {
				t.Errorf("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH %s is not mounted", home)
			}
		}
	})
}

type prometheusConfig struct {
	Global struct {
		ScrapeInterval     string `json:"scrape_interval"`
		EvaluationInterval string `json:"evaluation_interval"`
	} `json:"global"`
	RuleFiles     []string           `json:"rule_files"`
	ScrapeConfigs []prometheusScrape `json:"scrape_configs"`
}

type prometheusScrape struct {
	JobName       string `json:"job_name"`
	MetricsPath   string `json:"metrics_path"`
	StaticConfigs []struct {
		Targets []string `json:"targets"`
	} `json:"static_configs"`
	DNSSDConfigs []struct {
		Names           []string `json:"names"`
		Type            string   `json:"type"`
		Port            int      `json:"port"`
		RefreshInterval string   `json:"refresh_interval"`
	} `json:"dns_sd_configs"`
}

type grafanaDatasources struct {
	APIVersion  int `json:"apiVersion"`
	Datasources []struct {
		Name      string         `json:"name"`
		UID       string         `json:"uid"`
		Type      string         `json:"type"`
		Access    string         `json:"access"`
		URL       string         `json:"url"`
		IsDefault bool           `json:"isDefault"`
		Editable  bool           `json:"editable"`
		JSONData  map[string]any `json:"jsonData"`
	} `json:"datasources"`
}

type grafanaProviders struct {
	APIVersion int `json:"apiVersion"`
	Providers  []struct {
		Name                  string `json:"name"`
		Folder                string `json:"folder"`
		Type                  string `json:"type"`
		DisableDeletion       bool   `json:"disableDeletion"`
		AllowUIUpdates        bool   `json:"allowUiUpdates"`
		UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
		Options               struct {
			Path string `json:"path"`
		} `json:"options"`
	} `json:"providers"`
}

func composeServiceByImage(t *testing.T, c composeFile, prefix string) string {
	t.Helper()
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, prefix) {
			return name
		}
	}
	t.Fatalf("no service runs %s*", prefix)
	return ""
}

func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatalf("%s holds no YAML files", dir)
	}
	return files
}

func decodeStrictFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// copyTree copies the file or directory src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// checkStateGrant checks that a relay running as another role than setup
// is granted the state table setup creates, after setup and before it
// starts: without the grant it relays but records no confirmed horizon, so
// prune refuses and a slot recovery republishes the whole table.
func checkStateGrant(t *testing.T, c composeFile, setupSvc, runSvc string) {
	t.Helper()
	user := func(svc string) string {
		u, err := url.Parse(c.relayEnv(t, svc)["OUTBOX_RELAY_PG_DSN"])
		if err != nil {
			t.Fatalf("service %s: OUTBOX_RELAY_PG_DSN: %v", svc, err)
		}
		return u.User.Username()
	}
	role := user(runSvc)
	if role == user(setupSvc) {
		return
	}
	want := "GRANT SELECT, INSERT, UPDATE ON public.outbox_relay_state TO " + role
	for dep, d := range c.Services[runSvc].DependsOn {
		g := c.Services[dep]
		if d.Condition != "service_completed_successfully" || !slices.Contains(g.Command, want) {
			continue
		}
		if g.DependsOn[setupSvc].Condition != "service_completed_successfully" {
			t.Errorf("service %s grants the state table before %s (setup) has created it", dep, setupSvc)
		}
		return
	}
	t.Errorf("service %s runs as %s, and no service it waits for runs %q after %s", runSvc, role, want, setupSvc)
}
