// Package stdout is a sluice sink that prints one line per record on standard output, for trying out
// pipelines and transforms.
//
// Where the lines appear: run in-process (in_process: true), the sink writes to the host's standard
// output directly. Run as a plugin process, it writes to the process's os.Stdout as it is after sdk.Serve
// starts — not the file descriptor that carried the go-plugin handshake, which the host reads and
// discards, but the pipe go-plugin puts in its place and forwards over its stdio stream to the host's
// plugin.ClientConfig.SyncStdout. The host sets SyncStdout to its own stdout only for stages that declare
// sdk.Capabilities.WritesStdout, as this sink does; it logs what other plugins print.
package stdout

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/sluicehq/sluice/plugins/file"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// Plugin returns the stdout plugin: its spec and its sink constructor.
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{
			Name:    "stdout",
			Version: "0.1.0",
			Summary: "Prints one line per record on standard output, for trying out pipelines and transforms.",
			Author:  "sluice",
			Sink: &sdk.Stage{
				Summary: "Prints one line per record on the host's standard output (heartbeats print nothing). Not durable: an acknowledged line may still be in flight to the terminal.",
				// The host forwards this stage's stdout to its own.
				Capabilities: sdk.Capabilities{WritesStdout: true},
				Settings:     sdk.MustSettingsOf[Config](),
			},
		},
		NewSink: func() sdk.Sink { return &Sink{} },
	}
}

// Config holds the sink's settings; its tags declare them (sdk.SettingsOf). format's values are
// file.Format's.
type Config struct {
	Format string `setting:"format" default:"payload" enum:"payload,record" doc:"payload (default): print each record's payload; records without a payload print nothing. record: print a JSON envelope with position, op, key, meta, encoding and payload, to see everything a record carries."`
}

// Sink prints records. The SDK calls Open, then Write from one goroutine, then Close.
type Sink struct {
	sdk.UnimplementedSink

	// Out is where lines go; Open sets it to os.Stdout (as it is then) when nil.
	Out io.Writer

	mu     sync.Mutex
	format file.Format
	buf    []byte
}

// Open reads the settings.
func (s *Sink) Open(_ context.Context, req sdk.OpenRequest) error {
	var cfg Config // Decode applies the default the tag declares
	if err := req.Settings.Decode(&cfg); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	f, err := file.ParseFormat(cfg.Format)
	if err != nil {
		return fmt.Errorf("stdout: %w: %w", sdk.ErrInvalidSettings, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.format = f
	if s.Out == nil {
		s.Out = os.Stdout
	}
	return nil
}

// Write prints the batch's records in one write.
func (s *Sink) Write(_ context.Context, b record.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	buf, err := file.AppendLines(s.buf[:0], b.Records, s.format)
	if err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	s.buf = buf
	if len(buf) == 0 {
		return nil
	}
	if _, err := s.Out.Write(buf); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return nil
}
