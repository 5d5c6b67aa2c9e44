package archtest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/countersign/countersign"

// listedPackage is the part of `go list -json` output the test reads.
type listedPackage struct {
	ImportPath string
	Imports    []string
	Standard   bool
}

// goListDeps returns every package the patterns depend on, themselves
// included, by import path, as `go list -deps` (with -test: of the test
// binaries too) reports them. It asks the go tool rather than parsing
// sources, so build tags, test files and vendoring are resolved as the
// compiler resolves them.
func goListDeps(t *testing.T, withTests bool, patterns ...string) map[string]listedPackage {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		// `go test` puts its own go tool on PATH; without it this check
		// cannot run, and must not silently pass.
		t.Fatalf("the import-graph check needs the go tool: %v", err)
	}
	args := []string{"list", "-deps", "-json=ImportPath,Imports,Standard"}
	if withTests {
		args = append(args, "-test")
	}
	cmd := exec.Command(gobin, append(args, patterns...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, stderr.String())
	}
	pkgs := map[string]listedPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		// Test variants are listed as "pkg [pkg.test]": the same package.
		p.ImportPath, _, _ = strings.Cut(p.ImportPath, " ")
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

// importersOf names the packages in pkgs that import target directly, for
// a failure message that says where to look.
func importersOf(pkgs map[string]listedPackage, target string) []string {
	var out []string
	for _, p := range pkgs {
		for _, imp := range p.Imports {
			if imp == target || strings.HasPrefix(imp, target+" ") {
				out = append(out, p.ImportPath)
			}
		}
	}
	return out
}

// services are the service packages: each is a deployable consumer or API.
// A new service is added here.
var services = []string{"userapi", "notifier", "recommender", "audit"}

// TestNoServiceImportsAnother is the rule of docs/architecture.md: a service
// package (with its tests) depends on the layers below it (events,
// events/kafka, mail, templates, …), never on another service. A team adding
// a subscriber therefore needs nothing of the user API or of the notifier.
func TestNoServiceImportsAnother(t *testing.T) {
	pkgs := goListDeps(t, true, module+"/...")
	for _, svc := range services {
		if _, ok := pkgs[module+"/"+svc]; !ok && svc != "audit" {
			t.Fatalf("go list does not know %s: the listing is wrong", svc)
		}
	}
	for _, svc := range services {
		deps := goListDeps(t, true, module+"/"+svc+"/...")
		if len(deps) == 0 {
			continue // not in the tree (yet)
		}
		for _, other := range services {
			if other == svc {
				continue
			}
			target := module + "/" + other
			for path := range deps {
				if path == target || strings.HasPrefix(path, target+"/") {
					t.Errorf("%s depends on the service %s (imported by %v)", svc, path, importersOf(deps, path))
				}
			}
		}
	}
}

// TestOnlyCmdWiresServices: nothing outside cmd/ imports two service
// packages, so wiring stays in one place.
func TestOnlyCmdWiresServices(t *testing.T) {
	for path, p := range goListDeps(t, true, module+"/...") {
		if !strings.HasPrefix(path, module+"/") || strings.HasPrefix(path, module+"/cmd/") {
			continue
		}
		var imported []string
		for _, svc := range services {
			for _, imp := range p.Imports {
				if imp == module+"/"+svc || strings.HasPrefix(imp, module+"/"+svc+"/") {
					imported = append(imported, svc)
					break
				}
			}
		}
		if len(imported) > 1 {
			t.Errorf("%s imports the services %v: only cmd/ may wire services together", path, imported)
		}
	}
}

// TestContractNeedsNoKafkaClient: package events (the contract) links no
// Kafka client and builds without cgo, so a team decoding the events with
// another client, or in a pure-Go service, needs nothing else.
func TestContractNeedsNoKafkaClient(t *testing.T) {
	for path := range goListDeps(t, false, module+"/events") {
		if strings.Contains(path, "confluent-kafka-go") || strings.Contains(path, "franz-go") {
			t.Errorf("package events depends on %s (imported by %v)", path, importersOf(goListDeps(t, false, module+"/events"), path))
		}
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("needs the go tool: %v", err)
	}
	cmd := exec.Command(gobin, "build", "-o", os.DevNull, module+"/events")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("CGO_ENABLED=0 go build ./events: %v\n%s", err, out)
	}
}
