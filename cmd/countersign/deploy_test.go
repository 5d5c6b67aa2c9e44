package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const repoRoot = "../.."

// ourServices are the compose services built from the Dockerfile; their
// environment is read by the countersign binary.
var ourServices = []string{"userapi", "notifier", "recommender"}

type composeFile struct {
	Services map[string]struct {
		Image       string         `yaml:"image"`
		Build       any            `yaml:"build"`
		Command     []string       `yaml:"command"`
		Environment map[string]any `yaml:"environment"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Volumes []string `yaml:"volumes"`
	} `yaml:"services"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

var interpolation = regexp.MustCompile(`\$\{([A-Z0-9_]+)`)

// TestComposeNamesOnlyVariablesTheCodeReads: every variable given to our
// services, and every ${VAR} the file interpolates, is a setting of the binary.
func TestComposeNamesOnlyVariablesTheCodeReads(t *testing.T) {
	c := loadCompose(t)
	raw, _ := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	for _, m := range interpolation.FindAllStringSubmatch(string(raw), -1) {
		if _, ok := settingsByName[m[1]]; !ok {
			t.Errorf("docker-compose.yml interpolates ${%s}, which countersign does not read", m[1])
		}
	}
	for _, name := range ourServices {
		svc, ok := c.Services[name]
		if !ok {
			t.Errorf("docker-compose.yml has no %s service", name)
			continue
		}
		if svc.Build == nil {
			t.Errorf("%s is not built from the repository's Dockerfile", name)
		}
		if len(svc.Command) == 0 || svc.Command[0] != name {
			t.Errorf("%s runs %v, want the %s subcommand", name, svc.Command, name)
		}
		if _, ok := commands[svc.Command[0]]; !ok {
			t.Errorf("%s runs unknown subcommand %q", name, svc.Command[0])
		}
		for v, val := range svc.Environment {
			s, ok := settingsByName[v]
			if !ok {
				t.Errorf("%s sets %s, which countersign does not read", name, v)
				continue
			}
			// A literal value must be one the table parses.
			if lit := fmt.Sprint(val); !strings.Contains(lit, "${") && strings.TrimSpace(lit) != "" {
				var c config
				if err := s.apply(&c, v, strings.TrimSpace(lit)); err != nil {
					t.Errorf("%s sets %s=%s, which countersign refuses: %v", name, v, lit, err)
				}
			}
		}
		if svc.Healthcheck == nil || len(svc.Healthcheck.Test) < 3 || svc.Healthcheck.Test[1] != "/countersign" || svc.Healthcheck.Test[2] != "healthcheck" {
			t.Errorf("%s: health check should call the binary's healthcheck subcommand: %+v", name, svc.Healthcheck)
		}
		if svc.DependsOn["kafka"].Condition != "service_healthy" {
			t.Errorf("%s does not wait for a healthy Kafka", name)
		}
	}
	for _, name := range []string{"notifier", "recommender"} {
		if c.Services[name].DependsOn["mailpit"].Condition != "service_healthy" {
			t.Errorf("%s does not wait for a healthy Mailpit", name)
		}
	}
	kafka := c.Services["kafka"]
	if !strings.HasPrefix(kafka.Image, "apache/kafka:") {
		t.Errorf("kafka image %q, want the official apache/kafka", kafka.Image)
	}
	if kafka.Environment["KAFKA_PROCESS_ROLES"] != "broker,controller" {
		t.Errorf("kafka is not in KRaft mode: KAFKA_PROCESS_ROLES=%v", kafka.Environment["KAFKA_PROCESS_ROLES"])
	}
	if kafka.Healthcheck == nil {
		t.Error("kafka has no health check")
	}
	// The image writes to /tmp/kraft-combined-logs unless told otherwise
	// (any KAFKA_* variable replaces its default configuration), so the
	// data volume must be mounted where KAFKA_LOG_DIRS points.
	logDirs, _ := kafka.Environment["KAFKA_LOG_DIRS"].(string)
	mounted := false
	for _, v := range kafka.Volumes {
		if parts := strings.Split(v, ":"); len(parts) >= 2 && !strings.HasPrefix(parts[0], ".") && !strings.HasPrefix(parts[0], "/") && parts[1] == logDirs {
			mounted = true
		}
	}
	if logDirs == "" || !mounted {
		t.Errorf("kafka: KAFKA_LOG_DIRS=%q is not a named volume's mount point (volumes %v): the topics would not survive the container", logDirs, kafka.Volumes)
	}
	for name := range c.Services {
		if strings.Contains(strings.ToLower(name), "zookeeper") {
			t.Errorf("compose runs %s: KRaft needs no ZooKeeper", name)
		}
	}
	if !strings.HasPrefix(c.Services["mailpit"].Image, "axllent/mailpit") {
		t.Errorf("mailpit image %q", c.Services["mailpit"].Image)
	}
}

var envLine = regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]+)=(.*)$`)

// TestEnvExampleDocumentsEverySetting: .env.example names every setting of
// the binary with its default, names nothing the binary does not read, and
// ships no usable key.
func TestEnvExampleDocumentsEverySetting(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := envLine.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			found[m[1]] = m[2]
		}
	}
	for name, val := range found {
		s, ok := settingsByName[name]
		if !ok {
			t.Errorf(".env.example names %s, which countersign does not read", name)
			continue
		}
		if val != "" && !strings.Contains(s.Default, val) {
			t.Errorf(".env.example shows %s=%s, but its default is %q", name, val, s.Default)
		}
		if val != "" {
			var c config
			if err := s.apply(&c, name, val); err != nil {
				t.Errorf(".env.example shows %s=%s, which countersign refuses: %v", name, val, err)
			}
		}
	}
	var missing []string
	for _, s := range settingsTable {
		if _, ok := found[s.Name]; !ok {
			missing = append(missing, s.Name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf(".env.example does not document %v", missing)
	}
	if found["CODE_ENCRYPTION_KEYS"] != "" {
		t.Error(".env.example ships a code encryption key")
	}
}

func TestDockerfileIsMultiStageCgoNonRoot(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	if n := strings.Count(df, "\nFROM "); n < 2 {
		t.Errorf("Dockerfile has %d stages, want a build and a runtime stage", n)
	}
	for _, want := range []string{"CGO_ENABLED=1", "USER nonroot", "./cmd/countersign", "COPY --from=build"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
