package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/countersign/countersign/cmd/internal/platform"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/recommender"
	"github.com/countersign/countersign/templates"
	"github.com/countersign/countersign/userapi"
)

var (
	alertsFile     = filepath.Join(repoRoot, "deploy", "prometheus", "alerts.yml")
	alertTestsFile = filepath.Join(repoRoot, "deploy", "prometheus", "alerts_test.yml")
	dashboardFile  = filepath.Join(repoRoot, "deploy", "grafana", "countersign.json")
)

// promtool runs Debian's promtool on the rules: the check and the unit
// tests beside them. Without promtool the test fails and says how to get it.
func TestPromtoolRules(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (apt-get install prometheus); .ci/run does")
	}
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertTestsFile}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// describingRegistry records the name of every metric registered on it.
type describingRegistry struct {
	*prometheus.Registry
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *describingRegistry) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registry.Register(c)
}

func (r *describingRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, events.Event) error { return nil }

type nopSender struct{}

func (nopSender) Send(context.Context, mail.Message) error { return nil }
func (nopSender) Close() error                             { return nil }

// exportedMetrics builds every component the way cmd does, on registries
// that record what is registered, and returns the metric names.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := &describingRegistry{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
	keys, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	kcfg := kafka.Config{Brokers: "127.0.0.1:1", Logger: logger}
	if _, err := userapi.NewServer(userapi.Config{HTTPAddr: "127.0.0.1:0"}, userapi.Deps{
		Publisher: nopPublisher{}, Keyring: keys, Logger: logger, Registry: reg,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := notifier.New(notifier.Config{}, notifier.Deps{Kafka: kcfg, Keyring: keys, Templates: tpl, Sender: nopSender{}, Logger: logger, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := recommender.New(recommender.Config{}, recommender.Deps{Kafka: kcfg, Templates: tpl, Sender: nopSender{}, Logger: logger, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if err := platform.RegisterReady(reg, nil); err != nil {
		t.Fatal(err)
	}
	return reg.names
}

// Prometheus' own series, which no code of ours exports.
var prometheusSeries = map[string]bool{"up": true}

var (
	metricToken = regexp.MustCompile(`\b(countersign_[a-z0-9_]+|up)\b`)
	// Label matchers and the functions' arguments are not metrics.
	histogramSuffix = regexp.MustCompile(`_(bucket|sum|count)$`)
)

// metricsIn returns the metric names an expression selects.
func metricsIn(expr string) []string {
	var out []string
	for _, m := range metricToken.FindAllString(expr, -1) {
		out = append(out, m)
	}
	return out
}

// known reports whether name is exported: itself, or a histogram's series.
func known(exported map[string]bool, name string) bool {
	if exported[name] || prometheusSeries[name] {
		return true
	}
	return exported[histogramSuffix.ReplaceAllString(name, "")]
}

// Every metric the alert rules and the dashboard name is one the code
// exports: a renamed metric breaks this test, not the alert.
func TestMonitoringNamesOnlyExportedMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	for _, want := range []string{kafka.MetricConsumerLag, kafka.MetricConsumerHeldBack, kafka.MetricConsumerDeadLettered, platform.MetricReady} {
		if !exported[want] {
			t.Errorf("%s is not registered by the components", want)
		}
	}

	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			names := metricsIn(r.Expr)
			if len(names) == 0 {
				t.Errorf("alert %s names no countersign metric: %q", r.Alert, r.Expr)
			}
			for _, n := range names {
				if !known(exported, n) {
					t.Errorf("alert %s uses %s, which no component exports", r.Alert, n)
				}
			}
		}
	}
	for _, want := range []string{"CountersignConsumerLagGrowing", "CountersignDeadLetter", "CountersignHTTP5xxRatio", "CountersignSMTPHeldBack", "CountersignNotReady"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml has no %s rule", want)
		}
	}

	raw, err = os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range metricsIn(tg.Expr) {
				used[histogramSuffix.ReplaceAllString(n, "")] = true
				if !known(exported, n) {
					t.Errorf("dashboard panel %q uses %s, which no component exports", p.Title, n)
				}
			}
		}
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{
		"countersign_http_requests_total", "countersign_publish_duration_seconds", "countersign_pending_registrations",
		"countersign_notifier_mails_sent_total", "countersign_notifier_mails_failed_total", kafka.MetricConsumerHeldBack,
		kafka.MetricConsumerDeadLettered, kafka.MetricConsumerLag,
	} {
		if !used[want] {
			t.Errorf("the dashboard shows nothing of %s", want)
		}
	}
}

