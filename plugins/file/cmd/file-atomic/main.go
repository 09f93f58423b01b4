// Command file-atomic is the file-atomic plugin binary (the file sink that stores positions with its
// lines): the host starts it and talks to it over the plugin protocol. It is not meant to be run by hand.
package main

import (
	"github.com/sluicehq/sluice/plugins/file"
	"github.com/sluicehq/sluice/sdk"
)

func main() { sdk.Serve(file.AtomicPlugin()) }
