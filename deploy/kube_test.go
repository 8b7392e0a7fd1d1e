package deploy_test

// Checks of the deployment files under deploy/, runnable without a Docker
// engine, the compose plugin or a cluster: the Dockerfile's build line is the
// Makefile's and builds a static binary; the compose stack's references,
// mounts and settings hold; the Kubernetes manifests decode strictly into the
// API types and carry the probes, limits and security settings the relay
// needs; the release configuration builds what make builds.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// ---- deploy/k8s ----

// kubeObjects is one manifest file, decoded.
type kubeObjects struct {
	path        string
	deployments []*appsv1.Deployment
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	accounts    map[string]*corev1.ServiceAccount
}

// decodeManifests decodes every document of path strictly into its
// Kubernetes API type.
func decodeManifests(t *testing.T, path string) kubeObjects {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs := kubeObjects{path: path, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, accounts: map[string]*corev1.ServiceAccount{}}
	for i, doc := range strings.Split("\n"+string(b)+"\n", "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%s: document %d: %v", path, i+1, err)
		}
		if meta.Kind == "" && meta.APIVersion == "" {
			if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")) != "" {
				t.Errorf("%s: document %d has no apiVersion and kind", path, i+1)
			}
			continue
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			d := &appsv1.Deployment{}
			objs.deployments, obj = append(objs.deployments, d), d
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1 Secret":
			obj = &corev1.Secret{}
		case "v1 Service":
			s := &corev1.Service{}
			objs.services, obj = append(objs.services, s), s
		case "policy/v1 PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			objs.pdbs, obj = append(objs.pdbs, p), p
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		default:
			t.Fatalf("%s: document %d: %s %s is not a kind this test knows", path, i+1, meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: document %d (%s): %v", path, i+1, meta.Kind, err)
		}
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			objs.configMaps[o.Name] = o
		case *corev1.Secret:
			objs.secrets[o.Name] = o
		case *corev1.ServiceAccount:
			objs.accounts[o.Name] = o
		}
		if m, ok := obj.(metav1.Object); ok && m.GetName() == "" {
			t.Errorf("%s: document %d (%s) has no name", path, i+1, meta.Kind)
		}
	}
	if len(objs.deployments) == 0 {
		t.Fatalf("%s: no Deployment", path)
	}
	return objs
}

// isRelayContainer reports whether c runs the relay image.
func isRelayContainer(c corev1.Container) bool {
	return c.Name == "outbox-relay" || strings.Contains(c.Image, "/outbox-relay:")
}

// relaySettingsOf returns the relay's settings in a container: its env
// values, its ConfigMaps and its Secrets' values.
func (o kubeObjects) relaySettingsOf(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	settings := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := o.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("container %s: envFrom ConfigMap %s is not in %s", c.Name, ef.ConfigMapRef.Name, o.path)
				continue
			}
			for k, v := range cm.Data {
				settings[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			s, ok := o.secrets[ef.SecretRef.Name]
			if !ok {
				t.Errorf("container %s: envFrom Secret %s is not in %s", c.Name, ef.SecretRef.Name, o.path)
				continue
			}
			for k, v := range s.StringData {
				settings[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			settings[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := o.secrets[ref.Name]
			if !ok {
				t.Errorf("container %s: %s comes from Secret %s, which is not in %s", c.Name, e.Name, ref.Name, o.path)
				continue
			}
			v, ok := s.StringData[ref.Key]
			if !ok {
				if d, ok2 := s.Data[ref.Key]; ok2 {
					v, ok = string(d), true
				}
			}
			if !ok {
				t.Errorf("container %s: %s comes from key %s of Secret %s, which has no such key", c.Name, e.Name, ref.Key, ref.Name)
			}
			settings[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, ok := o.configMaps[ref.Name]
			if !ok || cm.Data[ref.Key] == "" {
				t.Errorf("container %s: %s comes from key %s of ConfigMap %s, which is not in %s", c.Name, e.Name, ref.Key, ref.Name, o.path)
				continue
			}
			settings[e.Name] = cm.Data[ref.Key]
		}
	}
	return settings
}

// resolvePort returns the number of port in container c.
func resolvePort(c corev1.Container, port intstr.IntOrString) int {
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort)
		}
	}
	return -1
}

