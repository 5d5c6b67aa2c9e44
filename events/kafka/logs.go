package kafka

import (
	"context"
	"log/slog"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// forwardLogs copies librdkafka's log lines (syslog levels) to logger until
// the channel is closed or done is closed. librdkafka never logs message
// payloads, so codes cannot leak through here.
func forwardLogs(logger *slog.Logger, logs chan ckafka.LogEvent, done <-chan struct{}) {
	for {
		select {
		case l, ok := <-logs:
			if !ok {
				return
			}
			logger.Log(context.Background(), syslogLevel(l.Level), l.Message,
				slog.String("component", "librdkafka"), slog.String("client", l.Name), slog.String("tag", l.Tag))
		case <-done:
			return
		}
	}
}

func syslogLevel(l int) slog.Level {
	switch {
	case l <= 3: // emerg, alert, crit, err
		return slog.LevelError
	case l == 4: // warning
		return slog.LevelWarn
	case l == 5: // notice
		return slog.LevelInfo
	// info (6) is chatter such as telemetry ids; debug (7) is debug.
	default:
		return slog.LevelDebug
	}
}
