package recommender_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/recommender"
)

// The guide quotes code that the tests compile. Each quote is a fenced block
// preceded by a marker naming its source:
//
//	<!-- code: recommender/internal/guideexample/main.go -->       the file from its package clause on
//	<!-- code: recommender/recommender_test.go#replay -->         the lines between "// guide:replay begin" and "end"
//
// Paths are relative to the repository root.
const guidePath = "../docs/subscribers.md"

const module = "github.com/countersign/countersign"

var codeMarker = regexp.MustCompile("(?s)<!-- code: ([^ #]+)(?:#([a-z]+))? -->\n```go\n(.*?)```\n")

func readGuide(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(guidePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestGuideQuotesCompiledCode keeps the guide's code identical to code the
// build compiles, so the example cannot drift from the API.
func TestGuideQuotesCompiledCode(t *testing.T) {
	quotes := codeMarker.FindAllStringSubmatch(readGuide(t), -1)
	if len(quotes) < 2 {
		t.Fatalf("found %d marked code blocks in %s, want the example and the replay snippet", len(quotes), guidePath)
	}
	for _, q := range quotes {
		file, region, quoted := q[1], q[2], q[3]
		src, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(file)))
		if err != nil {
			t.Errorf("%s quotes %s: %v", guidePath, file, err)
			continue
		}
		var want string
		if region == "" {
			_, after, ok := strings.Cut(string(src), "\npackage ")
			if !ok {
				t.Errorf("%s: no package clause", file)
				continue
			}
			want = "package " + after
		} else {
			want, err = guideRegion(string(src), region)
			if err != nil {
				t.Errorf("%s: %v", file, err)
				continue
			}
		}
		if quoted != want {
			t.Errorf("%s's quote of %s#%s differs from the code; copy it again.\n--- guide\n%s--- code\n%s", guidePath, file, region, quoted, want)
		}
		if region == "" {
			// The issue asks for a complete example of at most 25 lines.
			if n := strings.Count(quoted, "\n"); n > 25 {
				t.Errorf("the example has %d lines, want at most 25", n)
			}
		}
	}
}

// guideRegion returns the lines between "// guide:<name> begin" and
// "// guide:<name> end", with the indentation of the first line removed.
func guideRegion(src, name string) (string, error) {
	begin, end := "// guide:"+name+" begin\n", "// guide:"+name+" end"
	_, rest, ok := strings.Cut(src, begin)
	if !ok {
		return "", fmt.Errorf("no %q marker", strings.TrimSpace(begin))
	}
	body, _, ok := strings.Cut(rest, end)
	if !ok || strings.TrimSpace(body) == "" {
		return "", fmt.Errorf("no %q marker after %q, or nothing between", end, strings.TrimSpace(begin))
	}
	lines := strings.Split(body, "\n")
	lines = lines[:len(lines)-1] // the indentation before the end marker
	indent := lines[0][:len(lines[0])-len(strings.TrimLeft(lines[0], "\t"))]
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, indent)
	}
	return strings.Join(lines, "\n") + "\n", nil
}

// The example is a main package, which `go test` does not build; vet builds
// and checks it.
func TestGuideExampleBuilds(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("needs the go tool: %v", err)
	}
	cmd := exec.Command(gobin, "vet", module+"/recommender/internal/guideexample")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("go vet the guide's example: %v\n%s", err, out.String())
	}
}

// The guide names the contract's constants as text; check that each still
// exists under that name, so a renamed header or variable fails here.
func TestGuideNamesTheRealConstants(t *testing.T) {
	guide := readGuide(t)
	names := []string{
		kafka.HeaderDLQTopic, kafka.HeaderDLQPartition, kafka.HeaderDLQOffset, kafka.HeaderDLQGroup,
		kafka.HeaderDLQError, kafka.HeaderDLQAttempts, kafka.HeaderDLQFailedAt,
		events.HeaderContentType, events.ContentType, events.TopicUserAccountCreated, events.TopicUserAccountVerified,
		kafka.DeadLetterTopic(recommender.DefaultGroupID),
		recommender.Prefix + "GROUP_ID", recommender.Prefix + "COMMIT_EVERY", recommender.Prefix + "MAX_ATTEMPTS",
		recommender.Prefix + "RETRY_BACKOFF", recommender.Prefix + "RETRY_MAX_BACKOFF", recommender.Prefix + "DEDUPE_WINDOW",
		recommender.EnvCatalog,
		"countersign_recommender_mails_sent_total", "countersign_recommender_mails_failed_total",
		"countersign_recommender_dead_lettered_total", "countersign_recommender_recommendations_total",
		"countersign_recommender_duplicates_skipped_total",
	}
	for _, n := range names {
		if !strings.Contains(guide, "`"+n) {
			t.Errorf("%s does not mention `%s`", guidePath, n)
		}
	}
}