// checkRelayPod checks the pod template of d and its relay container.
func (o kubeObjects) checkRelayPod(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	spec := d.Spec.Template.Spec
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Deployment %s: selector %v does not select its pod template's labels %v (%v)", d.Name, d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	var relays []corev1.Container
	for _, c := range spec.Containers {
		if isRelayContainer(c) {
			relays = append(relays, c)
		}
	}
	if len(relays) != 1 {
		t.Fatalf("Deployment %s: %d relay containers, want 1", d.Name, len(relays))
	}
	c := relays[0]
	where := fmt.Sprintf("Deployment %s, container %s", d.Name, c.Name)

	if len(c.Command) > 0 || (len(c.Args) > 0 && !slices.Equal(c.Args, []string{"run"})) {
		t.Errorf("%s: command %q args %q, want the image's entrypoint with run", where, c.Command, c.Args)
	}
	if _, tag, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":"); !ok || tag == "latest" {
		t.Errorf("%s: image %s: pin a tag", where, c.Image)
	}

	settings := o.relaySettingsOf(t, c)
	var names []string
	for _, e := range c.Env {
		names = append(names, e.Name)
		if e.Name == "OUTBOX_RELAY_PG_DSN" && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("%s: OUTBOX_RELAY_PG_DSN must come from a Secret (secretKeyRef): it holds a password", where)
		}
		if !strings.HasPrefix(e.Name, "OUTBOX_RELAY_") && e.Name != "GOMEMLIMIT" && e.Name != "GOMAXPROCS" {
			t.Errorf("%s: env %s is neither a relay setting nor a Go runtime variable", where, e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil {
			if cn := e.ValueFrom.ResourceFieldRef.ContainerName; cn != "" && cn != c.Name {
				t.Errorf("%s: %s reads the resources of container %q", where, e.Name, cn)
			}
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		cm := o.configMaps[ef.ConfigMapRef.Name]
		if cm == nil {
			continue
		}
		for k, v := range cm.Data {
			names = append(names, ef.Prefix+k)
			if !strings.HasPrefix(ef.Prefix+k, "OUTBOX_RELAY_") {
				t.Errorf("ConfigMap %s: %s is not a relay setting", cm.Name, k)
			}
			if ef.Prefix+k == "OUTBOX_RELAY_PG_DSN" || strings.Contains(v, "postgres://") {
				t.Errorf("ConfigMap %s: %s holds a DSN; put it in a Secret", cm.Name, k)
			}
		}
	}
	checkSettingNames(t, where, names)
	if settings["OUTBOX_RELAY_PG_DSN"] == "" {
		t.Errorf("%s: no OUTBOX_RELAY_PG_DSN", where)
	}

	port := metricsPort(t, settings)
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == port }) {
		t.Errorf("%s: ports %v lack the metrics port %d", where, c.Ports, port)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
		must  bool
	}{
		{"livenessProbe", c.LivenessProbe, "/healthz", true},
		{"readinessProbe", c.ReadinessProbe, "/readyz", true},
		{"startupProbe", c.StartupProbe, "/healthz", false},
	} {
		if p.probe == nil {
			if p.must {
				t.Errorf("%s: no %s", where, p.name)
			}
			continue
		}
		g := p.probe.HTTPGet
		if g == nil || g.Path != p.path || resolvePort(c, g.Port) != port {
			t.Errorf("%s: %s %+v, want httpGet %s on port %d", where, p.name, p.probe.ProbeHandler, p.path, port)
		}
	}

	res := c.Resources
	for _, q := range []struct {
		what string
		list corev1.ResourceList
		name corev1.ResourceName
		want string
	}{
		{"requests", res.Requests, corev1.ResourceCPU, "100m"},
		{"requests", res.Requests, corev1.ResourceMemory, "64Mi"},
		{"limits", res.Limits, corev1.ResourceMemory, "128Mi"},
	} {
		got, ok := q.list[q.name]
		if !ok || got.Cmp(resource.MustParse(q.want)) != 0 {
			t.Errorf("%s: resources.%s.%s = %s, want %s (sized from the benchmarks)", where, q.what, q.name, got.String(), q.want)
		}
	}

	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	nonRoot, uid := sc.RunAsNonRoot, sc.RunAsUser
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if uid == nil {
		uid = psc.RunAsUser
	}
	if nonRoot == nil || !*nonRoot || (uid != nil && *uid == 0) {
		t.Errorf("%s: want runAsNonRoot: true (and no runAsUser 0)", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: want readOnlyRootFilesystem: true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: want allowPrivilegeEscalation: false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: want capabilities drop [ALL] and add none, got %+v", where, sc.Capabilities)
	}

	grace := time.Duration(0)
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	checkGracePeriod(t, "Deployment "+d.Name+" terminationGracePeriodSeconds", grace, settings)

	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(port) || (ann["prometheus.io/path"] != "" && ann["prometheus.io/path"] != "/metrics") {
		t.Errorf("Deployment %s: annotations %v, want prometheus.io/scrape \"true\" and prometheus.io/port %q", d.Name, ann, strconv.Itoa(port))
	}
	if sa := spec.ServiceAccountName; sa != "" {
		if _, ok := o.accounts[sa]; !ok {
			t.Errorf("Deployment %s: service account %s is not in %s", d.Name, sa, o.path)
		}
	}

	t.Run("settings accepted", func(t *testing.T) { checkRelayAccepts(t, settings) })
	return c
}

