//go:build !unix

package plugin

import (
	"errors"
	"log/slog"
)

// envSocketDir is go-plugin's variable naming the directory a plugin creates its Unix socket in; where
// there are no Unix sockets, plugins listen on TCP and nothing is left behind.
const envSocketDir = "PLUGIN_UNIX_SOCKET_DIR"

type socketDir struct{ path string }

func socketBase() (string, error)                { return "", errNoSockets }
func newSocketDir(string) (*socketDir, error)    { return nil, errNoSockets }
func (d *socketDir) close()                      {}
func cleanSockets(base string, log *slog.Logger) {}

var errNoSockets = errors.New("plugins do not listen on Unix sockets here")
