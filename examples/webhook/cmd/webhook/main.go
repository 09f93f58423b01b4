// Command webhook is the webhook plugin binary: the sluice host starts it and talks to it over the plugin
// protocol. It is not meant to be run by hand; build it into a plugins directory:
//
//	go build -o bin/plugins/webhook ./cmd/webhook
package main

import (
	"github.com/sluicehq/sluice/examples/webhook"
	"github.com/sluicehq/sluice/sdk"
)

func main() { sdk.Serve(webhook.Plugin()) }
