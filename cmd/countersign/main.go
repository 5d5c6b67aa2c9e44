// Command countersign runs the Countersign platform: the user API, the
// notifier, the recommender, or all of them in one process for development.
//
//	countersign userapi|notifier|recommender|dev|keygen [-h]
//	countersign replay-dlq notifier|recommender [-h]
//
// Settings come from the environment, and from a .env file in the working
// directory when there is one (variables already set win). `-h` on each
// subcommand lists its settings with their defaults.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/joho/godotenv"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks a command-line mistake: exit code 2.
var errUsage = errors.New("usage")

// Main runs one subcommand and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "countersign: unknown command %q\n\n", args[0])
		printUsage(stderr)
		return 2
	}
	if args[0] == "healthcheck" {
		// Its one argument is the URL; no settings, no .env.
		if len(args) != 2 || strings.HasPrefix(args[1], "-") {
			fmt.Fprintln(stderr, "Usage: countersign healthcheck <url>")
			return 2
		}
		env := &Env{Getenv: os.Getenv, Environ: os.Environ, Stdout: stdout, Logger: slog.New(slog.DiscardHandler)}
		if err := runHealthcheck(context.Background(), env, args[1]); err != nil {
			fmt.Fprintf(stderr, "countersign healthcheck: %v\n", err)
			return 1
		}
		return 0
	}
	name, rest := args[0], args[1:]
	if name == "replay-dlq" {
		// Its first argument names the service whose settings it reads.
		switch {
		case len(rest) > 0 && isHelp(rest[0]):
			printCommandHelp(stdout, "replay-dlq notifier|recommender", cmd)
			return 0
		case len(rest) == 0 || replayTargets[rest[0]] == nil:
			fmt.Fprintln(stderr, "Usage: countersign replay-dlq notifier|recommender")
			return 2
		}
		name, cmd, rest = name+" "+rest[0], replayCommand(rest[0]), rest[1:]
	}
	for _, a := range rest {
		switch {
		case isHelp(a):
			printCommandHelp(stdout, name, cmd)
			return 0
		default:
			fmt.Fprintf(stderr, "countersign %s: unknown argument %q (settings come from the environment; see -h)\n", name, a)
			return 2
		}
	}
	// A .env file fills in what the environment does not set.
	if err := godotenv.Load(); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "countersign: read .env: %v\n", err)
		return 1
	}
	logger, err := newLogger(os.Getenv, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "countersign %s: %v\n", name, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &Env{Getenv: os.Getenv, Environ: os.Environ, Stdout: stdout, Logger: logger}
	if err := cmd.run(ctx, env); err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "countersign %s: %v\n", name, err)
			return 2
		}
		fmt.Fprintf(stderr, "countersign %s: %v\n", name, err)
		return 1
	}
	return 0
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// Env is what a subcommand may take from its surroundings; tests fill it in.
type Env struct {
	Getenv  func(string) string
	Environ func() []string
	Stdout  io.Writer
	Logger  *slog.Logger
}

type command struct {
	summary  string
	settings []string // names from the settings table, in display order
	run      func(ctx context.Context, env *Env) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"userapi": {"serve the user API (register, verify, resend)",
			concat(userapiSettings, opsSettings, kafkaSettings, keySettings, logSettings), runUserAPI},
		"notifier": {"mail verification codes and confirmations (consumer group notification-service)",
			concat(notifierSettings, mailSettings, opsSettings, kafkaSettings, keySettings, logSettings), runNotifier},
		"recommender": {"mail starter recommendations to verified users (consumer group recommendation-service)",
			concat(recommenderSettings, mailSettings, opsSettings, kafkaSettings, logSettings), runRecommender},
		"dev": {"run everything in one process, with an embedded Kafka broker unless KAFKA_BROKERS is set",
			concat(devSettings, userapiSettings, notifierSettings, recommenderSettings, mailSettings, opsSettings, kafkaSettings, keySettings, logSettings), runDev},
		"replay-dlq": {"re-process one service's dead letters with its own handler, for it alone, then exit: replay-dlq notifier|recommender",
			concat(replayTargets["notifier"], replayTargets["recommender"]), nil},
		"keygen":      {"print a fresh CODE_ENCRYPTION_KEYS entry", nil, runKeygen},
		"healthcheck": {"GET a URL and exit 0 on a 2xx answer (for container health checks): healthcheck <url>", nil, nil},
	}
}

var commandOrder = []string{"userapi", "notifier", "recommender", "dev", "replay-dlq", "keygen", "healthcheck"}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: countersign <command> [-h]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, name := range commandOrder {
		fmt.Fprintf(w, "  %-12s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Settings come from environment variables and a .env file; `countersign <command> -h` lists them.")
}

func printCommandHelp(w io.Writer, name string, c command) {
	fmt.Fprintf(w, "Usage: countersign %s\n\n%s.\n", name, upperFirst(c.summary))
	if len(c.settings) == 0 {
		return
	}
	fmt.Fprintln(w, "\nSettings (environment variables, or a .env file in the working directory):")
	for _, n := range c.settings {
		s := settingsByName[n]
		def := s.Default
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  %-32s default %s\n      %s\n", s.Name, def, s.Help)
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func concat(lists ...[]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range lists {
		for _, n := range l {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

// newLogger builds the process logger from LOG_LEVEL and LOG_FORMAT.
func newLogger(getenv func(string) string, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if v := strings.TrimSpace(getenv("LOG_LEVEL")); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return nil, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", v)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch v := strings.ToLower(strings.TrimSpace(getenv("LOG_FORMAT"))); v {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("LOG_FORMAT=%q: want text or json", v)
	}
}
