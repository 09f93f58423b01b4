// Package runtime is the sluice host: it reads connector files, discovers and launches plugins, and runs
// pipelines. The command is cmd/sluice; the parts are config (connector files), plugin (discover, launch,
// supervise), pipeline (move batches and apply the position rule) and state (the host's own position store).
package runtime