// docker compose runs Prometheus with the rules and Grafana with the
// dashboard, and Prometheus scrapes each service where it serves /metrics.
func TestComposeProvisionsPrometheusAndGrafana(t *testing.T) {
	c := loadCompose(t)
	mounts := func(svc string) map[string]string { // container path → host path
		out := map[string]string{}
		for _, v := range c.Services[svc].Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 {
				out[parts[1]] = parts[0]
			}
		}
		return out
	}
	prom, ok := c.Services["prometheus"]
	if !ok || !strings.HasPrefix(prom.Image, "prom/prometheus:") {
		t.Fatalf("docker-compose.yml has no prom/prometheus service (%+v)", prom)
	}
	pm := mounts("prometheus")
	if pm["/etc/prometheus/prometheus.yml"] != "./deploy/prometheus/prometheus.yml" || pm["/etc/prometheus/alerts.yml"] != "./deploy/prometheus/alerts.yml" {
		t.Errorf("prometheus mounts %v; want deploy/prometheus/prometheus.yml and alerts.yml in /etc/prometheus", pm)
	}
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var pcfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &pcfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pcfg.RuleFiles, "/etc/prometheus/alerts.yml") {
		t.Errorf("prometheus.yml loads %v, not the mounted alerts.yml", pcfg.RuleFiles)
	}
	targets := map[string]string{}
	for _, sc := range pcfg.ScrapeConfigs {
		if !strings.HasPrefix(sc.JobName, "countersign-") {
			t.Errorf("job %q: the rules select jobs named countersign-…", sc.JobName)
		}
		for _, s := range sc.StaticConfigs {
			for _, tg := range s.Targets {
				targets[tg] = sc.JobName
			}
		}
	}
	// Each service's listen address in compose, as Prometheus reaches it.
	for svc, variable := range map[string]string{"userapi": "HTTP_ADDR", "notifier": "METRICS_ADDR", "recommender": "METRICS_ADDR"} {
		addr, _ := c.Services[svc].Environment[variable].(string)
		_, port, found := strings.Cut(addr, ":")
		if !found || !strings.HasPrefix(addr, "0.0.0.0:") {
			t.Errorf("%s: %s=%q does not listen on every interface: Prometheus cannot scrape it", svc, variable, addr)
			continue
		}
		if _, ok := targets[svc+":"+port]; !ok {
			t.Errorf("prometheus.yml does not scrape %s:%s (targets %v)", svc, port, targets)
		}
	}

	graf, ok := c.Services["grafana"]
	if !ok || !strings.HasPrefix(graf.Image, "grafana/grafana:") {
		t.Fatalf("docker-compose.yml has no grafana/grafana service")
	}
	gm := mounts("grafana")
	if gm["/etc/grafana/provisioning"] != "./deploy/grafana/provisioning" {
		t.Errorf("grafana mounts %v; want ./deploy/grafana/provisioning on /etc/grafana/provisioning", gm)
	}
	var provider struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	raw, err = os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "provisioning", "dashboards", "countersign.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &provider); err != nil || len(provider.Providers) != 1 {
		t.Fatalf("dashboard provider: %v %+v", err, provider)
	}
	if host := gm[provider.Providers[0].Options.Path+"/countersign.json"]; host != "./deploy/grafana/countersign.json" {
		t.Errorf("the dashboard is not mounted where the provider reads (%s): mounts %v", provider.Providers[0].Options.Path, gm)
	}
	var ds struct {
		Datasources []struct {
			UID string `yaml:"uid"`
			URL string `yaml:"url"`
		} `yaml:"datasources"`
	}
	raw, err = os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &ds); err != nil || len(ds.Datasources) != 1 || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Fatalf("datasource: %v %+v; want the compose prometheus service", err, ds)
	}
	dash, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dash), `"uid": "`+ds.Datasources[0].UID+`"`) {
		t.Errorf("the dashboard's panels do not use the provisioned datasource uid %q", ds.Datasources[0].UID)
	}
}