// TestKubeManifests decodes deploy/k8s strictly into the Kubernetes API types
// and checks, for each relay container, the probes, resources, security
// context and settings, and for each file the objects its example needs.
func TestKubeManifests(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(deployRoot, "deploy/k8s/*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	for _, want := range []string{"sidecar.yaml", "standalone.yaml"} {
		if !slices.Contains(names, want) {
			t.Errorf("deploy/k8s has no %s (has %q)", want, names)
		}
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := decodeManifests(t, f)
			for _, d := range o.deployments {
				o.checkRelayPod(t, d)
			}
			for _, p := range o.pdbs {
				if !o.selectsDeployment(t, p.Spec.Selector) {
					t.Errorf("PodDisruptionBudget %s selects no Deployment's pods", p.Name)
				}
			}
			for _, s := range o.services {
				d := o.deploymentFor(labels.SelectorFromSet(s.Spec.Selector))
				if len(s.Spec.Selector) == 0 || d == nil {
					t.Errorf("Service %s selects no Deployment's pods", s.Name)
					continue
				}
				for _, c := range d.Spec.Template.Spec.Containers {
					if !isRelayContainer(c) {
						continue
					}
					port := metricsPort(t, o.relaySettingsOf(t, c))
					for _, sp := range s.Spec.Ports {
						if resolvePort(c, sp.TargetPort) != port {
							t.Errorf("Service %s: port %s targets %s, not the relay's metrics port %d", s.Name, sp.Name, sp.TargetPort.String(), port)
						}
					}
				}
			}

			switch filepath.Base(f) {
			case "sidecar.yaml":
				d := o.deployments[0]
				if n := len(d.Spec.Template.Spec.Containers); n < 2 {
					t.Errorf("Deployment %s has %d containers, want the application and the relay", d.Name, n)
				}
			case "standalone.yaml":
				d := o.deployments[0]
				if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
					t.Errorf("Deployment %s: replicas %d, want 2 (one streams, one stands by)", d.Name, ptrValue(d.Spec.Replicas))
				}
				if len(o.pdbs) != 1 {
					t.Errorf("%d PodDisruptionBudgets, want 1", len(o.pdbs))
				} else if m := o.pdbs[0].Spec.MinAvailable; m == nil || m.IntValue() != 1 {
					t.Errorf("PodDisruptionBudget %s: minAvailable %v, want 1 (of the 2 replicas)", o.pdbs[0].Name, m)
				}
				if len(o.services) == 0 {
					t.Error("no Service for the metrics")
				}
				if len(o.configMaps) == 0 || len(o.secrets) == 0 {
					t.Error("want a ConfigMap and a Secret example")
				}
			}
		})
	}
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func (o kubeObjects) deploymentFor(sel labels.Selector) *appsv1.Deployment {
	for _, d := range o.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			return d
		}
	}
	return nil
}

func (o kubeObjects) selectsDeployment(t *testing.T, ls *metav1.LabelSelector) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Error(err)
		return false
	}
	return !sel.Empty() && o.deploymentFor(sel) != nil
}
