// Command sluice runs connector pipelines defined in connector files.
//
//	sluice run FILE...             run the pipelines until their sources are done or a signal stops them
//	sluice validate [--print] FILE... check files against the plugins' specs; print each pipeline's guarantee
//	sluice plugins list            list discovered plugins
//	sluice plugins describe NAME   print a plugin's settings
//	sluice plugin init NAME --kind source|sink|buffer   write a new plugin module that builds outside the tree
//	sluice version
//
// Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/sluicehq/sluice/runtime/cli"
)

func main() {
	err := cli.Execute(os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	var ex cli.ExitError
	if errors.As(err, &ex) {
		if ex.Err != nil {
			fmt.Fprintln(os.Stderr, ex.Err)
		}
		os.Exit(ex.Code)
	}
	fmt.Fprintln(os.Stderr, "sluice:", err)
	os.Exit(1)
}
