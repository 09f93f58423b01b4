// Command kafka is the kafka plugin binary: the host starts it and talks to it over the plugin protocol. It
// is not meant to be run by hand.
package main

import (
	"github.com/sluicehq/sluice/plugins/kafka"
	"github.com/sluicehq/sluice/sdk"
)

func main() { sdk.Serve(kafka.Plugin()) }
