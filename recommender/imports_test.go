package recommender_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
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

// TestImportGraph checks the dependency direction of docs/STYLE: a new
// subscriber needs nothing of the user API, and the API knows nothing of its
// subscribers. It is the proof that the recommender was added
// without touching userapi.
func TestImportGraph(t *testing.T) {
	for _, tc := range []struct {
		name      string
		withTests bool
		pattern   string
		mustHave  string
		forbidden []string
	}{
		{"recommender", false, module + "/recommender/...", module + "/events", []string{module + "/userapi"}},
		{"recommender and its tests", true, module + "/recommender/...", module + "/events/eventstest", []string{module + "/userapi"}},
		{"notifier", false, module + "/notifier/...", module + "/events", []string{module + "/userapi", module + "/recommender"}},
		{"userapi", false, module + "/userapi/...", module + "/events", []string{module + "/notifier", module + "/recommender"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkgs := goListDeps(t, tc.withTests, tc.pattern)
			// Guard against a check that passes because go list found
			// nothing.
			if _, ok := pkgs[tc.mustHave]; !ok {
				t.Fatalf("%s does not depend on %s: the listing is wrong", tc.pattern, tc.mustHave)
			}
			for path := range pkgs {
				for _, f := range tc.forbidden {
					if path == f || strings.HasPrefix(path, f+"/") {
						t.Errorf("%s depends on %s (imported by %v)", tc.pattern, path, importersOf(pkgs, path))
					}
				}
			}
		})
	}
}
