// Command countersign runs the Countersign platform: the user API, the
// notifier, the recommender, or all of them in one process for development.
//
//	countersign userapi|notifier|recommender|audit|dev|keygen [-h]
//	countersign replay-dlq notifier|recommender [-h]
//	countersign forget <address> [-h]
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
	"slices"
	"strings"
	"syscall"

	"github.com/joho/godotenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage marks a command-line mistake: exit code 2.
var errUsage = errors.New("usage")

// Main runs one subcommand until it ends or ctx does, and returns the
// process exit code. It takes its environment as environ ("KEY=value", as
// os.Environ gives it) and, when there is one, a .env file in the working
// directory (variables set in environ win); it reads nothing else of the
// process's, so tests run it in-process.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
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
		if err := runHealthcheck(ctx, stdout, args[1]); err != nil {
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
	if name == "forget" {
		// Its one argument is the address; settings come as usual.
		switch {
		case len(rest) > 0 && isHelp(rest[0]):
			printCommandHelp(stdout, "forget <address>", cmd)
			return 0
		case len(rest) != 1 || strings.HasPrefix(rest[0], "-"):
			fmt.Fprintln(stderr, "Usage: countersign forget <address>")
			return 2
		}
		cmd, rest = forgetCommand(rest[0]), nil
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
	env, err := readEnv(environ)
	if err != nil {
		fmt.Fprintf(stderr, "countersign: read .env: %v\n", err)
		return 1
	}
	cfg, err := parseConfig(cmd.settings, env)
	if err != nil {
		fmt.Fprintf(stderr, "countersign %s: %v\n", name, err)
		return 1
	}
	logger := newLogger(cfg, stderr)
	cfg.Logger, cfg.Kafka.Logger = logger, logger
	if slices.Contains(cmd.settings, "OTEL_SDK_DISABLED") {
		stopTracing, err := startTracing(ctx, cfg.Tracing, "countersign-"+args[0], logger)
		if err != nil {
			fmt.Fprintf(stderr, "countersign %s: %v\n", name, err)
			return 1
		}
		defer stopTracing()
	}
	if err := cmd.run(ctx, &Env{Stdout: stdout, Logger: logger}, &cfg); err != nil {
		fmt.Fprintf(stderr, "countersign %s: %v\n", name, err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

// readEnv is environ as a map, filled in from a .env file in the working
// directory when there is one.
func readEnv(environ []string) (map[string]string, error) {
	env := environMap(environ)
	dotenv, err := godotenv.Read()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for k, v := range dotenv {
		if _, set := env[k]; !set {
			env[k] = v
		}
	}
	return env, nil
}

// environMap is environ ("KEY=value") as a map; entries without "=" are
// left out.
func environMap(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// Env is what a subcommand writes to.
type Env struct {
	Stdout io.Writer
	Logger *slog.Logger
}

type command struct {
	summary  string
	settings []string // names from the settings table, in display order
	run      func(ctx context.Context, env *Env, cfg *config) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"userapi": {"serve the user API (register, verify, resend)",
			concat(userapiSettings, brandSettings, []string{"TEMPLATES_DIR"}, opsSettings, kafkaSettings, keySettings, logSettings, otelSettings), runUserAPI},
		"notifier": {"mail verification codes and confirmations (consumer group notification-service)",
			concat(notifierSettings, publicURLSettings, brandSettings, mailSettings, opsSettings, kafkaSettings, keySettings, logSettings, otelSettings), runNotifier},
		"recommender": {"mail starter recommendations to verified users (consumer group recommendation-service)",
			concat(recommenderSettings, publicURLSettings, brandSettings, mailSettings, opsSettings, kafkaSettings, logSettings, otelSettings), runRecommender},
		"dev": {"run everything in one process, with an embedded Kafka broker unless KAFKA_BROKERS is set",
			concat(devSettings, userapiSettings, brandSettings, notifierSettings, recommenderSettings, auditSettings, mailSettings, opsSettings, kafkaSettings, keySettings, logSettings, otelSettings), runDev},
		"replay-dlq": {"re-process one service's dead letters with its own handler, for it alone, then exit: replay-dlq notifier|recommender",
			concat(replayTargets["notifier"], replayTargets["recommender"]), nil},
		"audit":       auditCommand,
		"forget":      {forgetSummary, forgetSettings, nil},
		"keygen":      {"print a fresh CODE_ENCRYPTION_KEYS entry", nil, runKeygen},
		"healthcheck": {"GET a URL and exit 0 on a 2xx answer (for container health checks): healthcheck <url>", nil, nil},
	}
}

var commandOrder = []string{"userapi", "notifier", "recommender", "audit", "dev", "replay-dlq", "forget", "keygen", "healthcheck"}

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
func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
