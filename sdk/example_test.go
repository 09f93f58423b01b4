package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
)

// prefixSink is the sink of ExampleServe: it would write each payload somewhere durable.
type prefixSink struct {
	sdk.UnimplementedSink
	prefix string
}

func (s *prefixSink) Open(_ context.Context, req sdk.OpenRequest) error {
	var cfg struct {
		Prefix string `setting:"prefix"`
	}
	if err := req.Settings.Decode(&cfg); err != nil {
		return err
	}
	s.prefix = cfg.Prefix
	return nil
}

func (s *prefixSink) Write(_ context.Context, b record.Batch) error {
	for _, r := range b.Records {
		if r.Op == record.OpHeartbeat {
			continue
		}
		_ = s.prefix + string(r.Payload) // write it, durably, before returning nil
	}
	return nil
}

// A plugin's main calls Serve with its spec and a constructor per stage kind. Serve only works when the
// sluice host (or sdktest) starts the program: run by hand, it says so and exits. Hence no output here.
func ExampleServe() {
	sdk.Serve(sdk.Plugin{
		Spec: sdk.Spec{Name: "prefixer", Version: "0.1.0", Summary: "writes prefixed payloads",
			Sink: &sdk.Stage{Summary: "writes each payload with a prefix", Settings: []sdk.Setting{
				{Name: "prefix", Type: sdk.TypeString, Default: ">", Doc: "Written before each payload."},
			}}},
		NewSink: func() sdk.Sink { return &prefixSink{} },
	})
}

// Decode fills a config struct from the settings the host sends (JSON values, defaults applied), by the
// fields' setting tags. Durations are Go duration strings; whole JSON numbers fill integer fields.
func ExampleSettings_Decode() {
	settings, err := sdk.ParseSettings([]byte(`{"url": "https://example.com/hook", "timeout": "2.5s", "retries": 3}`))
	if err != nil {
		panic(err)
	}
	var cfg struct {
		URL     string        `setting:"url"`
		Timeout time.Duration `setting:"timeout"`
		Retries int           `setting:"retries"`
	}
	if err := settings.Decode(&cfg); err != nil {
		panic(err)
	}
	fmt.Println(cfg.URL, cfg.Timeout, cfg.Retries)

	err = sdk.Settings{"retries": 2.5}.Decode(&cfg)
	fmt.Println(err != nil, errors.Is(err, sdk.ErrInvalidSettings))
	// Output:
	// https://example.com/hook 2.5s 3
	// true true
}
